"""Byte sizes as people write them (``512KiB``, ``1.5MB``) and as fogsim prints them."""

from __future__ import annotations

import math
import re

from fogsim.errors import FogsimError, shown

_UNITS = {
    "": 1, "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_HINT = "use a positive size such as 512KiB, 1MiB or 2.5MB (units B, KB, KiB, MB, MiB, GB, GiB)"
_MAX_SIZE_CHARS = 64  # longer text is no size, and the pattern above would backtrack on it for minutes
MAX_BYTES = 1024**5  # 1 PiB: more than any device, or any machine fogsim runs on, has
MAX_PERCENT = 10_000.0  # a budget of 100 times what dense training needs is more than any device needs


def parse_bytes(text: str | int | float, *, what: str = "size") -> int:
    """Return the number of bytes ``text`` names; raise FogsimError for anything else.

    A bare number is bytes. Fractions of a byte round down; the result must be at least 1 byte
    and at most ``MAX_BYTES``, and infinity and NaN are refused.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise FogsimError(f"invalid {what} {shown(text)}: {_HINT}")
    if isinstance(text, int):
        size = text
    else:
        value, unit = (text, "") if isinstance(text, float) else _number_and_unit(text, what)
        if not math.isfinite(value * _UNITS[unit]):
            raise FogsimError(f"invalid {what} {shown(text)}: it must be a finite number; {_HINT}")
        size = int(value * _UNITS[unit])
    if size < 1:
        raise FogsimError(f"invalid {what} {shown(text)}: it must be at least 1 byte; {_HINT}")
    if size > MAX_BYTES:
        raise FogsimError(f"invalid {what} {shown(text)}: it must be at most 1 PiB; {_HINT}")
    return size


def _number_and_unit(text: str, what: str) -> tuple[float, str]:
    match = _SIZE.match(text) if len(text) <= _MAX_SIZE_CHARS else None
    if not match:
        raise FogsimError(f"invalid {what} {shown(text)}: {_HINT}")
    unit = match.group(2).upper()
    if unit not in _UNITS:
        raise FogsimError(f"invalid {what} {shown(text)}: unknown unit {shown(match.group(2))}; {_HINT}")
    return float(match.group(1)), unit


def parse_percentage(text: str, *, what: str = "size") -> float:
    """The fraction ``25%`` names (0.25): a finite percentage above 0 and at most ``MAX_PERCENT``."""
    try:
        percent = float(text.strip().removesuffix("%")) if len(text) <= _MAX_SIZE_CHARS else -1.0
    except ValueError:
        percent = -1.0
    if not percent > 0:
        raise FogsimError(f"invalid {what} {shown(text)}: a percentage must be positive, like 25%")
    if percent > MAX_PERCENT:
        raise FogsimError(f"invalid {what} {shown(text)}: a percentage must be at most {MAX_PERCENT:g}%, like 25%")
    return percent / 100


def size_field(what: str):
    """A pydantic validator that reads a size as people write it into bytes (``Annotated[int, size_field(...)]``)."""
    from pydantic import BeforeValidator

    def _bytes(value):
        try:
            return parse_bytes(value, what=what)
        except FogsimError as error:
            raise ValueError(str(error)) from None

    return BeforeValidator(_bytes)


def format_bytes(size: float) -> str:
    """Binary units with three significant figures: ``1.50 MiB``, ``812 KiB``, ``96 B``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(size) >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value >= 100 else f"{value:.2f} {unit}"
    return f"{int(size)} B"
