"""One-shot sparsification of a model in memory: rules -> families -> the method's pass (masks and zeros, or channels
removed) -> report.

``method=unstructured`` and ``method=nm`` zero weights inside dense tensors (masks); ``method=channel`` removes whole
channels, so the layers themselves get smaller. What each does is its :class:`~ultra_sparse.methods.Method`'s.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from .checkpoint import check_finite
from .config import SparsityConfig
from .methods import SparsifyResult, method_of
from .rules import assign_families, check_prunable, load_rules, network_of

__all__ = ["SparsifyResult", "sparsify"]


def sparsify(
    model: nn.Module,
    config: SparsityConfig | None = None,
    batches: Iterable[dict] | None = None,
    imgsz: int | None = None,
    gradients: dict[str, torch.Tensor] | None = None,
    scores: dict[str, torch.Tensor] | None = None,
    **kwargs: Any,
) -> SparsifyResult:
    """Zero the least important weights of ``model`` in place, family by family (or in an N:M pattern), or remove
    its least important channels (``method=channel``).

    Args:
        model (nn.Module): An Ultralytics network or ``YOLO`` object.
        config (SparsityConfig, optional): Settings; built from ``kwargs`` when omitted.
        batches (Iterable[dict], optional): Calibration batches, required by ``importance=taylor`` and
            ``reconstruct=True`` (see :func:`ultra_sparse.calibration.calibration_batches`); with ``method=channel``
            they also refit the layers that lost inputs unless ``reconstruct=False``.
        imgsz (int, optional): ``method=channel``: image size GFLOPs are counted at (default: the model's training
            ``imgsz``, else 640).
        gradients (dict[str, torch.Tensor], optional): ``method=channel importance=taylor``: the model's loss
            gradients on ``batches`` (:func:`ultra_sparse.importance.loss_gradients`), when already computed for
            these weights; the channels are then ranked without running the batches again.
        scores (dict[str, torch.Tensor], optional): ``method=unstructured`` or ``nm`` with ``importance=taylor``: the
            scores of :func:`ultra_sparse.importance.taylor_scores` for these weights (every prunable one), when
            already computed; the weights are then ranked without running the batches again.
        **kwargs (Any): SparsityConfig fields, when ``config`` is omitted.

    Returns:
        (SparsifyResult): Masks, report and scale factor.

    Raises:
        ValueError: On bad settings, rules that leave nothing to prune (:func:`ultra_sparse.rules.check_prunable`),
            NaN/Inf weights, or an unreachable target.

    Examples:
        >>> from ultralytics import YOLO
        >>> model = YOLO("yolo11n.yaml")
        >>> result = sparsify(model, sparsity=0.1, rules="default")
        >>> round(result.report["totals"]["prunable"]["sparsity"], 4)
        0.1
        >>> sparsify(YOLO("yolo11n.yaml"), method="nm", nm="2:4").report["nm"]["holds"]
        True
        >>> pruned = sparsify(YOLO("yolov8n.yaml"), method="channel", flops=0.3, imgsz=64).report["channel"]
        >>> pruned["gflops"]["after"] < 0.75 * pruned["gflops"]["before"]
        True
    """
    if config is None:
        config = SparsityConfig(**kwargs)
    elif kwargs:
        raise TypeError("pass either config or keyword settings, not both")
    net = network_of(model)
    check_finite(net, "model")  # every method, the head too: a NaN anywhere makes the pruned model useless
    assignment = assign_families(net, load_rules(config.rules))
    check_prunable(assignment, config.sparsity)
    if net is not model and hasattr(model, "predictor"):
        model.predictor = None  # predict() caches a copy of the old weights
    return method_of(config).sparsify(net, assignment, config, batches, imgsz, gradients, scores)
