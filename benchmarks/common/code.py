"""The code a benchmark measures: composable_assets/ copied from the working tree or from a git revision.

Every process of one run imports the same copy (its folder first on PYTHONPATH, ahead of the editable install),
so an edit made while a benchmark runs changes nothing, and an older revision can be measured beside the current.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def copy_code(dest: Path, rev: str | None = None) -> str:
    """Copy composable_assets/ (of the working tree, or of git revision `rev`) into `dest`; says which code it is."""
    dest.mkdir(parents=True)
    if rev:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", rev, "composable_assets"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return f"commit {git('rev-parse', '--short', rev)}"
    shutil.copytree(REPO / "composable_assets", dest / "composable_assets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    changed = [line[3:] for line in git("status", "--porcelain", "--", "composable_assets").splitlines() if line.strip()]
    head = git("rev-parse", "--short", "HEAD")
    return f"working tree at {head}" + (f" with {len(changed)} uncommitted file(s)" if changed else "")


def repo_file(path: str, rev: str | None = None) -> str:
    """A file of the repository as it is in the working tree, or as committed in `rev`."""
    if rev:
        return subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
        ).stdout
    return (REPO / path).read_text()


def code_env(code: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process importing the copy in `code`: PYTHONPATH ahead of the editable install's finder."""
    env = dict(os.environ if environ is None else environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
    return env
