"""ultra_sparse: module-aware sparsification for Ultralytics YOLO detectors."""

__version__ = "0.1.0"

from .config import SparsityConfig
from .oneshot import SparsifyResult, sparsify
from .report import sparsity_report
from .rules import load_rules

__all__ = ["SparsifyResult", "SparsityConfig", "__version__", "load_rules", "sparsify", "sparsity_report"]
