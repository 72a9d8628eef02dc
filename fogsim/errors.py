"""The one exception type a user is meant to read, and how a message may quote what the user wrote.

Anything raised as ``FogsimError`` reaches the command line as a single line on stderr and
exit code 2, with no traceback; every other exception is a bug in fogsim.

A message about an input file names the file and the key path of the problem. It never repeats
the file's content: the only thing it may quote is one scalar the user typed (a key, a name, a
number), through ``shown``, which cuts it to a few dozen characters. A mapping or a list is
named by its kind, never printed. A path is cut in its middle by ``shown_path``.

A name the user gives (a scenario, a profile, a fog node) is one line of at most
``MAX_NAME_CHARS`` characters (``check_name``): it is shown in tables, plots and messages.
"""

from __future__ import annotations

import unicodedata

from pydantic import ValidationError

SHOWN_CHARS = 40
PATH_CHARS = 120      # a path in a message: its start and its end, cut in the middle
MAX_NAME_CHARS = 100  # a scenario, profile or fog-node name


class FogsimError(Exception):
    """Bad input or an impossible request, described in one actionable sentence."""

    exit_code = 2


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of a scalar cut to ``limit`` characters; a container is named by its kind."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    if value is not None and not isinstance(value, (str, int, float, bool)):
        return f"a {type(value).__name__}"
    try:
        text = repr(value)
    except ValueError:  # an int too long for Python to print
        return "a number with thousands of digits"
    return brief(text, limit)


def brief(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters: a name or a token the user wrote."""
    text = one_line(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def shown_path(path: object, limit: int = PATH_CHARS) -> str:
    """A path (or any long text whose end matters) on one line, cut in its middle to ``limit`` characters."""
    text = one_line(str(path))
    if len(text) <= limit:
        return text
    head = (limit - 3) // 3
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head):]}"


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a name (a control character, a line break, too long), or None."""
    if len(name) > MAX_NAME_CHARS:
        return f"a name has at most {MAX_NAME_CHARS} characters, this one has {len(name)}"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "a name is one line of text, without control characters (newline, tab, NUL, escape...)"
    return None


def check_name(name: str | None) -> str | None:
    """``name`` if it is a name (``name_problem``); a ``ValueError`` for pydantic otherwise."""
    if name is not None and (problem := name_problem(name)):
        raise ValueError(problem)
    return name


def one_line(text: str) -> str:
    """``text`` with every control character escaped, so that it prints as exactly one line."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)


def key_path(loc: tuple, prefix: str = "") -> str:
    """``("fleet", 2, "profile")`` -> ``fleet[2].profile``; a long key is cut (see ``errors.shown``)."""
    path = prefix
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        else:
            name = brief(part) if isinstance(part, str) else shown(part)
            path += f".{name}" if path else name
    return path


def describe(error: ValidationError, prefix: str = "") -> str:
    """The first problem pydantic found, as ``key.path: what is wrong``, quoting at most a short scalar."""
    first = error.errors()[0]
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    if first["type"] == "invalid_key" or loc[-1:] == ("[key]",):  # a key that is a number, a date, null...
        path = key_path(loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1], prefix)
        message = f"key {shown(first['input'])} is not a name; keys are text"
        return f"{path}: {message}" if path else message
    path = key_path(loc, prefix)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif (not first["type"].startswith("value_error") and not isinstance(first.get("input"), (dict, list))
          and "got " not in message):
        message = f"{message}, got {shown(first['input'])}"
    return f"{path}: {message}" if path else message
