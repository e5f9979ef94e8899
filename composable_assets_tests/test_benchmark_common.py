"""The benchmarks' shared helpers (benchmarks/common): rounds, summaries, tables, result files and the row sink.

Every benchmark reports through these, so a mistake here (rounds not interleaved, a median of the wrong values, a
table with a column missing) would skew all of them at once; the benchmarks themselves are too slow for the suite.
"""

from __future__ import annotations

import importlib
import json
import sys
import urllib.request
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def common():
    # The scripts import `common` with benchmarks/ first on sys.path (python benchmarks/X.py); so do we.
    added = str(BENCHMARKS) not in sys.path
    if added:
        sys.path.insert(0, str(BENCHMARKS))
    modules = {name: importlib.import_module(f"common.{name}") for name in ("timing", "report", "sinks")}
    yield type("Common", (), modules)
    if added:
        sys.path.remove(str(BENCHMARKS))


def test_rounds_interleave_the_sides(common) -> None:
    assert list(common.timing.rounds(3, "AB")) == [(1, "A"), (1, "B"), (2, "A"), (2, "B"), (3, "A"), (3, "B")]
    assert list(common.timing.rounds(0, "AB")) == []


def test_summary_is_the_median_with_min_and_max(common) -> None:
    assert common.timing.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert common.timing.summary(iter([4.0, 1.0, 2.0, 10.0])) == {"median": 3.0, "min": 1.0, "max": 10.0}
    assert common.timing.span({"median": 2.0, "min": 1.0, "max": 3.5}) == "2.00 s (1.00-3.50)"
    assert common.timing.span({"median": 2500, "min": 1000, "max": 3000}, "", ",.0f") == "2,500 (1,000-3,000)"
    assert common.timing.span(None) == "-"


def test_timed_records_wall_and_cpu_seconds(common) -> None:
    into: dict = {}
    with common.timing.timed(into, "step_s"):
        sum(range(10_000))
    assert into["step_s"] >= 0 and into["step_s_cpu"] >= 0
    assert common.timing.peak_rss_mb() > 0
    assert len(common.timing.load_average()) == 3


def test_markdown_table_aligns_the_first_columns_left(common) -> None:
    lines = common.report.md_table(["run", "setup", "s"], [["A", "defaults", "1.50"]], left=2)
    assert lines == ["| run | setup | s |", "|---|---|---:|", "| A | defaults | 1.50 |"]
    assert common.report.md_table(["n", "s"], [], left=0)[1] == "|---:|---:|"
    assert common.report.md_table(["step", "s"], [], left_mark=":---")[1] == "|:---|---:|"


def test_results_are_written_as_json_and_markdown(common, tmp_path: Path) -> None:
    written = common.report.write_results(tmp_path / "results", "demo", markdown="# Demo\n", data={"rows": [1, 2]})

    assert written == [tmp_path / "results" / "demo.json", tmp_path / "results" / "demo.md"]
    assert json.loads(written[0].read_text()) == {"rows": [1, 2]}
    assert written[1].read_text() == "# Demo\n"
    assert common.report.write_results(tmp_path, "only_md", markdown="x") == [tmp_path / "only_md.md"]


def test_the_sink_process_counts_rows_and_keys(common) -> None:
    with common.sinks.ServerProcess("sink") as server:
        for rows in ([{"key": "a"}, {"key": "b"}], [{"key": "b"}]):
            request = urllib.request.Request(server.url + "/hook", data=json.dumps({"rows": rows}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        stats = server.stop()

    assert (stats["requests"], stats["rows"], stats["distinct_keys"]) == (2, 3, 2)
    assert stats["cpu_s"] >= 0
