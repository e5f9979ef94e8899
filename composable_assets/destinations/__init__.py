"""Destinations by `type:`; a new destination is one module plus one line here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    BatchResult,
    Capabilities,
    Destination,
    DestinationError,
    Event,
    ForgetTarget,
    Forgotten,
    Limits,
    OutcomeUnknown,
    PreparedBatch,
    Record,
    Row,
    Senders,
    Session,
    Target,
    TerminalError,
    TransientError,
)
from .braze import Braze
from .braze_cdi import BrazeCdi
from .iterable import Iterable
from .messagegears import MessageGears
from .outbox import Outbox
from .webhook import Webhook

if TYPE_CHECKING:
    from ..coordination import Coordination

DESTINATION_TYPES: dict[str, type[Destination]] = {
    Outbox.type_name: Outbox,
    Braze.type_name: Braze,
    Iterable.type_name: Iterable,
    Webhook.type_name: Webhook,
    BrazeCdi.type_name: BrazeCdi,
    MessageGears.type_name: MessageGears,
}


def register_destination_type(cls: type[Destination]) -> type[Destination]:
    """Make a custom destination class usable as `type:` in destinations.yaml (usable as a decorator)."""
    DESTINATION_TYPES[cls.type_name] = cls
    return cls


def build_destination(
    name: str, type_name: str, settings: dict[str, Any], coordination: Coordination | None = None
) -> Destination:
    return DESTINATION_TYPES[type_name](name, settings, coordination)


__all__ = [
    "BatchResult",
    "Capabilities",
    "Limits",
    "DESTINATION_TYPES",
    "Destination",
    "DestinationError",
    "Event",
    "ForgetTarget",
    "Forgotten",
    "OutcomeUnknown",
    "PreparedBatch",
    "Record",
    "Row",
    "Senders",
    "Session",
    "Target",
    "TerminalError",
    "TransientError",
    "build_destination",
    "register_destination_type",
]
