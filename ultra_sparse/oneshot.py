"""One-shot sparsification of a model in memory: rules -> families -> scores -> masks -> zeros, or channels removed.

``method=unstructured`` and ``method=nm`` zero weights inside dense tensors (masks); ``method=channel`` removes whole
channels (:mod:`ultra_sparse.prune.channel`), so the layers themselves get smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn

from .config import SparsityConfig
from .importance import get_criterion, taylor_scores
from .prune import element_masks
from .prune.unstructured import apply_masks
from .report import family_widths, pattern_of, sparsity_report
from .rules import Assignment, assign_families, check_prunable, load_rules, network_of

__all__ = ["SparsifyResult", "model_imgsz", "remove_planned", "result_metadata", "sparsify"]


@dataclass(frozen=True)
class SparsifyResult:
    """What :func:`sparsify` did.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, for every prunable weight (empty for
            ``method=channel``: nothing is masked, channels are gone).
        report (dict): The sparsity report of the model afterwards (see :func:`ultra_sparse.report.sparsity_report`);
            for ``method=channel`` its ``channel`` entry holds channels, params and GFLOPs before and after, per family,
            and the blocks kept whole with their reasons.
        scale (float): Factor every rule ratio was multiplied by to reach the overall target.
    """

    masks: dict[str, torch.Tensor]
    report: dict[str, Any]
    scale: float


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
    assignment = assign_families(net, load_rules(config.rules))
    check_prunable(assignment, config.sparsity)
    if net is not model and hasattr(model, "predictor"):
        model.predictor = None  # predict() caches a copy of the old weights
    if config.method == "channel":
        if scores is not None:
            raise ValueError("scores= ranks single weights: it is for method=unstructured or nm, not method=channel")
        return _prune_channels(net, assignment, config, batches, imgsz, gradients)
    if gradients is not None:
        raise ValueError(f"gradients= ranks channels: it is for method=channel, not method={config.method}")
    taylor = _taylor(net, assignment, config, batches, scores)
    result = element_masks(assignment, get_criterion(config.importance, taylor), config.sparsity, config)
    apply_masks(net, result.masks)
    settings = config.to_dict()
    report = sparsity_report(net, assignment, result.family_ratios, settings, result.zeros, pattern_of(settings))
    return SparsifyResult(result.masks, report, result.scale)


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
        raise ValueError("importance=taylor needs calibration data: pass data= (a dataset YAML)")
    return taylor_scores(net, batches, [w.name for w in assignment.prunable])


def _prune_channels(
    net: nn.Module,
    assignment: Assignment,
    config: SparsityConfig,
    batches: Iterable[dict] | None,
    imgsz: int | None,
    gradients: dict[str, torch.Tensor] | None = None,
) -> SparsifyResult:
    """``method=channel``: plan, remove the channels in place (refitting the layers that lost inputs when calibration
    batches are given), measure params and GFLOPs before and after."""
    import copy

    from .prune.channel import plan_channels
    from .prune.reconstruct import reconstruct_layers

    batches = list(batches) if batches is not None else None
    config = config.calibrated(bool(batches))
    imgsz = imgsz or model_imgsz(net)
    plan = plan_channels(net, assignment, config, imgsz, batches, gradients)
    dense = copy.deepcopy(net) if config.reconstruct else None
    result = remove_planned(net, assignment, config, plan, imgsz)
    if dense is not None:
        images = torch.cat([b["img"] for b in batches])
        result.report["channel"]["reconstruction"] = reconstruct_layers(dense, net, plan.remove, images).to_dict()
    return result


def remove_planned(net: nn.Module, assignment: Assignment, config: SparsityConfig, plan: Any, imgsz: int) -> SparsifyResult:
    """Remove the channels of ``plan`` from ``net`` in place; report params, GFLOPs and widths before and after.

    Args:
        net (nn.Module): The network the plan was made on (for a training run: with those channels zeroed).
        assignment (Assignment): Families of its weights.
        config (SparsityConfig): The ``method=channel`` keys the plan followed.
        plan (ChannelPlan): What to remove (``ultra_sparse.prune.channel.plan_channels``).
        imgsz (int): Image size GFLOPs are counted at.

    Returns:
        (SparsifyResult): No masks; the report with its ``channel`` section.
    """
    from ultralytics.utils.torch_utils import get_flops

    from .prune.channel import apply_plan

    before = family_widths(assignment)
    params_before, gflops_before = sum(p.numel() for p in net.parameters()), get_flops(net, imgsz)
    apply_plan(net, plan)
    after_assignment = assign_families(net, assignment.ruleset)
    after = family_widths(after_assignment)
    params_after, gflops_after = sum(p.numel() for p in net.parameters()), get_flops(net, imgsz)
    prunable_before = sum(f["params"] for f in before.values() if not f["protected"])
    prunable_after = sum(f["params"] for f in after.values() if not f["protected"])
    section = {
        "target": {k: getattr(config, k) for k in ("sparsity", "flops") if getattr(config, k) is not None} or None,
        "imgsz": imgsz,
        "scale": plan.scale,
        "achieved": {"sparsity": 1 - prunable_after / max(1, prunable_before), "flops": 1 - gflops_after / gflops_before if gflops_before else None},
        "estimate": plan.estimate,
        "bracket": plan.bracket,
        "params": {"before": params_before, "after": params_after},
        "gflops": {"before": gflops_before, "after": gflops_after},
        "families": [
            {"family": name, "protected": b["protected"], "ratio_asked": 0.0 if b["protected"] else plan.family_ratios.get(name),
             "channels_before": b["channels"], "channels_after": after[name]["channels"],
             "params_before": b["params"], "params_after": after[name]["params"]}
            for name, b in before.items()
        ],
        "split_blocks": plan.split_blocks,
        "whole": plan.whole,
        "reconstruction": None,
    }
    report = sparsity_report(net, after_assignment, None, config.to_dict())
    report["channel"] = section
    return SparsifyResult({}, report, plan.scale)


def result_metadata(result: SparsifyResult, config: SparsityConfig, source: str | None = None) -> dict[str, Any]:
    """What a pruned checkpoint stores under ``ultra_sparse``: plain data, usable wherever the file goes.

    Version, the source path (when given), the config with its rules as a dict, the scale factor, the ratio asked of
    each family, the totals of the report and, for ``method=channel``, its channel section.
    """
    from . import __version__
    from .rules import rules_as_dict

    return {
        "version": __version__,
        **({"source": source} if source is not None else {}),
        "config": {**config.to_dict(), "rules": rules_as_dict(config.rules)},
        "scale": result.scale,
        "family_ratios": {f["family"]: f["ratio_asked"] for f in result.report["families"]},
        "totals": result.report["totals"],
        **({"channel": result.report["channel"]} if "channel" in result.report else {}),
    }


def model_imgsz(net: nn.Module, default: int = 640) -> int:
    """The image size ``net`` was trained at (its ``args``), else ``default``.

    Examples:
        >>> model_imgsz(nn.Conv2d(1, 1, 1))
        640
    """
    args = getattr(net, "args", None) or {}
    imgsz = (args if isinstance(args, dict) else vars(args)).get("imgsz", default)
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    return int(imgsz) if isinstance(imgsz, (int, float)) and not isinstance(imgsz, bool) and imgsz > 0 else default
