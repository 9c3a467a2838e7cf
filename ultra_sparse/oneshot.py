"""One-shot sparsification of a model in memory: rules -> families -> scores -> masks -> zeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn

from .config import SparsityConfig
from .importance import get_criterion, taylor_scores
from .prune import element_masks
from .prune.unstructured import apply_masks
from .report import pattern_of, sparsity_report
from .rules import assign_families, load_rules, network_of

__all__ = ["SparsifyResult", "sparsify"]


@dataclass(frozen=True)
class SparsifyResult:
    """What :func:`sparsify` did.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, for every prunable weight.
        report (dict): The sparsity report of the model afterwards (see :func:`ultra_sparse.report.sparsity_report`).
        scale (float): Factor every rule ratio was multiplied by to reach the overall target.
    """

    masks: dict[str, torch.Tensor]
    report: dict[str, Any]
    scale: float


def sparsify(
    model: nn.Module, config: SparsityConfig | None = None, batches: Iterable[dict] | None = None, **kwargs: Any
) -> SparsifyResult:
    """Zero the least important weights of ``model`` in place, family by family (or in an N:M pattern).

    Args:
        model (nn.Module): An Ultralytics network or ``YOLO`` object.
        config (SparsityConfig, optional): Settings; built from ``kwargs`` when omitted.
        batches (Iterable[dict], optional): Calibration batches, required by ``importance=taylor``
            (see :func:`ultra_sparse.calibration.calibration_batches`).
        **kwargs (Any): SparsityConfig fields, when ``config`` is omitted.

    Returns:
        (SparsifyResult): Masks, report and scale factor.

    Examples:
        >>> from ultralytics import YOLO
        >>> model = YOLO("yolo11n.yaml")
        >>> result = sparsify(model, sparsity=0.1, rules="default")
        >>> round(result.report["totals"]["prunable"]["sparsity"], 4)
        0.1
        >>> sparsify(YOLO("yolo11n.yaml"), method="nm", nm="2:4").report["nm"]["holds"]
        True
    """
    if config is None:
        config = SparsityConfig(**kwargs)
    elif kwargs:
        raise TypeError("pass either config or keyword settings, not both")
    net = network_of(model)
    assignment = assign_families(net, load_rules(config.rules))
    taylor = None
    if config.importance == "taylor":
        if batches is None:
            raise ValueError("importance=taylor needs calibration data: pass data= (a dataset YAML)")
        taylor = taylor_scores(net, batches, [w.name for w in assignment.prunable])
    result = element_masks(assignment, get_criterion(config.importance, taylor), config.sparsity, config)
    apply_masks(net, result.masks)
    if net is not model and hasattr(model, "predictor"):
        model.predictor = None  # predict() caches a copy of the old weights
    settings = config.to_dict()
    report = sparsity_report(net, assignment, result.family_ratios, settings, result.zeros, pattern_of(settings))
    return SparsifyResult(result.masks, report, result.scale)
