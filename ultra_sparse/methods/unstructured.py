"""``method=unstructured``: single weights zeroed inside dense tensors, exact targets, no speed by itself."""

from __future__ import annotations

from ..config import SparsityConfig
from .state import refuse_taylor
from .base import Method
from .element import element_sparsify, element_state

__all__ = ["UNSTRUCTURED"]


def _fine_tune(config: SparsityConfig, zeros: float) -> SparsityConfig:
    """A fine-tune keeps the start's zeros: its sparsity is theirs, reached at once."""
    return config.replace(schedule="oneshot", sparsity=zeros)


UNSTRUCTURED = Method(
    name="unstructured",
    removes=False,
    sparsify=element_sparsify,
    training_state=element_state,
    check_training=refuse_taylor,
    fine_tune=_fine_tune,
    suffix=lambda config: "sparse",
)
"""The unstructured method.

Examples:
    >>> UNSTRUCTURED.fine_tune(SparsityConfig(), 0.25).sparsity
    0.25
"""
