"""A DuckDB file another process holds: the run says what it waits for, every few seconds, instead of silence.

Before, a sync waited up to two minutes for DuckDB's lock and printed nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time

from ..test_delivery_processes import COMPOSABLE

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_a_sync_waiting_for_the_duckdb_file_says_who_holds_it(small, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "COMPOSABLE_PROJECT_DIR": str(small.settings.project_dir),
        "COMPOSABLE_WAREHOUSE": small.settings.warehouse_url,
        "COMPOSABLE_DATA_DIR": str(small.settings.data_dir),
    }
    small.write("destinations.yaml", "rec_mirror: {type: outbox}\nrec_upsert: {type: outbox}\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(small.db), "14"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    result = subprocess.run([COMPOSABLE, "sync", "high", "--date", "2026-03-02"], env=env, capture_output=True,
                            text=True, timeout=120)
    holder.wait()
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started >= 12  # it did wait for the holder
    waits = [line for line in result.stderr.splitlines() if "waiting" in line and "DuckDB file" in line]
    assert waits, result.stderr
    assert f"(PID {holder.pid}) has it open" in waits[0] and "giving up in" in waits[0], waits
