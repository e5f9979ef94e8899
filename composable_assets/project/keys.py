"""Asset keys, groups, the pool and run tags: one place that decides how the graph reads in the UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import dagster as dg

SOURCES, MODELS, AUDIENCES, DELTAS, SYNCS = "sources", "models", "audiences", "deltas", "syncs"
STREAMS = "streams"
WAREHOUSE_POOL = "warehouse"
#: Resource key of the warehouse's pandas I/O manager, which stores Python models' DataFrames (assets/python_models.py).
PANDAS_IO_MANAGER = "pandas_io_manager"
#: Resource key of dagster-dbt's DbtCliResource, which runs the project's dbt project (assets/dbt_models.py).
DBT_RESOURCE = "dbt"
#: Run tag: how a run's model steps refresh ("incremental", or "full" for the nightly comparison).
REFRESH_TAG = "composable/refresh"
#: Asset tag on every delivery asset (an audience's sync, a stream's deliveries): its kind, "audience" or "stream".
#: The runner and the CLI find delivery assets by it (`dg.AssetSelection.tag`), never by the shape of a key.
DELIVERY_TAG = "composable/delivery"
#: Metadata of a delivery asset: what it delivers (`str(Delivery)`, "audience vip") and to which destination.
DELIVERY_METADATA, DESTINATION_METADATA = "delivery", "destination"


def _key(*parts: str) -> dg.AssetKey:
    # Imported here: the command line's quiet check reads these names without loading dagster (~1.5 s).
    import dagster as dg

    return dg.AssetKey(list(parts))


def source_key(table: str) -> dg.AssetKey:
    return _key("source", table)


def model_key(model: str) -> dg.AssetKey:
    return _key("model", model)


def audience_key(audience: str) -> dg.AssetKey:
    return _key("audience", audience)


def delta_key(audience: str, destination: str) -> dg.AssetKey:
    return _key("delta", audience, destination)


def sync_key(audience: str, destination: str) -> dg.AssetKey:
    return _key("sync", audience, destination)


def stream_key(stream: str, destination: str) -> dg.AssetKey:
    return _key("stream", stream, destination)


GOVERNANCE = "governance"


def governance_key(name: str) -> dg.AssetKey:
    """Project-wide governance work, e.g. `governance/deletion_requests`."""
    return _key(GOVERNANCE, name)


@dataclass(frozen=True)
class Delivery:
    """What is delivered: an audience's delta or an event stream, by name.

    `str()` is the readable form stored where a text column must stay (the deletion log's `source`: "audience vip",
    "stream purchases"); `Delivery.parse` reads it back.
    """

    kind: Literal["audience", "stream"]
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"

    @classmethod
    def parse(cls, text: str) -> Delivery:
        kind, name = text.split(" ", 1)
        if kind not in ("audience", "stream"):
            raise ValueError(f"not a delivery: {text!r}")
        return cls(kind, name)  # type: ignore[arg-type]
