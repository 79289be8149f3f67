# Switchboard: developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export SWITCHBOARD_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
export SWITCHBOARD_REDIS_URL ?= redis://127.0.0.1:6379
export SWITCHBOARD_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
export SWITCHBOARD_TEST_REDIS_URL ?= redis://127.0.0.1:6379

CONTRACT_DIR := services/gateway/tests/contract
CHART := deploy/helm/switchboard
FMT_COLOR ?= auto

.PHONY: help run build migrate test test-deps lint fmt bench helm-lint deploy-check services-up services-down clean-local

help: ## this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## whole cluster locally in the foreground (Postgres, Redis, 3 services, gateways :3000 :3001); Ctrl-C stops it
	scripts/run-cluster.sh

build: ## release build of every binary
	cargo build --release --workspace --bins

services-up: ## make sure Postgres and Redis answer at SWITCHBOARD_DATABASE_URL / SWITCHBOARD_REDIS_URL
	scripts/ensure-postgres.sh
	scripts/ensure-redis.sh

services-down: ## stop the Postgres / Redis servers that the scripts started under .local/
	scripts/stop-local.sh

migrate: ## apply migrations/ to SWITCHBOARD_DATABASE_URL
	scripts/ensure-postgres.sh
	cargo run --release --bin switchboard-migrate

test-deps: ## Postgres + Redis for tests, moto (an S3 server) and the contract tests' npm packages
	SWITCHBOARD_DATABASE_URL="$(SWITCHBOARD_TEST_DATABASE_URL)" scripts/ensure-postgres.sh
	SWITCHBOARD_REDIS_URL="$(SWITCHBOARD_TEST_REDIS_URL)" scripts/ensure-redis.sh
	scripts/ensure-moto.sh
	@if [[ -f $(CONTRACT_DIR)/package.json ]]; then \
		cd $(CONTRACT_DIR); \
		if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi; \
	else \
		echo "no $(CONTRACT_DIR)/package.json: skipping npm"; \
	fi

test: test-deps ## cargo test --workspace against real Postgres / Redis (started when none answers)
	cargo build --workspace --bins
	@# Throwaway databases of earlier runs (sb_test_*) would otherwise pile up.
	SWITCHBOARD_DATABASE_URL="$(SWITCHBOARD_TEST_DATABASE_URL)" RUST_LOG=warn cargo run -q --bin switchboard-migrate -- drop-test-databases
	cargo test --workspace --no-fail-fast
	@# The patched engineioxide, socketioxide and tungstenite (vendor/, not workspace members) run their own suites too.
	cargo test --manifest-path vendor/engineioxide/Cargo.toml --all-features --target-dir target/vendor
	cargo test --manifest-path vendor/socketioxide/Cargo.toml --all-features --target-dir target/vendor
	cargo test --manifest-path vendor/tungstenite/Cargo.toml --lib --target-dir target/vendor

lint: ## rustfmt check and clippy with warnings as errors (both run; fails if either fails)
	@status=0; \
	echo "cargo fmt --all -- --check"; cargo fmt --all -- --check --color $(FMT_COLOR) || status=1; \
	echo "cargo clippy --workspace --all-targets -- -D warnings"; cargo clippy --workspace --all-targets -- -D warnings || status=1; \
	exit $$status

fmt: ## format the workspace
	cargo fmt --all

bench: ## Switchboard vs the Node reference peer (and the bare minimum), same scenarios, one run -> docs/benchmarks/ (~55 min)
	load-tests/bench.sh

helm-lint: ## helm lint + template of the chart (when helm is installed), and the offline checks
	@if command -v helm >/dev/null 2>&1; then \
		helm lint $(CHART) && helm template switchboard $(CHART) --namespace switchboard >/dev/null && echo "helm: chart renders"; \
	else \
		echo "helm is not installed: skipping helm lint (offline checks follow)"; \
	fi
	python3 scripts/check-deploy.py

deploy-check: ## offline checks: k8s/ YAML + references + kustomize, chart rendered by scripts/render-chart.py == k8s/, dashboard
	python3 scripts/check-deploy.py

clean-local: ## stop local Postgres/Redis started by the scripts and delete .local/
	scripts/stop-local.sh
	rm -rf .local
