"""What is compared: the facts of each checkpoint (params, GFLOPs, file size), whether two are comparable, their kind.

Two checkpoints are comparable when they solve the same task over the same class set; their architectures may differ
(a channel-pruned model has thinner layers than its dense parent). Shapes and the ultra_sparse metadata decide the
pair's kind (``stats.pair_kind``).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..metadata import SparseMetadata
from ..messages import echo
from .stats import pair_kind

__all__ = ["check_comparable", "gflops", "kind_of_pair", "model_facts", "prepare_for_timing"]


def gflops(model: nn.Module, imgsz: int) -> float | None:
    """GFLOPs of one ``imgsz`` x ``imgsz`` image, counted by Ultralytics' own ``get_flops``; None where it cannot count.

    ``get_flops`` returns 0.0 when its counter (``thop``) is missing or fails; that is reported as None, not as 0.

    Examples:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> round(gflops(DetectionModel("yolo11n.yaml", verbose=False), 640))
        7
    """
    from ultralytics.utils.torch_utils import get_flops

    value = get_flops(deepcopy(model).float(), imgsz)  # a copy: the counter attaches hooks and buffers
    return float(value) if value else None


def model_facts(model: nn.Module, path: str | Path, imgsz: int) -> dict[str, Any]:
    """Parameters, non-zero parameters, GFLOPs at ``imgsz`` and file size of one checkpoint.

    Args:
        model (nn.Module): The checkpoint's model as loaded (``checkpoint.load_checkpoint``), before fusing.
        path (str | Path): The checkpoint file.
        imgsz (int): Image size at which GFLOPs are counted.

    Returns:
        (dict): ``weights``, ``params``, ``nonzero``, ``gflops`` (None if not countable) and ``file_mb``.
    """
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    return {
        "weights": str(path),
        "params": params,
        "nonzero": nonzero,
        "gflops": gflops(model, imgsz),
        "file_mb": Path(path).stat().st_size / 1e6,
    }


def check_comparable(models: Mapping[str, nn.Module]) -> None:
    """Raise ValueError unless all models solve the same task over the same classes (names and number).

    Checked before any validation or timing: the metrics of a 3-class and a 1-class model are not comparable.

    Args:
        models (Mapping[str, nn.Module]): Key name (``dense``, ``sparse``) -> model.

    Raises:
        ValueError: One line naming both keys and what differs.

    Examples:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> a, b = DetectionModel("yolo11n.yaml", nc=3, verbose=False), DetectionModel("yolo11n.yaml", nc=1, verbose=False)
        >>> check_comparable({"dense": a, "sparse": b})
        Traceback (most recent call last):
        ...
        ValueError: dense= and sparse= are not comparable: different classes (dense: 3 classes {0: '0', 1: '1', 2: '2'}; sparse: 1 class {0: '0'}); compare models trained on the same class set
    """
    from ultralytics.nn.tasks import guess_model_task

    (first, reference), *others = models.items()
    for name, model in others:
        tasks = guess_model_task(reference), guess_model_task(model)
        if tasks[0] != tasks[1]:
            raise ValueError(
                f"{first}= and {name}= are not comparable: different tasks ({first}: {tasks[0]}; {name}: {tasks[1]})"
            )
        names = _class_names(reference), _class_names(model)
        if names[0] != names[1]:
            described = "; ".join(
                f"{key}: {len(n)} class{'es' if len(n) != 1 else ''} {echo(n)}" for key, n in zip((first, name), names)
            )
            raise ValueError(
                f"{first}= and {name}= are not comparable: different classes ({described}); "
                "compare models trained on the same class set"
            )


def kind_of_pair(dense: tuple[nn.Module, Mapping[str, Any]], sparse: tuple[nn.Module, Mapping[str, Any]]) -> str:
    """The kind of a pair of loaded checkpoints: ``stats.pair_kind`` of their shapes and the sparse one's method.

    Args:
        dense (tuple[nn.Module, Mapping]): ``(model, ckpt)`` from ``checkpoint.load_checkpoint``.
        sparse (tuple[nn.Module, Mapping]): The same for the sparse (or pruned) checkpoint.

    Returns:
        (str): ``unstructured``, ``nm`` or ``structured``.
    """
    shapes = [{k: tuple(v.shape) for k, v in model.state_dict().items()} for model, _ in (dense, sparse)]
    meta = SparseMetadata.from_ckpt(sparse[1])
    method = meta.config.get("method") if meta else None
    return pair_kind(shapes[0] == shapes[1], method)


def prepare_for_timing(model: nn.Module) -> dict[str, Any]:
    """Fuse a loaded model for inference as Ultralytics deploys it; count the zeros left (fusing may fill some).

    Detect heads (and subclasses) are switched to export mode: one output tensor, as in exported models.

    Returns:
        (dict): ``model`` (fused, eval mode) and ``zeros`` (fraction of zeros over weights with 2+ dimensions).
    """
    from ultralytics.nn.modules.head import Detect

    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
    for m in model.modules():
        if isinstance(m, Detect):
            m.export = True
    weights = [p for p in model.parameters() if p.dim() > 1]
    total = sum(p.numel() for p in weights)
    nonzero = sum(int(torch.count_nonzero(p)) for p in weights)
    return {"model": model.eval(), "zeros": (total - nonzero) / max(1, total)}


def _class_names(model: nn.Module) -> dict[int, str]:
    """The model's class names as ``{index: name}`` (older checkpoints store a list)."""
    names = getattr(model, "names", None) or {}
    return dict(enumerate(names)) if isinstance(names, (list, tuple)) else {int(k): str(v) for k, v in dict(names).items()}
