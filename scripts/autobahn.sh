#!/usr/bin/env bash
# Runs the Autobahn TestSuite (fuzzingclient) against the edge's /echo endpoint and
# turns its report into pass/fail.
#
#   scripts/autobahn.sh            cases 1.* to 10.* (the conformance gate, ~1 min)
#   scripts/autobahn.sh --full     every case, 12.* and 13.* (permessage-deflate, the
#                                  edge run with --compression true) included (~7 min)
#   scripts/autobahn.sh --tls      the same over wss:// (the edge's own TLS listener,
#                                  a throw-away self-signed certificate from openssl)
#
# Autobahn is Python 2.7: a virtualenv with it is made once in .venv-autobahn/ (from
# pyenv's 2.7.18, with virtualenv==20.21.1 from PyPI). The edge is built and started
# on a free port, the report goes to target/autobahn/, and the script exits non-zero
# if any case's behaviour or close behaviour is not OK, NON-STRICT or INFORMATIONAL
# (UNIMPLEMENTED included: with --full every compression case must run), or if the
# report holds another number of cases than the set has.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cases='["1.*","2.*","3.*","4.*","5.*","6.*","7.*","8.*","9.*","10.*"]'
# How many cases each set holds in autobahntestsuite 25.10.1: a run that reports fewer
# (wstest crashed, the edge died, cases were skipped) fails.
expected=301
tls=0
compression=()
for arg in "$@"; do
  case "$arg" in
    --full) cases='["*"]'; expected=517; compression=(--compression true) ;;
    --tls) tls=1 ;;
    *) echo "autobahn: unknown option $arg" >&2; exit 2 ;;
  esac
done

venv="$root/.venv-autobahn"
if [[ ! -x "$venv/bin/wstest" ]]; then
  echo "autobahn: setting up $venv (Python 2.7) ..." >&2
  py27=""
  if command -v pyenv >/dev/null 2>&1; then
    py27="$(pyenv root)/versions/2.7.18/bin/python2.7"
  fi
  if [[ ! -x "$py27" ]]; then
    py27="$(command -v python2.7 || true)"
  fi
  if [[ -z "$py27" || ! -x "$py27" ]]; then
    echo "autobahn: needs Python 2.7 (pyenv install 2.7.18)" >&2
    exit 2
  fi
  tools="$root/.venv-autobahn-tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q "virtualenv==20.21.1"
  "$tools/bin/virtualenv" -q -p "$py27" "$venv"
  "$venv/bin/pip" install -q autobahntestsuite
fi
if [[ $tls == 1 ]] && ! "$venv/bin/python" -c 'import OpenSSL, service_identity' 2>/dev/null; then
  # Twisted's TLS client (wss://) needs these.
  echo "autobahn: adding pyOpenSSL to $venv for wss:// ..." >&2
  "$venv/bin/pip" install -q pyOpenSSL service_identity
fi

target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p edge
out="$target/autobahn"
[[ $tls == 1 ]] && out="$target/autobahn-tls"
rm -rf "$out" && mkdir -p "$out"
log="$out/edge.log"
tls_args=()
if [[ $tls == 1 ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
  tls_args=(--listen-tls 127.0.0.1:0 --tls-only true --tls-cert "$out/cert.pem" --tls-key "$out/key.pem")
fi
# EDGE_ARGS adds flags (e.g. EDGE_ARGS="--recv-mode poll").
# shellcheck disable=SC2086
"$target/release/edge" --listen 127.0.0.1:0 --workers 2 --pin false --max-message 16777216 "${tls_args[@]}" ${compression[@]+"${compression[@]}"} ${EDGE_ARGS:-} 2>"$log" &
edge=$!
trap 'kill $edge 2>/dev/null || true' EXIT
field=listen
[[ $tls == 1 ]] && field=listen_tls
addr=""
for _ in $(seq 100); do
  addr="$(grep -o "edge listening.*$field=[0-9.:]*" "$log" | sed "s/.*$field=//" || true)"
  [[ -n "$addr" ]] && break
  sleep 0.1
done
[[ -n "$addr" ]] || { echo "autobahn: the edge did not start" >&2; cat "$log" >&2; exit 1; }
scheme=ws
[[ $tls == 1 ]] && scheme=wss

cat > "$out/spec.json" <<JSON
{
  "outdir": "$out/report",
  "servers": [{"agent": "ringline-edge", "url": "$scheme://$addr/echo"}],
  "cases": $cases,
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
echo "autobahn: running cases $cases against $scheme://$addr/echo ..." >&2
(cd "$out" && "$venv/bin/wstest" -m fuzzingclient -s spec.json > wstest.log 2>&1) &
wst=$!
while kill -0 $wst 2>/dev/null; do
  sleep 10
  done_n=$(grep -c "Running test case" "$out/wstest.log" 2>/dev/null || true)
  echo "autobahn: ... $done_n cases run" >&2
done
wait $wst || true
python3 "$root/scripts/autobahn-verdict.py" "$out/report/index.json" "$expected"
