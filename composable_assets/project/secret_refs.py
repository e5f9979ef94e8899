"""Destination secrets, which a project may only reference by environment variable, and what may never be shown."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from .errors import ProjectError

_SECRET_KEYS = {"token", "secret", "password", "authorization"}
_SECRET_SUFFIXES = ("_key", "_token", "_secret", "_password")
# Query parameter names that carry credentials in webhook and API URLs, besides those `looks_secret` knows.
_SECRET_QUERY_NAMES = {"key", "apikey", "auth", "sig", "signature", "passwd", "pwd"}
# Parts of a secret shorter than this are not redacted on their own (the whole secret always is): a user name like
# `api` or a one-letter query value is no credential, and replacing it everywhere would garble every message.
_MIN_PART_CHARS = 4


class MissingSecretError(ProjectError):
    """An environment variable referenced by a destination setting is not set (or holds what it must not)."""


class CredentialInUrlError(MissingSecretError):
    """An environment variable holds a URL carrying a credential, which would end up in logs and errors."""


class SecretRef(BaseModel):
    """A setting written as `{env: NAME}`: its value is read from the environment when used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(min_length=1)

    def resolve(self) -> str:
        """The variable's current value; the error names the variable, never a value."""
        value = os.environ.get(self.env)
        if not value:
            raise MissingSecretError(f"environment variable {self.env} is not set (a destination setting reads it)")
        credential = url_credential(value)
        if credential:
            raise CredentialInUrlError(
                f"environment variable {self.env} holds a URL with a credential in it ({credential}): "
                "move the credential into a header or a setting read from {env: NAME}"
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


def url_credential(value: str) -> str | None:
    """What credential a URL carries (user:password@, a query parameter such as `token`), or None."""
    if "://" not in value:
        return None
    try:
        url = urlsplit(value)
        query = parse_qsl(url.query, keep_blank_values=True)
    except ValueError:  # not a URL we can read; the setting's own check says so
        return None
    if not url.netloc:
        return None
    if "@" in url.netloc:
        return "a user name or password (user:password@)"
    for name, _ in query:
        if name.lower() in _SECRET_QUERY_NAMES or looks_secret(name):
            return f"the query parameter `{name}`"
    return None


def secret_parts(secret: str) -> set[str]:
    """Every string a secret consists of that must never be shown: the secret whole and its parts.

    Parts: the credentials after a scheme word (`Bearer <token>`, `Token token=<token>`), for Basic also the decoded
    `user:password`, the user and the password; for a URL its userinfo (user, password) and its query values.
    """
    parts = {secret}
    url = urlsplit(secret) if "://" in secret else None
    if url is not None and url.netloc:
        userinfo = url.netloc.rpartition("@")[0]
        parts |= {userinfo, *userinfo.split(":", 1)}
        for item in url.query.split("&"):
            value = item.partition("=")[2]
            parts |= {value, unquote(value.replace("+", " "))}
    else:
        scheme, _, credentials = secret.strip().partition(" ")
        credentials = credentials.strip()
        if credentials and scheme.isalpha():
            parts.add(credentials)
            # Digest, AWS4-HMAC-SHA256, `Token token=...`: comma or space separated key=value pairs.
            parts |= {item.partition("=")[2].strip('"') for item in re.split(r"[\s,]+", credentials)}
            if scheme.lower() == "basic":
                parts |= _basic_parts(credentials)
    return {part for part in parts if len(part) >= _MIN_PART_CHARS} | {secret}


def _basic_parts(credentials: str) -> set[str]:
    """`user:password`, the user and the password of Basic credentials, if they decode."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return set()
    return {decoded, *decoded.split(":", 1)}


class Redactor:
    """Replaces every secret it was given, whole and in part (`secret_parts`), with `***`."""

    def __init__(self, secrets: Iterable[str]):
        parts = {part for secret in secrets if secret for part in secret_parts(secret)}
        # Longest first, so a whole secret is replaced before the parts inside it.
        self._strings = sorted(parts, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for string in self._strings:
            text = text.replace(string, "***")
        return text
