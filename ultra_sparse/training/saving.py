"""Atomic checkpoint writes of a training run: each file written once, whole, with the run's ``ultra_sparse`` state.

Ultralytics serialises a checkpoint once and writes it to last.pt (and best.pt, epochN.pt) in place, and rewrites both
files in place at the end of a run (``strip_optimizer``); a kill during either write destroys the file. Here
:func:`captured_saves` catches those writes in memory (:func:`write_captured` then replaces each file atomically), and
:func:`atomic_strip` makes the end-of-run strip land beside its target first.

Examples:
    >>> import torch, io
    >>> buffer = io.BytesIO(); torch.save({"model": None}, buffer)
    >>> from ultra_sparse.metadata import SparseMetadata
    >>> record = SparseMetadata({"method": "nm"}, version="0.1")
    >>> torch.load(io.BytesIO(with_metadata(buffer.getvalue(), record)), weights_only=False)["ultra_sparse"]
    {'version': '0.1', 'config': {'method': 'nm'}}
"""

from __future__ import annotations

import io
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from ultralytics.utils import LOGGER, colorstr

from ..checkpoint import atomic_write_bytes, deflate_zip
from ..metadata import SparseMetadata

__all__ = ["atomic_strip", "captured_saves", "fresh_run_dir", "remove_unstarted_run", "with_metadata", "write_captured"]

_CAPTURED: ContextVar[dict | None] = ContextVar("ultra_sparse_captured_checkpoints", default=None)


class _CapturedPath(type(Path())):
    """A checkpoint path whose ``write_bytes`` hands the bytes to the trainer while a save is captured.

    Paths derived with ``/`` keep the class (``wdir / "epoch3.pt"``), so every file of one save is captured.
    """

    def write_bytes(self, data):
        """Keep ``data`` for the capturing save, or write it as usual outside one."""
        captured = _CAPTURED.get()
        if captured is None:
            return super().write_bytes(data)
        captured[Path(self)] = bytes(data)
        return len(data)


@contextmanager
def atomic_strip(transform: Callable[[bytes], bytes] | None = None) -> Iterator[None]:
    """Context: the trainer's ``strip_optimizer`` writes to a file beside its target, then replaces it atomically.

    The stripped checkpoint is DEFLATE-compressed on the way (plain ``torch.load`` reads it); exact zeros and pruned
    models shrink. Ultralytics' own function does the stripping; only where its bytes land changes. ``transform``
    rewrites the stripped bytes first (a ``method=channel`` run removes its zeroed channels there).
    """
    import ultralytics.engine.trainer as engine

    strip = engine.strip_optimizer

    def strip_atomically(f, s="", updates=None):
        target = Path(s or f)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".strip-") as staging:
            staged = Path(staging) / target.name
            ckpt = strip(f, str(staged), updates=updates)
            if staged.exists():
                stripped = staged.read_bytes()
                payload = deflate_zip(transform(stripped) if transform else stripped)
                atomic_write_bytes(target, payload)
                LOGGER.info(f"{colorstr('ultra_sparse:')} {target} replaced in one step, {len(payload) / 1e6:.1f}MB compressed")
        return ckpt

    engine.strip_optimizer = strip_atomically
    try:
        yield
    finally:
        engine.strip_optimizer = strip


@contextmanager
def captured_saves(owner: Any, keys: tuple[str, ...] = ("last", "best", "wdir")) -> Iterator[dict[Path, bytes]]:
    """Context: the checkpoint writes under ``owner``'s path attributes ``keys`` land in the yielded dict, not on disk.

    Paths derived from them (``wdir / "epoch3.pt"``) are captured too; the attributes are restored on exit.
    """
    paths = {key: getattr(owner, key) for key in keys}
    for key, path in paths.items():
        setattr(owner, key, _CapturedPath(path))
    captured: dict[Path, bytes] = {}
    token = _CAPTURED.set(captured)
    try:
        yield captured
    finally:
        _CAPTURED.reset(token)
        for key, path in paths.items():
            setattr(owner, key, path)


def write_captured(captured: dict[Path, bytes], transform: Callable[[bytes], bytes] | None = None) -> None:
    """Write each captured file atomically, ``transform``-ed once per distinct payload (last.pt and best.pt share one)."""
    payloads: dict[bytes, bytes] = {}
    for path, data in captured.items():
        if data not in payloads:
            payloads[data] = data if transform is None else transform(data)
        atomic_write_bytes(path, payloads[data])


def with_metadata(data: bytes, metadata: SparseMetadata) -> bytes:
    """The serialised checkpoint ``data`` with ``metadata`` under its ``ultra_sparse`` key."""
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    metadata.to_ckpt(ckpt)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


def fresh_run_dir(cfg: Any, overrides: dict) -> Path | None:
    """The outermost folder that Ultralytics' trainer will create for these settings (the run folder, or the new
    ``project=`` folder above it), or None on resume or where the run folder exists.

    Examples:
        >>> fresh_run_dir(None, {"project": "/tmp/no-such-project-x", "name": "run", "mode": "train"})
        PosixPath('/tmp/no-such-project-x')
    """
    from ultralytics.cfg import DEFAULT_CFG, get_cfg, get_save_dir

    args = get_cfg(cfg or DEFAULT_CFG, overrides)
    if args.resume:
        return None
    folder = Path(get_save_dir(args)).absolute()
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def remove_unstarted_run(folder: Path | None) -> None:
    """Remove a folder this run created when it holds nothing but Ultralytics' ``args.yaml`` and empty folders.

    Ultralytics writes the run folder before it reads the data; a run that fails there (a detection dataset for a
    segment model, say) would leave a run that never trained. Any other file keeps the folder whole.
    """
    if folder is None or not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if not p.is_dir()]
    if len(files) > 1 or any(p.name != "args.yaml" for p in files):
        return
    for file in files:
        file.unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        sub.rmdir()
    folder.rmdir()
