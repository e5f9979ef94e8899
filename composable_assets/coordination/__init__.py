"""Coordination between runs, processes and machines: rate budgets per vendor account, one lease per delivery pair.

The store is chosen by a URL (`COMPOSABLE_COORDINATION_URL`, see settings.py):
- `sqlite:///<file>`: one machine, no server (the default, `$COMPOSABLE_DATA_DIR/coordination.sqlite`);
- `postgresql://user@host:5432/db`: any number of machines (the default when the Dagster instance is on
  PostgreSQL, as deploy/dagster.yaml is: its DAGSTER_PG_* variables);
- `redis://host:6379/0`: any number of machines.
A URL never carries a password: it comes from COMPOSABLE_COORDINATION_PASSWORD (or DAGSTER_PG_PASSWORD / PGPASSWORD).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import dagster as dg

from .budget import Limit, RateBudget
from .lease import Holder, Lease, LeaseHeld, LeaseLost, process_gone, this_process
from .stores import PostgresStore, RedisStore, SQLiteStore, Store

PASSWORD_VARIABLES = ("COMPOSABLE_COORDINATION_PASSWORD", "DAGSTER_PG_PASSWORD", "PGPASSWORD")


class CoordinationError(Exception):
    """The coordination URL is wrong or its store cannot be reached; the message holds no secret."""


# One store per URL in a process: every sync, stream and budget of the process shares its connections.
_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(url: str, password: str | None = None) -> Store:
    """The store a coordination URL names, opened once per process (`password`: else read from the environment)."""
    with _stores_lock:
        if url not in _stores:
            _stores[url] = _connect(url, password if password is not None else _password(urlparse(url).scheme))
        return _stores[url]


def password_variable(url: str) -> str | None:
    """The environment variable holding the store's password, where one is set."""
    scheme = urlparse(url).scheme
    names = PASSWORD_VARIABLES if scheme.startswith("postgres") else PASSWORD_VARIABLES[:1]
    return next((name for name in names if os.environ.get(name)), None)


def _password(scheme: str) -> str | None:
    name = password_variable(f"{scheme}://")
    return os.environ[name] if name else None


def _connect(url: str, password: str | None) -> Store:
    parsed = urlparse(url)
    if parsed.password is not None:
        raise CoordinationError(
            "COMPOSABLE_COORDINATION_URL must not contain a password; set COMPOSABLE_COORDINATION_PASSWORD instead"
        )
    where = f"{parsed.scheme}://{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}{parsed.path}"
    try:
        if parsed.scheme == "sqlite":
            return SQLiteStore(Path(url.removeprefix("sqlite:///")))
        if parsed.scheme in ("postgresql", "postgres"):
            from psycopg.conninfo import make_conninfo

            conninfo = make_conninfo(
                host=parsed.hostname or "",
                port=parsed.port or 5432,
                user=parsed.username or "",
                dbname=parsed.path.lstrip("/"),
                password=password or "",
                **dict(parse_qsl(parsed.query)),
            )
            return PostgresStore(conninfo, where)
        if parsed.scheme in ("redis", "rediss"):
            return RedisStore(url, password, where)
    except CoordinationError:
        raise
    except Exception as exc:  # the driver's message may quote the connection string: name the store, not it
        raise CoordinationError(f"cannot reach the coordination store {where}: {type(exc).__name__}") from None
    raise CoordinationError(
        f"COMPOSABLE_COORDINATION_URL: unsupported scheme {parsed.scheme!r}; use sqlite:///file, "
        "postgresql://user@host:5432/database or redis://host:6379/0"
    )


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


__all__ = [
    "Coordination",
    "CoordinationError",
    "Holder",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "Limit",
    "RateBudget",
    "open_store",
    "password_variable",
    "process_gone",
    "this_process",
]
