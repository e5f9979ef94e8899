"""Local stand-ins for the Braze, Iterable and Slack APIs, serving real HTTP on 127.0.0.1 for tests and `composable demo`."""

from .braze import BrazeFake, DataPoint
from .iterable import DEFAULT_RATE_LIMITS, IterableFake, SpecViolation
from .server import Faults, ReceivedRequest
from .slack import SlackFake

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "BrazeFake",
    "DataPoint",
    "Faults",
    "IterableFake",
    "ReceivedRequest",
    "SlackFake",
    "SpecViolation",
]
