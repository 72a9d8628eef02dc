"""Byte sizes as people write them (``512KiB``, ``1.5MB``) and as fogsim prints them."""

from __future__ import annotations

import re

from fogsim.errors import FogsimError

_UNITS = {
    "": 1, "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*$")
_HINT = "use a positive size such as 512KiB, 1MiB or 2.5MB (units B, KB, KiB, MB, MiB, GB, GiB)"


def parse_bytes(text: str | int | float, *, what: str = "size") -> int:
    """Return the number of bytes ``text`` names; raise FogsimError for anything else.

    A bare number is bytes. Fractions of a byte round down; the result must be at least 1.
    """
    if isinstance(text, bool):
        raise FogsimError(f"invalid {what} {text!r}: {_HINT}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise FogsimError(f"invalid {what} {text!r}: {_HINT}")
        value, unit = float(match.group(1)), match.group(2).upper()
        if unit not in _UNITS:
            raise FogsimError(f"invalid {what} {text!r}: unknown unit {match.group(2)!r}; {_HINT}")
    size = int(value * _UNITS[unit])
    if size < 1:
        raise FogsimError(f"invalid {what} {text!r}: it must be at least 1 byte; {_HINT}")
    return size


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
