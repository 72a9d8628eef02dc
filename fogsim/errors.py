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

import difflib
import re

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


def error_text(error: BaseException) -> str:
    """An exception from the user's code (a loader, a model builder) in a message: its kind and text, cut short."""
    text = brief(str(error), 120)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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


def did_you_mean(word: object, choices, prefix: str = "") -> str:
    """``"; did you mean 'rounds'?"`` for the choice closest to ``word`` (difflib), or ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return _meant(prefix + close[0]) if close else ""


def _meant(text: str) -> str:
    return f"; did you mean {shown(text)}?"


def _model_at(model, loc: tuple):
    """The pydantic model class that holds the key at ``loc`` (None where it cannot be told)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = _model_in(field.annotation)
    return model


def _model_in(annotation):
    """The model class in ``annotation`` (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _unknown_key_hint(model, loc: tuple, prefix: str, nested: dict) -> str:
    """Did-you-mean for an unknown key at ``loc`` of ``model``: the same key one level down (a field
    of a sub-model, or of a free-form mapping whose keys ``nested`` names: ``fleet[0].memory_budget``
    -> ``fleet[0].overrides.memory_budget``), else a close key of the same mapping."""
    holder = _model_at(model, loc[:-1]) if model is not None else None
    key = loc[-1] if loc else None
    if holder is None or not isinstance(key, str):
        return ""
    for name, field in holder.model_fields.items():
        inner = _model_in(field.annotation)
        keys = inner.model_fields if inner is not None else nested.get(name, ())
        if key in keys:
            return _meant(f"{key_path((*loc[:-1], name), prefix)}.{key}")
    where = key_path(loc[:-1], prefix)
    return did_you_mean(key, holder.model_fields, f"{where}." if where else "")


def describe(error: ValidationError, prefix: str = "", model=None, nested: dict | None = None) -> str:
    """The first problem pydantic found, as ``key.path: what is wrong``, quoting at most a short scalar;
    with ``model`` (the class validated), an unknown key gets a "did you mean" (``nested``: the keys of
    its free-form mappings by field name), as does an unknown choice. A misspelt key is both unknown
    and a required key missing: the unknown one is named, with the hint."""
    errors = error.errors()
    first = errors[0]
    if first["type"] == "missing":
        first = next((e for e in errors if e["type"] == "extra_forbidden"), first)
    # validators' and union forms' own steps (a tag named form-...) are no keys of the user's
    loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and p.startswith(("function-", "form-"))))
    if first["type"] == "invalid_key" or loc[-1:] == ("[key]",):  # a key that is a number, a date, null...
        path = key_path(loc[:-2] if loc[-1:] == ("[key]",) else loc[:-1], prefix)
        message = f"key {shown(first['input'])} is not a name; keys are text"
        return f"{path}: {message}" if path else message
    path = key_path(loc, prefix)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key" + _unknown_key_hint(model, loc, prefix, nested or {})
    elif first["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(first.get("ctx", {}).get("expected", "")))
        message = f"{message}, got {shown(first['input'])}{did_you_mean(first['input'], choices)}"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif (not first["type"].startswith("value_error") and not isinstance(first.get("input"), (dict, list))
          and "got " not in message):
        message = f"{message}, got {shown(first['input'])}"
    return f"{path}: {message}" if path else message
