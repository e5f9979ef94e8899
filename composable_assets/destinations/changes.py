"""Column-level diffs: what an update really changed, so only those data points are sent."""

from __future__ import annotations

from typing import Any

from .base import Record


def changed_fields(record: Record) -> dict[str, Any]:
    """Fields to send for an add or update.

    An add sends its non-null fields (a null on a new profile would set nothing). An update sends
    only fields whose value differs from what the destination last acknowledged; a field that
    became null is sent as null, which clears it, and only then.
    """
    fields = record.fields or {}
    if record.change == "add" or record.previous is None:
        return {name: value for name, value in fields.items() if value is not None}
    previous = record.previous
    return {
        name: value
        for name, value in fields.items()
        if (previous[name] != value if name in previous else value is not None)
    }
