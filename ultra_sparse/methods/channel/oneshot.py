"""One-shot ``method=channel``: plan the channels to remove, remove them in place, refit, and report the change."""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
import torch.nn as nn
from ultralytics.utils.torch_utils import get_flops

from ...calibration import model_imgsz
from ...config import SparsityConfig
from ...prune.channel import plan_channels, remove_channels
from ...prune.reconstruct import reconstruct_layers
from ...report import family_widths, sparsity_report
from ...rules import Assignment, assign_families
from ..base import SparsifyResult

__all__ = ["channel_sparsify", "remove_planned"]


def channel_sparsify(
    net: nn.Module,
    assignment: Assignment,
    config: SparsityConfig,
    batches: Iterable[dict] | None = None,
    imgsz: int | None = None,
    gradients: dict[str, torch.Tensor] | None = None,
    scores: dict[str, torch.Tensor] | None = None,
) -> SparsifyResult:
    """``method=channel``: plan, remove the channels in place (refitting the layers that lost inputs when calibration
    batches are given), measure params and GFLOPs before and after.

    ``scores=`` (taylor scores of single weights) is refused.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> net = YOLO("yolov8n.yaml").model
        >>> config = SparsityConfig(method="channel", flops=0.3)
        >>> section = channel_sparsify(net, assign_families(net, load_rules(config.rules)), config, imgsz=64).report["channel"]
        >>> section["gflops"]["after"] < 0.75 * section["gflops"]["before"]
        True
    """
    if scores is not None:
        raise ValueError("scores= ranks single weights: it is for method=unstructured or nm, not method=channel")
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
    before = family_widths(assignment)
    params_before, gflops_before = sum(p.numel() for p in net.parameters()), get_flops(net, imgsz)
    remove_channels(net, plan.remove)
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
        "inside": plan.inside,
        "reconstruction": None,
    }
    report = sparsity_report(net, after_assignment, None, config.to_dict())
    report["channel"] = section
    return SparsifyResult({}, report, plan.scale)
