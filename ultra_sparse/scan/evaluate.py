"""The validation of a scan's points: one Ultralytics validator of the model's task and one dataloader for every point.

A scan chooses ratios by box mAP (:data:`ultra_sparse.scan.METRICS`, read under the key names of
:data:`ultra_sparse.metrics.ACCURACY_KEYS`), which the validators of detect, segment, pose and OBB models all report;
:func:`check_task` refuses any other task (classify) before anything runs.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch.nn as nn

from ..metrics import ACCURACY_KEYS
from .allocation import METRICS

__all__ = ["TASKS", "Evaluator", "check_task"]

TASKS = ("detect", "segment", "pose", "obb")  # the tasks whose validation reports box mAP, what a scan chooses by


def check_task(task: str) -> str:
    """Return ``task`` when a scan can validate its models, else raise ValueError naming it.

    Examples:
        >>> check_task("segment")
        'segment'
        >>> check_task("classify")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: task='classify' cannot be scanned: a scan chooses by box mAP, ...
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} cannot be scanned: a scan chooses by box mAP, which {task} models do not "
                         f"report; scan a {', '.join(TASKS[:-1])} or {TASKS[-1]} model")
    return task


class Evaluator:
    """One Ultralytics validator of the model's task, and its dataloader, used for every validation of a scan.

    Each call validates a deep copy of the network (Ultralytics fuses Conv+BN of the model it validates, in place)
    and returns its box mAP50 and mAP50-95: for a segment or pose model, the boxes of the same validation that also
    scores its masks or keypoints. The validator's own progress bar and tables are silenced while it runs.

    Args:
        data (str | Path): Dataset YAML.
        imgsz (int): Image size.
        batch (int): Batch size.
        device (str): ``cpu`` or ``cuda:N``.
        workdir (str | Path): Ultralytics' ``save_dir`` for the validator (nothing is written there with plots off).
        single_cls (bool): Validate as one class, as the checkpoint was trained (what ``YOLO(path).val()`` does).
        task (str): The model's task, one of :data:`TASKS` (``ultralytics.nn.tasks.guess_model_task`` tells it).

    Raises:
        ValueError: If ``task`` is not one of :data:`TASKS`.

    Examples:
        >>> evaluate = Evaluator("data.yaml", 640, 16, "cpu", "val", task="segment")  # doctest: +SKIP
        >>> evaluate(network)  # doctest: +SKIP
        {'mAP50': 0.81, 'mAP50-95': 0.52}
    """

    def __init__(
        self,
        data: str | Path,
        imgsz: int,
        batch: int,
        device: str,
        workdir: str | Path,
        single_cls: bool = False,
        task: str = "detect",
    ) -> None:
        """Build the validator; its dataloader is built on the first call and kept."""
        from ultralytics.models import yolo

        validators = {"detect": yolo.detect.DetectionValidator, "segment": yolo.segment.SegmentationValidator,
                      "pose": yolo.pose.PoseValidator, "obb": yolo.obb.OBBValidator}
        args = {
            "data": str(data), "imgsz": imgsz, "batch": batch, "device": device.replace("cuda:", ""), "mode": "val",
            "rect": True, "single_cls": single_cls, "plots": False, "save_json": False, "workers": 0, "verbose": False,
        }
        self.validator = validators[check_task(task)](save_dir=Path(workdir), args=args)

    def __call__(self, network: nn.Module) -> dict[str, float]:
        """Validate ``network``; return ``{"mAP50": ..., "mAP50-95": ...}``."""
        with _quiet():
            stats = self.validator(model=copy.deepcopy(network))
        return {name: float(stats[ACCURACY_KEYS[name]]) for name in METRICS}


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
