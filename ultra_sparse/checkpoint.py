"""Reading and writing Ultralytics checkpoints: clear errors on bad files, atomic writes, metadata in its own key.

A sparse checkpoint is a plain Ultralytics checkpoint (``YOLO(path)`` loads it without ultra_sparse). What ultra_sparse
knows about it lives in the top-level key ``ultra_sparse``, never in ``train_args``: Ultralytics rejects unknown
``train_args`` keys when a run is resumed. Sparse checkpoints are written with their zip entries DEFLATE-compressed:
``torch.load`` reads such entries, so the file stays a plain checkpoint and its zeros cost little space.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from copy import deepcopy
from itertools import chain
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .metadata import METADATA_KEY, SparseMetadata

__all__ = [
    "atomic_write_bytes",
    "check_finite",
    "checkpoint_bytes",
    "checkpoint_file_size",
    "deflate_zip",
    "load_checkpoint",
    "save_checkpoint",
]

def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load an Ultralytics ``.pt`` checkpoint as an FP32 model in eval mode, after checking the file is intact.

    Args:
        path (str | Path): Checkpoint file.

    Returns:
        (tuple[nn.Module, dict]): The model (the EMA where the checkpoint has one) and the checkpoint dict.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is unreadable, damaged (a zip entry fails its CRC check) or not an Ultralytics checkpoint
            (a dict holding an Ultralytics model under ``model`` or ``ema``, as ``YOLO.save`` and training write it).

    Examples:
        >>> model, ckpt = load_checkpoint("runs/detect/train/weights/best.pt")  # doctest: +SKIP
    """
    from ultralytics.nn.tasks import BaseModel, torch_safe_load

    path = Path(path)
    try:
        found = path.is_file()
    except OSError as e:  # a name too long for the file system, for example
        raise ValueError(f"model={str(path)[:80]} cannot be read ({e.strerror})") from None
    if not found:
        raise FileNotFoundError(f"model={path} not found")
    if path.suffix != ".pt":
        raise ValueError(f"model={path} is not a .pt checkpoint")
    _check_zip(path)
    try:
        ckpt, _ = torch_safe_load(str(path))
    except Exception as e:  # corrupt files surface as many exception types across torch/Ultralytics versions
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"model={path} is not a readable Ultralytics checkpoint ({type(e).__name__}: {reason})") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, BaseModel):
        found = type(model).__name__ if model is not None else "no model"
        raise ValueError(
            f"model={path} is not an Ultralytics checkpoint (expected a dict with an Ultralytics model under 'model' "
            f"or 'ema', as YOLO.save() and training write it; found {found})"
        )
    return model.float().eval(), ckpt


def check_finite(model: nn.Module, what: str = "model") -> None:
    """Raise ValueError naming the first floating parameter or buffer of ``model`` that holds NaN or Inf.

    Args:
        model (nn.Module): The network to check.
        what (str): How the error names the model, for example ``model=best.pt``.

    Examples:
        >>> check_finite(nn.Linear(2, 2))
        >>> layer = nn.Linear(2, 2)
        >>> layer.bias.data[0] = float("nan")
        >>> check_finite(layer)
        Traceback (most recent call last):
        ...
        ValueError: model: parameter bias holds NaN or Inf values; fix the checkpoint first
    """
    named = chain(
        (("parameter", n, t) for n, t in model.named_parameters()), (("buffer", n, t) for n, t in model.named_buffers())
    )
    for kind, name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
            raise ValueError(f"{what}: {kind} {name} holds NaN or Inf values; fix the checkpoint first")


def checkpoint_bytes(
    model: nn.Module, ckpt: dict[str, Any], metadata: SparseMetadata | None, compress: bool = True
) -> bytes:
    """Serialise ``model`` as a stripped Ultralytics checkpoint and return the file's bytes.

    The checkpoint keeps the source checkpoint's keys (``train_args``, ``date``, ...), stores the model in FP16 as
    Ultralytics does (zeros stay zeros), drops EMA and optimizer state, and puts ``metadata`` under ``ultra_sparse``
    (without it, the source's record is dropped: it would describe another network).

    Args:
        model (nn.Module): The (sparsified) model.
        ckpt (dict): The checkpoint it was loaded from (``{}`` for a model built from YAML).
        metadata (SparseMetadata | None): What to store under the ``ultra_sparse`` key.
        compress (bool): DEFLATE the zip entries (see :func:`deflate_zip`); plain ``torch.load`` still reads them.

    Returns:
        (bytes): The content of the ``.pt`` file.
    """
    snapshot = deepcopy(model).half()
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None
    args = getattr(snapshot, "args", None)
    if args is not None and not isinstance(args, dict):
        snapshot.args = dict(vars(args))  # as Ultralytics stores it: a plain dict pickles without its classes
    data = {k: v for k, v in ckpt.items() if k != METADATA_KEY}
    data.update(model=snapshot, ema=None, optimizer=None, updates=None)
    if metadata is not None:
        metadata.to_ckpt(data)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return deflate_zip(buffer.getvalue()) if compress else buffer.getvalue()


def save_checkpoint(
    model: nn.Module, ckpt: dict[str, Any], path: str | Path, metadata: SparseMetadata | None, compress: bool = True
) -> Path:
    """Write ``model`` as a new stripped Ultralytics checkpoint (see :func:`checkpoint_bytes`), never replacing a file.

    Args:
        model (nn.Module): The (sparsified) model.
        ckpt (dict): The checkpoint it was loaded from (``{}`` for a model built from YAML).
        path (str | Path): New file to create.
        metadata (SparseMetadata | None): What to store under the ``ultra_sparse`` key.
        compress (bool): DEFLATE the zip entries (smaller file, still loads with plain ``YOLO(path)``).

    Returns:
        (Path): ``path``.

    Raises:
        FileExistsError: If ``path`` already exists (checked again, race-free, when the file is put in place).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another out= or name=")
    atomic_write_bytes(path, checkpoint_bytes(model, ckpt, metadata, compress), exclusive=True)
    return path


def deflate_zip(payload: bytes) -> bytes:
    """Re-pack a ``torch.save`` zip archive with every entry DEFLATE-compressed, names and order unchanged.

    ``torch.load`` (and so ``YOLO(path)``) reads compressed entries; only ``torch.load(mmap=True)`` needs stored ones.
    Exact zeros compress well: a 50% sparse FP16 model shrinks to about 0.6 of its size. The output is deterministic.

    Args:
        payload (bytes): A zip archive, for example the bytes ``torch.save`` wrote into a buffer.

    Returns:
        (bytes): The compressed archive.

    Examples:
        >>> buffer = io.BytesIO()
        >>> torch.save({"w": torch.zeros(1000)}, buffer)
        >>> packed = deflate_zip(buffer.getvalue())
        >>> len(packed) < len(buffer.getvalue()), float(torch.load(io.BytesIO(packed))["w"].abs().sum())
        (True, 0.0)
    """
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            target.writestr(entry, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def checkpoint_file_size(source: str | Path | bytes) -> dict[str, Any]:
    """Size of a checkpoint file (or of its bytes), and what its zip entries hold uncompressed.

    Args:
        source (str | Path | bytes): A ``.pt`` file, or the bytes of one.

    Returns:
        (dict): ``bytes`` (on disk), ``mb`` (``bytes / 1e6``), ``compressed`` (any zip entry deflated) and
        ``uncompressed_bytes`` (sum of the entries' sizes; ``bytes`` for a file that is not a zip archive).

    Examples:
        >>> buffer = io.BytesIO()
        >>> torch.save({"w": torch.zeros(1000)}, buffer)
        >>> size = checkpoint_file_size(deflate_zip(buffer.getvalue()))
        >>> size["compressed"], size["bytes"] < size["uncompressed_bytes"]
        (True, True)
    """
    data = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    size = len(source) if isinstance(source, bytes) else data.stat().st_size
    compressed, uncompressed = False, size
    if zipfile.is_zipfile(data):
        with zipfile.ZipFile(data) as archive:
            entries = archive.infolist()
        compressed = any(e.compress_type != zipfile.ZIP_STORED for e in entries)
        uncompressed = sum(e.file_size for e in entries)
    return {"bytes": size, "mb": size / 1e6, "compressed": compressed, "uncompressed_bytes": uncompressed}


def atomic_write_bytes(path: str | Path, payload: bytes, exclusive: bool = False) -> None:
    """Write ``payload`` to a temporary file beside ``path`` and move it into place in one step.

    The file gets the permissions the umask gives a new file (``0o644`` under umask ``022``), as ``open()`` would.

    Args:
        path (str | Path): Destination; its folder is created if missing.
        payload (bytes): File content.
        exclusive (bool): Never replace an existing ``path``: raise FileExistsError instead, race-free (the file is
            linked into place, which fails if the name is taken). Otherwise an existing file is replaced atomically.

    Raises:
        FileExistsError: If ``exclusive`` and ``path`` exists.
        OSError: If the folder cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")  # short: fits where path fits
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 whatever the umask
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; it was left untouched") from None
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (read by setting it and putting it back: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_zip(path: Path) -> None:
    """Raise ValueError if ``path`` is a zip archive (torch's format) whose directory or any entry's CRC is damaged."""
    if not zipfile.is_zipfile(path):
        return  # not a zip: the legacy torch format or garbage, which the loader judges
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"model={path} is damaged ({type(e).__name__}: {reason})") from None
    if bad is not None:
        raise ValueError(f"model={path} is damaged: zip entry {bad} fails its CRC check (a corrupted copy?)")

