"""The ack fold in slices (`delta.ledger.fold_acks`, `slice_rows`): the same ledger and sync log as one MERGE.

A large fold runs as several MERGEs over `_seq` windows, so the warehouse never holds every acknowledged row at
once. Here tiny slices (1, 3, 7 rows) are compared with one MERGE on a delta of three runs whose acks overlap,
leave gaps, cross the slices' edges and touch the same keys several times (added, updated, removed, added again),
on DuckDB and on PostgreSQL with MERGE and without it (delete-then-insert). And a failure between two slices
leaves nothing half-folded: the next fold gives the same result as one that never failed.
"""

from __future__ import annotations

import datetime as dt

import pytest

from composable_assets.delta import ledger
from composable_assets.delta.ledger import fold_acks, record_acks
from composable_assets.store import PairTables
from composable_assets.warehouse import engine_from_url

DAY = dt.date(2026, 3, 2)
T1, T2, T3 = (dt.datetime(2026, 3, 2, h) for h in (6, 7, 8))


def delta_rows() -> list[tuple]:
    """Three runs of one pair: 12 adds; updates, removes and an add; then a removed key back and more updates."""
    rows, seq = [], 0

    def row(run: str, op: str, key: int, version: int, at: dt.datetime) -> None:
        nonlocal seq
        seq += 1
        fields = None if op == "remove" else f'{{"v": {version}, "k": {key}}}'
        hash_ = None if op == "remove" else f"h{key}.{version}"
        rows.append((DAY, run, seq, op, f"k{key}", f"id{key}", hash_, fields, None, at))

    for key in range(12):
        row("r1", "add", key, 1, T1)  # seq 1-12
    for key in (0, 2, 4, 6):
        row("r2", "update", key, 2, T2)  # seq 13-16
    for key in (1, 3):
        row("r2", "remove", key, 0, T2)  # seq 17-18
    row("r2", "add", 12, 1, T2)  # seq 19
    row("r3", "add", 1, 3, T3)  # seq 20: removed in r2, back
    for key in (0, 5, 12):
        row("r3", "update", key, 3, T3)  # seq 21-23
    row("r3", "remove", 6, 0, T3)  # seq 24
    return rows


def acks(conn, tables: PairTables, slice_rows: int | None) -> None:
    """Acks as syncs leave them: overlapping ranges in one checkpoint, a gap (seq 10-11 never acknowledged), later
    runs' ranges, the first run's folded before the others."""
    record_acks(conn, tables, "s1", [(1, 7), (5, 9), (12, 12)], T1)
    assert fold_acks(conn, tables, slice_rows=slice_rows) == 3  # a later fold skips these
    record_acks(conn, tables, "s2", [(13, 16), (17, 19)], T2)
    record_acks(conn, tables, "s3", [(20, 20), (22, 24)], T3)  # seq 21 not acknowledged


def prepare(conn, tables: PairTables) -> None:
    tables.ensure(conn)
    rows = delta_rows()
    placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
    conn.execute(f"INSERT INTO {tables.delta} VALUES {placeholders}", [v for r in rows for v in r])


def state(conn, tables: PairTables) -> tuple[list, list, list]:
    """The ledger, the pair's sync log and its acks, each sorted (text for JSON: engines type it differently)."""
    ledger_rows = sorted(
        conn.fetch_all(
            f"SELECT _key, _identifier, _hash, CAST(_fields AS VARCHAR), _synced_at, _run_id FROM {tables.ledger}"
        )
    )
    log = conn.fetch_all(
        f"SELECT partition_date, sync_run_id, key, identifier, op, row_hash, status, delta_run_id, seq, recorded_at "
        f"FROM {tables.sync_log} WHERE audience = ? AND destination = ? ORDER BY seq, sync_run_id, recorded_at",
        [tables.audience, tables.destination],
    )
    ack_rows = conn.fetch_all(
        f"SELECT run_id, first_seq, last_seq, acked_at, folded FROM {tables.acks} "
        "WHERE audience = ? AND destination = ? ORDER BY first_seq, last_seq",
        [tables.audience, tables.destination],
    )
    return ledger_rows, log, ack_rows


@pytest.fixture(params=["duckdb", "postgres_merge", "postgres_delete_then_insert"])
def connect(request, tmp_path):
    """Connections to one warehouse; on PostgreSQL, as a server with MERGE (15+) or without it (14)."""
    if request.param == "duckdb":
        engine = engine_from_url(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
        return engine.connect
    engine = engine_from_url(request.getfixturevalue("postgres_url"))
    version = 150000 if request.param == "postgres_merge" else 140000

    class Connect:
        def __call__(self):
            return self

        def __enter__(self):
            self.cm = engine.connect()
            conn = self.cm.__enter__()
            conn.server_version = version
            assert conn.has_merge == (version >= 150000)
            return conn

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)

    return Connect()


def folded(connect, tables: PairTables, slice_rows: int | None) -> tuple[list, list, list]:
    with connect() as conn:
        prepare(conn, tables)
        acks(conn, tables, slice_rows)
        assert fold_acks(conn, tables, slice_rows=slice_rows) == 4
        assert fold_acks(conn, tables, slice_rows=slice_rows) == 0
        return state(conn, tables)


def test_folding_in_slices_gives_the_same_ledger_and_sync_log_as_one_merge(connect, monkeypatch) -> None:
    monkeypatch.setattr(ledger, "FOLD_SLICE_ROWS", {})  # the engine's default: one MERGE
    whole = folded(connect, PairTables("s_whole", "a", "d"), None)
    ledger_rows, log, ack_rows = whole
    # What the acks say, checked once: each key's newest acknowledged row; removed keys gone; seq 10, 11 and 21
    # (never acknowledged) nowhere: k9 and k10 never reached the destination, k0 keeps its second version.
    assert [(k, h, run) for k, _, h, _, _, run in ledger_rows] == [
        ("k0", "h0.2", "s2"), ("k1", "h1.3", "s3"), ("k11", "h11.1", "s1"), ("k12", "h12.3", "s3"),
        ("k2", "h2.2", "s2"), ("k4", "h4.2", "s2"), ("k5", "h5.3", "s3"), ("k7", "h7.1", "s1"), ("k8", "h8.1", "s1"),
    ]  # fmt: skip
    # Every acknowledged row in the sync log, once per ack covering it (seq 5-7 twice: two overlapping ranges).
    assert [seq for *_, seq, _ in log] == [1, 2, 3, 4, 5, 5, 6, 6, 7, 7, 8, 9, 12, *range(13, 21), 22, 23, 24]
    assert all(folded_ for *_, folded_ in ack_rows)
    for slice_rows in (1, 3, 7, 1000):
        assert folded(connect, PairTables(f"s_{slice_rows}", "a", "d"), slice_rows) == whole, slice_rows


def test_a_failure_between_slices_folds_nothing_and_the_next_fold_folds_everything(connect, monkeypatch) -> None:
    monkeypatch.setattr(ledger, "FOLD_SLICE_ROWS", {})
    whole = folded(connect, PairTables("s_whole", "a", "d"), None)
    tables = PairTables("s_crash", "a", "d")
    with connect() as conn:
        prepare(conn, tables)
        acks(conn, tables, 3)
        before = state(conn, tables)
        calls = []
        real = ledger._fold

        def failing_third_slice(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("the process died here")
            return real(*args, **kwargs)

        monkeypatch.setattr(ledger, "_fold", failing_third_slice)
        with pytest.raises(RuntimeError, match="died"):
            fold_acks(conn, tables, slice_rows=3)
        assert len(calls) == 3
        assert state(conn, tables) == before  # two slices' MERGEs rolled back with the third: nothing half-folded
        monkeypatch.setattr(ledger, "_fold", real)
    with connect() as conn:
        assert fold_acks(conn, tables, slice_rows=3) == 4
        assert state(conn, tables) == whole


def test_a_first_fold_into_an_empty_ledger_inserts_what_the_merges_would_leave(connect, monkeypatch) -> None:
    monkeypatch.setattr(ledger, "FOLD_SLICE_ROWS", {})
    whole = folded(connect, PairTables("s_merged", "a", "d"), None)

    def no_merge(*args, **kwargs):
        raise AssertionError("an empty ledger is filled by INSERT, not MERGE")

    tables = PairTables("s_first", "a", "d")
    with connect() as conn:
        prepare(conn, tables)
        # Every run acknowledged before any fold (adds, updates, removes and a key back, overlapping ranges): the
        # one fold into the empty ledger keeps each key's newest acknowledged row, and no removed key.
        record_acks(conn, tables, "s1", [(1, 7), (5, 9), (12, 12)], T1)
        record_acks(conn, tables, "s2", [(13, 16), (17, 19)], T2)
        record_acks(conn, tables, "s3", [(20, 20), (22, 24)], T3)
        monkeypatch.setattr(ledger, "_merge", no_merge)
        monkeypatch.setattr(ledger, "_delete_then_insert", no_merge)
        assert fold_acks(conn, tables) == 7
        assert state(conn, tables) == whole


def record_runs(conn, tables: PairTables) -> None:
    """The three runs of `delta_rows` in delta_runs, as compute_delta records them."""
    for run, first, last in (("r1", 1, 12), ("r2", 13, 19), ("r3", 20, 24)):
        conn.execute(
            f"INSERT INTO {tables.delta_runs} VALUES (?, ?, ?, ?, ?, 'full', ?, ?, 0, 0, 0, 0)",
            [tables.audience, tables.destination, DAY, run, T1, first, last],
        )


@pytest.mark.parametrize(
    ("ranges", "ranked"),
    [
        ([(1, 4), (5, 9), (12, 12)], False),  # one run's disjoint ranges: each acknowledged key once
        ([(1, 7), (5, 9), (12, 12)], True),  # one run, overlapping ranges: seq 5-7 twice
        ([(1, 12), (13, 19)], True),  # two runs: keys 0, 1, 2 and 4 twice
        ([(9, 14)], True),  # a range across two runs
    ],
)
@pytest.mark.parametrize("held", [False, True], ids=["empty ledger", "ledger holds a key"])
def test_only_a_fold_of_one_runs_disjoint_acks_skips_ranking_rows_per_key(
    connect, monkeypatch, ranges, ranked, held
) -> None:
    monkeypatch.setattr(ledger, "FOLD_SLICE_ROWS", {})
    newest: list[str] = []
    real = ledger._fold

    def spy(conn, tables, window, params, newest_sql=ledger._NEWEST_PER_KEY):
        newest.append(newest_sql)
        return real(conn, tables, window, params, newest_sql)

    results = []
    for name, rank_always in (("s_skip", False), ("s_ranked", True)):
        tables = PairTables(name, "a", "d")
        with connect() as conn:
            prepare(conn, tables)
            record_runs(conn, tables)
            if held:  # a MERGE (or delete-then-insert) rather than the first fold's INSERT
                conn.execute(f"INSERT INTO {tables.ledger} VALUES ('k99', 'id99', 'h', NULL, ?, 'old')", [T1])
            record_acks(conn, tables, "s1", ranges, T1)
            if rank_always:
                monkeypatch.setattr(ledger, "_one_run_apart", lambda *args: False)
            monkeypatch.setattr(ledger, "_fold", spy)
            assert fold_acks(conn, tables) == len(ranges)
            results.append(state(conn, tables))
    assert newest[0] == (ledger._NEWEST_PER_KEY if ranked else "") and newest[1] == ledger._NEWEST_PER_KEY
    skipped, ranked_rows = results
    assert skipped == ranked_rows
    keys = [row[0] for row in skipped[0]]
    assert len(keys) == len(set(keys)) and ("k99" in keys) == held
