"""Destination secrets, which a project may only reference by environment variable."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ProjectError

_SECRET_KEYS = {"token", "secret", "password", "authorization"}
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password")


class MissingSecretError(ProjectError):
    """An environment variable referenced by a destination setting is not set."""


class SecretRef(BaseModel):
    """A setting written as `{env: NAME}`: its value is read from the environment when used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(min_length=1)

    def resolve(self) -> str:
        """The variable's current value; the error names the variable, never a value."""
        value = os.environ.get(self.env)
        if not value:
            raise MissingSecretError(
                f"environment variable {self.env} is not set (a destination setting reads it)"
            )
        return value


def is_secret_ref(value: Any) -> bool:
    """True for a `{env: ...}` mapping as written in destinations.yaml."""
    return isinstance(value, dict) and set(value) == {"env"}


def resolve_setting(value: Any) -> Any:
    """A setting's value, with `{env: NAME}` references (also nested ones) read from the environment."""
    if isinstance(value, SecretRef):
        return value.resolve()
    if is_secret_ref(value):
        return SecretRef.model_validate(value).resolve()
    if isinstance(value, dict):
        return {key: resolve_setting(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_setting(item) for item in value]
    return value


def looks_secret(key: str) -> bool:
    """True for setting names that hold credentials (api_key, token, password, ...)."""
    # Header names such as X-Api-Key spell the same words with dashes.
    key = key.lower().replace("-", "_")
    return key in _SECRET_KEYS or key.endswith(_SECRET_SUFFIXES)
