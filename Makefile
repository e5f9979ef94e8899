# Set-up, demo, tests and UI. Needs Python 3.11 and make; everything else is installed here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: setup demo test lint ui docs bench bench-minute bench-pipeline clean

setup: $(VENV)/.installed .dagster_home/dagster.yaml

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.dagster_home/dagster.yaml: dagster.yaml
	mkdir -p .dagster_home
	ln -sf ../dagster.yaml .dagster_home/dagster.yaml

demo: setup  ## seed the retail sample into data/warehouse.duckdb and run every sync
	$(BIN)/composable demo

test: setup lint  ## linters, then the whole test suite
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

lint: setup  ## ruff (lint and format) and mypy on the package, clean
	$(BIN)/ruff check composable_assets
	$(BIN)/ruff format --check composable_assets
	$(BIN)/mypy composable_assets

ui: setup  ## Dagster UI (webserver + daemon) on http://127.0.0.1:3000
	$(BIN)/composable ui --port 3000 --simulate

docs: setup  ## the documentation site (docs/, mkdocs.yml) on http://127.0.0.1:8000, rebuilt on every change
	$(BIN)/mkdocs serve

# Customer counts for the latency and incremental benchmarks; `make bench BENCH_10M=1` adds 10M (30M orders).
comma := ,
BENCH_SIZES ?= 2000,1000000$(if $(BENCH_10M),$(comma)10000000)
# Acknowledged rows folded into the ledger by the warehouse benchmark (part C); 10M with BENCH_10M=1.
FOLD_SIZES ?= 1000000 5000000$(if $(BENCH_10M), 10000000)
# Members of the pipeline benchmark (`composable sync`, the code before issue 16 against the current), comma-separated:
# `make bench-pipeline PIPELINE_SIZES=100000` for a quick run.
PIPELINE_SIZES ?= 1000000
PIPELINE_ROUNDS ?= 3

bench: setup  ## delta (1M, 10M members: snapshot + delta vs the bare engine, first sync and a day), delivery (vs drt; CPU per delivered row over a DuckDB file and over PostgreSQL), minute-level latency and incremental vs full warehouse work (2,000 and 1M customers; 10M with BENCH_10M=1), warehouse (1M-member diff on DuckDB vs PostgreSQL vs fakesnow; memory streaming 1M/5M-row deltas; the ack fold at FOLD_SIZES), quiet `composable sync` (1M members, nothing changed) and whole-pipeline (PIPELINE_SIZES) benchmarks
	$(BIN)/python benchmarks/delta_benchmark.py
	$(BIN)/python benchmarks/delivery_benchmark.py
	$(BIN)/python benchmarks/delivery_benchmark.py --cpu-rounds 3
	$(BIN)/python benchmarks/delivery_benchmark.py --cpu-rounds 3 --warehouse postgres
	$(MAKE) bench-minute
	$(BIN)/python benchmarks/warehouse_benchmark.py --fold-sizes $(FOLD_SIZES)
	$(BIN)/python benchmarks/quiet_sync_benchmark.py
	$(MAKE) bench-pipeline

bench-minute: setup  ## minute-level latency (landing to Braze) and one run's warehouse work, incremental vs full, at BENCH_SIZES
	$(BIN)/python benchmarks/latency_benchmark.py --customers $(BENCH_SIZES)
	$(BIN)/python benchmarks/incremental_benchmark.py --customers $(BENCH_SIZES)

bench-pipeline: setup  ## `composable sync` end to end (first sync, a day of ~2% changes, a quiet re-run), the code before issue 16 vs the current, at PIPELINE_SIZES members
	$(BIN)/python benchmarks/pipeline_benchmark.py --sizes $(PIPELINE_SIZES) --rounds $(PIPELINE_ROUNDS)

clean:
	rm -rf data .dagster_home site
