"""Quiet syncs: `composable sync` of a 1M-member audience when nothing changed, as a user runs it from the shell.

Built once: a project folder with one model (`profiles`: customers joined to their order totals), one audience of
every customer with an email (`everyone`, 1M members by default) mirrored to the outbox destination, and the
source tables `customers` (N rows) and `orders` (2 per customer) made in DuckDB by SQL. A first `composable sync`
delivers every member; the runs measured after it have nothing to send, on the same day.

Then, in interleaved rounds (A, B, C, A, B, C, ...), each a fresh process:

- `validate`: `composable validate` (loads the project and the definitions, runs nothing): the floor a command
  that loads Dagster pays;
- `sync`: `composable sync everyone` with nothing changed: the quiet check finds nothing to do and launches no
  run (cli/quiet_check.py); wall seconds from the shell's point of view and the child's CPU seconds (user + system,
  every thread);
- `check breakdown`: the quiet check alone in a child that times its parts: imports, the project, the warehouse
  connection, the content markers (one statement), the steps' and pairs' state; dagster must stay unimported;
- `sync --run-anyway`: the same sync through the full Dagster path (every step skips itself, nothing is sent);
- `run breakdown`: that path in a child that times its parts: imports, project + definitions load, the Dagster
  instance, the run (each asset's STEP_START to STEP_SUCCESS from the run's events, the rest being Dagster's run
  overhead), and every warehouse statement (count and seconds).

Every run must report nothing sent and exit 0 (and a quiet `sync` must say it launched no run), or the benchmark
stops with an error. The load average is recorded
before and after: figures taken while the machine was busy are not comparable with quiet ones. DAGSTER_HOME is
set (runs kept, as a user following the README has it); `--ephemeral` measures without it.

`--baseline-rev REV` adds the same sync and run breakdown with the package as committed in REV (a copy of its
`composable_assets/` put first on the child's PYTHONPATH), interleaved with the others on the same project.

This script reports numbers; it does not pass or fail on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common.report import machine_info, md_table, write_results  # noqa: E402
from common.timing import load_average, load_text, rounds, span, summary  # noqa: E402

AUDIENCE = "everyone"
SIDES = ("validate", "sync", "check breakdown", "sync --run-anyway", "run breakdown")
BASELINE_SIDES = ("sync (baseline)", "run breakdown (baseline)")
#: What a quiet `composable sync` prints when it launches no run.
QUIET = "no run launched"

PROJECT_YAML = """name: quiet_sync_benchmark
start_date: "2026-01-01"
schema: composable
timezone: UTC
owners: [team:data]
"""
MODEL_SQL = """-- One row per customer with their order totals.
SELECT
    c.customer_id,
    c.email,
    c.first_name,
    c.country,
    coalesce(o.lifetime_value, 0) AS lifetime_value,
    coalesce(o.order_count, 0) AS order_count
FROM customers AS c
LEFT JOIN (
    SELECT customer_id, sum(amount) AS lifetime_value, count(*) AS order_count
    FROM orders
    GROUP BY customer_id
) AS o ON o.customer_id = c.customer_id
"""
AUDIENCE_YAML = """description: Every customer with an email.
model: profiles
primary_key: customer_id
where: email IS NOT NULL
cadence: daily
syncs:
  - destination: outbox
    mode: mirror
    identifier: {external_id: customer_id}
    fields: {email: email, first_name: first_name, country: country, ltv: lifetime_value}
"""
DESTINATIONS_YAML = "outbox:\n  type: outbox\n"
SEED_SQL = """
CREATE OR REPLACE TABLE customers AS
SELECT i AS customer_id, 'customer' || i || '@example.com' AS email, 'name' || (i % 997) AS first_name,
       ['GB', 'US', 'NL', 'FI', 'DE'][1 + i % 5] AS country
FROM range(1, {n} + 1) AS t(i);
CREATE OR REPLACE TABLE orders AS
SELECT i AS order_id, 1 + (i * 7919) % {n} AS customer_id, CAST(10 + (i % 400) AS DECIMAL(12, 2)) AS amount
FROM range(1, 2 * {n} + 1) AS t(i);
"""


def build(work: Path, members: int) -> dict[str, str]:
    """The project folder, its seeded DuckDB file and the environment every command runs in."""
    import duckdb

    if work.exists():
        shutil.rmtree(work)
    project = work / "project"
    (project / "models").mkdir(parents=True)
    (project / "audiences").mkdir()
    (project / "project.yaml").write_text(PROJECT_YAML)
    (project / "models" / "profiles.sql").write_text(MODEL_SQL)
    (project / "audiences" / f"{AUDIENCE}.yaml").write_text(AUDIENCE_YAML)
    (project / "destinations.yaml").write_text(DESTINATIONS_YAML)
    data = work / "data"
    data.mkdir()
    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        con.execute(SEED_SQL.format(n=int(members)))
    home = work / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "DAGSTER_"))}
    env.update(COMPOSABLE_PROJECT_DIR=str(project), COMPOSABLE_DATA_DIR=str(data), DAGSTER_HOME=str(home))
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    return env


def composable() -> str:
    return str(Path(sys.executable).with_name("composable"))


def child(command: list[str], env: dict[str, str]) -> dict:
    """Run one fresh process; its wall seconds (from just before the fork to its exit) and its CPU seconds."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "output": output}


def check_child() -> None:
    """In a child: the quiet check timed by part, printed as one JSON line (what `--check-child` runs)."""
    t0 = time.perf_counter()
    parts: dict = {}
    from composable_assets.cli import main as cli_main  # noqa: F401  (what the `composable` command imports)

    parts["import cli"] = time.perf_counter() - t0
    t = time.perf_counter()
    from composable_assets.cli.common import project_today
    from composable_assets.cli.quiet_check import check_sync

    parts["import check"] = time.perf_counter() - t
    t = time.perf_counter()
    verdict = check_sync(AUDIENCE, None, project_today)
    checked = time.perf_counter() - t
    if not verdict.quiet:
        raise SystemExit(f"the quiet check found work: {verdict.why}")
    if "dagster" in sys.modules:
        raise SystemExit("the quiet check imported dagster")
    for name in ("project", "connect", "markers", "state"):
        parts[name] = verdict.timings.get(name, 0.0)
    parts["rest of the check"] = checked - sum(verdict.timings.values())
    total = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("BREAKDOWN " + json.dumps({"parts": parts, "total": total, "cpu": usage.ru_utime + usage.ru_stime}))


def breakdown_child() -> None:
    """In a child: a quiet sync through Dagster timed by part, printed as one JSON line (`--breakdown-child`)."""
    t0 = time.perf_counter()
    parts: dict = {}
    from composable_assets.cli import main as cli_main  # noqa: F401  (what the `composable` command imports)

    parts["import cli"] = time.perf_counter() - t0
    t = time.perf_counter()
    import dagster  # noqa: F401  (timed here: the CLI imports it when a command needs it)

    from composable_assets import runner
    from composable_assets.cli import common
    from composable_assets.definitions import audience_selection
    from composable_assets.warehouse import duckdb_engine

    parts["import dagster + package"] = time.perf_counter() - t
    statements: list[tuple[str, float]] = []
    for name in ("execute", "fetch_all", "fetch_arrow"):
        original = getattr(duckdb_engine.DuckDBConnection, name)

        def wrapped(self, sql, *args, _original=original, **kwargs):
            begun = time.perf_counter()
            try:
                return _original(self, sql, *args, **kwargs)
            finally:
                statements.append((" ".join(str(sql).split())[:90], time.perf_counter() - begun))

        setattr(duckdb_engine.DuckDBConnection, name, wrapped)
    t = time.perf_counter()
    settings, project, defs = common.load()
    parts["project + definitions"] = time.perf_counter() - t
    t = time.perf_counter()
    instance = runner.instance()
    parts["instance"] = time.perf_counter() - t
    selection = audience_selection(project, AUDIENCE)
    partition = common.project_today(project)
    t = time.perf_counter()
    outcome = runner.run_selection(defs, selection, partition, instance, log_level=None)
    parts["run"] = time.perf_counter() - t
    if not outcome.success:
        raise SystemExit(f"the sync failed: {outcome.errors}")
    sent = sum(s.count("added") + s.count("updated") + s.count("removed") for s in outcome.syncs)
    steps: dict[str, float] = {}
    begun: dict[str, float] = {}
    run_start = run_end = None
    for record in instance.all_logs(outcome.run_id):
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        if kind == "RUN_START":
            run_start = record.timestamp
        elif kind in ("RUN_SUCCESS", "RUN_FAILURE"):
            run_end = record.timestamp
        elif kind == "STEP_START":
            begun[event.step_key] = record.timestamp
        elif kind == "STEP_SUCCESS" and event.step_key in begun:
            steps[event.step_key] = record.timestamp - begun[event.step_key]
    total = time.perf_counter() - t0
    print(
        "BREAKDOWN "
        + json.dumps(
            {
                "parts": parts,
                "steps": steps,
                "run_start_to_end": (run_end - run_start) if run_start and run_end else None,
                "statements": len(statements),
                "statement_seconds": sum(s for _, s in statements),
                "slowest": sorted(statements, key=lambda s: -s[1])[:8],
                "sent": sent,
                "modes": {
                    k: str(getattr(v.get("mode"), "value", v.get("mode"))) for k, v in outcome.materialized.items()
                },
                "total": total,
                "cpu": resource.getrusage(resource.RUSAGE_SELF).ru_utime
                + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ephemeral", action="store_true", help="without DAGSTER_HOME (a throwaway instance)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="quiet_sync")
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "quiet_sync")
    parser.add_argument("--reuse", action="store_true", help="keep the project built by an earlier run")
    parser.add_argument("--baseline-rev", help="also measure the package as committed in this revision")
    parser.add_argument("--breakdown-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--check-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.breakdown_child:
        breakdown_child()
        return
    if args.check_child:
        check_child()
        return
    load_before = load_average()
    if args.reuse and (args.work / "project").exists():
        env = json.loads((args.work / "env.json").read_text())
        built = first = None
        # Today's sync, unmeasured: the quiet check launches a run for a day without one.
        child([composable(), "sync", AUDIENCE], env)
    else:
        started = time.perf_counter()
        env = build(args.work, args.members)
        built = time.perf_counter() - started
        (args.work / "env.json").write_text(json.dumps(env))
        first = child([composable(), "sync", AUDIENCE], env)["wall"]
        print(f"built {args.members:,} members in {built:.1f} s; first sync {first:.1f} s")
    if args.ephemeral:
        env = {k: v for k, v in env.items() if k != "DAGSTER_HOME"}
    sides = SIDES
    baseline_env = None
    if args.baseline_rev:
        code = args.work / "baseline"
        shutil.rmtree(code, ignore_errors=True)
        code.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.baseline_rev, "composable_assets"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        baseline_env = {**env, "PYTHONPATH": str(code)}
        sides = SIDES + BASELINE_SIDES
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_no, side in rounds(args.rounds, sides):
        side_env = baseline_env if side in BASELINE_SIDES and baseline_env else env
        if side == "validate":
            result = child([composable(), "validate"], env)
        elif side == "sync":
            result = child([composable(), "sync", AUDIENCE], side_env)
            if QUIET not in result["output"]:
                raise SystemExit(f"the quiet sync launched a run:\n{result['output']}")
        elif side.startswith("sync"):
            # The full Dagster path: --run-anyway now, the baseline's plain sync (it has no quiet check).
            anyway = [] if side in BASELINE_SIDES else ["--run-anyway"]
            result = child([composable(), "sync", AUDIENCE, *anyway], side_env)
            if QUIET in result["output"]:
                raise SystemExit(f"{side} launched no run")
        else:
            flag = "--check-child" if side == "check breakdown" else "--breakdown-child"
            result = child([sys.executable, str(Path(__file__).resolve()), flag], side_env)
            line = next(x for x in result["output"].splitlines() if x.startswith("BREAKDOWN "))
            result["breakdown"] = json.loads(line[len("BREAKDOWN ") :])
            if result["breakdown"].get("sent"):
                raise SystemExit(f"a quiet sync sent {result['breakdown']['sent']} rows")
        result["load"] = load_average()
        result.pop("output")
        runs[side].append(result)
        print(f"round {round_no} {side:17s} wall {result['wall']:.2f} s cpu {result['cpu']:.2f} s load {load_text()}")
    load_after = load_average()
    walls = {side: summary([r["wall"] for r in runs[side]]) for side in sides}
    cpus = {side: summary([r["cpu"] for r in runs[side]]) for side in sides}
    columns = [side for side in ("run breakdown", "run breakdown (baseline)") if side in runs]
    breakdowns = {side: [r["breakdown"] for r in runs[side]] for side in columns}
    checks = [r["breakdown"] for r in runs["check breakdown"]]
    check_rows = [
        [name, span(summary([c["parts"][name] for c in checks]))] for name in checks[0]["parts"]
    ] + [
        ["whole child (wall)", span(summary([c["total"] for c in checks]))],
        ["whole child (CPU seconds)", span(summary([c["cpu"] for c in checks]))],
    ]

    def row(name: str, value, unit: str = " s", spec: str = ".2f") -> list[str]:
        return [name] + [span(summary([value(b) for b in breakdowns[side]]), unit, spec) for side in columns]

    first = breakdowns["run breakdown"]
    part_rows = [row(name, lambda b, n=name: b["parts"].get(n, 0.0)) for name in first[0]["parts"]]
    part_rows += [row(f"  step {step}", lambda b, s=step: b["steps"].get(s, 0.0)) for step in first[0]["steps"]]
    part_rows.append(row("  run overhead (run minus steps)", lambda b: b["parts"]["run"] - sum(b["steps"].values())))
    part_rows.append(row("whole child (CPU seconds)", lambda b: b["cpu"]))
    part_rows.append(row("warehouse statements (seconds)", lambda b: b["statement_seconds"]))
    part_rows.append(row("warehouse statements (count)", lambda b: b["statements"], "", ".0f"))
    lines = [
        f"# Quiet `composable sync`: {args.members:,} members, nothing changed",
        "",
        f"{'Without' if args.ephemeral else 'With'} DAGSTER_HOME; {args.rounds} interleaved rounds, each run a fresh "
        f"process. Load average before {' '.join(map(str, load_before))}, after {' '.join(map(str, load_after))}.",
        "",
        *md_table(
            ["command", "wall (median, min-max)", "CPU of the child"],
            [[side, span(walls[side]), span(cpus[side])] for side in sides],
        ),
        "",
        "Breakdown of the quiet check (the `check breakdown` runs, in-process timings; seconds, median and min-max; "
        "the interpreter's own start is in `sync`'s wall time only):",
        "",
        *md_table(["part", "check breakdown"], check_rows),
        "",
        "Breakdown of the full Dagster path (the `run breakdown` runs, what `--run-anyway` does; seconds, median and "
        "min-max):",
        "",
        *md_table(["part", *columns], part_rows),
        "",
        *[f"What each asset did ({side}): {json.dumps(breakdowns[side][-1]['modes'])}" for side in columns],
        "",
        "Slowest statements of the last breakdown run: ",
        "",
        *[f"- {s:.3f} s `{sql}`" for sql, s in first[-1]["slowest"]],
        "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    write_results(
        args.results,
        args.name,
        markdown=markdown,
        data={
            "machine": machine_info(),
            "members": args.members,
            "baseline_rev": args.baseline_rev,
            "built_seconds": built,
            "first_sync_seconds": first,
            "load_before": load_before,
            "load_after": load_after,
            "wall": walls,
            "cpu": cpus,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
