"""Python models: `models/NAME.py` files defining `def model(<tables it reads>) -> pandas.DataFrame`.

A file is read here without being run: its syntax, the `model` function and its parameters are checked with `ast`,
so validating a project never executes user code. The parameters name the tables the model reads, as the
parameters of a Dagster `@asset` name its upstream assets: each is a model of the project or a source table, and
arrives as a pandas DataFrame. The function itself is imported only when its asset runs (`load_model_function`).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProjectError, read_text
from .specs import NAME_PATTERN
from .sql_parsing import read_header

#: The function every Python model file defines.
MODEL_FUNCTION = "model"


@dataclass(frozen=True)
class PythonModelFile:
    """What a Python model file declares, read without running it."""

    #: The tables the function reads, in parameter order.
    inputs: list[str]
    description: str | None
    owners: list[str]
    #: Line of `def model`.
    line: int


def read_python_model(path: Path) -> PythonModelFile:
    """Parse a Python model file; every problem is a ProjectError naming the file and line."""
    text = read_text(path)
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ProjectError(f"Python syntax error: {exc.msg}", path, exc.lineno) from None
    functions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == MODEL_FUNCTION
    ]
    if not functions:
        others = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        found = f" (it defines {', '.join(others)})" if others else ""
        raise ProjectError(
            f"a Python model must define `def {MODEL_FUNCTION}(...)` returning a pandas DataFrame, its parameters "
            f"named after the tables it reads{found}",
            path,
            1,
        )
    function = functions[-1]  # as Python itself: the last definition wins
    if isinstance(function, ast.AsyncFunctionDef):
        raise ProjectError(f"`{MODEL_FUNCTION}` must be a plain function, not `async def`", path, function.lineno)
    inputs = _inputs(function, path)
    docstring = ast.get_docstring(function) or ast.get_docstring(tree) or ""
    # Read as a SQL model's header comment: the first line describes it, an `owners: a, b` line names its owners.
    description, owners = read_header("\n".join(f"-- {line}" for line in docstring.splitlines()))
    return PythonModelFile(inputs=inputs, description=description, owners=owners, line=function.lineno)


def _inputs(function: ast.FunctionDef, path: Path) -> list[str]:
    """The table names the function's parameters give; *args, **kwargs and bad names are errors."""
    args = function.args
    if args.vararg is not None or args.kwarg is not None:
        raise ProjectError(
            f"`{MODEL_FUNCTION}` takes one parameter per table it reads, named after it; not *args or **kwargs",
            path,
            function.lineno,
        )
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    for name in names:
        if not re.fullmatch(NAME_PATTERN, name):
            raise ProjectError(
                f"parameter `{name}` of `{MODEL_FUNCTION}` must name a model or source table (lowercase letters, "
                "digits and underscores)",
                path,
                function.lineno,
            )
    return names


class PythonModelError(Exception):
    """A Python model could not be imported or run; the message names its file."""


def load_model_function(path: Path, display: str) -> Callable[..., Any]:
    """Import the file afresh (an edited file runs as edited) and return its `model` function."""
    spec = importlib.util.spec_from_file_location(f"composable_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise PythonModelError(f"{display}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PythonModelError(f"{display}: importing the model failed: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, MODEL_FUNCTION, None)
    if not callable(function):
        raise PythonModelError(f"{display}: defines no function `{MODEL_FUNCTION}`")
    return function


def import_problem(path: Path) -> ProjectError | None:
    """What importing a Python model's file raises (a missing package, a name error at top level), at its line.

    Only `composable validate` asks: it runs the file's top level, as its asset will, but never calls `model`.
    """
    try:
        load_model_function(path, path.name)
    except PythonModelError as exc:
        cause = exc.__cause__
        if cause is None:
            return ProjectError(str(exc).removeprefix(f"{path.name}: "), path)
        frames = [f for f in traceback.extract_tb(cause.__traceback__) if Path(f.filename) == path]
        line = frames[-1].lineno if frames else None
        return ProjectError(f"importing the model failed: {type(cause).__name__}: {cause}", path, line)
    return None
