"""The validation of a scan's points: one Ultralytics validator and one dataloader for every point."""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch.nn as nn

__all__ = ["Evaluator"]


class Evaluator:
    """One Ultralytics detection validator, and its dataloader, used for every validation of a scan.

    Each call validates a deep copy of the network (Ultralytics fuses Conv+BN of the model it validates, in place)
    and returns mAP50 and mAP50-95. The validator's own progress bar and tables are silenced while it runs.

    Args:
        data (str | Path): Dataset YAML.
        imgsz (int): Image size.
        batch (int): Batch size.
        device (str): ``cpu`` or ``cuda:N``.
        workdir (str | Path): Ultralytics' ``save_dir`` for the validator (nothing is written there with plots off).
        single_cls (bool): Validate as one class, as the checkpoint was trained (what ``YOLO(path).val()`` does).
    """

    def __init__(
        self, data: str | Path, imgsz: int, batch: int, device: str, workdir: str | Path, single_cls: bool = False
    ) -> None:
        """Build the validator; its dataloader is built on the first call and kept."""
        from ultralytics.models.yolo.detect import DetectionValidator

        args = {
            "data": str(data), "imgsz": imgsz, "batch": batch, "device": device.replace("cuda:", ""), "mode": "val",
            "rect": True, "single_cls": single_cls, "plots": False, "save_json": False, "workers": 0, "verbose": False,
        }
        self.validator = DetectionValidator(save_dir=Path(workdir), args=args)

    def __call__(self, network: nn.Module) -> dict[str, float]:
        """Validate ``network``; return ``{"mAP50": ..., "mAP50-95": ...}``."""
        with _quiet():
            stats = self.validator(model=copy.deepcopy(network))
        return {"mAP50": float(stats["metrics/mAP50(B)"]), "mAP50-95": float(stats["metrics/mAP50-95(B)"])}


@contextmanager
def _quiet() -> Iterator[None]:
    """Raise Ultralytics' log level to WARNING (which also hides its progress bars on 8.4) for the duration."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)
