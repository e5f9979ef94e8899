"""Which step of a run goes first when several are ready: the one closest to a delivery.

A minute-level run executes its steps one at a time (the in-process executor; the `warehouse` pool would
serialize them anyway). In plain graph order a change waits for every other audience's steps before its own
delivery starts: at 10M customers, about 10 s of steps before the first `/users/track`. Dagster's executors run
the ready step with the highest `dagster/priority` op tag first, so each step gets:

- 100 x its layer: a delivery (sync, stream) 3, a delta 2, an audience 1, a model or landing load 0, so a started
  chain is finished (delivered) before the next one is begun;
- plus how many minute-level deliveries need it, so among models the one feeding the most deliveries goes first.

Ties keep Dagster's order. Only the order changes: the same steps run, and each after the steps it depends on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import dagster as dg

PRIORITY_TAG = "dagster/priority"
LAYERS = {"source": 0, "model": 0, "audience": 1, "delta": 2, "sync": 3, "stream": 3}


def step_priorities(deliveries: Iterable[Sequence[dg.AssetKey]]) -> dict[dg.AssetKey, int]:
    """Each delivery given as every asset it needs (its own key included) -> the priority of each such asset."""
    feeds = Counter(key for needs in deliveries for key in set(needs))
    return {key: 100 * LAYERS.get(key.path[0], 0) + min(count, 99) for key, count in feeds.items()}


def priority_tags(priorities: dict[dg.AssetKey, int], key: dg.AssetKey) -> dict[str, str]:
    """The op tags giving the step materializing `key` its priority (0, Dagster's default, when it has none)."""
    return {PRIORITY_TAG: str(priorities.get(key, 0))}
