"""ultra_sparse: module-aware sparsification for Ultralytics YOLO models (detect, segment, pose, OBB, classify)."""

from ._version import __version__

from . import nn  # registers the YOLOv13 / LSNet / TokenC3 layers with Ultralytics' YAML parser
from .bench import benchmark_models
from .training.callbacks import add_sparse_callbacks
from .compare import compare_models
from .config import SparsityConfig
from .model import SparseYOLO
from .oneshot import SparsifyResult, sparsify
from .report import sparsity_report
from .rules import load_rules
from .schedule import SparsitySchedule
from .training.trainer import (
    SparseClassificationTrainer,
    SparseDetectionTrainer,
    SparseOBBTrainer,
    SparsePoseTrainer,
    SparseSegmentationTrainer,
)
from .validator import SparseDetectionValidator

__all__ = [
    "SparseClassificationTrainer",
    "SparseDetectionTrainer",
    "SparseOBBTrainer",
    "SparsePoseTrainer",
    "SparseSegmentationTrainer",
    "SparseDetectionValidator",
    "SparseYOLO",
    "SparsifyResult",
    "SparsitySchedule",
    "SparsityConfig",
    "__version__",
    "add_sparse_callbacks",
    "benchmark_models",
    "compare_models",
    "load_rules",
    "sparsify",
    "sparsity_report",
]
