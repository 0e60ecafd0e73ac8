# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
# uv from PATH, else the one pip installs on first use (pip resolves this stack far too slowly).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_LINK_MODE ?= copy
# Byte-compiled once at install: this environment sets PYTHONDONTWRITEBYTECODE, and every
# Dagster process (webserver, daemon, each run) would otherwise compile ~1,000 modules.
export UV_COMPILE_BYTECODE ?= 1
# `install` syncs once; `uv run` re-syncing after it would compile those modules again, aloud.
export UV_NO_SYNC ?= 1
# A make run inside another make (the suite's) prints no "Entering directory" lines.
MAKEFLAGS += --no-print-directory

.PHONY: help install run backfill dev lint test bench bench-history stop clean

DATASET ?= yellow
MONTH ?= 2021-01
# A variable's value as one shell word, evaluated by neither make nor the shell: a MONTH
# holding `; rm -rf ~` or `$$(shell ...)` reaches the CLI as that text, which it refuses.
arg = '$(subst ','\'',$(value $(1)))'
# Not into the recipes' environment either: make would expand them to put them there.
unexport DATASET MONTH PORT

help:  ## this list: each target, what it does and the variables it reads
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | expand -t 10

install:  ## the locked environment in .venv (silent unless it fails); run, dev, lint, test and bench run it first
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@[ -d .venv ] || echo "Installing the locked environment into .venv (once, about 20 s)"
	@$(UV) sync --frozen --quiet

run: install  ## the whole pipeline of DATASET (yellow, green or all; default yellow) for MONTH (default 2021-01), local profile
	$(UV) run --frozen python -m taxi_assets.cli run --dataset $(call arg,DATASET) --month $(call arg,MONTH)

backfill: install  ## every asset of DATASET (yellow, green or all; default yellow) for months FROM..TO (YYYY-MM), as one Dagster backfill per dataset; run again to resume
	$(UV) run --frozen python -m taxi_assets.cli backfill --dataset $(if $(value DATASET),$(call arg,DATASET),yellow) --from $(call arg,FROM) --to $(call arg,TO)

dev: install  ## the Dagster UI and daemon on the same instance: PORT (default 3000, or DAGSTER_WEBSERVER_PORT)
	$(UV) run --frozen python -m taxi_assets.cli dev $(if $(value PORT),--port $(call arg,PORT))

lint: install  ## ruff: the checks and the formatting configured in pyproject.toml
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

# Three pytest workers on two cores, a module each (its tests keep their order and module
# fixtures): the live modules spend much of their time waiting on Dagster's processes and its
# daemon's ticks, and a third module runs then (17.4-18.2 min against 19.1 with two, idle).
# TEST_WORKERS= runs the suite in one process. The slowest tests are listed at the end: the
# suite's time is theirs to keep down.
TEST_WORKERS ?= -n 3 --dist loadfile --no-loadscope-reorder
test: install lint  ## lint, then the suite against real PostgreSQL and emulators: PYTEST_ARGS
	bash scripts/ensure-chromium.sh  # Debian's chromium for the browser test; no-op once installed
	$(UV) run --frozen pytest -q -rs --durations=20 $(TEST_WORKERS) $(PYTEST_ARGS)

bench: install  ## a generated full-size month: ours vs the tutorial's script vs psql/pyarrow limits
	$(UV) run --frozen python -m bench.run $(BENCH_ARGS)

bench-history: install  ## a generated year (2020's monthly sizes times HISTORY_SCALE, default 1) through `make backfill`, every sink, and the whole history projected
	$(UV) run --frozen python -m bench.history --scale $(if $(value HISTORY_SCALE),$(call arg,HISTORY_SCALE),1)

stop:  ## stop the local PostgreSQL
	$(UV) run --frozen python -m taxi_assets.cli stop

clean: stop  ## stop PostgreSQL and delete .local (every sink and run of the local profile)
	rm -rf .local
