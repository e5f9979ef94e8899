"""Reading and validating a project folder: models, audiences, streams, destinations and settings."""

from .errors import ProjectError, ProjectErrors
from .loader import load_project
from .project import Project
from .secret_refs import CredentialInUrlError, MissingSecretError, Redactor, SecretRef, resolve_setting
from .specs import (
    AudienceSpec,
    DestinationSpec,
    ModelSpec,
    ProjectSettings,
    StreamSpec,
    StreamSyncSpec,
    SyncSpec,
)
from .sql_parsing import parse_where

__all__ = [
    "AudienceSpec",
    "CredentialInUrlError",
    "DestinationSpec",
    "MissingSecretError",
    "ModelSpec",
    "Project",
    "ProjectError",
    "ProjectErrors",
    "ProjectSettings",
    "Redactor",
    "SecretRef",
    "StreamSpec",
    "StreamSyncSpec",
    "SyncSpec",
    "load_project",
    "parse_where",
    "resolve_setting",
]
