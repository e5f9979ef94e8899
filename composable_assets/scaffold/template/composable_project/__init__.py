"""This project's Dagster definitions, for `dg` (see definitions.py)."""
