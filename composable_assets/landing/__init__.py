"""Landing folders: files written next to the warehouse and loaded into source tables, as Snowpipe does."""

from .folder import LandingFolder, landing_folders
from .load import LoadReport, load_landing

__all__ = ["LandingFolder", "LoadReport", "landing_folders", "load_landing"]
