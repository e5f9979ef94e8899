"""drt (drt-core, the open-source reverse ETL the delivery benchmark compares against): install, configure, run.

drt gets a virtualenv of its own so that its pins (httpx, duckdb, jinja2) never meet ours.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common.timing import cpu_seconds

SPEC = "drt-core[duckdb,postgres]==1.2.1"
DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".work" / "drt-venv"

BRAZE_BODY_FULL = '{"attributes": {{ rows | tojson }}}'
# Cursor mode must select updated_at (drt tracks the cursor from each row), so the body names the fields instead.
BRAZE_BODY_FIELDS = (
    '{"attributes": [{% for r in rows %}{"external_id": {{ r.external_id | tojson }}, "email": {{ r.email | tojson }}, '
    '"name": {{ r.name | tojson }}, "score": {{ r.score | tojson }}}{% if not loop.last %},{% endif %}{% endfor %}]}'
)
HOOK_BODY = '{"rows": {{ rows | tojson }}}'


def ensure_drt(venv: Path, console) -> dict:
    """drt's virtualenv (created and installed when missing); {"drt": path, versions} or {"error": why}."""
    drt = venv / "bin" / "drt"
    commands = []
    if not drt.exists():
        console.print(f"installing {SPEC} into {venv} ...", markup=False)  # else rich reads [duckdb] as a style
        commands = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", SPEC],
        ]
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return {"error": f"`{' '.join(command)}` exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps({p: m.version(p) for p in ('drt-core', 'httpx', 'duckdb', 'jinja2')}))"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        return {"error": f"drt's virtualenv at {venv} is broken: {proc.stderr.strip()[-1500:]}"}
    return {"drt": str(drt), "versions": json.loads(proc.stdout)}


def drt_project(root: Path, source_db: Path, name: str, *, url: str, headers: dict, body: str, per_request: int,
                mode: str, engine_batch: int, limit: int | None = None, postgres: dict | None = None) -> Path:
    """A drt project folder (+ a HOME with ~/.drt/profiles.yml) for one sync of `people` over a copy of the data.

    `postgres` (host, port, user, dbname): read `people` from that PostgreSQL database instead of a DuckDB copy.
    """
    import yaml

    shutil.rmtree(root, ignore_errors=True)
    (root / "syncs").mkdir(parents=True)
    (root / "home" / ".drt").mkdir(parents=True)
    if postgres is not None:
        profile = {"type": "postgres", **postgres}
    else:
        db = root / "warehouse.duckdb"
        shutil.copyfile(source_db, db)
        profile = {"type": "duckdb", "database": str(db)}
    (root / "home" / ".drt" / "profiles.yml").write_text(yaml.safe_dump({"bench": profile}))
    (root / "drt_project.yml").write_text(yaml.safe_dump({"name": "delivery_bench", "profile": "bench"}))
    columns = "CAST(id AS VARCHAR) AS external_id, email, name, score"
    if mode == "incremental":
        columns += ", updated_at"
    model = f"SELECT {columns} FROM people" + (f" WHERE id <= {limit}" if limit is not None else "")
    sync: dict = {"mode": mode, "batch_size": engine_batch, "rate_limit": {"requests_per_second": 0}, "on_error": "fail"}
    if mode == "incremental":
        sync["cursor_field"] = "updated_at"
    config = {
        "name": name,
        "description": "Every member, as the composable benchmark syncs it.",
        "model": model,
        "destination": {
            "type": "rest_api",
            "url": url,
            "method": "POST",
            "headers": {"Content-Type": "application/json", **headers},
            "body_mode": "batch",
            "batch_template": body,
            "max_records_per_request": per_request,
        },
        "sync": sync,
    }
    (root / "syncs" / f"{name}.yml").write_text(yaml.safe_dump(config, sort_keys=False, width=1000))
    return root


def run_drt(drt: str, root: Path, env: dict[str, str]) -> dict:
    """`drt run --output json` in the project folder; wall and CPU of the whole process."""
    env = {**env, "HOME": str(root / "home"), "DO_NOT_TRACK": "1"}
    cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([drt, "run", "--output", "json"], cwd=root, env=env, capture_output=True, text=True,
                          check=False)
    result = {"process_s": time.perf_counter() - wall, "cpu_s": cpu_seconds(resource.RUSAGE_CHILDREN) - cpu}
    try:
        output = json.loads(proc.stdout)
    except ValueError:
        output = None
    if proc.returncode != 0 or not output or output["syncs"][0]["status"] != "success":
        raise RuntimeError(f"`drt run` in {root} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    sync = output["syncs"][0]
    result.update(rows=sync["rows_synced"], failed=sync["rows_failed"], sync_s=sync["duration_seconds"],
                  pipeline_s=output["total_duration_seconds"])
    return result
