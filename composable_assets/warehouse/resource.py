"""The `Warehouse` resource: the engine a URL names, as the Dagster resource every asset opens."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cached_property

import dagster as dg

from ..coordination import this_process
from . import WORKER_TAG, Connection, Engine, engine_from_url


class Warehouse(dg.ConfigurableResource):
    """The customer's warehouse, where models, audiences, deltas and ledgers live.

    `url` (COMPOSABLE_WAREHOUSE) names the engine and where our tables live. `connection` is the vendor's own
    Dagster resource the engine opens its connections with: DuckDBResource, SnowflakeResource or BigQueryResource
    (PostgreSQL, Redshift and Databricks keep their connectors and have none). `Warehouse.from_url` builds it from
    the URL, secrets as `EnvVar`; a deployment may pass its own instead.
    """

    url: str
    connection: dg.ConfigurableResource | None = None

    @classmethod
    def from_url(cls, url: str) -> Warehouse:
        """The warehouse a URL names, with the vendor's resource built from it (shown on the Resources page)."""
        return cls(url=url, connection=getattr(engine_from_url(url), "resource", None))

    @cached_property
    def engine(self) -> Engine:
        return engine_from_url(self.url, self.connection)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.log is not None:
            self.engine.on_wait = context.log.warning  # a long wait for the warehouse shows in the run's log
        run = context.run
        if context.instance is not None and run is not None and run.tags.get(WORKER_TAG) != this_process():
            context.instance.add_run_tags(run.run_id, {WORKER_TAG: this_process()})

    def connect(self) -> AbstractContextManager[Connection]:
        return self.engine.connect()

    @property
    def kind(self) -> str:
        return self.engine.kind
