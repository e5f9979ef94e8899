"""HTTP plumbing shared by API destinations: kept-alive connections, one rate budget per account, careful retries.

Requests go through libcurl (pycurl), one reused `pycurl.Curl` handle per thread, because the client's CPU per
request is the main cost of delivery: measured on a 2-core machine against a local Braze stand-in (75-object
JSON bodies, 8 threads), about 215 µs a request against 310 µs for the standard library's `http.client` and
600 µs for urllib3's pool. A request's tries are steps (`HttpClient.exchange`) run in the calling thread
(`request`) or many at once from one thread (`Transfers`, one curl multi handle). What the destinations read of an
answer is `Response`: status, headers, body.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import certifi
import pycurl
from pydantic import BaseModel, ConfigDict, Field
from requests.utils import get_environ_proxies, select_proxy

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
        """A client for one API (each of the `concurrency` sending threads keeps its own connection)."""
        return HttpClient(
            base_url,
            headers,
            secrets=secrets,
            max_tries=self.max_tries,
            timeout_seconds=self.timeout_seconds,
            backoff_base_seconds=self.backoff_base_seconds,
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
        #: By name in any case.
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

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Try:
    """One try of a request, as a step: answered with its Response, or _NoAnswer when none came."""

    method: str
    url: str
    body: bytes | None
    header_lines: list[str]
    follow: bool
    fresh: bool


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait this long before the next step (a backoff, or what the server asked for)."""

    seconds: float


#: Requests as steps: a generator yields each try and pause, is sent each try's outcome, and returns its result.
#: One code path for both ways of running them: `HttpClient.drive` (this thread) and `Transfers` (many at once).
Steps = Generator["Try | Pause", "Response | _NoAnswer | None", T]


class HttpClient:
    """An HTTP client to one API: budgeted, retried with backoff and jitter, secrets kept out of errors.

    Each thread sends through its own curl handle (made on its first request), which keeps its connections alive.
    """

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
    ):
        self.base_url = base_url.rstrip("/")
        self.max_tries = max_tries
        self.timeout = timeout_seconds
        self.backoff_base = backoff_base_seconds
        self.backoff_max = backoff_max_seconds
        self._redactor = Redactor(secrets)
        self._headers = {"User-Agent": "composable-assets", "Accept": "*/*", **headers}
        self._header_lines = _header_lines(self._headers)
        self._options = _curl_options(self.base_url, timeout_seconds)
        self._local = threading.local()  # .transfer: this thread's handle
        self._transfers: list[_Transfer] = []  # every thread's, for close()
        self._transfers_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "retries": 0, "rate_limit_wait_seconds": 0.0}

    def request(self, method: str, path: str, **options: Any) -> Response:
        """Send with retries in this thread: `exchange`'s steps (its options), each try through this thread's handle."""
        return self.drive(self.exchange(method, path, **options))

    def drive(self, steps: Steps[T]) -> T:
        """Run `steps` to the end in this thread: each try sent through this thread's curl handle, each pause slept."""
        outcome: Response | _NoAnswer | None = None
        while True:
            try:
                step = steps.send(outcome)
            except StopIteration as done:
                return done.value
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                outcome = None
            else:
                outcome = self._send(step)

    def transfers(self, slots: int, steps: Callable[[Any], Steps[T]]) -> Transfers[T]:
        """`steps` of each item submitted, many at once in the calling thread, at most `slots` tries in flight."""
        return Transfers(self, slots, steps)

    def exchange(
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
    ) -> Steps[Response]:
        """One request as steps (its tries and the pauses between them) that `drive` or `Transfers` runs.

        Send with retries; returns any final response that is not worth retrying (callers read per-row errors).

        The body is `data` (bytes as they are, text as UTF-8) or `json` (encoded here). `sign` is asked for extra
        headers for each try's body, so every retry is signed afresh. Raises TransientError when the tries run out
        and TerminalError when the credentials are refused. With `retry_unknown_outcome=False` (a request that must
        not be applied twice, such as Braze events), a request that may have reached the server but got no answer
        (read timeout, connection dropped after sending) is not retried: OutcomeUnknown is raised instead.
        """
        url = f"{self.base_url}{path}"
        body = _body(json, data)
        sent_headers = self._headers
        lines = self._header_lines
        if headers or json is not None:
            sent_headers = {**sent_headers, **(headers or {})}
            if json is not None:
                sent_headers.setdefault("Content-Type", "application/json")
            lines = _header_lines(sent_headers)
        problem = ""
        for attempt in range(1, self.max_tries + 1):
            # The budget's waits are steps too: one thread running many requests must not sleep in one of them while
            # others that took their slots wait to be sent.
            while budget is not None and (pause := budget.try_take()) > 0:
                self._count("rate_limit_wait_seconds", pause)
                yield Pause(pause)
            self._count("requests", 1)
            wait = None
            if sign is not None:
                lines = _header_lines({**sent_headers, **sign(body or b"")})
            outcome = yield Try(method, url, body, lines, allow_redirects, fresh=not retry_unknown_outcome)
            if isinstance(outcome, _NoAnswer):
                problem = _problem_name(outcome)
                if not retry_unknown_outcome and _may_have_arrived(outcome):
                    raise OutcomeUnknown(f"{method} {path}: {problem}; the request may have been processed")
            else:
                response = cast(Response, outcome)  # a try is answered with its response or _NoAnswer
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
            yield Pause(delay)
        raise TransientError(f"{method} {path}: gave up after {self.max_tries} tries; last: {problem}")

    def _send(self, attempt: Try) -> Response | _NoAnswer:
        """One try through this thread's curl handle: the answer, or _NoAnswer when none came."""
        transfer = getattr(self._local, "transfer", None) or self._new_transfer()
        transfer.prepare(attempt)
        try:
            transfer.curl.perform()
        except pycurl.error as exc:
            return transfer.no_answer(exc.args[0])
        return transfer.response()

    def _new_transfer(self) -> _Transfer:
        transfer = self._local.transfer = _Transfer(self._options)
        with self._transfers_lock:
            self._transfers.append(transfer)
        return transfer

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
        """Close every thread's handle and its connections; a later request opens a new one."""
        with self._transfers_lock:
            transfers, self._transfers = self._transfers, []
            self._local = threading.local()
        for transfer in transfers:
            transfer.curl.close()


class _Transfer:
    """One curl handle, configured once, with what the server's answers are collected into."""

    __slots__ = ("curl", "header_lines", "body")

    def __init__(self, options: list[tuple[int, Any]]):
        self.curl = pycurl.Curl()
        self.header_lines: list[bytes] = []  # every response's, redirects' too: the last status line starts ours
        self.body: list[bytes] = []
        for option, value in options:
            self.curl.setopt(option, value)
        self.curl.setopt(pycurl.HEADERFUNCTION, self.header_lines.append)
        self.curl.setopt(pycurl.WRITEFUNCTION, self.body.append)

    def prepare(self, attempt: Try) -> None:
        """Set the handle up for one try (curl's messages are never kept: they may hold the URL, and URLs may hold
        secrets).

        `fresh` sends on a new connection: when a kept-alive connection dies before any answer, curl sends the
        request again on a new one by itself (no option turns that off), so a request that must not be applied
        twice never goes out on a reused connection.
        """
        curl = self.curl
        self.header_lines.clear()
        self.body.clear()
        curl.setopt(pycurl.URL, attempt.url)
        curl.setopt(pycurl.HTTPHEADER, attempt.header_lines)
        if attempt.body is None and attempt.method != "POST":
            curl.setopt(pycurl.HTTPGET, 1)
        else:
            curl.setopt(pycurl.POSTFIELDS, attempt.body or b"")
        curl.setopt(pycurl.CUSTOMREQUEST, None if attempt.method in ("GET", "POST") else attempt.method)
        curl.setopt(pycurl.FOLLOWLOCATION, attempt.follow)
        curl.setopt(pycurl.FRESH_CONNECT, attempt.fresh)

    def response(self) -> Response:
        status = self.curl.getinfo(pycurl.RESPONSE_CODE)
        return Response(status, _parse_headers(self.header_lines), b"".join(self.body))

    def no_answer(self, code: Any) -> _NoAnswer:
        """The try's failure from curl's error code (not an int when pycurl itself complained)."""
        return _NoAnswer(code if isinstance(code, int) else 0, sent=self.curl.getinfo(pycurl.REQUEST_SIZE) > 0)


class Transfers(Generic[T]):
    """The steps of each submitted item (e.g. a batch), many at once, all in the calling thread: each try a
    transfer of one curl multi handle (at most `slots` at a time), each pause a timer.

    Why: a sending thread per request in flight cost the client ~360 µs of CPU a request against a local Braze
    stand-in (8 threads and the loop's thread taking turns at the GIL, a wake-up per answer), one thread driving
    every transfer ~260 µs. Answers come as futures; they move only while some caller waits in `result()`
    (which runs the transfers), so only the thread that started them may wait for them.
    """

    def __init__(self, client: HttpClient, slots: int, steps: Callable[[Any], Steps[T]]):
        self._steps = steps
        self._multi = pycurl.CurlMulti()
        self._handles = [_Transfer(client._options) for _ in range(max(1, slots))]
        self._free = list(self._handles)
        self._running: dict[int, tuple[_Transfer, Steps[Any], Future]] = {}  # by id() of the curl handle
        # Items beyond `slots` wait here unstarted: each started item holds at most one handle at a time, so a try
        # always finds one free, and none takes its rate-budget slot long before it can go out.
        self._queued: deque[tuple[Any, Future]] = deque()
        self._started = 0  # items whose steps have begun and not ended
        self._timers: list[tuple[float, int, Steps[Any], Future]] = []  # paused steps, by when they go on
        self._order = itertools.count()  # ties between timers

    def submit(self, item: Any) -> Future[T]:
        """Start the steps of `item` (the first try goes out at once, or when one of `slots` items ends); the future
        holds what they return or raise."""
        future: Future[T] = _Pumped(self)
        self._queued.append((item, future))
        self._start_queued()
        self._perform()
        return future

    @property
    def busy(self) -> bool:
        return bool(self._started or self._queued)

    def _start_queued(self) -> None:
        while self._queued and self._started < len(self._handles):
            item, future = self._queued.popleft()
            try:
                steps = self._steps(item)
            except BaseException as exc:
                future.set_exception(exc)
                continue
            self._started += 1
            self._advance(steps, future, None)

    def pump(self, timeout: float = 1.0) -> None:
        """Wait up to `timeout` for any transfer or timer, then move every request that can move on."""
        if self._timers:
            timeout = min(timeout, max(0.0, self._timers[0][0] - time.monotonic()))
        if self._running and timeout > 0:
            self._multi.select(timeout)
        elif timeout > 0:
            time.sleep(timeout)
        self._perform()
        while True:
            _, done, failed = self._multi.info_read()
            for curl in done:
                self._finish(curl, None)
            for curl, code, _message in failed:  # curl's message is not kept: it may hold the URL
                self._finish(curl, code)
            if not (done or failed):
                break
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, steps, future = heapq.heappop(self._timers)
            self._advance(steps, future, None)
        self._perform()

    def close(self) -> None:
        """Abandon whatever is still running (its futures never complete) and close the handles."""
        for transfer, _, _ in self._running.values():
            self._multi.remove_handle(transfer.curl)
            transfer.curl.close()
        for transfer in self._free:
            transfer.curl.close()
        self._running.clear()
        self._queued.clear()
        self._timers.clear()
        self._free = []
        self._started = 0
        self._multi.close()

    def __enter__(self) -> Transfers[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _advance(self, steps: Steps[Any], future: Future, outcome: Response | _NoAnswer | None) -> None:
        """Send `outcome` into `steps` and start its next step, or settle its future with what it returns or raises."""
        try:
            step = steps.send(outcome)
        except StopIteration as done:
            self._ended()
            future.set_result(done.value)
            return
        except BaseException as exc:  # whatever the steps raise is the request's answer, as a thread pool's would be
            self._ended()
            future.set_exception(exc)
            return
        if isinstance(step, Pause):
            heapq.heappush(self._timers, (time.monotonic() + step.seconds, next(self._order), steps, future))
        else:
            self._start(step, steps, future)

    def _ended(self) -> None:
        self._started -= 1
        self._start_queued()

    def _start(self, attempt: Try, steps: Steps[Any], future: Future) -> None:
        transfer = self._free.pop()  # one free for every started item not waiting on a transfer of its own
        transfer.prepare(attempt)
        self._multi.add_handle(transfer.curl)
        self._running[id(transfer.curl)] = (transfer, steps, future)

    def _finish(self, curl: pycurl.Curl, error: Any) -> None:
        """A transfer ended (`error`: curl's code, None when answered): its handle freed, its request moved on."""
        self._multi.remove_handle(curl)
        transfer, steps, future = self._running.pop(id(curl))
        outcome = transfer.response() if error is None else transfer.no_answer(error)  # before the handle is reused
        self._free.append(transfer)
        self._advance(steps, future, outcome)

    def _perform(self) -> None:
        while self._multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass


class _Pumped(Future):
    """A future of `Transfers`: waiting for it runs the transfers, as nothing else does."""

    def __init__(self, transfers: Transfers[Any]):
        super().__init__()
        self._transfers = transfers

    def result(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done() and (deadline is None or time.monotonic() < deadline):
            if not self._transfers.busy:  # closed with this request unanswered: nothing will ever answer it
                raise RuntimeError("the transfers were closed before this request was answered")
            self._transfers.pump(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
        return super().result(timeout=0)


class _NoAnswer(Exception):
    """A try that got no answer: curl's error code, and whether any of the request was sent."""

    def __init__(self, code: int, sent: bool):
        super().__init__(code)
        self.code = code
        self.sent = sent


def _curl_options(base_url: str, timeout: float) -> list[tuple[int, Any]]:
    """What every handle to one API is set to, with the proxy and CA bundle the environment names, read once here.

    The same environment requests reads: HTTP(S)_PROXY / ALL_PROXY with NO_PROXY (decided here, by requests'
    rules; curl is told the answer and reads no proxy variable itself), and REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (a
    file or a folder), else certifi's bundle. Timeouts: `timeout` seconds to connect, and a transfer that moves
    nothing for `timeout` seconds is given up (curl's low-speed limit: as curl averages the speed over its last
    few seconds, a stall is noticed a few seconds later), as urllib3 timed out a read that waited that long.
    """
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    folder = os.path.isdir(ca_bundle)
    proxy = select_proxy(base_url, get_environ_proxies(base_url))
    return [
        (pycurl.NOSIGNAL, 1),  # several threads: no SIGALRM for timeouts
        (pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1),
        (pycurl.CONNECTTIMEOUT_MS, max(1, int(timeout * 1000))),
        (pycurl.LOW_SPEED_LIMIT, 1),
        (pycurl.LOW_SPEED_TIME, max(1, math.ceil(timeout))),
        (pycurl.MAXREDIRS, 30),
        # Redirects as urllib3 followed them: a 301 or 302 repeats a POST, a 303 turns it into a GET.
        (pycurl.POSTREDIR, pycurl.REDIR_POST_301 | pycurl.REDIR_POST_302),
        (pycurl.PROXY, proxy or ""),  # "" is no proxy, whatever curl's own variables say
        (pycurl.NOPROXY, ""),
        # Only the named bundle is trusted (none compiled into libcurl), for the API and for an HTTPS proxy.
        (pycurl.CAPATH, ca_bundle if folder else None),
        (pycurl.CAINFO, None if folder else ca_bundle),
        (pycurl.PROXY_CAPATH, ca_bundle if folder else None),
        (pycurl.PROXY_CAINFO, None if folder else ca_bundle),
    ]


def _header_lines(headers: Mapping[str, str]) -> list[str]:
    """Headers as curl takes them, and nothing curl would add of its own: no form Content-Type for a body sent
    without one, no `Expect: 100-continue` before a large body (urllib3 sent neither).

    A line break in a header would start another header (curl sends what it is given): refused, as `http.client`
    refused it, without the value (it may be a key read with a trailing newline).
    """
    lines = [f"{name}: {value}" for name, value in headers.items()]
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError(f"header {line.partition(':')[0]!r} holds a line break")
    if not any(name.lower() == "content-type" for name in headers):
        lines.append("Content-Type:")
    lines.append("Expect:")
    return lines


class Headers(dict[str, str]):
    """Response headers by lower-case name; `[]`, `get` and `in` take a name in any case."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


def _parse_headers(lines: list[bytes]) -> Headers:
    """The last response's headers (after redirects, 100 Continue or a proxy's CONNECT answer), repeated names
    joined with ", " as urllib3 joined them. A plain dict underneath: it is built for every answer, and requests'
    CaseInsensitiveDict cost about as much as the rest of reading the answer."""
    start = next((i for i in range(len(lines) - 1, -1, -1) if lines[i].startswith(b"HTTP/")), -1) + 1
    headers = Headers()
    for raw in lines[start:]:
        name, colon, value = raw.decode("latin-1").partition(":")
        if colon:
            key, value = name.strip().lower(), value.strip()
            prior = dict.get(headers, key)
            dict.__setitem__(headers, key, value if prior is None else f"{prior}, {value}")
    return headers


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


# Curl's errors for a connection never made: the proxy's or the server's name not found, nothing answering.
_NOT_CONNECTED = frozenset({pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_CONNECT})


def _problem_name(failure: _NoAnswer) -> str:
    """What went wrong on the way, named as requests named it (ConnectTimeout, ReadTimeout, ConnectionError)."""
    if failure.code == pycurl.E_OPERATION_TIMEDOUT:  # curl's connect timeout covers TLS and a proxy's tunnel too
        return "ReadTimeout" if failure.sent else "ConnectTimeout"
    return "ConnectionError"


def _may_have_arrived(failure: _NoAnswer) -> bool:
    """False only when the request certainly never reached the server (no connection could be made)."""
    if failure.code == pycurl.E_OPERATION_TIMEDOUT:
        return failure.sent
    return failure.code not in _NOT_CONNECTED


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
