"""MessageGears: zero-copy; publishes the audience as a warehouse view that MessageGears Accelerator queries.

MessageGears has no public API to upsert recipients: Accelerator runs its own SQL against the
warehouse. So this destination calls nothing and acknowledges every row, which makes the pair's
ledger exactly "who is a member, with which field values, since when"; the view publishes it.

destinations.yaml:

    mg:
      type: messagegears
      schema: messagegears   # where the views go (default messagegears)

The view `<schema>.<audience>`, one row per member:

    member_key         VARCHAR    the audience's primary key
    <identifier type>  VARCHAR    named after the sync's identifier type, e.g. external_id or email
    <field> ...        VARCHAR    one column per destination field of the sync, in mapping order: the
                                  value as text (objects and arrays as JSON text), NULL when null
    updated_at         TIMESTAMP  (naive UTC) when this member's current values were delivered; it
                                  moves only when the member joins or one of its values changes

It selects from the pair's ledger, which takes a run's rows when the sync finishes, so the view
shows the audience as of the last finished sync. In mirror mode members who left are gone; in
upsert mode they stay, with their last values. The view's comment names the audience and
destination it publishes; two messagegears destinations syncing one audience need different
schemas (the second one's sync fails rather than replace the first one's view).

The field columns are the keys of the newest ledger row's fields, i.e. the sync's current field
mapping. The view is rebuilt when a sync opens (so it exists from the first run on) and when it
closes, after the delivery loop has folded the run's acknowledgements into the ledger (so added or
removed fields show as soon as the sync finishes). A field named like another column of the view
(compared case-insensitively) fails the sync.

Deletion requests (governance/deletion.py): there is nothing to call. The view reads the ledger, so purging
the person's ledger rows, which the deletion run does right after, is the deletion; the proof says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from ..store import PairTables
from ..warehouse import Connection
from ..warehouse.sql import DIALECT, ident, table
from .base import (
    PURGED,
    BatchResult,
    Capabilities,
    Destination,
    ForgetTarget,
    Forgotten,
    Limits,
    Record,
    Session,
    Target,
    TerminalError,
    generic_payload,
)

BATCH_SIZE = 10_000


class MessageGearsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_name: str = Field(default="messagegears", alias="schema", min_length=1)


def _field_path(name: str) -> str:
    """A JSONPath literal selecting one key, whatever characters the key holds."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return exp.Literal.string(f'$."{escaped}"').sql(DIALECT)


def publish_view(conn: Connection, schema: str, target: Target) -> None:
    """Create or replace the audience's view over the pair's ledger, refusing to take over someone else's."""
    pair = PairTables(target.schema, target.audience, target.destination)
    ledger = pair.ledger
    marker = f"composable: audience {target.audience} synced to destination {target.destination}"
    owner = _owner(conn, schema, target.audience, pair)
    if owner is not None:
        raise TerminalError(
            f"{schema}.{target.audience} exists and is not the view of {target.destination} "
            f"({owner}); give destination {target.destination} its own schema"
        )
    # The keys are read here rather than with a JSON function: each engine has its own (json_keys, json_object_keys,
    # OBJECT_KEYS), and the text keeps the order the fields were mapped in.
    newest = conn.fetch_one(
        f"SELECT _fields FROM {ledger} WHERE _fields IS NOT NULL ORDER BY _synced_at DESC, _key LIMIT 1"
    )
    fields = list(json.loads(newest[0])) if newest else []
    columns = ["member_key", target.identifier_type, *fields, "updated_at"]
    lowered = [c.lower() for c in columns]
    clashes = sorted({c for c in lowered if lowered.count(c) > 1})
    if clashes:
        raise TerminalError(
            f"the view of {target.audience} cannot have two columns named {', '.join(clashes)}; rename the field"
        )
    select = [
        "_key AS member_key",
        f"_identifier AS {ident(target.identifier_type)}",
        *(f"json_extract_string(_fields, {_field_path(f)}) AS {ident(f)}" for f in fields),
        "_synced_at AS updated_at",
    ]
    view = table(schema, target.audience)
    # One transaction, so that where replacing is drop-then-create (PostgreSQL) readers never miss the view.
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
        conn.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT {', '.join(select)} FROM {ledger}")
    # Replacing a view drops its comment, which is put back for people reading the catalog. After the commit: the
    # comment is not what tells the view's owner (see _owner), and Snowflake's test double cannot record a comment
    # inside a transaction.
    conn.execute(f"COMMENT ON VIEW {view} IS {exp.Literal.string(marker).sql(DIALECT)}")


def _owner(conn: Connection, schema: str, name: str, pair: PairTables) -> str | None:
    """Why `schema.name` cannot be replaced by this pair's view (someone else's view, or a table), or None.

    Told by the view's definition, which selects from the pair's ledger: every engine shows a view's definition
    (`Connection.view_definition`), while a view's comment is read differently on each (and not at all by
    Snowflake's test double).
    """
    definition = conn.view_definition(schema, name)
    if definition is not None:
        # The ledger's name, not followed by more of a name (ledger__a__mg must not match ledger__a__mg_mirror).
        ours = re.compile(re.escape(f"ledger__{pair.audience}__{pair.destination}") + r"(?![A-Za-z0-9_])")
        return None if ours.search(definition) else "a view over something else"
    if conn.table_exists(schema, name):
        return "a table"
    return None


class MessageGearsSession(Session[Record]):
    def __init__(self, target: Target, schema: str):
        self.target = target
        self.schema = schema

    def send(self, batch: Sequence[Record]) -> BatchResult:
        # Nothing to call: the ledger these acknowledgements fill is what the view shows.
        return BatchResult.all_acknowledged(batch, [generic_payload(r, self.target.identifier_type) for r in batch])

    def close(self) -> None:
        with self.target.warehouse.connect() as conn:
            publish_view(conn, self.schema, self.target)


class MessageGears(Destination):
    """Publishes each audience as a view over its ledger; see the module docstring."""

    type_name = "messagegears"
    kind = "messagegears"
    Settings = MessageGearsSettings

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(Limits(BATCH_SIZE), forget_batch_size=BATCH_SIZE)

    def forget(self, target: ForgetTarget, identifiers: Sequence[str]) -> list[Forgotten]:
        # The view over the ledger is all MessageGears sees: the ledger purge that follows is the deletion.
        schema = MessageGearsSettings.model_validate(self.settings).schema_name
        answer = f"no API: MessageGears reads the view {schema}.{target.source} over the ledger, purged in this run"
        return [Forgotten(i, PURGED, answer) for i in identifiers]

    def open(self, target: Target) -> Session:
        schema = MessageGearsSettings.model_validate(self.settings).schema_name
        with target.warehouse.connect() as conn:
            publish_view(conn, schema, target)
        return MessageGearsSession(target, schema)
