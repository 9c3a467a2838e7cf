"""Error messages that stay short: values echoed back are capped, whatever the user gave (a huge YAML list included)."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["MAX_LINE", "clip", "echo"]

MAX_LINE = 500  # characters of one error line at most

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def echo(value: Any) -> str:
    """``repr(value)`` for an error message, with long strings and containers cut short.

    Examples:
        >>> echo(0.5)
        '0.5'
        >>> echo(list(range(1000)))
        '[0, 1, 2, 3, 4, 5, ...]'
    """
    return _REPR.repr(value)


def clip(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut to at most ``limit`` characters, saying how many were left out.

    Examples:
        >>> clip("abc", 10)
        'abc'
        >>> clip("x" * 100, 40)
        'xxxxxxxxxxxxxxx... (85 more characters)'
    """
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(f"... ({len(text)} more characters)"))
    return f"{text[:keep]}... ({len(text) - keep} more characters)"
