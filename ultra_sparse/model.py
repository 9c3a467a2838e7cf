"""SparseYOLO: a YOLO model whose ``train()`` takes the sparsity keys."""

from __future__ import annotations

from typing import Any

from ultralytics import YOLO

from .trainer import SparseDetectionTrainer

__all__ = ["SparseYOLO"]


class SparseYOLO(YOLO):
    """``YOLO`` whose detection training runs :class:`~ultra_sparse.trainer.SparseDetectionTrainer`.

    Everything else (predict, val, export) is plain Ultralytics; checkpoints it writes load with ``YOLO(path)``.

    Examples:
        >>> model = SparseYOLO("yolo11n.yaml")
        >>> model.task_map["detect"]["trainer"].__name__
        'SparseDetectionTrainer'
        >>> model.train(data="coco8.yaml", epochs=3, sparsity=0.5)  # doctest: +SKIP
    """

    @property
    def task_map(self) -> dict[str, dict[str, Any]]:
        """YOLO's task map with the sparse trainer for detection."""
        tasks = dict(super().task_map)
        tasks["detect"] = {**tasks["detect"], "trainer": SparseDetectionTrainer}
        return tasks
