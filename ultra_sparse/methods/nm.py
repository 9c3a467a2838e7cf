"""``method=nm``: N:M patterns (at most N non-zeros in every M consecutive input weights), for sparse tensor cores."""

from __future__ import annotations

from ..config import SparsityConfig
from .state import refuse_taylor
from .base import Method
from .element import element_sparsify, element_state

__all__ = ["NM"]


def _fine_tune(config: SparsityConfig, zeros: float) -> SparsityConfig:
    """A fine-tune keeps the start's zeros; the pattern fixes its own sparsity, so it takes no ``sparsity=``."""
    return config.replace(schedule="oneshot")


def _suffix(config: SparsityConfig) -> str:
    """``2of4`` for ``nm=2:4``."""
    n, m = config.nm_pattern
    return f"{n}of{m}"


NM = Method(
    name="nm",
    removes=False,
    sparsify=element_sparsify,
    training_state=element_state,
    check_training=refuse_taylor,
    fine_tune=_fine_tune,
    suffix=_suffix,
)
"""The N:M method.

Examples:
    >>> NM.suffix(SparsityConfig(method="nm", nm="1:4"))
    '1of4'
"""
