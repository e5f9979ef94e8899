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
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlparse

from .budget import Limit, RateBudget
from .lease import Holder, Lease, LeaseHeld, LeaseLost, process_gone, this_process
from .stores import PostgresStore, RedisStore, SQLiteStore, Store

if TYPE_CHECKING:
    from .resource import Coordination

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


def __getattr__(name: str) -> Any:
    # The Dagster resource is imported on first use: the command line's quiet check reads the rest of this package
    # (through the destinations) without loading dagster (~1.5 s).
    if name == "Coordination":
        from .resource import Coordination

        return Coordination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
