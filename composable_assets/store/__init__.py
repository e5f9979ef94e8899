"""Every table the platform owns in the warehouse: the registry, the schema version and its migrations, pair names.

The bottom of the package beside `warehouse/`: it imports nothing else of ours, and nothing above creates or
alters one of these tables except through it.
"""

from .migrations import CURRENT, MIGRATIONS, ensure_store, upgrade
from .registry import TABLES, Archived, Table, archival_of, archived_tables, qualified
from .tables import PairTables, StreamTables, types_of

__all__ = [
    "CURRENT",
    "MIGRATIONS",
    "ensure_store",
    "upgrade",
    "TABLES",
    "Archived",
    "Table",
    "archival_of",
    "archived_tables",
    "qualified",
    "PairTables",
    "StreamTables",
    "types_of",
]
