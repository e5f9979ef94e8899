"""Local Braze and Iterable stand-ins for the demo and the UI, wired in through the sample's environment variables."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from .braze import BrazeFake
from .iterable import IterableFake

DEMO_KEY = "local-demo-key"
NEWSLETTER_LIST_ID = 1001  # the list the sample's weekly_newsletter syncs to


@contextmanager
def local_destinations(environ: dict[str, str] | None = None) -> Iterator[dict[str, BrazeFake | IterableFake]]:
    """Start a fake for each vendor whose endpoint variable is unset; set the variables for this process.

    Yields {"braze": BrazeFake, "iterable": IterableFake} for the fakes it started (real endpoints are left alone).
    """
    env = os.environ if environ is None else environ
    saved = {name: env.get(name) for name in ("BRAZE_REST_ENDPOINT", "BRAZE_API_KEY", "ITERABLE_BASE_URL", "ITERABLE_API_KEY")}
    started: dict[str, BrazeFake | IterableFake] = {}
    if not env.get("BRAZE_REST_ENDPOINT"):
        started["braze"] = BrazeFake(DEMO_KEY).start()
        env["BRAZE_REST_ENDPOINT"] = started["braze"].url
        env["BRAZE_API_KEY"] = DEMO_KEY
    if not env.get("ITERABLE_BASE_URL"):
        started["iterable"] = IterableFake(DEMO_KEY, lists={NEWSLETTER_LIST_ID: "weekly newsletter"}).start()
        env["ITERABLE_BASE_URL"] = started["iterable"].url
        env["ITERABLE_API_KEY"] = DEMO_KEY
    try:
        yield started
    finally:
        for fake in started.values():
            fake.stop()
        for name, value in saved.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
