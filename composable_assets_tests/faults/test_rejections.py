"""Rejections a data team can act on: which keys, with which reason, after the sync and whenever asked.

Before, a run with rejected rows said how many and nothing else; the keys and reasons were only in the warehouse.
"""

from __future__ import annotations

from ..conftest import Recording
from ..test_cli import run_cli  # noqa: F401  (fixture)

REJECTED = {f"p{i}@example.com": f"invalid identifier p{i}@example.com" for i in (12, 14, 15, 16, 17, 18, 19)}


def test_a_sync_with_rejections_names_the_first_keys_and_reasons(run_cli):
    Recording.reject["rec_upsert"] = set(REJECTED)
    result = run_cli("sync", "high", "--destination", "rec_upsert", "--date", "2026-03-02")
    assert result.exit_code == 1
    assert "rejected by rec_upsert: 7 row(s) of high, the first 5:" in result.output
    shown = [line.strip() for line in result.output.splitlines() if line.strip().startswith("key ")]
    # In delta order: the first five members of the audience (ids 11..20) that the destination refused.
    assert shown == [f"key {i} (p{i}@example.com, add): invalid identifier p{i}@example.com" for i in (12, 14, 15, 16, 17)]
    assert "all of them: composable rejections high --destination rec_upsert" in result.output


def test_the_rejections_command_lists_every_rejected_row_of_the_latest_run(run_cli):
    Recording.reject["rec_upsert"] = set(REJECTED)
    assert run_cli("sync", "high", "--date", "2026-03-02").exit_code == 1
    result = run_cli("rejections", "high")
    assert result.exit_code == 0, result.output
    assert "high -> rec_mirror: nothing rejected in sync run" in result.output
    assert "high -> rec_upsert: 7 rejected in sync run" in result.output
    for identifier, reason in REJECTED.items():
        assert f"{identifier}" in result.output and reason in result.output

    # The next run retries them; once the destination takes them, its latest run has nothing rejected.
    Recording.reject["rec_upsert"] = set()
    assert run_cli("sync", "high", "--date", "2026-03-02").exit_code == 0
    assert "high -> rec_upsert: nothing rejected in sync run" in run_cli("rejections", "high").output
