"""Smoke test of benchmarks/warehouse_benchmark.py: its steps at a tiny size, on each engine it measures.

The benchmark reports times and memory; here only its counts are checked (never a timing), so a change that
breaks the diff, the ack fold or the delivery path on one engine fails here rather than in a long benchmark run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "warehouse_benchmark.py"
MEMBERS = 2_000
# The engines the benchmark puts side by side (its ENGINES); each has a `<name>_url` fixture in warehouses.py.
ENGINES = ["duckdb", "postgres", "snowflake"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("warehouse_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(params=ENGINES)
def warehouse_url(request, tmp_path: Path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    return request.getfixturevalue(f"{request.param}_url")


def test_diff_counts_on_every_engine(bench, warehouse_url: str) -> None:
    result = bench.run_diffs(warehouse_url, MEMBERS)

    assert result["diff1"] == {"add": MEMBERS, "update": 0, "remove": 0}
    # 5% of the members get another ltv, 1% leave the model, 1% new ones arrive.
    assert result["diff2"] == {"add": 20, "update": 100, "remove": 20}
    assert bench.expected_change(MEMBERS) == result["diff2"]
    for step, _ in bench.DIFF_STEPS:
        assert result[step] >= 0


def test_streaming_delivers_every_row_once_on_every_engine(bench, warehouse_url: str) -> None:
    run = bench.prepare_delta(warehouse_url, MEMBERS)
    assert (run.added, run.updated, run.removed) == (MEMBERS, 0, 0)

    result = bench.stream_delta(warehouse_url, batch_size=70, concurrency=3)

    assert result["delivered"] == MEMBERS
    assert result["acknowledged"] == MEMBERS
    assert result["ledger_rows"] == MEMBERS
    assert result["batches"] == -(-MEMBERS // 70)
    assert result["streaming_peak_rss_mb"] >= result["base_rss_mb"] > 0


def test_the_benchmark_measures_these_engines(bench) -> None:
    assert list(bench.ENGINES) == ENGINES


def test_a_wrong_count_stops_the_benchmark(bench) -> None:
    with pytest.raises(bench.BenchmarkError, match="second diff"):
        bench.check("second diff", {"add": 1}, {"add": 2})


def test_the_fold_step_folds_every_acknowledged_row(bench, tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    prepared = bench.prepare_fold(url, MEMBERS)
    assert prepared == {"rows": MEMBERS, "ack_rows": MEMBERS // bench.FOLD_ACK_ROWS}

    result = bench.fold_step(url)

    assert result["ranges"] == prepared["ack_rows"]
    assert result["ledger_rows"] == result["sync_log_rows"] == MEMBERS
    assert result["peak_rss_mb"] >= result["connected_rss_mb"] > 0
