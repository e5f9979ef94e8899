"""HTTP plumbing shared by API destinations: a pooled session, one rate budget per account, careful retries."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from ..coordination import Coordination, Limit, RateBudget
from ..project import Redactor
from .base import OutcomeUnknown, TerminalError, TransientError

# Statuses worth another try: throttled, timed out, or the server's own trouble.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})


class ApiSettings(BaseModel):
    """Settings every HTTP destination shares: how many requests in flight and how hard to retry."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=4, ge=1, le=64)
    max_tries: int = Field(default=6, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0)
    backoff_base_seconds: float = Field(default=0.5, gt=0)

    def client(self, base_url: str, headers: dict[str, str], secrets: tuple[str, ...]) -> HttpClient:
        """A pooled client for one API, sized for this many requests in flight."""
        return HttpClient(
            base_url,
            headers,
            secrets=secrets,
            max_tries=self.max_tries,
            timeout_seconds=self.timeout_seconds,
            backoff_base_seconds=self.backoff_base_seconds,
            pool_size=self.concurrency,
        )


def budgets(coordination: Coordination, prefix: str, limits: dict[str, Limit]) -> dict[str, RateBudget]:
    """One shared rate budget per named endpoint group of an account (`prefix` names the account)."""
    return {name: coordination.budget(f"{prefix}:{name}", limit) for name, limit in limits.items()}


def account_key(*parts: str) -> str:
    """A stable, secret-free name for one vendor account (a hash of its URL and key)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class HttpClient:
    """A pooled HTTP session to one API: budgeted, retried with backoff and jitter, secrets kept out of errors."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str],
        *,
        secrets: tuple[str, ...] = (),
        max_tries: int = 6,
        timeout_seconds: float = 30.0,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        pool_size: int = 16,
    ):
        self.base_url = base_url.rstrip("/")
        self.max_tries = max_tries
        self.timeout = timeout_seconds
        self.backoff_base = backoff_base_seconds
        self.backoff_max = backoff_max_seconds
        self._redactor = Redactor(secrets)
        self._session = requests.Session()
        self._session.headers.update(headers)
        # requests re-reads proxy and CA settings from the environment on every request, which cost
        # a third of the sending threads' CPU in the delivery benchmark: read them once, here.
        self._session.trust_env = False
        self._session.proxies = requests.utils.get_environ_proxies(self.base_url)
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            self._session.verify = ca_bundle
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "rate_limit_wait_seconds": 0.0}

    def request(
        self,
        method: str,
        path: str,
        *,
        budget: RateBudget | None = None,
        retry_unknown_outcome: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; returns any final response that is not worth retrying (callers read per-row errors).

        Raises TransientError when the tries run out and TerminalError when the credentials are refused. With
        `retry_unknown_outcome=False` (a request that must not be applied twice, such as Braze events), a request
        that may have reached the server but got no answer (read timeout, connection dropped after sending) is not
        retried: OutcomeUnknown is raised instead.
        """
        url = f"{self.base_url}{path}"
        problem = ""
        for attempt in range(1, self.max_tries + 1):
            if budget is not None:
                self._count("rate_limit_wait_seconds", budget.acquire())
            self._count("requests", 1)
            wait = None
            try:
                response = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"{type(exc).__name__}"
                if not retry_unknown_outcome and _may_have_arrived(exc):
                    raise OutcomeUnknown(f"{method} {path}: {problem}; the request may have been processed") from None
            else:
                reset = _reset_time(response)
                if budget is not None and reset is not None and response.headers.get("x-ratelimit-remaining") == "0":
                    budget.pause_until(reset)
                if response.status_code in AUTH_STATUSES:
                    raise TerminalError(
                        f"{method} {path}: {response.status_code}, credentials refused: {self.redact(response.text[:200])}"
                    )
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                problem = f"{response.status_code} {self.redact(response.text[:200])}"
                wait = _retry_after(response)
                if response.status_code == 429 and budget is not None and wait is not None:
                    budget.pause_until(time.time() + wait)
            if attempt == self.max_tries:
                break
            self._count("retries", 1)
            delay = wait if wait is not None else self._backoff(attempt)
            if wait is not None:
                self._count("rate_limit_wait_seconds", delay)
            time.sleep(delay)
        raise TransientError(f"{method} {path}: gave up after {self.max_tries} tries; last: {problem}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))

    def redact(self, text: str) -> str:
        """Text with every secret this client knows replaced, whole and in part (some APIs echo the key in errors)."""
        return self._redactor.redact(text)

    def answer(self, response: requests.Response, chars: int = 200) -> str:
        """`HTTP <status>: <start of the body>` on one line, secrets redacted: what a proof or failure keeps."""
        body = " ".join(self.redact(response.text[:chars]).split())
        return f"HTTP {response.status_code}: {body}" if body else f"HTTP {response.status_code}"

    def _count(self, name: str, amount: float) -> None:
        with self._stats_lock:
            self._stats[name] += amount

    def stats(self) -> dict[str, float]:
        with self._stats_lock:
            return dict(self._stats)

    def close(self) -> None:
        self._session.close()


def _may_have_arrived(exc: requests.RequestException) -> bool:
    """False only when the request certainly never reached the server (no connection could be made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return not isinstance(reason, NewConnectionError)


def _reset_time(response: requests.Response) -> float | None:
    """Braze's x-ratelimit-reset: the epoch second the budget refills."""
    value = response.headers.get("x-ratelimit-reset")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait as the server said: Retry-After (seconds or a date), else the rate-limit reset."""
    value = response.headers.get("Retry-After")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = _reset_time(response)
    if reset is not None and response.status_code == 429:
        return max(0.0, reset - time.time())
    return None
