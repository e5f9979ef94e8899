"""The docs site (docs/, mkdocs.yml) is the reference: every file field, environment variable and command the code
has is named on its page, the site builds with `mkdocs build --strict`, and every relative link in README.md and
docs/ points to a file that exists."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
from markdown.extensions.toc import slugify
from pydantic import BaseModel

from composable_assets.cli import cli
from composable_assets.destinations import DESTINATION_TYPES
from composable_assets.project import specs
from composable_assets.project.alerts import AlertSpec, SlackAlert, WebhookAlert
from composable_assets.project.gates import GatesSpec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: The files of a project folder, documented in docs/project-folder.md.
PROJECT_FILE_MODELS = [
    specs.ProjectSettings, specs.LandingSpec, specs.ConsentSpec, specs.DeletionRequestsSpec, specs.ArchiveSpec, specs.DbtSettings,
    GatesSpec, specs.AudienceSpec, specs.SyncSpec, specs.StreamSpec, specs.StreamSyncSpec,
]
#: project.yaml `alerts:`, documented with the alerts in docs/production.md.
ALERT_MODELS = [AlertSpec, SlackAlert, WebhookAlert]


def page(*names: str) -> str:
    return "\n".join((DOCS / name).read_text() for name in names)


def documented(name: str, text: str) -> bool:
    """Named in backticks, or as a key in one of the page's YAML examples."""
    in_code = re.search(rf"`[^`\n]*\b{re.escape(name)}\b[^`\n]*`", text)
    as_key = re.search(rf"^\s*(- )?{re.escape(name)}:", text, re.MULTILINE)
    return in_code is not None or as_key is not None


def fields(model: type[BaseModel]) -> set[str]:
    """The names a user writes in a file: aliases where a field has one; fields the loader derives are left out."""
    return {
        info.alias or name
        for name, info in model.model_fields.items()
        if not info.exclude and name not in ("settings",)  # DestinationSpec.settings: the entry's other keys
    }


def undocumented(models: list[type[BaseModel]], text: str) -> list[str]:
    return sorted({f"{m.__name__}.{f}" for m in models for f in fields(m) if not documented(f, text)})


def test_every_field_of_every_project_file_is_in_the_docs():
    assert undocumented(PROJECT_FILE_MODELS, page("project-folder.md")) == []
    assert undocumented(ALERT_MODELS, page("production.md")) == []
    destinations = [specs.DestinationSpec]
    streams = []  # a stream's syncs[].options: the stream's section of the project folder
    for destination in DESTINATION_TYPES.values():
        destinations += [m for m in (destination.Settings, destination.SyncOptions) if m]
        streams += [destination.EventOptions] if destination.EventOptions else []
    assert len(destinations) > 5 and streams
    assert undocumented(destinations, page("destinations.md")) == []
    assert undocumented(streams, page("project-folder.md")) == []


def test_an_undocumented_field_is_found():
    class Spec(BaseModel):
        table: str
        not_a_documented_field: int

    assert undocumented([Spec], page("project-folder.md")) == ["Spec.not_a_documented_field"]


def test_every_environment_variable_the_code_reads_is_in_the_docs():
    code = "\n".join(p.read_text() for p in (ROOT / "composable_assets").rglob("*.py"))
    code += (ROOT / "deploy" / "dagster.yaml").read_text()
    names = set(re.findall(r"\b(COMPOSABLE_[A-Z_]+|DAGSTER_PG_[A-Z_]+|DAGSTER_HOME|PGPASSWORD|DATABRICKS_TOKEN)\b", code))
    assert len(names) > 8
    text = page("configuration.md", "production.md")
    assert sorted(n for n in names if not documented(n, text)) == []


def commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command of the `composable` command line with its path: (), ("sync",), ("archive", "query"), ..."""
    found = [(path, group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def test_every_command_and_option_is_in_the_commands_page():
    text = page("commands.md")
    missing = []
    for path, command in commands(cli):
        name = " ".join(("composable", *path))
        # The lines naming the command in a code span: `composable archive [--dry-run] ...`, `composable --debug …`.
        lines = [line for line in text.splitlines() if re.search(rf"`{re.escape(name)}( [^`]*)?`", line)]
        if not lines:
            missing.append(name)
            continue
        for param in command.params:
            names = param.opts + param.secondary_opts  # --changes / --no-changes
            if isinstance(param, click.Option) and not any(n in "\n".join(lines) for n in names):
                missing.append(f"{name} {param.opts[0]}")
    assert len(commands(cli)) > 10
    assert missing == []


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def headings(path: Path) -> set[str]:
    """The anchors of a page's headings, as the site (Python-Markdown's toc) makes them."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slugify(re.sub(r"[`*]", "", h), "-") for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_points_to_an_existing_file():
    broken = []
    for path in markdown_files():
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.is_file():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in headings(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_every_make_target_the_docs_name_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    named = {t for path in markdown_files()
             for t in re.findall(r"(?:`|^)make ([a-z][\w-]*)", path.read_text(), re.MULTILINE)}
    assert {"demo", "test", "ui", "docs"} <= named
    assert sorted(named - targets) == []


def test_the_readme_is_the_front_door():
    text = README.read_text()
    assert len(text.splitlines()) < 250
    for command in ("make demo", "make test", "make ui", "make docs"):
        assert command in text


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict`: a broken link or anchor, a page missing from the nav, any warning fails it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor; not a warning
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_site_builds_with_no_warning(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "project-folder" / "index.html").is_file()


def test_a_broken_link_fails_the_site_build(tmp_path):
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    with (tmp_path / "docs" / "commands.md").open("a") as f:
        f.write("\nSee [the missing page](no-such-page.md) and [a missing heading](index.md#no-such-heading).\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no-such-page.md" in output and "no-such-heading" in output
