"""A module imported when first used: pyarrow costs ~0.3 s to import, and most commands never touch Arrow."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class Deferred:
    """Stands for a module until an attribute of it is read, then imports it (once: Python caches modules)."""

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)
