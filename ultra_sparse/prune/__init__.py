"""Pruning methods, one sibling module each over the shared rules: ``unstructured`` and ``nm`` draw element masks (zeros
inside dense tensors, :func:`element_masks`); ``channel`` removes whole channels (:mod:`.channel`, traced through
:mod:`.channel_trace`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .nm import nm_masks
from .unstructured import MaskResult, compute_masks

if TYPE_CHECKING:
    from ..config import SparsityConfig
    from ..importance import Criterion
    from ..rules import Assignment

__all__ = ["element_masks"]


def element_masks(assignment: Assignment, criterion: Criterion, sparsity: float | None, config: SparsityConfig) -> MaskResult:
    """Keep-masks of an element method (zeros inside dense tensors) for the prunable weights of ``assignment``.

    The one place where one-shot sparsify and sparse training choose how element masks are drawn.

    Args:
        assignment (Assignment): Prunable weights and their families.
        criterion (Criterion): Importance scores.
        sparsity (float | None): Overall target over prunable weights; ``None`` applies the rule ratios as written.
            For ``method=nm`` the pattern fixes the zeros: the target is a floor it must reach (sparse training
            passes the pattern's own fraction), and the masks are the full pattern.
        config (SparsityConfig): ``method``, ``scope`` and ``nm`` are read from it.

    Returns:
        (MaskResult): Masks, scale factor, family ratios and zero counts.
    """
    # Method branch kept below the registry (ultra_sparse.methods): the mask state that every method's training builds
    # on draws element masks here, and the registry imports that state, so it cannot be looked up from here.
    if config.method == "unstructured":
        return compute_masks(assignment, criterion, sparsity, config.scope)
    if config.method == "nm":
        return nm_masks(assignment, criterion, config.nm_pattern, sparsity)
    raise ValueError(f"method={config.method!r} does not draw element masks")
