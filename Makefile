# virtualio: the two Quick start commands and a few conveniences. Every target installs what it
# needs (Node 24, npm dependencies, Kubernetes binaries built into ~/.cache/virtualio).
SHELL := /bin/bash
.PHONY: demo test bench build gen lint

demo: ## Run the main job: a local cluster with virtualio on simulated hardware
	@bash scripts/demo.sh $(ARGS)

test: ## The whole test suite (what CI runs)
	@bash scripts/test.sh

bench: ## Benchmarks (figures, not pass/fail)
	@source scripts/env.sh && npm ci --no-audit --no-fund >/dev/null && npm run --silent build && npm run --silent bench

build:
	@source scripts/env.sh && npm run build

gen:
	@source scripts/env.sh && npm run gen

lint:
	@source scripts/env.sh && npm run lint
