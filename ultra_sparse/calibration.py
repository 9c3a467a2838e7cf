"""Calibration batches for data-driven importance (``importance=taylor``), read through Ultralytics' own loaders."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

__all__ = ["buffers_kept", "calibration_batches", "loss_ready", "model_imgsz", "model_stride", "spread_indices"]


def calibration_batches(
    data: str,
    imgsz: int = 640,
    batch: int = 8,
    n_batches: int = 8,
    stride: int = 32,
    device: str = "cpu",
    task: str = "detect",
) -> Iterator[dict[str, Any]]:
    """Yield preprocessed batches (images in [0, 1] plus labels) from the train split of a dataset YAML.

    Images are letterboxed without augmentation. They are spread evenly over the split in file order (evenly spaced
    positions, first and last included), not its first files: a split of video frames sorted by name starts with one
    clip, and calibration on one clip misrepresents the rest. The same data gives the same batches.

    Args:
        data (str): Dataset YAML, as for ``yolo train data=...``.
        imgsz (int): Image size.
        batch (int): Images per batch.
        n_batches (int): Batches to yield at most.
        stride (int): Model stride (letterbox padding multiple).
        device (str): Device the batches are moved to.
        task (str): Task whose labels the batches carry (``detect``, ``segment``, ``pose``, ``obb``), as its loss
            reads them.

    Yields:
        (dict[str, Any]): A batch as Ultralytics' trainer feeds it to ``model.loss``.

    Raises:
        ValueError: For ``task="classify"`` (no detection-style labels) or a ``data`` that is not a dataset YAML.

    Examples:
        >>> batches = list(calibration_batches("coco8.yaml", imgsz=64, n_batches=1))  # doctest: +SKIP
    """
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import TQDM

    if task == "classify":
        raise ValueError(
            "a classify model prunes without calibration (no refit, no importance=taylor): leave data= out"
        )
    try:
        info = check_det_dataset(data)
    except AssertionError as e:  # Ultralytics asserts on a folder without a YAML, among others
        raise ValueError(f"data={data}: {e}") from None
    cfg = get_cfg(overrides={"imgsz": imgsz, "batch": batch, "data": data, "workers": 0, "task": task})
    dataset = build_yolo_dataset(cfg, info["train"], batch, info, mode="val", stride=stride)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, spread_indices(len(dataset), batch * n_batches)),
        batch_size=batch,
        shuffle=False,
        num_workers=0,
        collate_fn=dataset.collate_fn,
    )
    for item in TQDM(loader, total=len(loader), desc="calibration batches"):
        item = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in item.items()}
        item["img"] = item["img"].float() / 255
        yield item


def spread_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included (all of them if fewer).

    Examples:
        >>> spread_indices(10, 4)
        [0, 3, 6, 9]
        >>> spread_indices(3, 8)
        [0, 1, 2]
    """
    if count >= total:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def model_stride(net: nn.Module) -> int:
    """The letterbox multiple for ``net``: its largest stride, at least 32 (32 for a network without ``stride``).

    Examples:
        >>> model_stride(nn.Sequential(nn.Conv2d(3, 8, 3)))
        32
    """
    return max(int(net.stride.max()), 32) if hasattr(net, "stride") else 32


@contextmanager
def loss_ready(model: nn.Module) -> Iterator[nn.Module]:
    """Give a loaded model the hyperparameters its loss needs, and restore its ``args`` afterwards.

    A model loaded from a checkpoint keeps its training args as a plain dict; Ultralytics' loss reads them as
    attributes (``args.box``), as the trainer sets them.

    Examples:
        >>> with loss_ready(model):  # doctest: +SKIP
        ...     loss = model.loss(batch)[0]
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import IterableSimpleNamespace

    saved = getattr(model, "args", None)
    own = saved if isinstance(saved, dict) else vars(saved) if saved is not None else {}
    model.args = IterableSimpleNamespace(**{**DEFAULT_CFG_DICT, **own})
    model.criterion = None
    try:
        yield model
    finally:
        model.args = saved
        model.criterion = None


@contextmanager
def buffers_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Run training-mode passes on ``model`` and put every buffer back afterwards (BatchNorm statistics included).

    A loss pass in training mode moves each BatchNorm layer's running statistics toward the batch; ranking weights by
    their gradients must not change the model it ranks.

    Examples:
        >>> import torch.nn as nn
        >>> bn = nn.BatchNorm2d(2)
        >>> with buffers_kept(bn):
        ...     _ = bn.train()(torch.randn(4, 2, 3, 3))
        >>> bn.running_mean.abs().sum().item()
        0.0
    """
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])


def model_imgsz(net: nn.Module, default: int = 640) -> int:
    """The image size ``net`` was trained at (its ``args``), else ``default``.

    Examples:
        >>> model_imgsz(nn.Conv2d(1, 1, 1))
        640
    """
    args = getattr(net, "args", None) or {}
    imgsz = (args if isinstance(args, dict) else vars(args)).get("imgsz", default)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return int(imgsz) if isinstance(imgsz, (int, float)) and not isinstance(imgsz, bool) and imgsz > 0 else default
