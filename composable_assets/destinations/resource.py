"""A destination as a Dagster resource: one per destinations.yaml entry, on the Resources page, swappable per deployment."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ..coordination import Coordination
from .base import Destination


def destination_resource_key(name: str) -> str:
    """The resource key of destination `name` (Dagster keys are identifiers: `destination_braze`)."""
    return "destination_" + "".join(c if c.isalnum() else "_" for c in name)


class DestinationResource(dg.ConfigurableResource):
    """One configured destination: its `type:` and its settings as destinations.yaml writes them.

    Secrets stay references (`{env: NAME}`) in this config, so the Resources page, run storage and logs only ever
    show variable names; the destination reads the value from the environment when it opens a session, as an
    `EnvVar` would, and checks it there (a URL with a credential in it is refused, the value is redacted from
    every message). A deployment points a destination elsewhere by giving this resource other settings.
    """

    name: str
    type: str
    settings: dict[str, Any] = {}

    def build(self, coordination: Coordination | None = None) -> Destination:
        """The destination object this entry configures, sharing `coordination`'s rate budgets."""
        from . import DESTINATION_TYPES

        return DESTINATION_TYPES[self.type](self.name, dict(self.settings), coordination)
