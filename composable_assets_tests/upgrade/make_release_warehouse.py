"""Build the warehouse an earlier release leaves behind, for the upgrade test (test_store.py).

Run with that release's code first on the path, e.g. for the release this store replaces (commit d7257c4):

    git worktree add --detach /some/dir d7257c4
    PYTHONPATH=/some/dir python composable_assets_tests/upgrade/make_release_warehouse.py duckdb OUT_DIR
    PYTHONPATH=/some/dir python composable_assets_tests/upgrade/make_release_warehouse.py postgresql://postgres@127.0.0.1:5432/DB OUT_DIR

It writes the project below into OUT_DIR/project, runs the release's own `composable` commands on it (two days
of syncs with a change between them, a stream, a deletion request) and leaves the warehouse as the release made
it: a DuckDB file exported with EXPORT DATABASE (Parquet files and the DDL) in OUT_DIR/duckdb, or a plain pg_dump
of the PostgreSQL database in OUT_DIR/postgres.sql. The project folder is kept beside them (OUT_DIR/project). Only this file and what it writes are committed; nothing in it
may import code that is newer than the release.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = {
    "project.yaml": """\
        name: upgrade
        start_date: "2026-01-01"
        deletion_requests: {table: deletion_requests, key: id, requested_at: requested_at, id: request_id}
        """,
    "models/people_model.sql": """\
        -- People with a score.
        -- owners: team:growth
        SELECT id, email, name, score FROM people
        """,
    "models/scores_model.sql": """\
        -- Scores as they are given (the stream reads its source table).
        SELECT event_id, person_id, score, scored_at FROM score_events
        """,
    "audiences/high.yaml": """\
        description: People who scored over 10.
        owners: [growth@example.com]
        model: people_model
        primary_key: id
        where: score > 10
        cadence: daily
        syncs:
          - destination: box_mirror
            mode: mirror
            identifier: {external_id: id}
            fields: {email: email, name: name}
          - destination: box_upsert
            mode: upsert
            identifier: {email: email}
            fields: {name: name, score: score}
        """,
    "streams/scores.yaml": """\
        description: Scores as they are given.
        owners: [growth@example.com]
        table: score_events
        event_id: event_id
        cursor: scored_at
        key: person_id
        lookback: 1d
        start: "2026-03-01"
        syncs:
          - destination: box_upsert
            identifier: {external_id: person_id}
            event: scored
            properties: {score: score}
        """,
    "destinations.yaml": """\
        box_mirror: {type: outbox, batch_size: 3}
        box_upsert: {type: outbox, batch_size: 3}
        """,
}

# (id, email, name, score): ids 11..20 score over 10, so they are the audience.
PEOPLE = [(i, f"p{i}@example.com", f"name{i}", i) for i in range(1, 21)]
# The second day: 12 renamed, 13 drops out, 21 joins.
PEOPLE_DAY_2 = [
    (i, e, "renamed12" if i == 12 else n, 5 if i == 13 else s) for i, e, n, s in PEOPLE
] + [(21, "p21@example.com", "name21", 21)]
SCORE_EVENTS = [(f"e{i}", i, i, f"2026-03-01 0{i % 10}:00:00") for i in range(11, 21)]


def seed(conn, people: list[tuple]) -> None:
    conn.execute("DROP TABLE IF EXISTS people")
    conn.execute("CREATE TABLE people (id BIGINT, email VARCHAR, name VARCHAR, score INTEGER)")
    conn.execute(f"INSERT INTO people VALUES {', '.join(['(?, ?, ?, ?)'] * len(people))}", [v for r in people for v in r])


def composable(*args: str) -> None:
    from composable_assets.cli import main

    sys.argv = ["composable", *args]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise


def main(target: str, out: Path) -> None:
    from composable_assets.warehouse import engine_from_url

    project = out / "project"
    for path, text in PROJECT.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(textwrap.dedent(text))
    data = out / "data"
    url = f"duckdb:///{data / 'warehouse.duckdb'}" if target == "duckdb" else target
    data.mkdir(parents=True, exist_ok=True)
    os.environ.update(COMPOSABLE_PROJECT_DIR=str(project), COMPOSABLE_DATA_DIR=str(data), COMPOSABLE_WAREHOUSE=url)
    engine = engine_from_url(url)
    with engine.connect() as conn:
        seed(conn, PEOPLE)
        conn.execute("CREATE TABLE score_events (event_id VARCHAR, person_id BIGINT, score INTEGER, scored_at TIMESTAMP)")
        conn.execute(
            f"INSERT INTO score_events VALUES {', '.join(['(?, ?, ?, CAST(? AS TIMESTAMP))'] * len(SCORE_EVENTS))}",
            [v for r in SCORE_EVENTS for v in r],
        )
        conn.execute("CREATE TABLE deletion_requests (request_id VARCHAR, id BIGINT, requested_at TIMESTAMP)")
    composable("sync", "high", "--date", "2026-03-02")
    composable("stream", "scores", "--date", "2026-03-02")
    with engine.connect() as conn:
        seed(conn, PEOPLE_DAY_2)
        conn.execute("INSERT INTO deletion_requests VALUES ('req-20', 20, CAST('2026-03-02 12:00:00' AS TIMESTAMP))")
    composable("forget")
    composable("sync", "high", "--date", "2026-03-03")
    if target == "duckdb":
        import duckdb

        with duckdb.connect(str(data / "warehouse.duckdb")) as con:
            con.execute(f"EXPORT DATABASE '{out / 'duckdb'}' (FORMAT parquet)")
        # load.sql names each file by its absolute path; the test reads them from wherever the repository is.
        load = out / "duckdb" / "load.sql"
        load.write_text(load.read_text().replace(f"'{out / 'duckdb'}/", "'"))
    else:
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "--inserts", target], capture_output=True, text=True, check=True
        ).stdout
        # psql's own commands (pg_dump's \restrict lines) are not SQL: the test runs the dump through a driver.
        (out / "postgres.sql").write_text("".join(l for l in dump.splitlines(True) if not l.startswith("\\")))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]).absolute())
