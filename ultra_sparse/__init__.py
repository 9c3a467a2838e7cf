"""ultra_sparse: module-aware sparsification for Ultralytics YOLO detectors."""

__version__ = "0.1.0"

from .callbacks import add_sparse_callbacks
from .config import SparsityConfig
from .model import SparseYOLO
from .oneshot import SparsifyResult, sparsify
from .report import sparsity_report
from .rules import load_rules
from .schedule import SparsitySchedule
from .trainer import SparseDetectionTrainer

__all__ = [
    "SparseDetectionTrainer",
    "SparseYOLO",
    "SparsifyResult",
    "SparsitySchedule",
    "SparsityConfig",
    "__version__",
    "add_sparse_callbacks",
    "load_rules",
    "sparsify",
    "sparsity_report",
]
