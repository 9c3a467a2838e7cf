"""Reading and writing Ultralytics checkpoints: clear errors on bad files, atomic writes, metadata in its own key.

A sparse checkpoint is a plain Ultralytics checkpoint (``YOLO(path)`` loads it without ultra_sparse). What ultra_sparse
knows about it lives in the top-level key ``ultra_sparse``, never in ``train_args``: Ultralytics rejects unknown
``train_args`` keys when a run is resumed.
"""

from __future__ import annotations

import io
import os
import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["METADATA_KEY", "atomic_write_bytes", "load_checkpoint", "save_checkpoint"]

METADATA_KEY = "ultra_sparse"


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load an Ultralytics ``.pt`` checkpoint as an FP32 model in eval mode.

    Args:
        path (str | Path): Checkpoint file.

    Returns:
        (tuple[nn.Module, dict]): The model (the EMA where the checkpoint has one) and the checkpoint dict.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not a readable Ultralytics checkpoint.

    Examples:
        >>> model, ckpt = load_checkpoint("runs/detect/train/weights/best.pt")  # doctest: +SKIP
    """
    from ultralytics.nn.tasks import torch_safe_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model={path} not found")
    if path.suffix != ".pt":
        raise ValueError(f"model={path} is not a .pt checkpoint")
    try:
        ckpt, _ = torch_safe_load(str(path))
    except Exception as e:  # corrupt files surface as many exception types across torch/Ultralytics versions
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"model={path} is not a readable Ultralytics checkpoint ({type(e).__name__}: {reason})") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={path} holds no model (expected an Ultralytics checkpoint with 'model' or 'ema')")
    return model.float().eval(), ckpt


def save_checkpoint(model: nn.Module, ckpt: dict[str, Any], path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``model`` as a new stripped Ultralytics checkpoint, never replacing an existing file.

    The checkpoint keeps the source checkpoint's keys (``train_args``, ``date``, ...), stores the model in FP16 as
    Ultralytics does (zeros stay zeros), drops EMA and optimizer state, and puts ``metadata`` under ``ultra_sparse``.

    Args:
        model (nn.Module): The (sparsified) model.
        ckpt (dict): The checkpoint it was loaded from (``{}`` for a model built from YAML).
        path (str | Path): New file to create.
        metadata (dict): What to store under the ``ultra_sparse`` key.

    Returns:
        (Path): ``path``.

    Raises:
        FileExistsError: If ``path`` already exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another out= or name=")
    snapshot = deepcopy(model).half()
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None
    args = getattr(snapshot, "args", None)
    if args is not None and not isinstance(args, dict):
        snapshot.args = dict(vars(args))  # as Ultralytics stores it: a plain dict pickles without its classes
    data = {**ckpt, "model": snapshot, "ema": None, "optimizer": None, "updates": None, METADATA_KEY: metadata}
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path`` and rename it into place.

    Args:
        path (str | Path): Destination; its folder is created if missing.
        payload (bytes): File content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
