"""Reading a YAML file into plain data, with the line of a syntax error, and naming key paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fogsim.errors import FogsimError


def read_yaml(path: Path, what: str) -> Any:
    """Parse ``path``; a missing file or a syntax error is a one-line FogsimError with the line."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise FogsimError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = error.problem or error.context or "syntax error"
        raise FogsimError(f"{path}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as error:
        raise FogsimError(f"{path}: invalid YAML: {' '.join(str(error).split())}") from None


def key_path(loc: tuple, prefix: str = "") -> str:
    """``("fleet", 2, "profile")`` -> ``fleet[2].profile``."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def describe(error: ValidationError, prefix: str = "") -> str:
    """The first problem pydantic found, as ``key.path: what is wrong``."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    path = key_path(loc, prefix)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif not first["type"].startswith("value_error") and not isinstance(first.get("input"), (dict, list)):
        message = f"{message}, got {first['input']!r}"
    return f"{path}: {message}" if path else message
