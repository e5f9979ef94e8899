"""HTTP plumbing shared by API destinations: a connection pool, one rate budget per account, careful retries.

Requests go through urllib3's pool directly rather than a `requests.Session`: the session's per-request work
(merging settings, hooks, cookies, building a prepared request and its adapter's response) cost more CPU per
request than sending it. What the destinations read of an answer is `Response`: status, headers, body.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import certifi
import urllib3
from pydantic import BaseModel, ConfigDict, Field
from requests.utils import get_environ_proxies, select_proxy
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError

from ..coordination import Limit, RateBudget
from ..project import Redactor
from .base import OutcomeUnknown, TerminalError, TransientError

if TYPE_CHECKING:
    from ..coordination import Coordination

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


class Response:
    """One HTTP answer: what destinations read of it (the names `requests.Response` gives them)."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes):
        self.status_code = status_code
        #: Case-insensitive, as the server sent them.
        self.headers = headers
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(_charset(self.headers.get("Content-Type", "")), errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return json.loads(self.content)


#: Signs one request body: the extra headers to send with it (computed again for every try).
Signer = Callable[[bytes], dict[str, str]]

#: Failures on the way (no connection, no answer), as urllib3 raises them.
_NETWORK_ERRORS = (HTTPError, OSError)


class HttpClient:
    """A pooled HTTP client to one API: budgeted, retried with backoff and jitter, secrets kept out of errors."""

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
        self._headers = {"User-Agent": "composable-assets", "Accept": "*/*", **headers}
        self._pool = _pool_manager(self.base_url, pool_size, timeout_seconds)
        # Our own tries wrap every request: urllib3 retries nothing, and follows redirects only when asked.
        self._follow = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=30)
        self._stay = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=False)
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "rate_limit_wait_seconds": 0.0}

    def request(
        self,
        method: str,
        path: str,
        *,
        budget: RateBudget | None = None,
        retry_unknown_outcome: bool = True,
        json: Any = None,
        data: bytes | str | None = None,
        sign: Signer | None = None,
        allow_redirects: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Send with retries; returns any final response that is not worth retrying (callers read per-row errors).

        The body is `data` (bytes as they are, text as UTF-8) or `json` (encoded here). `sign` is asked for extra
        headers for each try's body, so every retry is signed afresh. Raises TransientError when the tries run out
        and TerminalError when the credentials are refused. With `retry_unknown_outcome=False` (a request that must
        not be applied twice, such as Braze events), a request that may have reached the server but got no answer
        (read timeout, connection dropped after sending) is not retried: OutcomeUnknown is raised instead.
        """
        url = f"{self.base_url}{path}"
        body = _body(json, data)
        sent_headers = self._headers
        if headers or json is not None:
            sent_headers = {**sent_headers, **(headers or {})}
            if json is not None:
                sent_headers.setdefault("Content-Type", "application/json")
        retries = self._follow if allow_redirects else self._stay
        problem = ""
        for attempt in range(1, self.max_tries + 1):
            if budget is not None:
                self._count("rate_limit_wait_seconds", budget.acquire())
            self._count("requests", 1)
            wait = None
            try:
                answer = self._pool.urlopen(
                    method,
                    url,
                    body=body,
                    headers={**sent_headers, **sign(body or b"")} if sign is not None else sent_headers,
                    retries=retries,
                    redirect=allow_redirects,
                    preload_content=True,
                )
                response = Response(answer.status, answer.headers, answer.data)
            except _NETWORK_ERRORS as exc:
                error = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
                problem = _problem_name(error)
                if not retry_unknown_outcome and _may_have_arrived(error):
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

    def answer(self, response: Response, chars: int = 200) -> str:
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
        self._pool.clear()


def _pool_manager(base_url: str, pool_size: int, timeout: float) -> urllib3.PoolManager:
    """Connections to one API, with the proxy and CA bundle the environment names, read once here.

    The same environment requests reads: HTTP(S)_PROXY / ALL_PROXY with NO_PROXY, and REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE (a file or a folder), else certifi's bundle.
    """
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    tls: dict[str, Any] = {"ca_cert_dir": ca_bundle} if os.path.isdir(ca_bundle) else {"ca_certs": ca_bundle}
    options: dict[str, Any] = {
        "num_pools": 4,
        "maxsize": pool_size,
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "cert_reqs": "CERT_REQUIRED",
        **tls,
    }
    proxy = select_proxy(base_url, get_environ_proxies(base_url))
    if not proxy:
        return urllib3.PoolManager(**options)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does for SOCKS

        return SOCKSProxyManager(proxy, **options)
    return urllib3.ProxyManager(proxy, **options)


def _body(json_value: Any, data: bytes | str | None) -> bytes | None:
    if json_value is not None:
        # As requests encodes `json=`: NaN and infinities are refused, not sent as invalid JSON.
        return json.dumps(json_value, allow_nan=False).encode()
    if isinstance(data, str):
        return data.encode()
    return data


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip("\"'")
    return "utf-8"


def _problem_name(error: BaseException) -> str:
    """What went wrong on the way, named as requests named it (ConnectTimeout, ReadTimeout, ConnectionError)."""
    if isinstance(error, NewConnectionError):  # refused, unreachable, name not found (a timeout subclass in urllib3)
        return "ConnectionError"
    if isinstance(error, ConnectTimeoutError):
        return "ConnectTimeout"
    if isinstance(error, TimeoutError | urllib3.exceptions.TimeoutError):
        return "ReadTimeout"
    return "ConnectionError"


def _may_have_arrived(error: BaseException) -> bool:
    """False only when the request certainly never reached the server (no connection could be made)."""
    return not isinstance(error, ConnectTimeoutError | NewConnectionError)


def _reset_time(response: Response) -> float | None:
    """Braze's x-ratelimit-reset: the epoch second the budget refills."""
    value = response.headers.get("x-ratelimit-reset")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(response: Response) -> float | None:
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
