"""Parsing of sizes (`50MB`, `2GiB`) and durations (seconds, `1.5s`, `2m`)."""

from __future__ import annotations

import re

from diffrun.errors import UsageError

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3, "ti": 1024**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """`50MB` -> 50_000_000, `2GiB` -> 2_147_483_648, `1024` -> 1024."""
    if isinstance(text, int):
        return text
    match = _NUMBER.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise UsageError(f"not a size: {text!r}", hint="use a number of bytes or units such as 50MB, 2GiB")
    try:
        value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    except OverflowError:  # 1e400: infinity
        raise UsageError(f"size too large: {text!r}") from None
    if value <= 0:
        raise UsageError(f"size must be positive: {text!r}")
    return value


def parse_duration(text: str | float) -> float:
    """`30` -> 30.0 seconds, `1.5s`, `500ms`, `2m`."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _NUMBER.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _DURATION_UNITS:
        raise UsageError(f"not a duration: {text!r}", hint="use seconds, e.g. 30 or 1.5s or 500ms")
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
