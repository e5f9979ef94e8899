"""Two syncs that share nothing but the coordination store (separate data folders, warehouses, no Dagster instance in
common, as two pods or two hosts would be) draw on one Braze budget and together never exceed it.

Before, the budget lived in a SQLite file under each process's data folder: each got the whole budget and Braze
answered 429.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from composable_assets_tests.fakes import BrazeFake

from ..test_delivery_processes import COMPOSABLE, braze_project, cli_env

LIMIT = 8  # requests per 1-second window, at the fake and in destinations.yaml


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379).ping()
    except redis.ConnectionError as exc:
        pytest.skip(f"no Redis at 127.0.0.1:6379: {exc}")
    return "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_two_processes_with_separate_data_dirs_stay_within_one_shared_budget(tmp_path: Path, store: str, request):
    coordination = request.getfixturevalue(f"{store}_url")
    api_key = f"braze-{uuid.uuid4().hex[:8]}"  # a fresh account: no window left over from another test
    server = BrazeFake(api_key=api_key, rate_limit=LIMIT, rate_window_seconds=1.0).start()
    try:
        limit = f", track_limit: {{requests: {LIMIT}, window_seconds: 1}}"
        projects = [
            braze_project(tmp_path / "a", server, range(1, 241), batch_size=5, limit=limit),
            braze_project(tmp_path / "b", server, range(1001, 1241), batch_size=5, limit=limit),
        ]
        procs = []
        for project in projects:
            env = cli_env(project, server, project.root / "own-data")  # nothing shared on disk
            env.update(BRAZE_API_KEY=api_key, COMPOSABLE_COORDINATION_URL=coordination)
            procs.append(subprocess.Popen([COMPOSABLE, "sync", "high", "--date", "2026-03-02"], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [p.communicate(timeout=180)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert not list((tmp_path / "a" / "own-data").glob("coordination*")), "the budget must not be local"

        tracks = [r for r in server.requests if r.path == "/users/track"]
        assert len([r for r in tracks if r.status == 201]) == 96  # 2 x 240 / 5: 6 s each alone at 8/s, so they overlap even if one starts late
        assert [r for r in tracks if r.status == 429] == [], "together they must stay within the budget"
        assert server.max_requests_in_window() <= LIMIT
        # They really ran at the same time: requests of both interleave.
        owners = ["a" if int(r.body["attributes"][0]["external_id"]) < 1000 else "b" for r in tracks]
        assert sum(1 for x, y in zip(owners, owners[1:]) if x != y) >= 4, owners
    finally:
        server.stop()
