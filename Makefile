# Ringline: every entry point a person or CI needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
# One optimized profile for tests, benches and runs (see Cargo.toml).
PROFILE := --release
FUZZ_SECONDS ?= 60

.PHONY: help setup run test lint gen gen-check bench fuzz fuzz-check seeds

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## install what building and testing needs (Debian packages, checks cargo)
	@bash scripts/setup.sh

run: setup ## run a local store and edge on the embedded default
	$(CARGO) build $(PROFILE) -p edge -p store
	@echo "The store and edge nodes are not built yet (issues 3 and 4); the codecs in wire/ are."
	$(CARGO) run $(PROFILE) -q -p edge -- --help

test: setup gen-check lint fuzz-check ## everything CI runs: schema check, fmt, clippy, fuzz targets compile, all tests
	$(CARGO) test $(PROFILE) --workspace --doc
	$(CARGO) test $(PROFILE) --workspace --all-targets

lint: ## rustfmt and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings

gen: ## regenerate Rust code from schemas/*.fbs with the pinned flatc
	bash scripts/gen-schemas.sh

gen-check: ## fail if the committed generated code differs from a fresh generation
	bash scripts/gen-schemas.sh --check

bench: ## criterion microbenchmarks (figures in BENCHMARKS.md)
	$(CARGO) bench -p benches

fuzz: ## run every fuzz target for FUZZ_SECONDS each (installs cargo-fuzz if missing)
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-check: ## the fuzz targets still compile against wire
	$(CARGO) check $(PROFILE) --manifest-path fuzz/Cargo.toml --bins

seeds: ## rewrite the link/client fuzz seed corpora from the real encoders
	$(CARGO) run $(PROFILE) -p wire --example fuzz_seeds -- fuzz/seeds
