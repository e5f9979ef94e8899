"""`composable sync`'s quiet check: whether the whole run would do nothing, decided without loading dagster.

A run with nothing to send still costs seconds of Dagster (its import, the instance, the run's own events) after
every step skipped itself (delta/quiet.py). This check asks each step of the selection the question its asset asks
(delta/steps.py: the same fingerprints, read the same way) and looks at what the sync would find in the ledger's
bookkeeping. Only when every answer is "nothing to do" does `composable sync` launch no run. Anything else, an error
included, launches the run as before: the check may only ever say "quiet" too rarely, never too often.

Quiet needs all of these, per destination of the selection:
- every upstream model is a SQL model (no landing folder feeds it, no Python or dbt model) and would skip;
- the audience snapshot would skip, and the delta would compare only its previous delta's unacknowledged rows;
- none of those: every row of the latest delta acknowledged, no acknowledgement left to fold, no window in flight;
- the latest sync run of the pair succeeded and delivered the latest delta (not held by a send gate, not stopped);
- the requested day already has a succeeded sync run of the pair, so every day still gets one real run (and a
  materialization in the UI); the shortcut is for repeated runs within a day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..delta import quiet
from ..delta.diff import latest_delta_run
from ..delta.refresh import unacknowledged
from ..delta.steps import Step, audience_step, delta_pending_only, delta_step, model_step, sync_shapes
from ..destinations import DESTINATION_TYPES
from ..governance.consent import consent_conditions, not_forgotten_predicate
from ..project import load_project
from ..project.schema import with_cached_columns
from ..settings import Settings
from ..store import PairTables
from ..warehouse import Connection, engine_from_url


@dataclass
class Verdict:
    """Whether the run would do nothing; `why`: the first reason it would not (for --debug)."""

    quiet: bool
    why: str = ""
    #: destination -> (the pair's latest sync run id, its day), when quiet.
    last_runs: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Seconds per part of the check (project, connect, markers, state), for the benchmark.
    timings: dict[str, float] = field(default_factory=dict)


class _Busy(Exception):
    """A reason the run would do something (its message)."""


def check_sync(audience: str, destination: str | None, partition_of) -> Verdict:
    """Whether `composable sync AUDIENCE [--destination D]` would do nothing; `partition_of(project)`: its day."""
    timings: dict[str, float] = {}
    try:
        last_runs = _check(audience, destination, partition_of, timings)
    except _Busy as reason:
        return Verdict(False, str(reason), timings=timings)
    except Exception as exc:  # anything unexpected: the run goes ahead and reports it as it always has
        return Verdict(False, f"the check could not decide ({type(exc).__name__})", timings=timings)
    return Verdict(True, last_runs=last_runs, timings=timings)


def _check(audience: str, destination: str | None, partition_of, timings: dict[str, float]):
    started = time.perf_counter()
    settings = Settings.from_env()
    project = load_project(
        settings.project_dir, known_destination_types=DESTINATION_TYPES, warehouse_url=settings.warehouse_url
    )
    project = with_cached_columns(project, settings.data_dir, settings.warehouse_url)
    spec = project.audiences[audience]
    syncs = [s for s in spec.syncs if destination in (None, s.destination)]
    if not syncs:
        raise _Busy(f"{audience} has no destination {destination}")
    partition = partition_of(project)
    schema = project.settings.schema_name
    landed = [t for t in project.sources_upstream_of(spec.model) if t in project.settings.landing]
    if landed:
        raise _Busy(f"{', '.join(landed)} is fed by a landing folder, which the run loads first")
    models = [*project.models_upstream_of(spec.model), spec.model] if spec.model in project.models else []
    for name in models:
        if project.models[name].is_python or project.models[name].is_dbt:
            raise _Busy(f"model {name} is a Python or dbt model, which only the run can tell")
    refreshes = project.refreshes
    steps: list[Step] = [model_step(project.models[name], refreshes[name]) for name in models]
    steps.append(audience_step(spec, schema, not_forgotten_predicate(project, spec.primary_key)))
    shapes = {s.destination: s for s in sync_shapes(spec, consent_conditions(project))}
    deltas = [(s, delta_step(spec, s, shapes[s.destination], schema)) for s in syncs]
    timings["project"] = time.perf_counter() - started
    started = time.perf_counter()
    # A peek: while a run holds a DuckDB file the check gives up at once, and the run waits for it as it always has.
    with engine_from_url(settings.warehouse_url).peek() as conn:
        timings["connect"] = time.perf_counter() - started
        started = time.perf_counter()
        known = _markers(conn, [*steps, *(step for _, step in deltas)])
        timings["markers"] = time.perf_counter() - started
        started = time.perf_counter()
        for step in steps:
            inputs = step.inputs(conn, known)
            if not step.unchanged(conn, schema, inputs, known):
                raise _Busy(f"{step.reader} would compute ({inputs.why or 'what decides it changed'})")
        last_runs = {}
        for sync, step in deltas:
            tables = PairTables(schema, spec.name, sync.destination)
            inputs = step.inputs(conn, known)
            if not delta_pending_only(conn, schema, step, inputs, tables, known):
                raise _Busy(f"{step.reader} would compare in full ({inputs.why or 'what it reads changed'})")
            last_runs[sync.destination] = _nothing_to_send(conn, tables, partition)
        timings["state"] = time.perf_counter() - started
    return last_runs


def _markers(conn: Connection, steps: list[Step]) -> quiet.Markers:
    """Every table the steps read or write, read once (one statement): the steps then find them here."""
    tables = list(dict.fromkeys(t for step in steps for t in [*(step.reads or []), *filter(None, [step.output])]))
    known: quiet.Markers = {}
    if quiet.read_markers(conn, tables, known) is None:
        raise _Busy("this warehouse cannot tell cheaply whether a table changed")
    return known


def _nothing_to_send(conn: Connection, tables: PairTables, partition: str) -> tuple[str, str]:
    """The pair's latest sync run and its day, when its sync would find nothing to send or record; else _Busy."""
    pair = [tables.audience, tables.destination]
    what = f"{tables.audience} -> {tables.destination}"
    (unfolded,) = conn.fetch_row(
        f"SELECT count(*) FROM {tables.acks} WHERE audience = ? AND destination = ? AND NOT folded", pair
    )
    if unfolded:
        raise _Busy(f"{what}: acknowledgements not folded into the ledger yet")
    (pending,) = conn.fetch_row(f"SELECT count(*) FROM ({unacknowledged(conn, tables)}) AS u")
    if pending:
        raise _Busy(f"{what}: {pending} row(s) of the last delta not acknowledged (rejected or unsent)")
    last = conn.fetch_one(
        f"SELECT run_id, partition_date, status, delta_run_id FROM {tables.sync_runs} "
        "WHERE audience = ? AND destination = ? ORDER BY started_at DESC LIMIT 1",
        pair,
    )
    if last is None:
        raise _Busy(f"{what}: never synced")
    run_id, day, status, delta_run_id = last
    if status != "succeeded":
        raise _Busy(f"{what}: its last sync run {run_id} {status}")
    delta = latest_delta_run(conn, tables)
    if delta is None or delta.run_id != delta_run_id:
        raise _Busy(f"{what}: its latest delta was not delivered (a send gate, a failed run)")
    (today,) = conn.fetch_row(
        f"SELECT count(*) FROM {tables.sync_runs} WHERE audience = ? AND destination = ? "
        "AND partition_date = CAST(? AS DATE) AND status = 'succeeded'",
        [*pair, partition],
    )
    if not today:
        raise _Busy(f"{what}: no sync run of {partition} yet (each day gets one)")
    return str(run_id), str(day)
