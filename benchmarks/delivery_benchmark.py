"""Delivery benchmark: sync throughput to the Braze fake (no limit, a realistic limit) and against drt on one sink.

One run reports, side by side:

- A. a first sync (all adds) of N members to the Braze fake with no rate limit, Braze defaults (batch 75,
  concurrency 8), the fake in this process and in a process of its own, plus where the time goes;
- B. the same sync against the fake with a fixed-window limit and `track_limit` set to that budget:
  requests per window as a share of the budget, and 429s;
- C. drt (`drt-core`, in its own virtualenv) against the same Braze fake (/users/track, same body), and
  D. against a tiny local HTTP sink that our `webhook` destination targets too; each first run and a
  re-run with no changes (ours sends nothing, drt's full mode resends everything).

This script reports numbers; it passes or fails on nothing but a broken run.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common.drt import BRAZE_BODY_FIELDS, BRAZE_BODY_FULL, HOOK_BODY, drt_project, ensure_drt, run_drt
from common.drt import DEFAULT_VENV as DRT_VENV
from common.profiler import Probe, Sampler
from common.report import RESULTS, fmt, machine_info, md_table, rich_table, versions, write_results
from common.sinks import API_KEY, ServerProcess, braze_stats
from common.timing import busy, cpu_seconds, load_text, rounds, span, summary

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "delivery"
CODE = WORK / "code"  # a copy of composable_assets/ taken at the start: every process of one run imports the same code

HOOK_SECRET = "bench-hook-secret-51d0"
AUDIENCE = "members"
DAY1, DAY2 = "2026-03-02", "2026-03-03"
DRT_ENGINE_BATCH = 5000  # drt's sync.batch_size: rows per destination.load() call (each opens a fresh httpx.Client)
DRT_SMALL_BATCH_ROWS = 10_000  # the extra drt run with sync.batch_size 75 is slow; it gets fewer rows

MODEL_SQL = "-- Members with a score.\nSELECT id, email, name, score FROM people\n"


def people_sql(size: int) -> str:
    """N synthetic members, each a pure function of its id; `updated_at` is only for drt's cursor mode."""
    return f"""
        CREATE TABLE people AS SELECT
            i AS id,
            'member.' || i || '@example.com' AS email,
            ['Anna', 'Ben', 'Chloe', 'David', 'Elena', 'Felix', 'Grace', 'Hugo'][1 + (hash(i, 'name') % 8)::INT] AS name,
            (hash(i, 'score') % 1000)::INTEGER AS score,
            TIMESTAMP '2026-03-01 00:00:00' + to_seconds(i) AS updated_at
        FROM range(1, {size + 1}) AS ids(i)
    """


# --- Our platform, one fresh process per measured run (`--child`). --------------------------------------------




def plain(value: Any) -> Any:
    value = getattr(value, "value", value)
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def write_project(root: Path, destination: str, settings: dict) -> None:
    import yaml

    project = root / "project"
    (project / "models").mkdir(parents=True)
    (project / "audiences").mkdir()
    (project / "project.yaml").write_text('name: delivery_bench\nstart_date: "2026-01-01"\n')
    (project / "models" / "people_model.sql").write_text(MODEL_SQL)
    audience = {
        "description": "Every member, to one destination.",
        "model": "people_model",
        "primary_key": "id",
        "syncs": [
            {
                "destination": destination,
                "mode": "upsert",
                "identifier": {"external_id": "id"},
                "fields": {"email": "email", "name": "name", "score": "score"},
            }
        ],
    }
    (project / "audiences" / f"{AUDIENCE}.yaml").write_text(yaml.safe_dump(audience, sort_keys=False))
    (project / "destinations.yaml").write_text(yaml.safe_dump({destination: settings}, sort_keys=False))


def child_ours(cfg: dict) -> dict:
    """`--child`: one project on a copy of the source data, a first sync (and maybe a re-run), measured."""
    started = time.perf_counter()
    import dagster as dg

    from composable_assets.definitions import audience_selection, load_definitions
    from composable_assets.project import load_project
    from composable_assets.runner import run_selection
    from composable_assets.settings import Settings

    import_s = time.perf_counter() - started
    probe = Probe(cfg.get("whatif"), cprofile=bool(cfg.get("cprofile")))
    probe.install()
    root = Path(cfg["workdir"])
    db = root / "warehouse.duckdb"
    if cfg.get("fresh", True):  # a new project on a copy of the source data; else the project a first run left
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        write_project(root, cfg["destination"], cfg["settings"])
        shutil.copyfile(cfg["source_db"], db)
    os.environ.update(cfg.get("env", {}))
    fake = None
    if cfg.get("inprocess_fake"):
        from composable_assets_tests.fakes import BrazeFake

        fake = BrazeFake(API_KEY, rate_limit=None).start()
        os.environ[cfg["url_env"]] = fake.url
    else:
        os.environ[cfg["url_env"]] = cfg["urls"][0]
    warehouse_url = cfg.get("warehouse_url") or f"duckdb:///{db}{cfg.get('warehouse_query', '')}"
    if cfg.get("warehouse_url") and cfg.get("fresh", True):  # a server warehouse: the source table copied into it
        copy_to_postgres(cfg["source_db"], cfg["warehouse_url"])
    settings = Settings(project_dir=root / "project", warehouse_url=warehouse_url,
                        data_dir=root / "data")
    if cfg.get("instance") == "sqlite":  # as `composable sync` with DAGSTER_HOME set: runs and events in SQLite files
        (root / "dagster_home").mkdir()
        instance = dg.DagsterInstance.local_temp(str(root / "dagster_home"))
    else:
        instance = dg.DagsterInstance.ephemeral()

    def run(day: str) -> dict:
        cpu, wall = cpu_seconds(), time.perf_counter()
        defs = load_definitions(settings)
        project = load_project(settings.project_dir)
        outcome = run_selection(defs, audience_selection(project, AUDIENCE, None), day, instance)
        result = {"pipeline_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu}
        result["success"], result["errors"] = outcome.success, outcome.errors
        sync = outcome.syncs[0].metadata if outcome.syncs else {}
        result["sync"] = {k: plain(v) for k, v in sync.items() if k not in ("payload_sample", "failures")}
        return result

    sampler = Sampler(probe) if cfg.get("profile") else None
    if sampler:
        sampler.start()
    first = run(cfg.get("day", DAY1))
    first["process_s"] = time.time() - cfg["spawned_at"]
    first["import_s"] = import_s
    import composable_assets

    result: dict = {"first": first, "probe": probe.summary(), "environ_size": len(os.environ),
                    "module": str(Path(composable_assets.__file__).parent)}
    if sampler:
        result["profile"] = sampler.report()
    if probe.cprofile:
        result["cprofile"] = probe.cprofile_report()
    if fake is not None:
        result["server"] = braze_stats(fake, 3.0)
        result["server"]["cpu_s"] = None  # shares this process: counted in first.cpu_s
        fake.stop()
    return result


def copy_to_postgres(source_db: str, url: str) -> None:
    """A fresh PostgreSQL database named by `url` holding the source table `people` (copied as CSV)."""
    import io
    from urllib.parse import urlsplit

    import duckdb
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    with duckdb.connect(source_db, read_only=True) as con:
        frame = con.sql("SELECT id, email, name, score, updated_at FROM people").df()
    text = io.StringIO()
    frame.to_csv(text, index=False, header=False)
    text.seek(0)
    con = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username, dbname=name)
    with con, con.cursor() as cur:
        cur.execute("CREATE TABLE people (id BIGINT, email TEXT, name TEXT, score INTEGER, updated_at TIMESTAMP)")
        cur.copy_expert("COPY people FROM STDIN WITH (FORMAT csv)", text)
    con.close()


def child_env() -> dict[str, str]:
    """No DAGSTER_HOME: the children use throwaway instances and leave nothing behind. PYTHONPATH: the code snapshot."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    if CODE.is_dir():  # ahead of the editable install, whose finder comes last on sys.meta_path
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE), env.get("PYTHONPATH")) if p)
    return env


def snapshot_code() -> dict:
    """Copy composable_assets/ for this run; say which commit it is and which of its files differ from it."""
    shutil.copytree(REPO / "composable_assets", CODE / "composable_assets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path in sorted((CODE / "composable_assets").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(CODE)).encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {
        "head": git("rev-parse", "--short", "HEAD"),
        "uncommitted": [line.split(maxsplit=1)[1] for line in git("status", "--porcelain", "--", "composable_assets")
                        .splitlines() if line.strip()],
        "digest": digest.hexdigest()[:16],
    }


def spawn_ours(cfg: dict) -> dict:
    cfg = {**cfg, "spawned_at": time.time()}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=child_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"our run {cfg['label']} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if not result["first"]["success"]:
        raise RuntimeError(f"our run {cfg['label']} did not succeed: {result['first']['errors']}")
    if CODE.is_dir() and not result["module"].startswith(str(CODE)):
        raise RuntimeError(f"our run {cfg['label']} imported {result['module']}, not the snapshot in {CODE}")
    return result



def braze_settings(**extra: Any) -> dict:
    return {"type": "braze", "rest_endpoint": {"env": "BRAZE_REST_ENDPOINT"}, "api_key": {"env": "BRAZE_API_KEY"}, **extra}


def webhook_settings(**extra: Any) -> dict:
    return {"type": "webhook", "url": {"env": "HOOK_URL"}, "secret": {"env": "HOOK_SECRET"}, **extra}


def ours_row(label: str, tool_setup: str, sink: str, run: dict, server: dict | None, probe: dict,
             expected: int) -> dict:
    sync = run["sync"]
    rows = int(sync.get("added", 0)) + int(sync.get("updated", 0)) + int(sync.get("removed", 0))
    deliver_cpu = probe.get("deliver_process_cpu", {}).get("total_s")
    return {
        "label": label, "tool": "composable", "setup": tool_setup, "sink": sink, "expected": expected,
        "rows": rows, "requests": int(sync.get("requests", 0)), "batches": int(sync.get("batches", 0)),
        "sync_s": float(sync.get("duration_seconds", 0.0)), "rows_per_s": float(sync.get("rows_per_second", 0.0)),
        "pipeline_s": run["pipeline_s"], "process_s": run.get("process_s"), "import_s": run.get("import_s"),
        "client_cpu_s": run["cpu_s"], "deliver_cpu_s": deliver_cpu, "server_cpu_s": (server or {}).get("cpu_s"),
        "r429": int((server or {}).get("statuses", {}).get("429", 0)),
        "retries": int(sync.get("retries", 0)), "rate_limit_wait_s": float(sync.get("rate_limit_wait_seconds", 0.0)),
        "server": server, "probe": probe,
    }


def drt_row(label: str, tool_setup: str, sink: str, run: dict, server: dict, expected: int) -> dict:
    return {
        "label": label, "tool": "drt", "setup": tool_setup, "sink": sink, "expected": expected,
        "rows": run["rows"], "requests": server["requests"], "batches": None,
        "sync_s": run["sync_s"], "rows_per_s": run["rows"] / run["sync_s"] if run["sync_s"] else 0.0,
        "pipeline_s": run["pipeline_s"], "process_s": run["process_s"], "import_s": None,
        "client_cpu_s": run["cpu_s"], "deliver_cpu_s": None, "server_cpu_s": server.get("cpu_s"),
        "r429": int(server.get("statuses", {}).get("429", 0)), "retries": None, "rate_limit_wait_s": None,
        "server": server, "probe": None,
    }


BRAZE = "Braze fake"
SINK = "HTTP sink"
WHATIFS = [  # label suffix, Probe what-if, description
    ("group-commit", "group_commit", "one ack INSERT per 8 batches"),
    ("quiet-progress", "quiet_progress", "progress log at most once a second"),
    ("both", "group_commit+quiet_progress", "both of the above"),
    ("bound", "no_checkpoint+quiet_progress", "acks once at the end + quiet progress (upper bound)"),
]


class Bench:
    def __init__(self, args: argparse.Namespace, console):
        self.args = args
        self.console = console
        self.source_db = WORK / "source.duckdb"
        self.rows: dict[str, list[dict]] = collections.defaultdict(list)
        self.extra: dict[str, Any] = {}
        self.drt: dict = {}

    def add(self, row: dict) -> None:
        self.rows[row["label"]].append(row)
        rate = f"{row['rows_per_s']:,.0f} rows/s" if row["rows"] else f"{row['pipeline_s']:.2f} s whole run"
        self.console.print(f"  [dim]{row['label']}: {row['rows']:,} rows, {rate}[/]")

    def prepare(self) -> None:
        import duckdb

        with duckdb.connect(str(self.source_db)) as con:
            con.execute(people_sql(self.args.members))

    def ours(self, label: str, *, destination: str, settings: dict, url_env: str, env: dict, urls: list[str] = (),
             workdir: str | None = None, **cfg: Any) -> dict:
        return spawn_ours({
            "label": label, "workdir": str(WORK / (workdir or label)), "source_db": str(self.source_db),
            "destination": destination, "settings": settings, "url_env": url_env, "env": env, "urls": list(urls), **cfg,
        })

    def ours_pair(self, label: str, setup: str, sink_kind: str, rerun: bool, **common: Any) -> dict:
        """A first sync in a fresh process and, if asked, the next day's sync in another one (nothing changed)."""
        sink = BRAZE if sink_kind == "braze" else SINK
        suffix = "" if sink_kind == "braze" else "/hook"
        extra = {key: common.pop(key) for key in ("whatif", "profile", "cprofile", "instance") if key in common}
        with ServerProcess(sink_kind, env=child_env()) as server:
            result = self.ours(label, urls=[server.url + suffix], **common, **extra)
            stats = server.stop()
        self.add(ours_row(label, setup, sink, result["first"], stats, result["probe"], self.args.members))
        if rerun:
            with ServerProcess(sink_kind, env=child_env()) as server:
                again = self.ours(f"{label}.rerun", urls=[server.url + suffix], workdir=label, fresh=False, day=DAY2,
                                  **common)
                stats = server.stop()
            self.add(ours_row(f"{label}.rerun", setup, sink, again["first"], stats, again["probe"], 0))
        return result

    # A: no rate limit. The fake in a process of its own (the reference run), or in the syncing process.
    def scenario_a(self, label: str = "A.ours", setup: str = "braze 75 × 8 (defaults)", rerun: bool = True,
                   **cfg: Any) -> dict:
        return self.ours_pair(label, setup, "braze", rerun, destination="braze", settings=braze_settings(),
                              url_env="BRAZE_REST_ENDPOINT", env={"BRAZE_API_KEY": API_KEY}, **cfg)

    def scenario_a_inprocess(self) -> None:
        result = self.ours("A.ours.fake-in-process", destination="braze", settings=braze_settings(),
                           url_env="BRAZE_REST_ENDPOINT", env={"BRAZE_API_KEY": API_KEY}, inprocess_fake=True)
        self.add(ours_row("A.ours.fake-in-process", "braze 75 × 8, fake in the syncing process", BRAZE,
                          result["first"], result["server"], result["probe"], self.args.members))

    def scenario_a_diagnostics(self) -> None:
        result = self.scenario_a("A.ours.sampled", "braze 75 × 8, stack sampler on", rerun=False, profile=True)
        self.extra["profile"] = result["profile"]
        result = self.scenario_a("A.ours.cprofile", "braze 75 × 8, cProfile (thread CPU) on", rerun=False,
                                 cprofile=True)
        self.extra["cprofile"] = {**result["cprofile"], "environ_size": result["environ_size"]}
        self.scenario_a("A.ours.sqlite-instance", "braze 75 × 8, Dagster instance in SQLite files (DAGSTER_HOME)",
                        rerun=False, instance="sqlite")
        # Group commit and the quiet progress log are built in now; the what-ifs measured them before they were.
        for name, whatif, setup in WHATIFS if self.args.whatifs else ():
            self.scenario_a(f"A.ours.whatif-{name}", f"what-if: {setup}", rerun=False, whatif=whatif)

    # B: a realistic limit
    def scenario_b(self) -> None:
        window = self.args.limit_window
        for limit in self.args.limit_requests:
            label = f"B.ours.{limit}"
            settings = braze_settings(track_limit={"requests": limit, "window_seconds": window})
            with ServerProcess("braze", rate_limit=limit, window=window, env=child_env()) as server:
                result = self.ours(label, destination="braze", settings=settings, url_env="BRAZE_REST_ENDPOINT",
                                   env={"BRAZE_API_KEY": API_KEY}, urls=[server.url])
                stats = server.stop()
            row = ours_row(label, f"braze 75 × 8, track_limit {limit} / {window:g} s",
                           f"{BRAZE}, {limit} / {window:g} s", result["first"], stats, result["probe"],
                           self.args.members)
            row["budget"] = budget_analysis(stats, limit, window)
            self.add(row)

    # C: drt against the same Braze fake
    def scenario_c_ours_sequential(self) -> None:
        with ServerProcess("braze", env=child_env()) as server:
            result = self.ours("C.ours.c1", destination="braze", settings=braze_settings(concurrency=1),
                               url_env="BRAZE_REST_ENDPOINT", env={"BRAZE_API_KEY": API_KEY}, urls=[server.url])
            stats = server.stop()
        self.add(ours_row("C.ours.c1", "braze 75 × 1 (one request at a time, as drt)", BRAZE, result["first"], stats,
                          result["probe"], self.args.members))

    def drt_pair(self, label: str, setup: str, sink_kind: str, expected: tuple[int, int | None], **project: Any) -> None:
        """drt's first run and, when `expected` has a second count, a re-run with nothing changed."""
        root = WORK / label
        previous_url = ""
        for part, count in zip(("first", "rerun"), expected):
            if count is None:
                continue
            with ServerProcess(sink_kind, env=child_env()) as server:
                url = server.url + ("/users/track" if sink_kind == "braze" else "/hook")
                if part == "first":
                    drt_project(root, self.source_db, label.replace(".", "_").replace("-", "_"), url=url, **project)
                else:  # the same project and state; only the server (a fresh one, for clean counts) is new
                    sync_file = next((root / "syncs").glob("*.yml"))
                    sync_file.write_text(sync_file.read_text().replace(previous_url, url))
                previous_url = url
                run = run_drt(self.drt["drt"], root, child_env())
                stats = server.stop()
            name = label if part == "first" else f"{label}.rerun"
            self.add(drt_row(name, setup, BRAZE if sink_kind == "braze" else SINK, run, stats, count))

    def scenario_c_drt(self) -> None:
        n = self.args.members
        braze = dict(headers={"Authorization": f"Bearer {API_KEY}"}, per_request=75)
        self.drt_pair("C.drt.full", "rest_api 75/request, mode full", "braze", (n, n), body=BRAZE_BODY_FULL,
                      mode="full", engine_batch=DRT_ENGINE_BATCH, **braze)
        self.drt_pair("C.drt.cursor", "rest_api 75/request, mode incremental (cursor updated_at), per-field template",
                      "braze", (n, 0), body=BRAZE_BODY_FIELDS, mode="incremental", engine_batch=DRT_ENGINE_BATCH, **braze)
        small = min(n, DRT_SMALL_BATCH_ROWS)
        self.drt_pair("C.drt.batch75", f"rest_api 75/request, mode full, sync.batch_size 75 ({small:,} rows)",
                      "braze", (small, None), body=BRAZE_BODY_FULL, mode="full", engine_batch=75, limit=small, **braze)

    # D: the same tiny HTTP sink for our webhook destination and drt's rest_api
    def scenario_d(self) -> None:
        n = self.args.members
        for label, concurrency, rerun in (("D.ours.c4", 4, True), ("D.ours.c1", 1, False)):
            setup = f"webhook 100 × {concurrency}" + (" (defaults: 100 rows, 4 in flight)" if concurrency == 4 else "")
            self.ours_pair(label, setup, "sink", rerun, destination="hook",
                           settings=webhook_settings(concurrency=concurrency), url_env="HOOK_URL",
                           env={"HOOK_SECRET": HOOK_SECRET})
        if self.args.skip_drt:
            return
        self.drt_pair("D.drt.full", "rest_api 100/request, mode full", "sink", (n, n), headers={}, per_request=100,
                      body=HOOK_BODY, mode="full", engine_batch=DRT_ENGINE_BATCH)

    def checks(self) -> list[str]:
        """Every run delivered what it should; on the Braze fake, ours and drt left the same profiles."""
        problems, digests = [], {}
        for label, runs in self.rows.items():
            for row in runs:
                server = row["server"] or {}
                if row["rows"] != row["expected"] or server.get("distinct_keys", row["expected"]) != row["expected"]:
                    problems.append(f"{label}: {row['rows']:,} rows reported, {server.get('distinct_keys')} distinct "
                                    f"keys at the sink, expected {row['expected']:,}")
                if row["r429"] or (row["retries"] or 0):
                    problems.append(f"{label}: {row['r429']} responses 429, {row['retries']} retries")
                if server.get("users_digest") and row["rows"] == self.args.members:
                    digests.setdefault(server["users_digest"], set()).add(label)
        if len(digests) > 1:
            problems.append(f"the Braze fake ended with different profiles: {digests}")
        self.extra["braze_digests"] = {digest: sorted(labels) for digest, labels in digests.items()}
        return problems


def budget_analysis(stats: dict, limit: int, window: float) -> dict:
    """Accepted requests per fixed window against the budget; the first and last windows are partial."""
    counts = {int(k): v for k, v in stats["windows_accepted"].items()}
    if not counts:
        return {"limit": limit, "window_s": window, "full_windows": [], "pct_of_budget": None}
    first, last = min(counts), max(counts)
    full = [counts.get(i, 0) for i in range(first + 1, last)]
    span = (stats["last"] - stats["first"]) if stats["first"] is not None else 0.0
    accepted = sum(counts.values())
    return {
        "limit": limit,
        "window_s": window,
        "full_windows": full,
        "pct_of_budget": 100 * statistics.fmean(full) / limit if full else None,
        "min_pct_of_budget": 100 * min(full) / limit if full else None,
        "first_window": counts[first],
        "last_window": counts[last],
        "accepted_requests": accepted,
        "span_s": span,
        "overall_req_per_s": accepted / span if span else None,
        "budget_req_per_s": limit / window,
        "max_requests_in_window": stats["max_requests_in_window"],
        "ideal_rows_per_s": 75 * limit / window,
    }


def best(runs: list[dict]) -> dict:
    """The fastest of the repeats (the least disturbed); re-runs by whole-run time. The spread goes beside it."""
    measure = "sync_s" if runs[0]["expected"] else "pipeline_s"
    chosen = dict(min(runs, key=lambda r: r[measure]))
    chosen["repeats"] = len(runs)
    chosen[f"{measure}_summary"] = summary(r[measure] for r in runs)
    chosen["client_cpu_s_summary"] = summary(r["client_cpu_s"] for r in runs)
    return chosen


def machine(drt: dict) -> dict:
    """The machine, our versions and drt's (from its own virtualenv)."""
    return {
        **machine_info(),
        "versions": versions(("composable_assets", "dagster", "duckdb", "requests", "pycurl")),
        "drt_versions": drt.get("versions"),
    }


# --- Report. ---------------------------------------------------------------------------------------------------


MAIN_ORDER = ["A.ours", "A.ours.fake-in-process", "A.ours.sqlite-instance", "B.*", "C.ours.c1", "C.drt.full",
              "C.drt.cursor", "C.drt.batch75", "D.ours.c4", "D.ours.c1", "D.drt.full", "A.ours.rerun",
              "C.drt.full.rerun", "C.drt.cursor.rerun", "D.ours.c4.rerun", "D.drt.full.rerun"]
DIAG_ORDER = ["A.ours", "A.ours.fake-in-process", "A.ours.sqlite-instance", "A.ours.sampled", "A.ours.cprofile",
              *(f"A.ours.whatif-{name}" for name, _, _ in WHATIFS)]
MAIN_HEADER = ["run", "tool", "setup", "sink", "rows sent", "requests", "sync s", "rows/s", "whole run s",
               "process s", "client CPU s", "sink CPU s", "429s"]
COMPARE = [  # sink, first run, re-run
    (BRAZE, "A.ours", "A.ours.rerun"),
    (BRAZE, "C.ours.c1", None),
    (BRAZE, "C.drt.full", "C.drt.full.rerun"),
    (BRAZE, "C.drt.cursor", "C.drt.cursor.rerun"),
    (BRAZE, "C.drt.batch75", None),
    (SINK, "D.ours.c4", "D.ours.c4.rerun"),
    (SINK, "D.ours.c1", None),
    (SINK, "D.drt.full", "D.drt.full.rerun"),
]
COMPARE_HEADER = ["sink", "tool", "setup", "first sync rows/s", "first sync s", "first: whole run s",
                  "first: process s", "re-run rows sent", "re-run whole run s", "re-run process s"]


def b_labels(by: dict[str, dict]) -> list[str]:
    return sorted((label for label in by if label.startswith("B.")), key=lambda label: by[label]["budget"]["limit"])


def main_rows(by: dict[str, dict]) -> list[list[str]]:
    out = []
    labels = [x for label in MAIN_ORDER for x in (b_labels(by) if label == "B.*" else [label])]
    for label in labels:
        r = by.get(label)
        if r is None:
            continue
        sink_cpu = "(in client)" if label == "A.ours.fake-in-process" else fmt(r["server_cpu_s"], ".2f")
        out.append([
            label, r["tool"], r["setup"], r["sink"], fmt(r["rows"]), fmt(r["requests"]), fmt(r["sync_s"], ".2f"),
            fmt(r["rows_per_s"]) if r["rows"] else "–", fmt(r["pipeline_s"], ".2f"),
            fmt(r["process_s"], ".2f"), fmt(r["client_cpu_s"], ".2f"), sink_cpu, fmt(r["r429"]),
        ])
    return out


def compare_rows(by: dict[str, dict]) -> list[list[str]]:
    out = []
    for sink, first, rerun in COMPARE:
        f, r = by.get(first), by.get(rerun) if rerun else None
        if f is None:
            continue
        out.append([
            sink, f["tool"], f["setup"], fmt(f["rows_per_s"]), fmt(f["sync_s"], ".2f"), fmt(f["pipeline_s"], ".2f"),
            fmt(f["process_s"], ".2f"), fmt(r["rows"]) if r else "not run", fmt(r["pipeline_s"], ".2f") if r else "–",
            fmt(r["process_s"], ".2f") if r else "–",
        ])
    return out


def diag_rows(by: dict[str, dict]) -> list[list[str]]:
    out = []
    for label in DIAG_ORDER:
        r = by.get(label)
        if r is None:
            continue
        p = r["probe"]
        wall = p["deliver"]["total_s"]
        cpu = p.get("deliver_process_cpu", {}).get("total_s", 0.0)
        out.append([
            label, r["setup"], fmt(r["sync_s"], ".2f"), fmt(r["rows_per_s"]), fmt(cpu, ".2f"),
            f"{cpu / wall:.2f}" if wall else "–", fmt(1000 * cpu / max(r["requests"], 1), ".2f"),
            fmt(p.get("record_ack", {}).get("total_s"), ".2f"), fmt(p.get("progress_log", {}).get("total_s"), ".2f"),
            "(in client)" if label == "A.ours.fake-in-process"
            else fmt(1000 * (r["server_cpu_s"] or 0) / max(r["requests"], 1), ".2f"),
        ])
    return out


DIAG_HEADER = ["run", "setup", "sync s", "rows/s", "client CPU s in deliver", "cores busy (CPU / wall)",
               "client CPU ms / request", "checkpoint INSERT s", "progress log s", "fake CPU ms / request"]


def time_split(row: dict) -> list[tuple[str, float, str]]:
    """Where the delivery loop's main thread spent deliver()'s wall time (Probe timers)."""
    p = row["probe"]

    def get(name: str, field: str = "total_s") -> float:
        return p.get(name, {}).get(field, 0.0)

    parts = [
        ("running transfers while waiting for the oldest batch (one thread sends every batch)", get("run_transfers"),
         f"{get('run_transfers', 'n'):,.0f} rounds, own thread CPU {get('run_transfers', 'cpu_s'):.2f} s"),
        ("waiting for the oldest batch's response", get("wait_for_batch"),
         f"{get('wait_for_batch', 'n'):,.0f} waits, p50 {get('wait_for_batch', 'p50_ms'):.2f} ms, "
         f"p95 {get('wait_for_batch', 'p95_ms'):.2f} ms"),
        ("checkpoint INSERT per batch (record_ack)", get("record_ack"),
         f"{get('record_ack', 'n'):,.0f} calls, mean {get('record_ack', 'mean_ms'):.2f} ms, p50 "
         f"{get('record_ack', 'p50_ms'):.2f}, p95 {get('record_ack', 'p95_ms'):.2f}, max {get('record_ack', 'max_ms'):.1f}; "
         f"own thread CPU {1000 * get('record_ack', 'cpu_s') / max(get('record_ack', 'n'), 1):.2f} ms a call"),
        ("rest of _checkpoint (counting, sample)", get("checkpoint") - get("record_ack"), ""),
        ("read delta chunks (DuckDB → Arrow → Records)", get("read_chunk"),
         f"of which records_from_rows (json.loads of _fields) {get('records_from_rows'):.2f} s"),
        ("submit batches to the sender pool", get("submit"), f"{get('submit', 'n'):,.0f} submits"),
        ("progress log per batch (context.log.debug → Dagster event log)", get("progress_log"),
         f"{get('progress_log', 'n'):,.0f} messages, mean {get('progress_log', 'mean_ms'):.2f} ms, own thread CPU "
         f"{1000 * get('progress_log', 'cpu_s') / max(get('progress_log', 'n'), 1):.2f} ms a message"),
        ("fold acks into the ledger (start and end)", get("fold_acks"), ""),
    ]
    if get("record_intent", "n"):
        parts.append(("in-flight intent rows (record_intent)", get("record_intent"),
                      f"{get('record_intent', 'n'):,.0f} calls, mean {get('record_intent', 'mean_ms'):.2f} ms"))
    if get("_confirm_leftovers", "n") or get("clear_intents", "n"):
        parts.append(("leftover check and intent cleanup", get("_confirm_leftovers") + get("clear_intents"), ""))
    parts.append(("loop itself and GIL waits between the steps", get("deliver") - sum(v for _, v, _ in parts), ""))
    return parts


def profile_rows(profile: dict) -> list[list[str]]:
    out = []
    for role in ("main", "senders", "fake server (in process)", "other"):
        data = profile["roles"].get(role)
        if not data:
            continue
        samples = data["samples"] or 1
        top = ", ".join(f"{name} {100 * n / samples:.0f}%" for name, n in list(data["buckets"].items())[:6])
        out.append([role, str(data["threads"]), f"{data['cpu_s']:.2f}", top])
    return out


def cprofile_rows(report: dict) -> list[list[str]]:
    steps = report.get("steps_cpu_s", {})
    return [[name, f"{seconds:.2f}"] for name, seconds in steps.items()]


def budget_sentence(b: dict, row: dict) -> str:
    if not b.get("full_windows"):
        return (f"No full {b['window_s']:g} s window at this size ({row['requests']} requests in all): use more members "
                "to measure the budget.")
    return (f"Accepted requests per full window: {b['full_windows']} → **{fmt(b['pct_of_budget'], '.1f')}% of the "
            f"budget** (worst window {fmt(b['min_pct_of_budget'], '.1f')}%; target ≥ 90%). The first and last windows "
            f"are partial ({b['first_window']} and {b['last_window']} requests). Over the whole span "
            f"{fmt(b['overall_req_per_s'], '.1f')} requests/s against a budget of {b['budget_req_per_s']:.1f}/s; most "
            f"requests the fake counted in one window: {b['max_requests_in_window']}; 429s: {row['r429']}; client "
            f"waited {row['rate_limit_wait_s']:.1f} s for the budget. Rows/s {row['rows_per_s']:,.0f}, of the "
            f"{b['ideal_rows_per_s']:,.0f} the budget allows at 75 rows a request."
            + (" The client never waited for the budget: the shortfall is its own speed (see A), not the limiter."
               if (b.get("pct_of_budget") or 100) < 90 and row["rate_limit_wait_s"] < 1 else ""))


def summary_lines(by: dict[str, dict], members: int) -> list[str]:
    """The headline figures, computed from this run."""
    lines = ["## Summary", ""]
    a = by.get("A.ours")
    if a:
        p, total = a["probe"], a["probe"]["deliver"]["total_s"]
        busy = sum(p.get(name, {}).get("total_s", 0.0) for name in ("record_ack", "progress_log", "record_intent"))
        inflight = p.get("send_batch", {}).get("total_s", 0.0) / total
        lines.append(f"- **A, no limit**: {a['rows_per_s']:,.0f} rows/s for the sync step ({a['requests']:,} requests "
                     f"of ≤ 75 rows in {a['sync_s']:.1f} s), {a['pipeline_s']:.1f} s for the whole run. The delivery "
                     f"loop's single thread spends {100 * busy / total:.0f}% of the sync in per-batch writes (the "
                     f"checkpoint INSERT, the progress message, intent rows), so on average {inflight:.2f} of the 8 "
                     "allowed batches are in flight.")
        inproc, sqlite_i = by.get("A.ours.fake-in-process"), by.get("A.ours.sqlite-instance")
        if inproc:
            lines.append(f"- With the fake in the syncing process: {inproc['rows_per_s']:,.0f} rows/s"
                         + (f"; with the Dagster instance in SQLite files (as `composable sync` with DAGSTER_HOME): "
                            f"{sqlite_i['rows_per_s']:,.0f} rows/s" if sqlite_i else "") + ".")
        fixes = [by[k] for k in ("A.ours.whatif-group-commit", "A.ours.whatif-quiet-progress", "A.ours.whatif-both")
                 if k in by]
        if fixes:
            lines.append("- What-ifs (patched in the benchmark only): " + "; ".join(
                f"{r['setup'].removeprefix('what-if: ')} → {r['rows_per_s']:,.0f} rows/s "
                f"({r['rows_per_s'] / a['rows_per_s']:.1f}×)" for r in fixes) + ".")
    for label in b_labels(by):
        b, row = by[label]["budget"], by[label]
        lines.append(f"- **B, {b['limit']} requests / {b['window_s']:g} s**: {fmt(b['pct_of_budget'], '.1f')}% of the "
                     f"budget in the full windows (worst {fmt(b.get('min_pct_of_budget'), '.1f')}%), {row['r429']} "
                     f"429s, {row['rows_per_s']:,.0f} rows/s.")
    pairs = [("A.ours", "C.drt.full", "Braze fake"), ("D.ours.c4", "D.drt.full", "HTTP sink")]
    for ours, drt, sink in pairs:
        if ours in by and drt in by:
            o, d = by[ours], by[drt]
            lines.append(f"- **vs drt, {sink}**: first sync {o['rows_per_s']:,.0f} rows/s (ours) against "
                         f"{d['rows_per_s']:,.0f} (drt, {d['rows_per_s'] / o['rows_per_s']:.1f}×).")
    if "A.ours.rerun" in by and "C.drt.full.rerun" in by:
        o, d, c = by["A.ours.rerun"], by["C.drt.full.rerun"], by.get("C.drt.cursor.rerun")
        lines.append(f"- **Re-run, nothing changed**: ours sends {o['rows']:,} rows ({o['pipeline_s']:.2f} s whole run, "
                     f"{o['process_s']:.2f} s as a fresh process); drt's full mode resends {d['rows']:,} "
                     f"({d['pipeline_s']:.2f} s, {d['process_s']:.2f} s)"
                     + (f"; drt's cursor mode sends {c['rows']:,} ({c['pipeline_s']:.2f} s, {c['process_s']:.2f} s) "
                        "but cannot see changes that leave its cursor alone, nor members who left" if c else "")
                     + ".")
    return [*lines, ""]


def markdown(report: dict) -> str:
    m = report["machine"]
    v = m["versions"]
    drt_v = m.get("drt_versions") or {}
    by = {r["label"]: r for r in report["rows"]}
    lines = [
        "# Delivery benchmark",
        "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM · Python {m['python']} · "
        f"composable_assets {v['composable_assets']}, Dagster {v['dagster']}, DuckDB {v['duckdb']}, requests "
        f"{v['requests']}"
        + (f" · drt-core {drt_v.get('drt-core')} (httpx {drt_v.get('httpx')}, its own virtualenv)" if drt_v else "")
        + f" · load average {report['load_before']} before, {report['load_after']} after · "
        f"{report['members']:,} members · A, C and D: best of {report['repeat']} · whole benchmark "
        f"{report['elapsed_s']:.0f} s",
        "",
        f"Code measured: composable_assets at commit {report['code']['head']}"
        + (f" plus uncommitted changes to {', '.join(f'`{f}`' for f in report['code']['uncommitted'])}"
           if report["code"]["uncommitted"] else "")
        + f" (copied at the start of the run; digest {report['code']['digest']}).",
        "",
        *summary_lines(by, report["members"]),
        "## Same data, same sink: composable and drt",
        "",
        *md_table(COMPARE_HEADER, compare_rows(by), 3),
        "",
    ]
    if report.get("drt_error"):
        lines += [f"**drt was not measured**: {report['drt_error']}", ""]
    lines += ["## Every run", "", *md_table(MAIN_HEADER, main_rows(by), 4), "",
              "- **sync s, rows/s**: the sync step alone. Ours: the sync materialization's `duration_seconds` and "
              "`rows_per_second` (reading the delta, sending, checkpointing). drt: its per-sync `duration_seconds` "
              "(reading the source table, rendering, sending).",
              "- **whole run s**: ours, model → audience → delta → sync, `run_selection` in a process that has "
              "already imported Dagster; drt, `total_duration_seconds` of `drt run`.",
              "- **process s**: a fresh interpreter to the end of the first run, imports included (ours imports "
              f"Dagster first: {fmt(by.get('A.ours', {}).get('import_s'), '.1f')} s).",
              "- **client CPU s**: ours, the CPU of `run_selection` (all threads; the fake too in "
              "`A.ours.fake-in-process`); drt, the whole `drt run` process, imports included. **sink CPU s**: the "
              "server process while it served.", ""]
    if b_labels(by):
        a = by.get("A.ours")
        capacity = a["requests"] / a["sync_s"] if a and a["sync_s"] else None
        lines += ["## B: a realistic limit on /users/track", "",
                  f"Braze documents 3,000 requests / 3 s per workspace; scaled down to what this machine can serve "
                  f"(A.ours, unlimited, sent {fmt(capacity, '.0f')} requests/s). The destination's `track_limit` is "
                  "set to the fake's budget, as a user would copy it from Braze's docs.", ""]
        for label in b_labels(by):
            b = by[label]["budget"]
            lines += [f"**{b['limit']} requests / {b['window_s']:g} s** ({b['budget_req_per_s']:.0f}/s, "
                      f"{fmt(100 * b['budget_req_per_s'] / capacity if capacity else None, '.0f')}% of the unlimited "
                      f"rate): {budget_sentence(b, by[label])}", ""]
    a = by.get("A.ours")
    if a:
        total = a["probe"]["deliver"]["total_s"]
        send = a["probe"].get("send_batch", {})
        lines += ["## A: where the time goes", "",
                  f"The delivery loop's main thread in `A.ours` (timers around each step; deliver() {total:.2f} s):",
                  "", "| step | s | share | detail |", "|---|---:|---:|---|"]
        for name, seconds, detail in time_split(a):
            lines.append(f"| {name} | {seconds:.2f} | {100 * seconds / total:.0f}% | {detail} |")
        lines += ["", f"Batches in flight on average: {send.get('total_s', 0) / total:.2f} of 8 (the senders' busy "
                  f"time / deliver time); one batch's send takes {send.get('mean_ms', 0):.1f} ms on average (p95 "
                  f"{send.get('p95_ms', 0):.1f} ms).", "",
                  "Variants of A (same data, same fake in its own process, except the second row):", "",
                  *md_table(DIAG_HEADER, diag_rows(by), 2), ""]
    prof = report.get("profile")
    if prof:
        pr = by.get("A.ours.sampled")
        lines += [f"Stack samples of every thread while deliver() runs (`A.ours.sampled`, every "
                  f"{1000 * prof['interval_s']:.0f} ms, {prof['ticks']:,} ticks; sampling slows that run to "
                  f"{pr['rows_per_s']:,.0f} rows/s). Shares of wall-clock samples; a thread waiting for the GIL is "
                  "counted where it stopped. CPU is the threads' own CPU time.", "",
                  *md_table(["thread", "threads", "CPU s", "where its samples are"], profile_rows(prof), 4), ""]
    cp = report.get("cprofile")
    if cp:
        pr = by.get("A.ours.cprofile")
        lines += [f"Thread CPU by step (`A.ours.cprofile`: cProfile with each thread's CPU clock; it inflates "
                  f"Python-heavy code and slows the run to {pr['rows_per_s']:,.0f} rows/s, so compare shares, not "
                  f"seconds; the process had {cp.get('environ_size')} environment variables, which a requests session "
                  "that trusts the environment reads on every request):", "", *md_table(["step", "CPU s (subcalls included)"], cprofile_rows(cp), 1), "",
                  "Functions with the most own CPU:", "",
                  *md_table(["function", "calls", "own CPU s", "with subcalls s"],
                            [[t["function"].replace("|", "\\|"), f"{t['calls']:,}", f"{t['tottime_s']:.2f}",
                              f"{t['cumtime_s']:.2f}"] for t in cp["top_tottime"][:12]], 1), ""]
    if report.get("problems"):
        lines += ["## Problems", "", *(f"- {p}" for p in report["problems"]), ""]
    lines += [
        "## Method",
        "",
        f"- Data: a table `people` of {report['members']:,} rows (id, email, name, score, updated_at) built in SQL "
        "once and copied for every run, so each run starts with an empty ledger (ours) or empty state (drt). Ours "
        "syncs the audience `members` (every row) in mode upsert, identifier external_id = id, fields email, name, "
        "score; drt selects the same columns (`CAST(id AS VARCHAR) AS external_id`) and posts the same "
        "/users/track body. On the Braze fake both leave identical profiles (checked by a digest of the fake's "
        "users).",
        "- Each of our runs is a fresh Python process running `run_selection` in-process, as `composable sync` "
        "does, with a throwaway Dagster instance. Each server is a fresh process of its own: the same `BrazeFake` "
        "as `python -m composable_assets_tests.fakes braze --no-rate-limit` (or with the limit of B), or a "
        "ThreadingHTTPServer that counts rows and answers 200 (no signature check). `A.ours.fake-in-process` "
        "starts the fake inside the syncing process instead, as the tests do.",
        "- drt runs as its CLI, `drt run --output json`, from its own virtualenv, HOME pointing at a scratch "
        "~/.drt/profiles.yml (a DuckDB profile), telemetry off. Its REST destination sends one request at a time "
        "(`body_mode: batch`, `max_records_per_request`); pacing is off (`rate_limit.requests_per_second: 0`; the "
        f"default is 10 requests/s). `sync.batch_size` {DRT_ENGINE_BATCH}: each destination.load() opens a new "
        "httpx.Client, so a small engine batch pays a new connection per batch (the `C.drt.batch75` row).",
        "- Re-run: the next day, nothing changed. Ours computes the delta (0 rows) and sends nothing. drt's full "
        "mode resends every row; its incremental mode (cursor on updated_at) sends the rows past the stored "
        "watermark, here none, but it misses a change that does not move the cursor and never sees a member who "
        "left.",
        "- Timers (all runs of ours) wrap the delivery loop's steps in the child process only; two clock reads a "
        "call. The what-if runs patch the package in their own process only: the per-batch ack INSERT becomes one "
        "multi-row INSERT per 8 acknowledged batches (group commit) or one at the end; the per-batch progress "
        "message (`context.log.debug`, one Dagster event each) is sent at most once a second. They measure "
        "proposed changes; they are not settings of the platform.",
        "- Runs use a throwaway in-memory Dagster instance, except `A.ours.sqlite-instance`, whose runs and "
        "events go to SQLite files as with `DAGSTER_HOME` set (`make demo`, `composable sync`, the UI).",
        "",
    ]
    return "\n".join(lines)


# --- CPU per delivered row: the sync step against drt, interleaved rounds (`--cpu-rounds`). ------------------------

BRAZE_CEILING = 75_000  # objects/s: Braze's published /users/track ceiling (3,000 requests / 3 s x 75 objects)


def postgres_database(bench: Bench, name: str) -> str | None:
    """With `--warehouse postgres`: the URL of a database of that name on the server `--postgres` names."""
    return f"{bench.args.postgres.rstrip('/')}/{name}" if bench.args.warehouse == "postgres" else None


def cpu_round_ours(bench: Bench, round_no: int) -> dict:
    """A first sync of every member to the Braze fake (75 x 8), the sync step's own process CPU from the probe."""
    label = f"cpu.ours.{round_no}"
    server_warehouse = {"warehouse_url": url} if (url := postgres_database(bench, "bench_delivery_ours")) else {}
    with ServerProcess("braze", env=child_env()) as server:
        result = bench.ours(label, destination="braze", settings=braze_settings(), url_env="BRAZE_REST_ENDPOINT",
                            env={"BRAZE_API_KEY": API_KEY}, urls=[server.url], **server_warehouse)
        stats = server.stop()
    row = ours_row(label, "braze 75 × 8 (defaults)", BRAZE, result["first"], stats, result["probe"],
                   bench.args.members)
    probe = result["probe"]
    row["sync_cpu_s"] = probe["sync_step_process_cpu"]["total_s"]
    row["deliver_cpu_s"] = probe["deliver_process_cpu"]["total_s"]
    return row


def cpu_round_drt(bench: Bench, round_no: int, rows: int) -> dict:
    """`drt run` (full mode, 75 per request) to the Braze fake; with rows=0 it measures drt's fixed cost."""
    label = f"cpu.drt{'' if rows else '0'}.{round_no}"
    root = WORK / label
    postgres = None
    if url := postgres_database(bench, "bench_delivery_drt"):
        copy_to_postgres(str(bench.source_db), url)
        parts = urlsplit(url)
        postgres = {"host": parts.hostname, "port": parts.port or 5432, "user": parts.username,
                    "dbname": parts.path.lstrip("/")}
    with ServerProcess("braze", env=child_env()) as server:
        drt_project(root, bench.source_db, "cpu_drt", url=server.url + "/users/track",
                    headers={"Authorization": f"Bearer {API_KEY}"}, per_request=75, body=BRAZE_BODY_FULL,
                    mode="full", engine_batch=DRT_ENGINE_BATCH, limit=None if rows == bench.args.members else rows,
                    postgres=postgres)
        run = run_drt(bench.drt["drt"], root, child_env())
        stats = server.stop()
    shutil.rmtree(root, ignore_errors=True)
    return drt_row(label, "rest_api 75/request, mode full", BRAZE, run, stats, rows)


def cpu_compare(bench: Bench, count: int) -> dict:
    """Interleaved rounds of ours, drt and drt with no rows; medians (min-max) of CPU per delivered row."""
    runs: dict[str, list[dict]] = collections.defaultdict(list)
    n = bench.args.members
    sides = ["ours", "drt", "drt0"] if bench.drt.get("drt") else ["ours"]
    for round_no, side in rounds(count, sides):
        if side == "ours":
            row = cpu_round_ours(bench, round_no)
        else:
            row = cpu_round_drt(bench, round_no, n if side == "drt" else 0)
        runs[side].append(row)
        bench.console.print(f"  [dim]round {round_no} {side}: {row['rows']:,} rows, {row['rows_per_s']:,.0f} rows/s, "
                            f"CPU {row.get('sync_cpu_s', row['client_cpu_s']):.2f} s[/]")
    ours, drt, drt0 = runs["ours"], runs.get("drt", []), runs.get("drt0", [])
    fixed = statistics.median(r["client_cpu_s"] for r in drt0) if drt0 else None

    def per_row(seconds: float, rows: int) -> float:
        return 1e6 * seconds / rows if rows else float("nan")

    out: dict[str, Any] = {
        "rounds": count, "members": n, "warehouse": bench.args.warehouse,
        "ours_sync_cpu_us": summary(per_row(r["sync_cpu_s"], r["rows"]) for r in ours),
        "ours_deliver_cpu_us": summary(per_row(r["deliver_cpu_s"], r["rows"]) for r in ours),
        "ours_run_cpu_us": summary(per_row(r["client_cpu_s"], r["rows"]) for r in ours),
        "ours_rows_per_s": summary(r["rows_per_s"] for r in ours),
        "ours_sync_cpu_s": summary(r["sync_cpu_s"] for r in ours),
        "runs": {side: [{k: v for k, v in r.items() if k not in ("server", "probe")} for r in rs]
                 for side, rs in runs.items()},
    }
    if drt:
        out["drt_cpu_us"] = summary(per_row(r["client_cpu_s"], r["rows"]) for r in drt)
        out["drt_rows_per_s"] = summary(r["rows_per_s"] for r in drt)
        out["drt_cpu_s"] = summary(r["client_cpu_s"] for r in drt)
        out["drt_fixed_cpu_s"] = summary(r["client_cpu_s"] for r in drt0)
        out["drt_net_cpu_us"] = summary(per_row(r["client_cpu_s"] - fixed, r["rows"]) for r in drt)
        out["ratio_ours_drt"] = out["ours_sync_cpu_us"]["median"] / out["drt_cpu_us"]["median"]
        out["ratio_ours_drt_net"] = out["ours_sync_cpu_us"]["median"] / out["drt_net_cpu_us"]["median"]
    out["capacity_objects_per_s"] = 1e6 / out["ours_sync_cpu_us"]["median"]
    return out


def cpu_lines(cpu: dict, load: tuple[str, str], machine_: dict, code: dict) -> list[str]:
    """The CPU comparison as Markdown: a table of medians (min-max) and the verdicts against goal 2."""
    us = lambda s: span(s, " µs", ".1f")  # noqa: E731
    ours_versions = ", ".join(f"{k} {v}" for k, v in (machine_.get("versions") or {}).items())
    drt_versions = ", ".join(f"{k} {v}" for k, v in (machine_.get("drt_versions") or {}).items())
    where = {"duckdb": "each tool reads a DuckDB file in its own process (the embedded default: the warehouse's "
                       "work, ours folding acknowledgements into the ledger and the sync log included, is process CPU)",
             "postgres": "each tool reads its own PostgreSQL database on the local server (a server warehouse: "
                         "its work runs in the server, not in the measured process)"}[cpu.get("warehouse", "duckdb")]
    lines = [f"# Delivery CPU per row: the sync step against drt ({cpu.get('warehouse', 'duckdb')})", "",
             f"{machine_.get('date')} · {machine_.get('cpu')}, {machine_.get('cores')} cores · Python "
             f"{machine_.get('python')} · {ours_versions} · drt: {drt_versions} · code: composable_assets at "
             f"{code.get('head')}{' with uncommitted changes' if code.get('uncommitted') else ''}", "",
             f"{cpu['members']:,} members, Braze fake in its own process, {cpu['rounds']} interleaved rounds "
             f"(ours, drt, drt with 0 rows); medians (min-max). Load average {load[0]} before, {load[1]} after. "
             f"Data: {where}.", "",
             "| measure | ours | drt |", "|---|---:|---:|",
             f"| CPU per delivered row, sync step (ours) / whole `drt run` process (drt) | "
             f"{us(cpu['ours_sync_cpu_us'])} | {us(cpu.get('drt_cpu_us'))} |",
             f"| CPU per row, the delivery loop only (ours) / drt minus its 0-row run | "
             f"{us(cpu['ours_deliver_cpu_us'])} | {us(cpu.get('drt_net_cpu_us'))} |",
             f"| CPU per row, whole run (ours: model, audience, delta, sync) | {us(cpu['ours_run_cpu_us'])} | – |",
             f"| CPU seconds, sync step / drt process | {span(cpu['ours_sync_cpu_s'])} | {span(cpu.get('drt_cpu_s'))} |",
             f"| drt's fixed CPU (a run with 0 rows) | – | {span(cpu.get('drt_fixed_cpu_s'))} |",
             f"| rows/s, sync step | {span(cpu['ours_rows_per_s'], '', ',.0f')} | "
             f"{span(cpu.get('drt_rows_per_s'), '', ',.0f')} |", ""]
    capacity = cpu["capacity_objects_per_s"]
    lines.append(f"- Capacity of one process at this CPU per row: {capacity:,.0f} objects/s against Braze's "
                 f"{BRAZE_CEILING:,} ({'enough' if capacity >= BRAZE_CEILING else 'not enough'}).")
    if "ratio_ours_drt" in cpu:
        lines.append(f"- Ours / drt, CPU per row: {cpu['ratio_ours_drt']:.2f} (whole drt process), "
                     f"{cpu['ratio_ours_drt_net']:.2f} (drt minus its fixed cost); goal ≤ 0.33.")
        lines.append(f"- Rows/s, ours / drt: "
                     f"{cpu['ours_rows_per_s']['median'] / cpu['drt_rows_per_s']['median']:.2f}; goal ≥ 1.")
    lines += ["", "Ours: process CPU (all threads) around the sync asset's work (session, delta read, sending, "
              "checkpoints, run record), in a fresh process per round; the delivery loop row is the same around "
              "`deliver()` only. drt: `drt run` as a child process (imports, DuckDB read, rendering, sending); its "
              "0-row run (same project, `WHERE id <= 0`) is what it costs before the first row.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000, help="audience size (rows delivered per first sync)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of A, C and D; the fastest is reported")
    parser.add_argument("--limit-requests", type=int, nargs="+", default=[150, 300],
                        help="scenario B: requests per window, one run each (default: 150 300)")
    parser.add_argument("--limit-window", type=float, default=3.0, help="scenario B: window length in seconds")
    parser.add_argument("--drt-venv", type=Path, default=DRT_VENV, help="drt's own virtualenv (created when missing)")
    parser.add_argument("--skip-drt", action="store_true", help="leave drt out")
    parser.add_argument("--whatifs", action="store_true", help="also run the what-if patches (historical)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for delivery.json and delivery.md")
    parser.add_argument("--cpu-rounds", type=int, default=0,
                        help="only compare CPU per delivered row with drt, this many interleaved rounds")
    parser.add_argument("--warehouse", choices=("duckdb", "postgres"), default="duckdb",
                        help="--cpu-rounds only: where the data lives for both tools (postgres: a server warehouse, "
                             "whose work runs outside the syncing process)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432",
                        help="the PostgreSQL server of --warehouse postgres (databases bench_delivery_* are replaced)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_ours(json.loads(args.child)), default=str))
        return
    if args.members < 1 or args.repeat < 1:
        parser.error("--members and --repeat must be positive")

    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = 220
    started = time.perf_counter()
    load_before = load_text()
    if busy():
        console.print(f"[yellow]load average {load_before} before starting: other work shares the CPUs[/]")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    code = snapshot_code()
    console.print(f"code: composable_assets at {code['head']}"
                  + (f" with uncommitted changes in {', '.join(code['uncommitted'])}" if code["uncommitted"] else "")
                  + f" (snapshot digest {code['digest']})")
    bench = Bench(args, console)
    drt_error = None
    try:
        if not args.skip_drt:
            bench.drt = ensure_drt(args.drt_venv.absolute(), console)
            drt_error = bench.drt.get("error")
            if drt_error:
                console.print(f"[red]drt unavailable[/]: {drt_error}")
        console.print(f"[bold]{args.members:,} members[/]: preparing the source table ...")
        bench.prepare()
        if args.cpu_rounds:
            cpu = cpu_compare(bench, args.cpu_rounds)
            text = "\n".join(cpu_lines(cpu, (load_before, load_text()), machine(bench.drt), code))
            console.print(text, highlight=False, markup=False)
            name = "delivery_cpu" if args.warehouse == "duckdb" else f"delivery_cpu_{args.warehouse}"
            written = write_results(args.results, name, data={"machine": machine(bench.drt), "code": code,
                                                                         **cpu}, markdown=text)
            console.print(f"written: {', '.join(map(str, written))}")
            return
        repeatable = [bench.scenario_a, bench.scenario_c_ours_sequential, bench.scenario_d]
        if bench.drt.get("drt"):
            repeatable.append(bench.scenario_c_drt)
        once = [bench.scenario_a_inprocess, bench.scenario_b, bench.scenario_a_diagnostics]
        for round_no in range(1, args.repeat + 1):
            console.print(f"[bold]round {round_no}/{args.repeat}[/]")
            for scenario in repeatable + (once if round_no == 1 else []):
                scenario()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    rows = [best(runs) for runs in bench.rows.values()]
    report = {
        "machine": machine(bench.drt),
        "code": code,
        "members": args.members,
        "repeat": args.repeat,
        "load_before": load_before,
        "load_after": load_text(),
        "elapsed_s": time.perf_counter() - started,
        "drt_error": drt_error,
        "rows": rows,
        "all_runs": dict(bench.rows),
        "profile": bench.extra.get("profile"),
        "cprofile": bench.extra.get("cprofile"),
    }
    report["problems"] = bench.checks()
    report["braze_digests"] = bench.extra.get("braze_digests")
    by = {r["label"]: r for r in rows}

    console.print(rich_table(f"Same data, same sink: composable and drt ({args.members:,} members)", COMPARE_HEADER,
                             compare_rows(by), 3))
    console.print(rich_table("Every run", MAIN_HEADER, main_rows(by), 4))
    for label in b_labels(by):
        console.print(f"{label}: " + budget_sentence(by[label]["budget"], by[label]).replace("**", ""))
    if "A.ours" in by:
        total = by["A.ours"]["probe"]["deliver"]["total_s"]
        split = [[name, f"{s:.2f}", f"{100 * s / total:.0f}%", detail] for name, s, detail in time_split(by["A.ours"])]
        console.print(rich_table("A.ours: the delivery loop's main thread", ["step", "s", "share", "detail"], split, 1))
        console.print(rich_table("Variants of A", DIAG_HEADER, diag_rows(by), 2))
    if report["profile"]:
        console.print(rich_table("A.ours.sampled: stack samples while deliver() runs",
                                 ["thread", "threads", "CPU s", "where its samples are"],
                                 profile_rows(report["profile"]), 1))
    if report["cprofile"]:
        console.print(rich_table("A.ours.cprofile: thread CPU by step", ["step", "CPU s"],
                                 cprofile_rows(report["cprofile"]), 1))
    for line in summary_lines(by, args.members):
        console.print(line.replace("**", "").replace("## ", ""), highlight=False, markup=False)
    for problem in report["problems"]:
        console.print(f"[red]problem[/]: {problem}")
    written = write_results(args.results, "delivery", data=report, markdown=markdown(report))
    console.print(f"written: {', '.join(map(str, written))} ({report['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
