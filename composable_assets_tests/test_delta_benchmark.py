"""The delta benchmark runs end to end at a tiny size: every step finds the counts it must, both shapes are paired."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_delta_benchmark_pairs_both_shapes_against_the_bare_engine(tmp_path: Path):
    script = REPO / "benchmarks" / "delta_benchmark.py"
    cmd = [sys.executable, str(script), "--sizes", "200", "--repeat", "1", "--results", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "delta.json").read_text())
    (result,) = report["results"]
    # The script stops on any step finding other counts; these are what each shape must find at 200 members.
    assert result["first_sync"]["counts"] == {"add": 200, "update": 0, "remove": 0}
    assert result["day"]["counts"] == result["bare_day"]["counts"] == {"add": 2, "update": 4, "remove": 2}
    assert set(result["ratios"]) == {"first sync", "day", "delta step"}
    assert report["memory_limit"] == "1500MB"
    assert "first sync: snapshot + delta" in (tmp_path / "delta.md").read_text()
