"""Plumbing shared by the fakes: an HTTP/1.1 server on 127.0.0.1, the request log, fault injection, rate limiters."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

# Secrets never reach the request log; `api_key` is the header name some clients use by mistake for Iterable.
REDACTED_HEADERS = frozenset({"authorization", "api-key", "api_key"})
DROP = "drop"


@dataclass
class ReceivedRequest:
    """One request as the fake received it, with credentials redacted."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body; None when empty or not JSON
    time: float
    status: int | None = None  # None while handling, and for a dropped connection


@dataclass
class Request:
    """What a fake's handler is given."""

    method: str
    path: str
    headers: Message
    raw: bytes
    body: Any
    is_json: bool


@dataclass
class Response:
    """What a fake's handler returns; the body is sent as JSON."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Faults:
    """Injected failures; safe to change from a test while the fake serves requests."""

    fail_next: int = 0
    status_for_next: list[int] = field(default_factory=list)
    drop_next: int = 0
    latency_seconds: float = 0.0
    invalid_identifiers: set[str] = field(default_factory=set)
    retry_after_seconds: float | None = None
    path_prefix: str | None = None
    # An outage: every request is answered 503 until this is cleared.
    unavailable: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def applies_to(self, path: str) -> bool:
        """Whether the faults apply to a request for this path."""
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def take(self, path: str) -> int | str | None:
        """Consume the next injected fault for this path: DROP, a status code, or None; drops come first."""
        if not self.applies_to(path):
            return None
        if self.unavailable:
            return 503
        with self._lock:
            if self.drop_next > 0:
                self.drop_next -= 1
                return DROP
            if self.status_for_next:
                return self.status_for_next.pop(0)
            if self.fail_next > 0:
                self.fail_next -= 1
                return 500
        return None

    def is_invalid(self, path: str, identifier: Any) -> bool:
        """Whether the destination should reject this identifier in a request for this path."""
        return isinstance(identifier, str) and identifier in self.invalid_identifiers and self.applies_to(path)


class FixedWindows:
    """Fixed windows aligned to epoch multiples of `seconds`; counts every request checked, allowed or refused."""

    def __init__(self, limit: int | None, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def hit(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request; return whether it is within the limit, and the rate-limit headers to send."""
        index = math.floor(now / self.seconds)
        with self._lock:
            self.counts[index] = count = self.counts.get(index, 0) + 1
        allowed = self.limit is None or count <= self.limit
        return allowed, self.headers(now, count)

    def headers(self, now: float, count: int | None = None) -> dict[str, str]:
        """Rate-limit headers for the window holding `now`, after `count` requests (default: those counted so far)."""
        if self.limit is None:
            return {}
        index = math.floor(now / self.seconds)
        if count is None:
            with self._lock:
                count = self.counts.get(index, 0)
        remaining = max(self.limit - count, 0)
        # round() first: (index + 1) * 3.0 can land a hair above an integer and ceil one second late
        reset = math.ceil(round((index + 1) * self.seconds, 6))
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset),
        }

    def max_count(self) -> int:
        """The most requests seen in any one window."""
        with self._lock:
            return max(self.counts.values(), default=0)


class TokenBucket:
    """A token bucket refilled at `rate` per second, holding at most one second's worth (at least one token)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take a token if one is available."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


class FakeServer:
    """Base of the fakes: lifecycle, request log and faults; subclasses route requests and keep the state."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.faults = Faults()
        self.requests: list[ReceivedRequest] = []
        self.url = ""
        # Handler threads run concurrently; every state change happens under this lock.
        self._lock = threading.RLock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    def start(self, port: int = 0) -> Self:
        """Bind 127.0.0.1 (a free port unless given) and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError(f"{type(self).__name__} is already serving at {self.url}")
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close open keep-alive connections."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = self._thread = None

    def reset(self) -> None:
        """Forget every request, fault and piece of state, as a fresh fake would have."""
        with self._lock:
            self.requests.clear()
            self.faults = Faults()
            self._reset_state()

    def __enter__(self) -> Self:
        return self if self._httpd is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _reset_state(self) -> None:
        """Create the fake's empty state (users, events, rate counters...)."""
        raise NotImplementedError

    def _handle(self, request: Request) -> Response:
        """Authenticate, rate-limit and serve one request; called under the state lock."""
        raise NotImplementedError

    def _injected_response(self, status: int) -> Response:
        """The fake's body and headers for an injected error status."""
        raise NotImplementedError

    def _process(self, method: str, target: str, headers: Message, raw: bytes) -> Response | None:
        """Log the request, apply latency and faults, then let the fake handle it; None means drop the connection."""
        path, query = urlsplit(target)[2:4]
        try:
            body, is_json = json.loads(raw), True
        except ValueError:
            body, is_json = None, False
        logged = {name: ("***" if name.lower() in REDACTED_HEADERS else value) for name, value in headers.items()}
        record = ReceivedRequest(method, path, query, logged, body, time.time())
        with self._lock:
            self.requests.append(record)
        faults = self.faults
        if faults.latency_seconds and faults.applies_to(path):
            time.sleep(faults.latency_seconds)
        injected = faults.take(path)
        if injected == DROP:
            return None
        if injected is not None:
            response = self._injected_response(injected)
            if injected == 429 and faults.retry_after_seconds is not None:
                response.headers["Retry-After"] = f"{faults.retry_after_seconds:g}"
        else:
            try:
                with self._lock:
                    response = self._handle(Request(method, path, headers, raw, body, is_json))
            except Exception:  # a bug in the fake must show as a 500 and a traceback, not a hung client
                traceback.print_exc()
                response = Response(500, {"message": "fake server error"})
        record.status = response.status
        return response


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its idle keep-alive connections on stop."""

    daemon_threads = True
    fake: FakeServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal for a fake under fault tests; anything else is a bug.
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads the body, asks the fake, writes a JSON response with an exact Content-Length."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle + delayed ACK would add 40 ms each
    timeout = 60  # idle keep-alive connections are closed eventually
    server: _HTTPServer

    def _dispatch(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "Bad Content-Length")
            return
        raw = self.rfile.read(length) if length > 0 else b""
        response = self.server.fake._process(self.command, self.path, self.headers, raw)
        if response is None:
            self.close_connection = True
            return
        payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `fake.requests` is the log, and stderr noise would drown test output."""
