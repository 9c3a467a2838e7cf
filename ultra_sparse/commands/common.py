"""Helpers shared by the command modules: where outputs go, and the keys several modes take."""

from __future__ import annotations

from pathlib import Path

__all__ = ["OUTPUT_KEYS", "save_dir"]

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
        (Path): A folder path that does not exist yet.

    Examples:
        >>> save_dir("/tmp/runs-example", "exp", "sparsify").name
        'exp'
    """
    from ultralytics.utils import SETTINGS
    from ultralytics.utils.files import increment_path

    root = Path(project) if project else Path(SETTINGS["runs_dir"]) / "sparse"
    return Path(increment_path(root / (name or default_name), exist_ok=False, sep=""))
