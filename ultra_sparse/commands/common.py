"""Helpers shared by the command modules: where outputs go, checks made before any work, and shared keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..messages import echo

__all__ = ["OUTPUT_KEYS", "check_writable", "positive_int", "save_dir"]

OUTPUT_KEYS = {
    "project": "folder that holds runs (default: Ultralytics' runs_dir/sparse, usually runs/sparse)",
    "name": "run folder inside project; numbered (name2, name3, ...) if it exists",
}


def save_dir(project: str | None, name: str | None, default_name: str) -> Path:
    """Return a new run folder ``project/name`` (numbered like Ultralytics runs if taken); nothing is created.

    Args:
        project (str | None): Parent folder; defaults to Ultralytics' ``runs_dir`` setting + ``/sparse``.
        name (str | None): Run name; defaults to ``default_name``.
        default_name (str): Name used when ``name`` is None.

    Returns:
        (Path): A folder path that does not exist yet and can be created (see ``check_writable``).

    Examples:
        >>> save_dir("/tmp/runs-example", "exp", "sparsify").name
        'exp'
    """
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.files import increment_path

    root = Path(project) if project else Path(SETTINGS["runs_dir"]) / "sparse"
    folder = root / (name or default_name)
    check_writable(folder)
    return Path(increment_path(folder, exist_ok=False, sep=""))


def check_writable(folder: str | Path) -> None:
    """Raise ValueError unless ``folder`` exists as a writable folder or can be created: checked before any work.

    Examples:
        >>> check_writable("/tmp/new-folder/inside")
        >>> check_writable("/dev/null/x")
        Traceback (most recent call last):
        ...
        ValueError: cannot write to /dev/null/x: /dev/null is not a folder
    """
    folder = Path(folder)
    limit = os.pathconf(folder.anchor or ".", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in folder.parts:
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"cannot write to {echo(str(folder))}: the name {echo(part)} is too long (> {limit} bytes)")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write to {folder}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write to {folder}: {existing} is not writable")


def positive_int(key: str, value: Any) -> int:
    """Return ``value`` if it is a positive integer (not a bool), else raise naming ``key``.

    Examples:
        >>> positive_int("imgsz", 64)
        64
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={echo(value)} must be a positive integer")
    return value
