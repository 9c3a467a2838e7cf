"""The scan loop: validate the dense model and every ladder point, choose ratios, validate and refine the choice."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import torch.nn as nn

from ..rules import RuleSet
from .allocation import (
    DEFAULT_MARGIN,
    MIN_RATIO,
    check_budget,
    check_metric,
    choose_ratios,
    flops_sizes,
    loss_curve,
    predicted_loss,
    refine,
    sensitivity_scores,
)
from .groups import LayerGroup, layout_rules
from .points import PruneCopy, RestoreWeights

__all__ = ["scan"]


def scan(
    pruner: RestoreWeights | PruneCopy,
    evaluate: Callable[[nn.Module], Mapping[str, float]],
    ruleset: RuleSet,
    groups: Sequence[LayerGroup],
    ladders: Mapping[str, Sequence[float]],
    sparsity: float,
    base: Mapping[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    budget: int | None = None,
    margin: float = DEFAULT_MARGIN,
    metric: str = "mAP50",
) -> dict[str, Any]:
    """Measure every group at its ladder ratios, choose ratios for ``sparsity``, then refine the choice by measuring it.

    Without ``base``, each point prunes one group with every other weight dense, and the curves are losses against
    the dense model from ``(0, 0)``. With ``base`` (from :func:`base_ratios`), each point moves one group away from
    the base allocation with the others kept there, and the curves are losses against the base model through
    ``(base ratio, 0)``. :func:`choose_ratios` turns the curves into the allocation with the least predicted loss,
    which is validated with all groups pruned at once. Groups interact, so that prediction can be far off; the
    better measured of the base and the choice is then refined by :func:`refine` with the validations left in
    ``budget``: zeros move from the groups whose curves lose the most per weight to those that lose the least, each
    candidate validated as a whole. Every allocation is validated as ``sparsify rules=<it> sparsity=<sparsity>``
    prunes it, and the one written is the best MEASURED one (never only a predicted one), so with ``base`` the
    written rules never score below the base allocation on the scanned data.

    Validations: the dense model, the base allocation (with ``base``), every ladder point, the choice, and the
    refinement's candidates, ``budget`` in all at most. The pruner restores the model after each.

    Args:
        pruner (RestoreWeights | PruneCopy): From :func:`make_pruner`.
        evaluate (Callable): Network -> ``{"mAP50": ..., "mAP50-95": ...}``, for example an :class:`Evaluator`.
        ruleset (RuleSet): The input rules.
        groups (Sequence[LayerGroup]): From :func:`plan_groups`.
        ladders (Mapping[str, Sequence[float]]): Group name -> ratios to test, increasing.
        sparsity (float): Overall target: the fraction of prunable weights removed, or of GFLOPs when the pruner's
            ``target`` is ``flops`` (a :class:`PruneCopy` of a config with ``flops=``). Then the groups' sizes are the
            FLOPs they remove per unit of ratio (:func:`flops_sizes`, from the FLOPs of every ladder point and of all
            groups at their highest ratios, one more pruning without a validation).
        base (Mapping[str, float], optional): Group name -> base ratio; None measures with the others dense.
        progress (Callable[[str], None], optional): Called after each validation with what was validated.
        budget (int, optional): Most validations in all; None or the curves' own count means no refinement.
        margin (float): ``metric`` a refinement candidate must gain over the best so far to be kept.
        metric (str): What the curves, the choice and the refinement minimise the loss of: ``mAP50`` (default) or
            ``mAP50-95`` (:data:`METRICS`); both are measured and recorded at every point.

    Returns:
        (dict): ``dense`` and ``base`` metrics; ``groups`` (name, family, layers, params, ``size`` in
        ``size_unit`` (``weights`` or ``FLOPs``), ``base_ratio``, measured ``points`` (with ``flops_removed`` for a
        flops target), ``chosen_ratio``, ``predicted_loss``, ``score``, ``written_ratio``); ``rules`` (the rules dict
        written); ``metric``; ``predicted`` (of ``metric``) and ``measured`` metrics of the choice; ``refinement``
        (one record per candidate);
        ``written_from`` (``base``, ``choice`` or ``refined``) and ``written`` (the written allocation's metrics);
        ``kept_base``; ``validations`` and ``seconds_per_validation``.

    Raises:
        ValueError: If ``metric`` is not one of :data:`METRICS`, ``budget`` is below the validations the curves and
            the choice need, or a ``flops`` target is beyond what the ladders' highest ratios remove (checked right
            after the dense validation).

    Examples:
        >>> groups = plan_groups(assign_families(network, ruleset), 6)  # doctest: +SKIP
        >>> ladders = {g.name: default_ladder(0.7) for g in groups}  # doctest: +SKIP
        >>> pruner = make_pruner(network, SparsityConfig())  # doctest: +SKIP
        >>> evaluate = Evaluator("data.yaml", 640, 16, "cpu", "val")  # doctest: +SKIP
        >>> result = scan(pruner, evaluate, ruleset, groups, ladders, 0.7)  # doctest: +SKIP
        >>> result["written_from"], result["rules"]["rules"][0]["family"]  # doctest: +SKIP
        ('refined', 'attention')
    """
    metric = check_metric(metric)
    budget = check_budget(budget, ladders, base is not None)
    step = progress or (lambda _: None)
    clock, count = time.perf_counter(), 0

    def validate(label: str, ratios: Mapping[str, float] | None, target: float | None = None) -> dict[str, float]:
        nonlocal count
        try:
            network = pruner.network if ratios is None else pruner.prune(layout_rules(ruleset, groups, ratios), target)
            metrics = dict(evaluate(network))
        finally:
            pruner.restore()
        count += 1
        step(label)
        return metrics

    dense = validate("dense", None)
    by_flops = pruner.target == "flops"
    if by_flops:  # what the ladders' highest ratios remove together: the most the choice can reach
        tops = {g.name: max(ladders[g.name]) for g in groups}
        pruner.prune(layout_rules(ruleset, groups, tops))
        pruner.restore()
        joint, total_flops = pruner.flops_removed, pruner.flops
        if sparsity * total_flops > joint:
            raise ValueError(f"flops={sparsity} is out of reach: the ladder's highest ratios remove "
                             f"{joint / total_flops:.1%} of GFLOPs together; test higher ratios (ladder=)")
    others, reference, base_metrics = dict(base or {}), dense, None
    if base is not None:
        base_metrics = reference = validate("base allocation", others)
    measured: dict[str, list[dict[str, float]]] = {}
    for group in groups:
        for ratio in ladders[group.name]:
            metrics = validate(f"{group.name} at {ratio:.0%}", {**others, group.name: ratio})
            flops = {"flops_removed": pruner.flops_removed} if by_flops else {}
            measured.setdefault(group.name, []).append({"ratio": float(ratio), **metrics, **flops})
    points, curves = {}, {}
    for g in groups:
        ladder_points = [(p["ratio"], p[metric]) for p in measured.get(g.name, [])]
        if base is None:
            curves[g.name] = loss_curve(ladder_points, dense[metric])
            points[g.name] = [(0.0, dense[metric]), *ladder_points]
        else:
            points[g.name] = [*ladder_points, (others[g.name], reference[metric])]
            curves[g.name] = loss_curve(points[g.name], reference[metric], origin=False)
    sizes: dict[str, float] = {g.name: g.params for g in groups}
    share = sparsity
    if by_flops:
        removed = {g: [(p["ratio"], p["flops_removed"]) for p in measured[g]] for g in measured}
        sizes = flops_sizes(removed, tops, joint)
        share = sparsity * total_flops / sum(sizes.values())
    chosen = {g: round(r, 6) for g, r in choose_ratios(curves, sizes, share, anchors=others).items()}
    check = validate("chosen ratios", chosen, sparsity)
    losses = {g.name: predicted_loss(curves[g.name], chosen[g.name]) for g in groups}
    start, start_metrics, source = chosen, check, "choice"
    if base_metrics is not None and base_metrics[metric] >= check[metric]:
        start, start_metrics, source = {g: round(r, 6) for g, r in others.items()}, base_metrics, "base"
    scores = sensitivity_scores(points, sizes)
    floors = {g: max(MIN_RATIO, min(r for r, _ in points[g])) for g in points}
    caps = {g: max(r for r, _ in points[g]) for g in points}

    def measure(ratios: Mapping[str, float]) -> dict[str, float]:  # the ratios as the rules file will hold them
        return validate("refining", {g: round(r, 6) for g, r in ratios.items()}, sparsity)

    best, written_metrics, trail = refine(measure, start, start_metrics, scores, sizes, floors, caps,
                                          budget - count, margin, metric=metric)
    written_from = "refined" if any(t["accepted"] for t in trail) else source
    written = {g: round(r, 6) for g, r in best.items()}
    return {
        "dense": dense,
        "base": base_metrics,
        "groups": [
            {
                "name": g.name, "family": g.family, "layers": None if g.layers is None else list(g.layers),
                "params": g.params, "size": sizes[g.name], "base_ratio": others.get(g.name),
                "points": measured.get(g.name, []),
                "chosen_ratio": chosen[g.name], "predicted_loss": losses[g.name], "score": scores[g.name],
                "written_ratio": written[g.name],
            }
            for g in groups
        ],
        "rules": layout_rules(ruleset, groups, written),
        "metric": metric,
        "predicted": {metric: reference[metric] - sum(losses.values())},
        "measured": check,
        "refinement": trail,
        "size_unit": "FLOPs" if by_flops else "weights",
        "refined_from": source,
        "written_from": written_from,
        "written": written_metrics,
        "kept_base": written_from == "base",
        "budget": budget,
        "validations": count,
        "seconds_per_validation": (time.perf_counter() - clock) / count,
    }
