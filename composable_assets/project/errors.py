"""Errors raised for problems in a user's project folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


class ProjectError(Exception):
    """A problem in a project file, located by file and line when known."""

    def __init__(
        self,
        message: str,
        path: Path | None = None,
        line: int | None = None,
        *,
        root: Path | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        # Set by the loader so the error prints paths relative to the project folder.
        self.root = root

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        location = _display_path(self.path, self.root)
        if self.line is not None:
            location = f"{location}:{self.line}"
        return f"{location}: {self.message}"


class ProjectErrors(ProjectError):
    """Several problems found in one project, printed one per line."""

    def __init__(self, errors: Sequence[ProjectError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(error) for error in self.errors))


def read_text(path: Path) -> str:
    """A project file's text; a file that is not UTF-8 is a ProjectError."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProjectError(f"file is not UTF-8 text ({exc.reason})", path) from exc


def _display_path(path: Path, root: Path | None) -> str:
    """The path relative to the project root when it is inside it, else as given."""
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return str(path)


@contextmanager
def collecting(errors: list[ProjectError]) -> Iterator[None]:
    """Record ProjectErrors raised in the block instead of propagating them."""
    try:
        yield
    except ProjectErrors as aggregated:
        errors.extend(aggregated.errors)
    except ProjectError as error:
        errors.append(error)


def combine(errors: Sequence[ProjectError]) -> ProjectError:
    """The single error, or all of them as one ProjectErrors."""
    return errors[0] if len(errors) == 1 else ProjectErrors(errors)


def raise_if_any(errors: Sequence[ProjectError]) -> None:
    """Raise the error(s), if there are any."""
    if errors:
        raise combine(errors)
