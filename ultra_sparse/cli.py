"""The ``ultra-sparse`` console script: ``ultra-sparse MODE key=value ...`` in the style of the ``yolo`` command.

Each mode lives in its own module under ``ultra_sparse.commands`` and exposes ``HELP`` (its usage text), ``KEYS``
(key -> description) and ``run(args) -> None``. Bad input ends with one line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["MODES", "UsageError", "entrypoint", "parse_args"]

MODES = {
    "sparsify": "one-shot: zero weights of a checkpoint by module family, write a new sparse checkpoint",
    "report": "sparsity tables (per family, per layer, totals) for any checkpoint",
    "train": "train with sparsity keys: gradual or one-shot pruning, fine-tune-with-mask from a sparse checkpoint",
    "val": "validate a checkpoint: Ultralytics' P, R, mAP50, mAP50-95 and speed, plus its sparsity",
    "compare": "dense vs sparse: same validation for both, interleaved benchmark, table of changes and a plot",
    "benchmark": "time dense and sparse interleaved (torch or onnxruntime): medians, spread, honest verdict",
    "scan": "sensitivity scan: prune each layer group at a ladder of ratios, validate, write rules reaching a sparsity",
    "demo": "end-to-end run on generated data: baseline, sparsify, fine-tune with mask, compare",
}


class UsageError(ValueError):
    """Bad command-line input (unknown mode or key, malformed key=value)."""


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` tokens into a dict, values converted like the ``yolo`` command does.

    Args:
        argv (list[str]): Tokens after the mode.

    Returns:
        (dict[str, Any]): Keys in the order given.

    Raises:
        UsageError: If a token is not ``key=value`` or a key repeats.

    Examples:
        >>> parse_args(["sparsity=0.1", "rules=default", "half=True"])
        {'sparsity': 0.1, 'rules': 'default', 'half': True}
    """
    from ultralytics.cfg import smart_value

    args: dict[str, Any] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"expected key=value, got {token!r}")
        if key in args:
            raise UsageError(f"key {key!r} given twice")
        args[key] = value if key in {"name", "project", "out"} else smart_value(value)
    return args


def check_keys(args: dict[str, Any], keys: dict[str, str], mode: str) -> None:
    """Raise UsageError naming the first key of ``args`` that ``mode`` does not take, with the closest match."""
    import difflib

    for key in args:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"'{mode}' takes no key {key!r}{hint}; see 'ultra-sparse {mode} help'")


def usage() -> str:
    """The top-level help text."""
    lines = [
        "usage: ultra-sparse MODE [key=value ...]",
        "",
        "Module-aware sparsification for Ultralytics YOLO detectors.",
        "",
        "modes:",
        *[f"  {mode:10s} {text}" for mode, text in MODES.items()],
        "",
        "'ultra-sparse MODE help' lists the keys of a mode. Examples:",
        "  ultra-sparse sparsify model=best.pt sparsity=0.10 rules=tokenc3_lsnet",
        "  ultra-sparse report model=runs/sparse/sparsify/weights/best-sparse.pt",
    ]
    return "\n".join(lines)


def mode_help(module: Any) -> str:
    """A mode's usage line followed by its keys."""
    width = max(len(k) for k in module.KEYS)
    return "\n".join([module.HELP, "", "keys:", *[f"  {k:{width}s}  {v}" for k, v in module.KEYS.items()]])


def main(argv: list[str]) -> int:
    """Run one mode; return the exit status."""
    if not argv or argv[0] in {"help", "--help", "-h"}:
        print(usage())
        return 0
    if argv[0] in {"version", "--version"}:
        from . import __version__

        print(__version__)
        return 0
    mode, rest = argv[0], argv[1:]
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    module = importlib.import_module(f"ultra_sparse.commands.{mode}")
    if any(token in {"help", "--help", "-h"} for token in rest):
        print(mode_help(module))
        return 0
    args = parse_args(rest)
    check_keys(args, module.KEYS, mode)
    module.run(args)
    return 0


def entrypoint() -> None:
    """Console-script entry: turn user errors into one line on stderr and a non-zero exit."""
    try:
        status = main(sys.argv[1:])
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError, SyntaxError) as e:  # SyntaxError: Ultralytics' bad-key error
        if os.environ.get("ULTRA_SPARSE_TRACEBACK"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"ultra-sparse: error: {' '.join(str(message).split())}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("ultra-sparse: interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)
