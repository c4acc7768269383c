# Ringline: every entry point a person or CI needs. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
# One optimized profile for tests, benches and runs (see Cargo.toml).
PROFILE := --release
FUZZ_SECONDS ?= 60

.PHONY: help setup run cluster test lint gen gen-check bench microbench fuzz fuzz-check fuzz-seeds seeds autobahn autobahn-tls autobahn-full

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## install what building and testing needs (Debian packages, checks cargo)
	@bash scripts/setup.sh

run: setup ## run a local store and edge on the embedded default (Ctrl-C stops both cleanly)
	$(CARGO) build $(PROFILE) -p edge -p store
	@bash scripts/run-local.sh

cluster: setup ## run a local cluster: 2 stores, 2 edges, HAProxy in front on 127.0.0.1:8000 (Ctrl-C stops all)
	$(CARGO) build $(PROFILE) -p edge -p store
	@bash scripts/interop-setup.sh
	@bash scripts/run-cluster.sh

test: setup gen-check lint fuzz-check fuzz-seeds ## everything CI runs: schema check, fmt, clippy, fuzz targets compile and pass their seeds, all tests (real clients included), every Autobahn case (517, compression on) over ws:// and 1.*-10.* over wss://
	bash scripts/interop-setup.sh
	$(CARGO) test $(PROFILE) --workspace --doc
	$(CARGO) test $(PROFILE) --workspace --all-targets
	bash scripts/autobahn.sh --full
	bash scripts/autobahn.sh --tls

autobahn: ## Autobahn TestSuite cases 1.*-10.* against the edge's /echo (sets up Python 2.7 once)
	bash scripts/autobahn.sh

autobahn-tls: ## Autobahn TestSuite cases 1.*-10.* over wss:// (the edge's TLS listener)
	bash scripts/autobahn.sh --tls

autobahn-full: ## every Autobahn case, compression (12.*, 13.*, the edge with --compression true) included
	bash scripts/autobahn.sh --full

lint: ## rustfmt and clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy $(PROFILE) --workspace --all-targets -- -D warnings

gen: ## regenerate Rust code from schemas/*.fbs with the pinned flatc
	bash scripts/gen-schemas.sh

gen-check: ## fail if the committed generated code differs from a fresh generation
	bash scripts/gen-schemas.sh --check

bench: ## every side-by-side benchmark (echo vs peers, memory, fan-out, resume storm), tables into BENCHMARKS.md; BENCH_BIG=1 adds 1M connections
	bash scripts/bench.sh

microbench: ## criterion microbenchmarks (figures in BENCHMARKS.md)
	$(CARGO) bench -p benches

fuzz: ## run every fuzz target for FUZZ_SECONDS each (installs cargo-fuzz if missing)
	bash scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-check: ## the fuzz targets still compile against wire
	$(CARGO) check $(PROFILE) --manifest-path fuzz/Cargo.toml --bins

fuzz-seeds: ## replay every fuzz target's seed corpus through the target's own checks (stable, no libFuzzer)
	$(CARGO) test $(PROFILE) --manifest-path fuzz/Cargo.toml --test seeds

seeds: ## rewrite the link/client fuzz seed corpora from the real encoders
	$(CARGO) run $(PROFILE) -p wire --example fuzz_seeds -- fuzz/seeds
