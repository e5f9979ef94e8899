"""Event streams: append-only rows of a table (purchases, sign-ups, cart events) forwarded as events.

Per (stream, destination) the warehouse keeps, in the project schema:

- `stream_sent__<stream>__<destination>`: every event settled there: `sent` (acknowledged), `rejected` (refused
  by the destination; not retried), `in_doubt` (in flight when a run was killed, at a destination that does not
  deduplicate; not resent) or `late_skipped` (arrived after its window had passed; never sent), with its cursor
  value, run and time. Rows older than `high_water - 2 x lookback` are pruned.
- `stream_cursors`: one row per pair: the high-water mark (the newest cursor value settled with nothing unsettled
  before it), where the pair began, and how far the sent log has been pruned.
- `stream_intents`: the event ids of the batches a running delivery may have in flight, written before they are
  sent and deleted on every way out but a killed process.

A run picks the rows with `cursor >= high_water - lookback` (and not after now) whose event id is not in the
sent log, in (cursor, event id) order, streamed from the warehouse in chunks; sends them in batches with up to
`concurrency` in flight; and checkpoints every answered batch (sent log + mark, one transaction). Rows landing late
but within the lookback are therefore sent, exactly once; the mark never passes an event that is not settled, so
a transient failure or a kill loses nothing. After a kill, the intents left behind name the events that may or may
not have arrived: a destination that deduplicates by event id (Iterable, webhook receivers, the outbox's readers)
gets them again; one that does not (Braze) has them recorded `in_doubt` and never resent (at most once for the at
most `concurrency` batches in flight at the kill).
"""

from ..store import StreamTables
from .shape import StreamDataError, StreamShape

__all__ = ["StreamDataError", "StreamShape", "StreamTables"]
