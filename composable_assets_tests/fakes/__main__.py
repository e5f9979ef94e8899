"""Run one fake as its own process: prints {"port": ..., "url": ...} on a line, then serves until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import json
import signal
import threading

from .braze import BrazeFake
from .iterable import PROJECT_TYPES, IterableFake
from .server import FakeServer


def main(argv: list[str] | None = None) -> int:
    """Start the fake named on the command line and serve until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m composable_assets_tests.fakes", description=__doc__)
    parser.add_argument("kind", choices=["braze", "iterable"])
    parser.add_argument("--port", type=int, default=0, help="0 (default): any free port")
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--no-rate-limit", action="store_true", help="serve every request, however fast")
    parser.add_argument("--project-type", choices=PROJECT_TYPES, default="email", help="Iterable only")
    parser.add_argument(
        "--list", action="append", default=[], metavar="ID=NAME", help="Iterable only: a list that exists"
    )
    args = parser.parse_args(argv)

    fake: FakeServer
    if args.kind == "braze":
        fake = BrazeFake(args.api_key, rate_limit=None) if args.no_rate_limit else BrazeFake(args.api_key)
    else:
        lists = {int(list_id): name for list_id, _, name in (spec.partition("=") for spec in args.list)}
        options = {"rate_limits": None} if args.no_rate_limit else {}
        fake = IterableFake(args.api_key, project_type=args.project_type, lists=lists, **options)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    fake.start(args.port)
    print(json.dumps({"port": int(fake.url.rsplit(":", 1)[1]), "url": fake.url}), flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
