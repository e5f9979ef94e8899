"""Smoke test of benchmarks/pipeline_benchmark.py at a tiny size: its project syncs, its change is ~2%, its report.

The benchmark times `composable sync` runs for minutes; here one real sync of the current code (200 members) checks
that the benchmark's project, states and row counting work, and its report is checked on made-up runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import duckdb
import pytest

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "pipeline_benchmark.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pipeline_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_day_changes_two_percent_of_the_members(bench, tmp_path: Path) -> None:
    size = 2_000
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute(f"CREATE TABLE before AS {bench.people_sql(1, size)}")
    con.execute("CREATE TABLE people AS SELECT * FROM before")
    for statement in bench.change_sql(size):
        con.execute(statement)
    changed = con.execute(
        "SELECT count(*) FROM before AS b FULL OUTER JOIN people AS p ON b.customer_id = p.customer_id "
        "WHERE b IS DISTINCT FROM p"
    ).fetchone()[0]
    assert changed == bench.expected_rows("day", size) == size * 2 // 100
    assert con.execute("SELECT count(*) FROM people").fetchone()[0] == size


def test_a_first_sync_of_the_current_code_sends_every_member(bench, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bench, "WORK", tmp_path)
    bench.prepare(200, ["B"], bench.BASELINE, tmp_path / "sync.log")  # fails unless all 200 reach the outbox
    changed = tmp_path / "200" / "B" / "changed"
    assert bench.outbox_rows(changed) == 200 and (changed / "home" / "dagster.yaml").is_file()


def test_the_report_puts_medians_side_by_side(bench) -> None:
    runs = [
        {"size": 1000, "shape": shape, "side": side, "round": n, "wall_s": wall * n, "cpu_s": 1.0, "peak_rss_mb": 300.0,
         "load_before": "1.00 1.00 1.00"}
        for shape in bench.SHAPES
        for side, wall in (("A", 2.0), ("B", 1.0))
        for n in (1, 2, 3)
    ]
    text = bench.markdown({
        "machine": {"date": "d", "cpu": "c", "cores": 2, "ram_gb": 1, "python": "3", "duckdb": "x", "dagster": "y"},
        "codes": {"A": "commit d7257c4", "B": "working tree"}, "runs": runs, "sides": ["A", "B"], "rounds": 3,
        "load_before": "1", "load_after": "1", "run_s": 60,
    })
    assert "| 1,000 | first sync (empty ledger) | 4.0 (2.0-6.0) | 1.0 (1.0-1.0) | 300 (300-300) | 2.0 (1.0-3.0)" in text
    assert text.count("0.50×") == 3
