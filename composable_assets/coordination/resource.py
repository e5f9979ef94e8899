"""The coordination store as a Dagster resource: where runs on any machine meet."""

from __future__ import annotations

import dagster as dg

from . import Holder, Lease, Limit, RateBudget, Store, open_store, password_variable


class Coordination(dg.ConfigurableResource):
    """Where runs on any machine meet: destination accounts' rate budgets and one lease per delivery pair."""

    url: str
    #: A lease not renewed for this long is taken over: how long a crashed holder on another machine blocks its pair.
    lease_seconds: float = 30.0
    #: How long a run waits for a live holder of its pair before failing, naming it.
    lease_wait_seconds: float = 600.0
    #: The store's password, as `EnvVar(name)` (see `Coordination.from_url`): never a value in the config.
    password: str | None = None

    @classmethod
    def from_url(cls, url: str, lease_seconds: float = 30.0) -> Coordination:
        """The coordination store a URL names, its password (where the environment has one) as an EnvVar."""
        name = password_variable(url)
        return cls(url=url, lease_seconds=lease_seconds, password=dg.EnvVar(name) if name else None)

    @property
    def store(self) -> Store:
        # Inside a run Dagster has resolved the EnvVar already; elsewhere (a sensor, the CLI) it is resolved here.
        password = self.password.get_value() if isinstance(self.password, dg.EnvVar) else self.password
        return open_store(self.url, password)

    def budget(self, key: str, limit: Limit) -> RateBudget:
        """The shared budget `key` (a vendor account and endpoint group) under `limit`."""
        bucket, owned = self.store.bucket(key, limit)
        return RateBudget(bucket, key, limit, owns_bucket=owned)

    def lease(self, name: str, what: str, run_id: str) -> Lease:
        """An unacquired lease on `name` for this run; `what` names the work for messages."""
        return Lease(self.store, name, Holder(run_id=run_id, what=what), self.lease_seconds)
