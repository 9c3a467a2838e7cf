"""The sparse task trainers under their first import path: DDP workers and existing code import
``ultra_sparse.trainer.SparseDetectionTrainer``; the code lives in :mod:`ultra_sparse.training.trainer`.

Examples:
    >>> from ultra_sparse.trainer import SparseDetectionTrainer
    >>> SparseDetectionTrainer.task
    'detect'
"""

from .training.trainer import (
    SPARSE_TRAINERS,
    SparseClassificationTrainer,
    SparseDetectionTrainer,
    SparseOBBTrainer,
    SparsePoseTrainer,
    SparseSegmentationTrainer,
    SparseTrainerMixin,
)

__all__ = [
    "SPARSE_TRAINERS",
    "SparseClassificationTrainer",
    "SparseDetectionTrainer",
    "SparseOBBTrainer",
    "SparsePoseTrainer",
    "SparseSegmentationTrainer",
    "SparseTrainerMixin",
]
