"""What the element methods (``unstructured``, ``nm``) share: zeros inside dense tensors, one-shot and in training.

Both draw keep-masks through :func:`ultra_sparse.prune.element_masks` (L1 / L2 / LAMP / taylor scores), zero the
masked weights and count them in the report; in training both keep a
:class:`~ultra_sparse.methods.state.SparseTraining`. Only how the masks are drawn and how a fine-tune counts its
sparsity differ, which :mod:`.unstructured` and :mod:`.nm` say.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn

from ..config import SparsityConfig
from ..importance import TAYLOR_NEEDS_DATA, get_criterion, taylor_scores
from ..prune import element_masks
from ..prune.unstructured import apply_masks
from ..report import pattern_of, sparsity_report
from ..rules import Assignment
from .state import SparseTraining
from .base import SparsifyResult

__all__ = ["element_sparsify", "element_state"]


def element_sparsify(
    net: nn.Module,
    assignment: Assignment,
    config: SparsityConfig,
    batches: Iterable[dict] | None = None,
    imgsz: int | None = None,
    gradients: dict[str, torch.Tensor] | None = None,
    scores: dict[str, torch.Tensor] | None = None,
) -> SparsifyResult:
    """Zero the least important weights of ``net`` in place (family by family, or in an N:M pattern) and report.

    ``imgsz`` is not used (zeros do not change GFLOPs); ``gradients=`` (channel ranking) is refused.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> net = YOLO("yolo11n.yaml").model
        >>> config = SparsityConfig(sparsity=0.2)
        >>> result = element_sparsify(net, assign_families(net, load_rules(config.rules)), config)
        >>> round(result.report["totals"]["prunable"]["sparsity"], 4)
        0.2
    """
    if gradients is not None:
        raise ValueError(f"gradients= ranks channels: it is for method=channel, not method={config.method}")
    taylor = _taylor(net, assignment, config, batches, scores)
    result = element_masks(assignment, get_criterion(config.importance, taylor), config.sparsity, config)
    apply_masks(net, result.masks)
    settings = config.to_dict()
    report = sparsity_report(net, assignment, result.family_ratios, settings, result.zeros, pattern_of(settings))
    return SparsifyResult(result.masks, report, result.scale)


def element_state(
    net: nn.Module,
    config: SparsityConfig,
    epochs: int,
    sparse_start: bool = False,
    imgsz: int = 640,
    refit: Callable | None = None,
    batches: Callable | None = None,
) -> SparseTraining:
    """The mask state of an element method's training run (``imgsz``, ``refit`` and ``batches`` are channel inputs).

    Examples:
        >>> from ultralytics import YOLO
        >>> type(element_state(YOLO("yolo11n.yaml").model, SparsityConfig(sparsity=0.3), 3)).__name__
        'SparseTraining'
    """
    return SparseTraining(net, config, epochs, sparse_start)


def _taylor(
    net: nn.Module,
    assignment: Assignment,
    config: SparsityConfig,
    batches: Iterable[dict] | None,
    scores: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor] | None:
    """The taylor scores of every prunable weight: ``scores`` where given, else computed on ``batches``; None unless
    ``importance=taylor``."""
    if config.importance != "taylor":
        if scores is not None:
            raise ValueError(f"scores= are taylor scores: they need importance=taylor, not {config.importance}")
        return None
    if scores is not None:
        unfit = [w.name for w in assignment.prunable if w.name not in scores or scores[w.name].shape != w.weight.shape]
        if unfit:
            raise ValueError(
                f"scores= must hold a score per element of every prunable weight: {unfit[0]} is missing or of another shape"
            )
        return scores
    if batches is None:
        raise ValueError(TAYLOR_NEEDS_DATA)
    return taylor_scores(net, batches, [w.name for w in assignment.prunable])
