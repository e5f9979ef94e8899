"""One delivery of a pair at a time, anywhere: the lease a sync or stream step holds while it delivers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from ..coordination import Coordination, CoordinationError, Holder, Lease, LeaseHeld
from ..warehouse import Warehouse


def lease_name(kind: str, warehouse: Warehouse, schema: str, source: str, destination: str) -> str:
    """The lease of one pair: `kind` (sync, stream) of `source` to `destination`, in one warehouse and schema.

    Two projects may both have an audience `vip` synced to `braze`; their ledgers are in different warehouses (or
    schemas), so they are different pairs. The warehouse URL carries no secret and its query only engine settings.
    """
    where = hashlib.sha256(f"{warehouse.url.split('?', 1)[0]}\x1f{schema}".encode()).hexdigest()[:12]
    return f"{kind}:{where}:{source}:{destination}"


@contextmanager
def pair_lease(context: dg.AssetExecutionContext, coordination: Coordination, name: str, what: str) -> Iterator[Lease]:
    """Hold the lease on `name` (see `lease_name`) for the block, waiting for a live holder and saying so.

    Dagster's own concurrency cannot give this guarantee: an asset has one pool (ours is `warehouse`, for the
    warehouse's sake), and command-line runs on a throwaway instance see no other process's slots; so the lease lives
    in the coordination store that every process and machine running the project shares.
    """
    try:
        lease = coordination.lease(name, what, context.run.run_id)
    except CoordinationError as exc:
        raise dg.Failure(description=f"{what}: {exc}") from exc

    def waiting(holder: Holder | None, seconds_left: float) -> None:
        context.log.warning(
            f"waiting for {what}: {holder.describe() if holder else 'another run'} is delivering it; "
            f"if that run died, its lease runs out in {max(seconds_left, 0):.0f} s"
        )

    def broken(holder: Holder) -> None:
        context.log.warning(f"{what}: {holder.describe()} held it but its process is gone; took it over")

    try:
        lease.acquire(coordination.lease_wait_seconds, on_wait=waiting, on_break=broken)
    except LeaseHeld as exc:
        raise dg.Failure(description=f"{what} did not run, nothing was sent: {exc}") from exc
    try:
        yield lease
    finally:
        lease.release()
