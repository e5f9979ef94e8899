"""Reading YAML files while keeping the line of every key, so errors can point at them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ProjectError, raise_if_any, read_text

Loc = Sequence[str | int]


class _ProjectYamlLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings, so pydantic validates them and can name the line."""


_ProjectYamlLoader.yaml_implicit_resolvers = {
    first_char: [resolver for resolver in resolvers if resolver[0] != "tag:yaml.org,2002:timestamp"]
    for first_char, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class YamlDocument:
    """A parsed YAML file together with its node tree (which carries line numbers)."""

    path: Path
    data: Any
    node: yaml.Node | None

    def line(self, *loc: str | int) -> int | None:
        """1-based line of the deepest key or list item along `loc` that exists in the file."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            # A mapping entry is reported at its key; a list item at the item itself.
            marker, node = found
            line = marker.start_mark.line + 1
        return line

    def error(self, message: str, *loc: str | int) -> ProjectError:
        """A ProjectError in this file at the line of `loc`."""
        return ProjectError(message, self.path, self.line(*loc))

    def validation_errors(self, exc: ValidationError, *prefix: str | int) -> list[ProjectError]:
        """One ProjectError per pydantic error, located via its `loc` (under `prefix`), in file order."""
        errors = [
            self.error(_describe(error, (*prefix, *error["loc"])), *prefix, *error["loc"])
            for error in exc.errors(include_url=False)
        ]
        return sorted(errors, key=lambda error: error.line or 0)


def read_spec_yaml(path: Path | None) -> YamlDocument:
    """The file an audience or stream spec was read from (the loader gives every spec it reads its path)."""
    if path is None:
        raise ValueError("the spec was not read from a file: no lines to point at")
    return read_yaml(path)


def read_yaml(path: Path) -> YamlDocument:
    """Parse a YAML file safely; syntax errors and duplicate keys become ProjectErrors."""
    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_ProjectYamlLoader)
        node = yaml.compose(text, Loader=_ProjectYamlLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ": ".join(part for part in (exc.context, exc.problem) if part)
        raise ProjectError(f"invalid YAML: {problem}", path, mark.line + 1 if mark else None) from exc
    except (yaml.YAMLError, ValueError) as exc:
        # Unmarked errors: bad characters, or an explicitly tagged value that cannot be built.
        raise ProjectError(f"invalid YAML: {exc}", path) from exc
    document = YamlDocument(path, data, node)
    # safe_load silently keeps the last of two equal keys, which hides mistakes.
    raise_if_any(
        [ProjectError(f"duplicate key `{key.value}`", path, key.start_mark.line + 1) for key in _duplicate_keys(node)]
    )
    return document


def _child(node: yaml.Node, part: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """(marker, child) for one step of a pydantic loc, or None when the file lacks it."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        if 0 <= part < len(node.value):
            return node.value[part], node.value[part]
    return None


def _duplicate_keys(node: yaml.Node | None) -> Iterator[yaml.ScalarNode]:
    """Every scalar key that repeats an earlier key of the same mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    yield key
                seen.add(key.value)
            yield from _duplicate_keys(value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicate_keys(item)


def _describe(error: Any, loc: Loc) -> str:
    """A readable message for one pydantic error."""
    if error["type"] == "extra_forbidden":
        return f"unknown field `{loc[-1]}`"
    if error["type"] == "missing":
        return f"missing required field `{loc[-1]}`"
    # Our own validators raise ValueError; show its text without pydantic's "Value error, ".
    message = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
    return f"`{_format_loc(loc)}`: {message}" if loc else message


def _format_loc(loc: Loc) -> str:
    """Render a loc like ('syncs', 0, 'mode') as `syncs[0].mode`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
