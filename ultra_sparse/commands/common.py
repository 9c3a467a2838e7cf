"""Helpers shared by the command modules: where run folders go, checks that outputs can be written, safe writes.

Run folders are resolved by Ultralytics' own ``get_save_dir`` with the task ``sparse``, so ``project=``/``name=``
mean what they mean to ``yolo`` on the installed version (8.4 puts a relative ``project`` under
``runs_dir/sparse/``; 8.3 takes it from the working folder) and the default is ``runs_dir/sparse/<mode>``. The path
is made absolute once, here, so what a mode passes on to Ultralytics and what it prints are where files really go.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from ..checkpoint import atomic_write_bytes

__all__ = [
    "OUTPUT_KEYS",
    "ROUND_TO_HELP",
    "RUNS_TASK",
    "check_new_file",
    "claim_run_dir",
    "claimed_run_dir",
    "run_dir",
    "write_new_files",
]

RUNS_TASK = "sparse"  # the folder under Ultralytics' runs_dir that holds ultra_sparse runs, like detect/ or segment/
OUTPUT_KEYS = {
    "project": "folder that holds runs, resolved as Ultralytics resolves project= (default: runs_dir/sparse; on "
    "ultralytics 8.4 a relative project goes under runs_dir/sparse/)",
    "name": "run folder inside project; numbered as Ultralytics numbers runs if it exists",
}
ROUND_TO_HELP = (
    "method=channel: channel counts of layers with >= 16 channels stay multiples of this; on a layer narrower than "
    "twice it the step is halved, again as needed, not below 8 (default 8; 16 suits AVX-512 CPUs, see "
    "docs/channel.md)"
)
_MAX_CLAIMS = 1000


def run_dir(project: str | Path | None, name: str | None, default_name: str) -> Path:
    """The absolute run folder Ultralytics would choose for ``project``/``name``, numbered if taken; nothing is created.

    Args:
        project (str | Path | None): Parent folder; ``None`` for Ultralytics' ``runs_dir`` + ``/sparse``.
        name (str | None): Run name; defaults to ``default_name``.
        default_name (str): Name used when ``name`` is None (the mode).

    Returns:
        (Path): An absolute folder path that does not exist yet.

    Raises:
        ValueError: If the path cannot be examined (a name too long for the file system, for example).

    Examples:
        >>> run_dir("/tmp/runs-example", "exp", "sparsify").name
        'exp'
    """
    from ultralytics.cfg import get_save_dir

    args = SimpleNamespace(
        project=str(project) if project else None, name=name or default_name, task=RUNS_TASK, mode=default_name,
        exist_ok=False, save_dir=None,
    )
    try:
        return Path(os.path.abspath(get_save_dir(args)))
    except OSError as e:
        where = f"project={str(project)[:80]} name={str(name)[:80]}"
        raise ValueError(f"{where}: cannot use this folder ({e.strerror})") from None


def check_new_file(path: str | Path, key: str) -> None:
    """Raise unless ``path`` can be created: it is new, its nearest existing folder is writable, and names fit.

    Called on every output before any work, so bad ``out=``/``project=`` values fail before anything is written.

    Args:
        path (str | Path): A file (or run folder) that a mode will create.
        key (str): The key the error names, for example ``out`` or ``project``.

    Raises:
        FileExistsError: If ``path`` exists (a file or a folder: outputs never replace anything).
        ValueError: If a parent is a file, the folder is not writable, or a name is too long for the file system.

    Examples:
        >>> check_new_file("/tmp/runs-example/sparsify/weights/best-sparse.pt", "project")
    """
    path = Path(os.path.abspath(path))
    try:
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{key}=: {path} already exists; outputs never replace a file, choose a new path")
        folder = path.parent
        while not folder.exists():  # also walks past a file used as a folder (exists() is False below it)
            folder = folder.parent
    except FileExistsError:
        raise
    except OSError as e:
        raise ValueError(f"{key}=: cannot use {str(path)[:80]} ({e.strerror})") from None
    if not folder.is_dir():
        raise ValueError(f"{key}=: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{key}=: cannot write in {folder} (permission denied or read-only)")
    limit = _name_max(folder)
    for part in path.relative_to(folder).parts:
        if len(os.fsencode(part)) > limit:
            raise ValueError(f"{key}=: the name {part[:40]}... is too long: longer than this file system allows ({limit} bytes)")


def claim_run_dir(project: str | Path | None, name: str | None, default_name: str) -> Path:
    """Create a new run folder (see :func:`run_dir`) atomically: concurrent runs never share one.

    ``mkdir`` either creates the folder or fails because it exists; a name taken meanwhile moves on to the next
    number, as Ultralytics' ``increment_path`` numbers them.

    Returns:
        (Path): The created, empty, absolute folder.

    Raises:
        ValueError: If the folder cannot be created.
    """
    for _ in range(_MAX_CLAIMS):
        folder = run_dir(project, name, default_name)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"project=: cannot create {folder.parent} ({e.strerror})") from None
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue  # another run took this name between the check and mkdir: take the next one
        except OSError as e:
            raise ValueError(f"project=: cannot create {folder} ({e.strerror})") from None
    raise ValueError(f"project=: no free run folder name next to {run_dir(project, name, default_name)}")


@contextmanager
def claimed_run_dir(project: str | Path | None, name: str | None, default_name: str) -> Iterator[Path]:
    """:func:`claim_run_dir` for a block of work; if the block fails, the folder is removed again where still empty,
    and so are the parent folders (``project=``, ``runs_dir``) that the claim created.

    Examples:
        >>> with claimed_run_dir("/tmp/runs-example", "val", "val") as folder:  # doctest: +SKIP
        ...     (folder / "val.json").write_text("{}")
    """
    target = run_dir(project, name, default_name)
    new_parents = [p for p in target.parents if not p.exists()]  # deepest first: project= and runs_dir folders made now
    folder = claim_run_dir(project, name, default_name)
    try:
        yield folder
    except BaseException:
        _remove_empty_folders([folder])
        for parent in new_parents:  # only the chain this call made, never another run's folder beside it
            _rmdir_if_empty(parent)
        raise


def write_new_files(files: Mapping[Path, bytes], claimed: Path | None = None) -> None:
    """Write each file once, atomically, never replacing one; if one fails, remove what this call wrote.

    Args:
        files (Mapping[Path, bytes]): Path -> content, written in order.
        claimed (Path, optional): A run folder claimed for these files, removed too (if empty) when a write fails.

    Raises:
        FileExistsError: If a file appeared meanwhile (it is left untouched).
        ValueError: If a file cannot be written (the message names it and the reason).
    """
    created = sorted({p for path in files for p in Path(path).parents if not p.exists()}, key=lambda p: -len(p.parts))
    written = []
    try:
        for path, payload in files.items():
            atomic_write_bytes(path, payload, exclusive=True)
            written.append(Path(path))
    except OSError as e:
        for path in written:
            path.unlink(missing_ok=True)
        _remove_empty_folders([*created, *([claimed] if claimed else [])])
        if isinstance(e, FileExistsError):
            raise
        raise ValueError(f"cannot write {path} ({e.strerror or e}); nothing was left behind") from None


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove each folder (and its sub-folders, deepest first) where empty; files are never deleted."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir_if_empty(sub)
        _rmdir_if_empty(folder)


def _rmdir_if_empty(folder: Path) -> None:
    """``rmdir`` that leaves a folder that is not empty (or not removable) alone."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows; 255 where it cannot be asked."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf on Windows
        return 255
