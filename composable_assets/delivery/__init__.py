"""One delivery loop for audience deltas and event streams: batches, intents, acks, checkpoints.

`loop.py` is the loop; `audience.py` and `stream.py` are its two sources (what to read, how to checkpoint).
"""

from .audience import SyncReport, deliver
from .loop import DeliveryReport
from .stream import StreamReport, deliver_events

__all__ = ["DeliveryReport", "StreamReport", "SyncReport", "deliver", "deliver_events"]
