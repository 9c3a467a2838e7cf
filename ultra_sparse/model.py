"""SparseYOLO: a YOLO model whose ``train()`` takes the sparsity keys, for every task."""

from __future__ import annotations

from typing import Any

from ultralytics import YOLO

from .training.trainer import SPARSE_TRAINERS
from .validator import SPARSE_VALIDATORS

__all__ = ["SparseYOLO"]


class SparseYOLO(YOLO):
    """``YOLO`` whose training and validation run the sparse trainer and validator of the model's task.

    Detect, segment, pose, OBB and classify models train with the trainers of :mod:`ultra_sparse.training.trainer`; predict
    and export are plain Ultralytics; checkpoints it writes load with ``YOLO(path)``.

    Examples:
        >>> model = SparseYOLO("yolo11n.yaml")
        >>> model.task_map["detect"]["trainer"].__name__
        'SparseDetectionTrainer'
        >>> model.task_map["segment"]["validator"].__name__
        'SparseSegmentationValidator'
        >>> model.train(data="coco8.yaml", epochs=3, sparsity=0.5)  # doctest: +SKIP
    """

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """YOLO's task map with the sparse trainer and validator of each task."""
        tasks = dict(super().task_map)
        for task, trainer in SPARSE_TRAINERS.items():
            if task in tasks:
                tasks[task] = {**tasks[task], "trainer": trainer, "validator": SPARSE_VALIDATORS[task]}
        return tasks
