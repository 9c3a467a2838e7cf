"""Sparse training as plain Ultralytics callbacks: this path is kept for existing imports; the code lives in
:mod:`ultra_sparse.training.callbacks`.

Examples:
    >>> from ultra_sparse.callbacks import add_sparse_callbacks
"""

from .training.callbacks import SparseCallbacks, add_sparse_callbacks

__all__ = ["SparseCallbacks", "add_sparse_callbacks"]
