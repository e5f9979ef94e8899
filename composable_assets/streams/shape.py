"""What one (stream, destination) reads: the table's columns it needs, as one SQL row source."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from ..delta.sql import DIALECT, ident, json_object
from ..project import StreamSpec, StreamSyncSpec, parse_where
from ..warehouse import Connection

# Column types a cursor may have, as each engine's information_schema names them: naive timestamps are taken as UTC,
# dates as their midnight; timestamps with a time zone are converted to UTC.
TIMESTAMP_TYPES = (
    "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATETIME",  # DuckDB
    "TIMESTAMP WITHOUT TIME ZONE",  # PostgreSQL
    "TIMESTAMP_NTZ",  # Snowflake
)
ZONED_TIMESTAMP_TYPES = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP_TZ", "TIMESTAMP_LTZ")


class StreamDataError(Exception):
    """The stream's table cannot be read as the stream file says (missing table or column, cursor not a time)."""


@dataclass(frozen=True)
class StreamShape:
    """One stream sync, reduced to what the engine needs."""

    stream: str
    table: str
    event_id_column: str
    cursor_column: str
    where: exp.Expression | None
    lookback: dt.timedelta
    start: str | dt.date
    identifier_column: str
    event: str
    properties: dict[str, str] = field(default_factory=dict)
    #: Option name -> column, for the columns the destination's options name (Braze purchase price, ...).
    extras: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    #: Who may be sent events at all: a condition on the table's member key column (the destination's consent
    #: purpose granted, no deletion request), or None; see governance/consent.py.
    key_column: str | None = None
    allowed: str | None = None

    @classmethod
    def of(
        cls,
        spec: StreamSpec,
        sync: StreamSyncSpec,
        extras: dict[str, str] | None = None,
        key_column: str | None = None,
        allowed: str | None = None,
    ) -> "StreamShape":
        where = parse_where(spec.where, spec.path, None) if spec.where is not None else None
        return cls(
            stream=spec.name,
            table=spec.table,
            event_id_column=spec.event_id,
            cursor_column=spec.cursor,
            where=where,
            lookback=spec.lookback,
            start=spec.start,
            identifier_column=sync.identifier_column,
            event=sync.event,
            properties=dict(sync.properties),
            extras=dict(extras or {}),
            file=spec.path,
            key_column=key_column if allowed else None,
            allowed=allowed,
        )

    def columns(self) -> list[str]:
        """Every table column read, in a stable order."""
        named = [self.event_id_column, self.cursor_column, self.identifier_column]
        if self.key_column:
            named.append(self.key_column)
        return list(dict.fromkeys([*named, *self.properties.values(), *self.extras.values()]))

    def event_id_sql(self, alias: str = "e") -> str:
        """The deterministic event id: "<stream>:<value of the event_id column>"."""
        prefix = exp.Literal.string(f"{self.stream}:").sql(DIALECT)
        return f"concat({prefix}, CAST({alias}.{ident(self.event_id_column)} AS VARCHAR))"

    def rows_sql(self, conn: Connection, within: str | None = None) -> str:
        """A query over the table giving _event_id, _cursor, _identifier, _properties, _extras per usable row.

        `within`: a condition on the row's cursor value, written with `{cursor}` where it stands (e.g. the run's
        window, `{cursor} >= ? AND {cursor} <= ?`), checked before anything else: before the member conditions and
        before the event id and JSON columns are computed, so that a run costs the rows in its window, not the
        table.

        Rows without an event id or a cursor value are left out: they cannot be deduplicated or ordered. So are rows
        of people the destination may not receive (consent not granted at send time): they are never candidates,
        not even late ones, and the cursor moves past them.
        Checks the table against the file first (a source table's columns are only known here).
        """
        cursor = self._cursor_sql(conn)
        condition = f"({within.format(cursor=cursor)}) AND " if within is not None else ""
        if self.where is not None:
            condition += f"({self.where.sql(DIALECT)}) AND "
        if self.allowed:
            condition += f"({self.allowed}) AND "
        return (
            f"SELECT {self.event_id_sql()} AS _event_id, {cursor} AS _cursor, "
            f"CAST(e.{ident(self.identifier_column)} AS VARCHAR) AS _identifier, "
            f"{json_object(self.properties, alias='e')} AS _properties, "
            f"{json_object(self.extras, alias='e')} AS _extras "
            f"FROM {ident(self.table)} AS e "
            f"WHERE {condition}e.{ident(self.event_id_column)} IS NOT NULL AND e.{ident(self.cursor_column)} IS NOT NULL"
        )

    def _cursor_sql(self, conn: Connection) -> str:
        where = f" ({self.file.name})" if self.file is not None else ""
        columns = {name.lower(): type_ for name, type_ in conn.table_columns(None, self.table)}
        if not columns:
            raise StreamDataError(f"stream {self.stream}{where}: table `{self.table}` does not exist in the warehouse")
        missing = [c for c in self.columns() if c.lower() not in columns]
        if missing:
            raise StreamDataError(
                f"stream {self.stream}{where}: table `{self.table}` has no column "
                f"{', '.join(f'`{c}`' for c in missing)} (its columns: {', '.join(columns)})"
            )
        column = f"e.{ident(self.cursor_column)}"
        type_ = columns[self.cursor_column.lower()].upper()
        if type_ in ZONED_TIMESTAMP_TYPES:
            # AT TIME ZONE (not DuckDB's timezone()) so that Snowflake gets CONVERT_TIMEZONE; the cast drops the zone.
            return f"CAST({column} AT TIME ZONE 'UTC' AS TIMESTAMP)"
        if type_ in TIMESTAMP_TYPES or type_ == "DATE":
            return f"CAST({column} AS TIMESTAMP)"
        raise StreamDataError(
            f"stream {self.stream}{where}: cursor column `{self.cursor_column}` is {type_}, not a timestamp or date"
        )
