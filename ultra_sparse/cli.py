"""The ``ultra-sparse`` console script: a drop-in superset of Ultralytics' ``yolo`` command.

``ultra-sparse MODE key=value ...`` runs one of this project's modes (``MODES``); each lives in its own module under
``ultra_sparse.commands`` and exposes ``HELP`` (its usage text), ``KEYS`` (key -> description), optionally ``FLAGS``
(its boolean keys) and ``run(args) -> None``. Keys are read as ``yolo`` reads them: ``cfg=file.yaml`` gives every key of
the file and keys on the command line override it, a boolean key alone (``half``) means ``half=True``. Every other
``yolo`` command (``predict``, ``export``, ``settings``, ``detect val``, ``benchmark model=...``, ...) goes to
Ultralytics' own entry point unchanged, so replacing ``yolo`` by ``ultra-sparse`` keeps a command working.

Bad input ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterable

from .messages import clip, echo

__all__ = ["MODES", "UsageError", "entrypoint", "main", "parse_args"]

MODES = {
    "sparsify": "one-shot: zero weights (unstructured, N:M) or remove channels by module family, write a new checkpoint",
    "report": "sparsity tables (per family, per layer, totals) for any checkpoint",
    "train": "train any task with sparsity keys: gradual or one-shot pruning, fine-tune a sparse or pruned checkpoint",
    "val": "validate a checkpoint of any task with Ultralytics' validator (accuracy and speed), plus its sparsity",
    "compare": "dense vs sparse or pruned: params, GFLOPs, size, same validation, interleaved benchmark, table and plot",
    "benchmark": "time dense and sparse interleaved (torch and/or onnxruntime): medians, spread, honest verdict",
    "scan": "sensitivity scan: prune each layer group at a ladder of ratios, validate, write rules reaching a sparsity",
    "demo": "end-to-end run on generated data: baseline, sparsify, fine-tune, compare, then channel-prune, fine-tune, compare",
}
HELP_WORDS = {"help", "--help", "-h"}
STRING_KEYS = {"name", "project", "out"}  # kept as typed: name=1 is the folder "1"
# The words of Ultralytics' own commands besides its modes and tasks (the ``special`` commands of its entry point)
YOLO_OTHER_FLAGS = frozenset({"half", "int8", "end2end", "nms"})  # bare flags of 'yolo' whose default is not a bool
YOLO_COMMANDS = ("checks", "version", "settings", "cfg", "hub", "login", "logout", "copy-cfg", "solutions")


class UsageError(ValueError):
    """Bad command-line input (unknown mode or key, malformed key=value)."""


def parse_args(argv: Iterable[str], flags: Iterable[str] = ()) -> dict[str, Any]:
    """Parse ``key=value`` tokens into a dict, values converted as the ``yolo`` command converts them.

    Args:
        argv (Iterable[str]): Tokens after the mode; ``key = value`` with spaces is merged as by ``yolo``.
        flags (Iterable[str]): Boolean keys that may be given alone (``half`` means ``half=True``).

    Returns:
        (dict[str, Any]): Keys in the order given.

    Raises:
        UsageError: If a token is not ``key=value`` (nor a flag) or a key repeats.

    Examples:
        >>> parse_args(["sparsity=0.1", "rules=default", "half"], flags={"half"})
        {'sparsity': 0.1, 'rules': 'default', 'half': True}
    """
    from ultralytics.cfg import merge_equals_args, smart_value

    flags = set(flags)
    args: dict[str, Any] = {}
    for token in merge_equals_args(list(argv)):
        key, sep, value = token.partition("=")
        key, value = key.strip(), value.strip()
        if not sep and key in flags:
            value = True
        elif not sep or not key or not value:
            raise UsageError(f"expected key=value, got {echo(token)}")
        elif key not in STRING_KEYS:
            value = smart_value(value)
        if key in args:
            raise UsageError(f"key {echo(key)} given twice")
        args[key] = value
    return args


def read_cfg(path: Any) -> dict[str, Any]:
    """The keys of a ``cfg=`` YAML file, as ``yolo cfg=...`` reads them; keys with an empty (null) value are left out.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it does not parse or is not a mapping of keys to values.

    Examples:
        >>> read_cfg(None)
        {}
    """
    import yaml

    if path is None:
        return {}
    file = Path(str(path))
    if not file.is_file():
        raise FileNotFoundError(f"cfg={path} not found")
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"cfg={path} does not parse: {' '.join(str(e).split())}") from None
    if content is None:
        return {}
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise ValueError(f"cfg={path} must be a mapping of keys to values, got {echo(content)}")
    return {k: str(v) if k in STRING_KEYS else v for k, v in content.items() if v is not None and k != "cfg"}


def yolo_keys() -> frozenset[str]:
    """Every key of Ultralytics' configuration (``default.yaml``)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return frozenset(DEFAULT_CFG_DICT)


def yolo_flags() -> frozenset[str]:
    """The keys ``yolo`` sets to True when given alone: those whose default is a boolean, and its four others."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return frozenset(k for k, v in DEFAULT_CFG_DICT.items() if isinstance(v, bool)) | YOLO_OTHER_FLAGS


def check_keys(args: dict[str, Any], keys: Iterable[str], mode: str, where: str = "") -> None:
    """Raise UsageError naming the first key of ``args`` that ``mode`` does not take, with the closest match."""
    keys = set(keys)
    for key in args:
        if key not in keys:
            close = difflib.get_close_matches(key, sorted(keys), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UsageError(f"{where}'{mode}' takes no key {echo(key)}{hint}; see 'ultra-sparse {mode} help'")


def check_flags(args: dict[str, Any], flags: Iterable[str]) -> None:
    """Raise UsageError unless every boolean key given is True or False (``save=no`` is refused, as by ``yolo``)."""
    for key in flags:
        if key in args and not isinstance(args[key], bool):
            raise UsageError(f"{key}={echo(args[key])} must be True or False (or '{key}' alone for True)")


def mode_args(module: Any, mode: str, given: dict[str, Any], from_file: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """The arguments of one run: the cfg file's keys overridden by the command line's, checked against the mode.

    ``train`` takes every sparsity key and every Ultralytics key. Another mode takes its own keys; from a cfg file it
    ignores the Ultralytics, sparsity and ``train`` keys it does not use (one file serves every mode, as for ``yolo``).
    """
    from .commands.train import KEYS as TRAIN_KEYS
    from .config import SPARSITY_KEYS

    where = f"cfg={cfg}: "
    from_file = {k: v for k, v in from_file.items() if k != "mode"}  # the mode word on the command line decides
    if mode == "train":
        accepted = set(module.KEYS) | SPARSITY_KEYS | yolo_keys() | YOLO_OTHER_FLAGS
        check_keys(from_file, accepted, mode, where)
        check_keys(given, accepted, mode)
    else:
        check_keys(given, module.KEYS, mode)
        ignored = (SPARSITY_KEYS | set(TRAIN_KEYS) | yolo_keys()) - set(module.KEYS)
        from_file = {k: v for k, v in from_file.items() if k not in ignored}
        check_keys(from_file, module.KEYS, mode, where)
    args = {**from_file, **given}
    check_flags(args, getattr(module, "FLAGS", ()))
    return args


def usage() -> str:
    """The top-level help text."""
    lines = [
        "usage: ultra-sparse MODE [key=value ...]",
        "",
        "Module-aware pruning for Ultralytics YOLO models; a drop-in superset of the 'yolo' command.",
        "",
        "modes:",
        *[f"  {mode:10s} {text}" for mode, text in MODES.items()],
        "",
        "Every other 'yolo' command (predict, export, track, settings, checks, version, 'detect val', 'benchmark",
        "model=...', ...) runs Ultralytics unchanged. cfg=file.yaml reads keys from a file; the command line wins.",
        "'ultra-sparse MODE help' lists the keys of a mode. Examples:",
        "  ultra-sparse sparsify model=best.pt sparsity=0.10 rules=tokenc3_lsnet",
        "  ultra-sparse train cfg=sparse.yaml epochs=50",
        "  ultra-sparse report model=runs/sparse/sparsify/weights/best-sparse.pt",
    ]
    return "\n".join(lines)


def mode_help(module: Any) -> str:
    """A mode's usage line followed by its keys."""
    width = max(len(k) for k in module.KEYS)
    return "\n".join([module.HELP, "", "keys:", *[f"  {k:{width}s}  {v}" for k, v in module.KEYS.items()]])


def run_ultralytics(argv: list[str]) -> int:
    """Run Ultralytics' own ``yolo`` entry point on ``argv``, unchanged; return the exit status.

    Ultralytics decides CLI behaviour (``predict`` saves its images by default, for one) from the command line it was
    started with, which its modules hold as ``ARGV`` lists: for the call, each such list reads ``yolo ARGV...``.
    """
    import sys

    import ultralytics.cfg
    import ultralytics.engine.model
    import ultralytics.utils

    lists = {id(v): v for m in (sys, ultralytics.utils, ultralytics.cfg, ultralytics.engine.model)
             for v in (getattr(m, "ARGV", None), getattr(m, "argv", None)) if isinstance(v, list)}
    saved = {key: list(value) for key, value in lists.items()}
    for value in lists.values():
        value[:] = ["yolo", *argv]  # in place: every module that bound the list sees it
    try:
        ultralytics.cfg.entrypoint()
    finally:
        for key, value in lists.items():
            value[:] = saved[key]
    return 0


def is_yolo_command(word: str) -> bool:
    """Whether ``word`` starts a command of Ultralytics' ``yolo``: a key=value, a mode, a task or a special word."""
    from ultralytics.cfg import MODES as YOLO_MODES
    from ultralytics.cfg import TASKS

    plain = word.lower().lstrip("-")
    return "=" in word or word in YOLO_MODES or word in TASKS or plain in YOLO_COMMANDS or f"{plain}s" in YOLO_COMMANDS


def main(argv: list[str]) -> int:
    """Run one command; return the exit status."""
    from ultralytics.cfg import TASKS

    if not argv or argv[0] in HELP_WORDS:
        print(usage())
        return 0
    if argv[0] == "--version":
        import ultralytics

        from . import __version__

        print(f"ultra-sparse {__version__} (ultralytics {ultralytics.__version__})")
        return 0
    mode, rest = argv[0], argv[1:]
    if mode in TASKS and rest[:1] == ["train"]:  # 'detect train ...': sparse training of that task
        mode, rest = "train", [f"task={mode}", *rest[1:]]
    if mode not in MODES:
        if is_yolo_command(mode):
            return run_ultralytics(argv)
        close = difflib.get_close_matches(mode, list(MODES), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"unknown mode {echo(mode)}{hint}; choose one of {', '.join(MODES)} or a 'yolo' command")
    module = importlib.import_module(f"ultra_sparse.commands.{mode}")
    if any(token in HELP_WORDS for token in rest):
        print(mode_help(module))
        return 0
    given = parse_args(rest, flags=yolo_flags() | set(getattr(module, "FLAGS", ())))
    cfg = given.pop("cfg", None)
    from_file = read_cfg(cfg)
    if mode == "benchmark" and "model" in {**from_file, **given} and not {"dense", "sparse"} & {*from_file, *given}:
        return run_ultralytics(argv)  # 'yolo benchmark model=...': Ultralytics' export-format benchmark
    module.run(mode_args(module, mode, given, from_file, cfg))
    return 0


def error_line(error: BaseException) -> str:
    """One short line for an error: Ultralytics' help page and colours left out, whitespace folded, length capped."""
    from ultralytics.cfg import CLI_HELP_MSG
    from ultralytics.utils import remove_colorstr

    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    text = remove_colorstr(str(message).replace(CLI_HELP_MSG, " "))
    return clip(" ".join(text.split()))


def entrypoint() -> None:
    """Console-script entry: user errors and OS errors become one line on stderr and exit status 2."""
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:  # 'ultra-sparse help | head': the reader left; stop quietly as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141  # 128 + SIGPIPE, the status of a command stopped by a closed pipe
    except (ValueError, TypeError, OSError, KeyError, SyntaxError) as e:  # SyntaxError: Ultralytics' bad-key error
        if os.environ.get("ULTRA_SPARSE_TRACEBACK"):
            raise
        print(f"ultra-sparse: error: {error_line(e)}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("ultra-sparse: interrupted", file=sys.stderr)
        status = 130
    sys.exit(status)
