"""Local HTTP sinks for delivery benchmarks: a server that counts rows, or the Braze fake, in a process of its own.

A sink in its own process keeps its CPU out of the syncing process's figures and reports its own CPU seconds.
`ServerProcess` starts this module (`python -m common.sinks` in benchmarks/); it prints {"url"} on a line,
serves until "stop" on stdin, then prints what it saw on a line.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from common.timing import cpu_seconds

BENCHMARKS = Path(__file__).resolve().parent.parent

# The Braze fake's key in every benchmark run; the syncs are configured with it.
API_KEY = "bench-braze-key-7c1e"


class _SinkHandler(BaseHTTPRequestHandler):
    """Reads a JSON body, counts its rows (`rows` or `attributes`), answers 200 {}."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: "RowSink"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw)
        rows = body.get("rows") or body.get("attributes") or []
        keys = [str(r.get("key") or r.get("external_id") or r.get("id")) for r in rows]
        with self.server.lock:
            self.server.log.append((time.time(), len(rows), len(raw)))
            self.server.keys.update(keys)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RowSink(ThreadingHTTPServer):
    """A tiny local HTTP sink any tool can post to (no signature check, no per-row logic): the least a sink costs."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.log: list[tuple[float, int, int]] = []
        self.keys: set[str] = set()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stats(self) -> dict:
        times = [t for t, _, _ in self.log]
        return {
            "requests": len(self.log),
            "rows": sum(n for _, n, _ in self.log),
            "distinct_keys": len(self.keys),
            "body_bytes": sum(b for _, _, b in self.log),
            "statuses": {"200": len(self.log)},
            "first": min(times, default=None),
            "last": max(times, default=None),
        }


def braze_stats(fake, window_seconds: float) -> dict:
    """What the Braze fake saw: statuses, rows, per-window counts, and a digest of the profiles it holds."""
    tracks = [r for r in fake.requests if r.path == "/users/track"]
    statuses = collections.Counter(str(r.status) for r in tracks)
    accepted = [r for r in tracks if r.status is not None and r.status < 300]
    windows_all = collections.Counter(math.floor(r.time / window_seconds) for r in tracks)
    windows_ok = collections.Counter(math.floor(r.time / window_seconds) for r in accepted)
    profiles = sorted(
        (user, {k: v for k, v in attrs.items() if k != "external_id"}) for user, attrs in fake.users.items()
    )
    return {
        "requests": len(tracks),
        "statuses": dict(statuses),
        "rows": sum(len(r.body.get("attributes", [])) for r in accepted),
        "distinct_keys": len(fake.users),
        "users_digest": hashlib.sha256(json.dumps(profiles, sort_keys=True).encode()).hexdigest()[:16],
        "max_requests_in_window": fake.max_requests_in_window(),
        "windows_all": {str(k): v for k, v in sorted(windows_all.items())},
        "windows_accepted": {str(k): v for k, v in sorted(windows_ok.items())},
        "window_seconds": window_seconds,
        "first": min((r.time for r in tracks), default=None),
        "last": max((r.time for r in tracks), default=None),
    }


def serve(kind: str, rate_limit: int | None, window: float) -> None:
    """Print {"url"} on a line, serve until "stop" on stdin, then print the stats on a line."""
    if kind == "braze":
        from composable_assets_tests.fakes import BrazeFake

        server: Any = BrazeFake(API_KEY, rate_limit=rate_limit, rate_window_seconds=window).start()
    else:
        server = RowSink()
    cpu0 = cpu_seconds()
    print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stats = braze_stats(server, window) if kind == "braze" else server.stats()
    stats["cpu_s"] = cpu_seconds() - cpu0
    if kind == "braze":
        server.stop()
    else:
        server.shutdown()
        server.server_close()
    print(json.dumps(stats), flush=True)


class ServerProcess:
    """A sink in a child process (`kind` "braze" or "sink"); `stop()` returns what it saw and its CPU seconds."""

    def __init__(self, kind: str, rate_limit: int | None = None, window: float = 3.0,
                 env: dict[str, str] | None = None):
        # As a module from benchmarks/ (the working folder) so that it imports `common` like the scripts do.
        args = [sys.executable, "-m", "common.sinks", kind, "--window", str(window)]
        if rate_limit is not None:
            args += ["--rate-limit", str(rate_limit)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=BENCHMARKS)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise RuntimeError(f"the {kind} server did not start (exit {self.proc.wait()})")
        self.url = json.loads(line)["url"]

    def stop(self) -> dict:
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        stats = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=60)
        return stats

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:  # only on an error path: stop() already waited
            self.proc.kill()
            self.proc.wait()


def start_fake(kind: str, api_key: str, limited: bool) -> tuple[subprocess.Popen, str]:
    """A vendor fake of the test suite ("braze", "iterable", ...) in a process of its own; (process, url).

    The caller stops it with terminate() and wait(). Without `limited` the fake enforces no rate limit, so the
    figures are the sender's own.
    """
    command = [sys.executable, "-m", "composable_assets_tests.fakes", kind, "--api-key", api_key]
    if not limited:
        command.append("--no-rate-limit")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    return process, json.loads(process.stdout.readline())["url"]


def main() -> None:
    parser = argparse.ArgumentParser(description="A benchmark sink; see ServerProcess.")
    parser.add_argument("kind", choices=("braze", "sink"))
    parser.add_argument("--rate-limit", type=int)
    parser.add_argument("--window", type=float, default=3.0)
    args = parser.parse_args()
    serve(args.kind, args.rate_limit, args.window)


if __name__ == "__main__":
    main()
