"""Sensitivity scan: measure how accuracy falls when one group of layers is pruned, then choose ratios from it.

A scan splits the prunable weights of a model into groups (each family of the rules, and large families further into
runs of consecutive top-level layers), prunes ONE group at a time at a ladder of ratios with every other weight dense,
and validates each point with Ultralytics' detection validator (one validator and one dataloader for the whole scan;
the weights are restored between points, the checkpoint is never reloaded). From the measured curves it chooses one
ratio per group that reaches an overall sparsity with the smallest predicted loss, and writes them as an ordinary
rules file: the same families, large ones split with the ``layers:`` key, so ``sparsify rules=FILE`` and
``train rules=FILE`` take it as it is.

The pieces are small and separate: :func:`plan_groups` (which groups), :func:`default_ladder` (which ratios),
:func:`loss_curve` and :func:`choose_ratios` (pure: measured curves in, ratios out), :func:`layout_rules` (groups and
ratios as a rules dict), a pruner per method (``prune(rules) -> network`` and ``restore()``), :class:`Evaluator` (one
Ultralytics validator) and :func:`scan` (the loop).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import yaml

from .checkpoint import atomic_write_bytes
from .config import SparsityConfig
from .importance import loss_gradients, taylor_scores
from .oneshot import sparsify
from .plots import plot_sensitivity
from .prune.channel import output_positions
from .rules import PRUNABLE_TYPES, Assignment, Rule, RuleSet, assign_families, load_rules

__all__ = [
    "MAX_LADDER_RATIO",
    "METRICS",
    "MIN_RATIO",
    "Evaluator",
    "LayerGroup",
    "RestoreWeights",
    "PruneCopy",
    "base_ratios",
    "capped_groups",
    "check_budget",
    "check_method",
    "check_metric",
    "choose_ratios",
    "protect_move",
    "refine",
    "sensitivity_scores",
    "target_of",
    "context_ladder",
    "default_ladder",
    "flops_sizes",
    "layout_rules",
    "loss_curve",
    "make_pruner",
    "plan_groups",
    "predicted_loss",
    "scan",
    "weight_flops",
    "write_scan",
]

MAX_LADDER_RATIO = 0.95  # highest ratio a ladder may test (sparsify caps every family at 99%)
MIN_RATIO = 0.01  # every scanned group keeps at least this ratio: a ratio of 0 would protect it and change the target
DEFAULT_BUDGET = 48  # validations of a scan: about 12 minutes at imgsz=640 on 2 CPU cores for a 150-image val split
DEFAULT_MARGIN = 0.005  # metric a refinement step must gain over the best allocation measured so far to be kept
METRICS = ("mAP50", "mAP50-95")  # what a scan can minimise the loss of (the Evaluator measures both)
REFINE_STEPS = (1.0, 0.5, 0.25)  # fractions of the way from a donor's ratio to its floor, one pass each


@dataclass(frozen=True)
class LayerGroup:
    """Weights of one family in a run of consecutive top-level layers: the unit a scan prunes and a ratio applies to.

    Attributes:
        name (str): Family name in the scanned rules: the family itself, or ``family:first-last`` when split.
        family (str): Family of the input rules the weights belong to.
        layers (tuple[int, ...] | None): Top-level layer indices (``model.N``) with weights of the group, or None when
            the family is not split (its rule is kept as written).
        params (int): Number of prunable weights.
    """

    name: str
    family: str
    layers: tuple[int, ...] | None
    params: int


def plan_groups(
    assignment: Assignment, max_groups: int, cost: Mapping[str, float] | None = None
) -> list[LayerGroup]:
    """Split the prunable weights into at most ``max_groups`` groups (at least one per family).

    Every family with prunable weights is one group; while groups are left, the family with the most cost per group
    gets one more. A family split into ``k`` groups is cut into ``k`` runs of consecutive layers with costs as even as
    possible (least sum of squared costs), so a costly layer stands alone and cheap neighbours share a group. The
    cost of a weight is its number of elements, or ``cost[name]`` (for example its FLOPs, :func:`weight_flops`, for
    a scan to a GFLOPs target: then the groups follow the compute, not the parameters).

    Args:
        assignment (Assignment): Weights and families, from :func:`ultra_sparse.rules.assign_families`.
        max_groups (int): Most groups wanted.
        cost (Mapping[str, float], optional): Weight name -> cost of that weight; elements where it is left out.

    Returns:
        (list[LayerGroup]): Groups in rule order, layers ascending within a family.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> groups = plan_groups(assign_families(YOLO("yolo11n.yaml").model, load_rules("default")), 6)
        >>> len(groups), groups[0].name
        (6, 'attention')
    """
    sizes: dict[str, dict[int | None, float]] = {}
    params: dict[tuple[str, int | None], int] = {}
    for w in assignment.prunable:
        layers = sizes.setdefault(w.family, {})
        layers[w.layer] = layers.get(w.layer, 0) + (cost or {}).get(w.name, w.weight.numel())
        params[(w.family, w.layer)] = params.get((w.family, w.layer), 0) + w.weight.numel()
    order = [r.family for r in assignment.ruleset.rules if r.family in sizes]
    splittable = {f: 1 if None in sizes[f] else len(sizes[f]) for f in order}  # layers a family can be cut into
    counts = dict.fromkeys(order, 1)
    while sum(counts.values()) < max_groups:
        open_families = [f for f in order if counts[f] < splittable[f]]
        if not open_families:
            break
        widest = max(open_families, key=lambda f: sum(sizes[f].values()) / counts[f])  # first one on ties
        counts[widest] += 1
    groups = []
    for family in order:
        if counts[family] == 1:
            groups.append(LayerGroup(family, family, None, sum(params[(family, i)] for i in sizes[family])))
            continue
        layers = sorted(sizes[family])
        for part in _even_runs([sizes[family][i] for i in layers], counts[family]):
            members = tuple(layers[i] for i in part)
            span = f"{members[0]}" if len(members) == 1 else f"{members[0]}-{members[-1]}"
            groups.append(LayerGroup(f"{family}:{span}", family, members, sum(params[(family, i)] for i in members)))
    return groups


def weight_flops(network: nn.Module, assignment: Assignment, imgsz: int) -> dict[str, float]:
    """Multiply-accumulates of every prunable weight on one ``imgsz`` image: its elements times its output positions.

    The positions come from one forward pass of a zero image in eval mode (:func:`ultra_sparse.prune.channel.
    output_positions`, the count the channel planner uses). Channel pruning removes compute in proportion to these
    numbers, which differ from the weight counts by the feature map size: a stride-8 layer costs 16 times what a
    stride-32 layer with the same weights costs.

    Args:
        network (nn.Module): The network (run once, in eval mode, then put back in the mode it was in).
        assignment (Assignment): Its weights and families, from :func:`ultra_sparse.rules.assign_families`.
        imgsz (int): Square image size.

    Returns:
        (dict[str, float]): Weight name -> multiply-accumulates, for every prunable weight.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> network = YOLO("yolo11n.yaml").model
        >>> macs = weight_flops(network, assign_families(network, load_rules("default")), 64)
        >>> macs["model.0.conv.weight"] == 16 * 3 * 9 * 32 * 32  # 16 filters of 3x3x3 at 32x32 positions
        True
    """
    mode = network.training
    try:
        network.eval()
        positions = output_positions(network, imgsz, [w.module for w in assignment.prunable])
    finally:
        network.train(mode)
    return {w.name: float(w.weight.numel() * positions.get(w.module, 0)) for w in assignment.prunable}


def default_ladder(sparsity: float) -> tuple[float, ...]:
    """The ratios a group is tested at for an overall target: below it, at it, and halfway from it to 100%.

    Examples:
        >>> default_ladder(0.7)
        (0.42, 0.7, 0.85)
    """
    points = {round(0.6 * sparsity, 2), round(sparsity, 2), round(min(MAX_LADDER_RATIO, (1 + sparsity) / 2), 2)}
    return tuple(sorted(p for p in points if p > 0))


def loss_curve(points: Sequence[tuple[float, float]], reference: float, origin: bool = True) -> list[tuple[float, float]]:
    """Turn measured ``(ratio, metric)`` points into a loss curve that never falls as the ratio grows.

    The loss is ``reference - metric``, and never smaller than at a lower ratio: a point that scores above a lower
    one is read as noise, not as pruning that helps. With ``origin`` (points measured with the other groups dense,
    ``reference`` the dense metric) the curve starts at ``(0, 0)`` and no loss is below 0; without it (points measured
    around a base allocation, ``reference`` the base metric) the curve starts at its lowest ratio, where a negative
    loss is a measured gain.

    Examples:
        >>> loss_curve([(0.5, 0.83), (0.7, 0.80), (0.9, 0.81)], reference=0.82)
        [(0.0, 0.0), (0.5, 0.0), (0.7, 0.02), (0.9, 0.02)]
        >>> loss_curve([(0.3, 0.80), (0.6, 0.78), (0.8, 0.70)], reference=0.78, origin=False)
        [(0.3, -0.02), (0.6, 0.0), (0.8, 0.08)]
    """
    curve, worst = ([(0.0, 0.0)], 0.0) if origin else ([], -math.inf)
    for ratio, metric in sorted(points):
        worst = max(worst, round(reference - metric, 12))
        curve.append((float(ratio), worst))
    return curve


def predicted_loss(curve: Sequence[tuple[float, float]], ratio: float) -> float:
    """Loss of a group at ``ratio``, linearly interpolated on its loss curve.

    Examples:
        >>> predicted_loss([(0.0, 0.0), (0.5, 0.0), (0.9, 0.2)], 0.7)
        0.1
    """
    xs, ys = zip(*curve)
    return round(float(np.interp(ratio, xs, ys)), 12)


def flops_sizes(
    removed: Mapping[str, Sequence[tuple[float, float]]], tops: Mapping[str, float], joint: float
) -> dict[str, float]:
    """FLOPs each group removes per unit of ratio, for :func:`choose_ratios` when the target is a share of GFLOPs.

    A group's rate is the least-squares slope through the origin of its measured ``(ratio, FLOPs removed)`` points
    (the group pruned alone). Pruning a layer's inputs and outputs together removes more than the two apart, so the
    rates are then scaled by one factor: with every group at its ``tops`` ratio, the linear model removes ``joint``,
    the FLOPs measured with all of them pruned at once.

    Args:
        removed (Mapping[str, Sequence[tuple[float, float]]]): Group -> ``(ratio, FLOPs removed)`` points.
        tops (Mapping[str, float]): Group -> ratio at which ``joint`` was measured.
        joint (float): FLOPs removed with every group at its ``tops`` ratio.

    Returns:
        (dict[str, float]): Group -> FLOPs per unit of ratio (positive), in the order of ``removed``.

    Raises:
        ValueError: If a group removes no FLOPs at any measured ratio.

    Examples:
        >>> flops_sizes({"a": [(0.5, 50.0)], "b": [(0.5, 25.0)]}, {"a": 0.5, "b": 0.5}, joint=90.0)
        {'a': 120.0, 'b': 60.0}
    """
    rates = {}
    for group, points in removed.items():
        ratios = np.array([r for r, _ in points], dtype=np.float64)
        flops = np.array([f for _, f in points], dtype=np.float64)
        rates[group] = float(ratios @ flops / (ratios @ ratios))
        if not rates[group] > 0:
            raise ValueError(f"group {group!r} removes no FLOPs when pruned; it cannot take part in a flops= target")
    scale = joint / sum(rates[g] * tops[g] for g in rates)
    return {g: rate * scale for g, rate in rates.items()}


def choose_ratios(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    sizes: Mapping[str, int],
    sparsity: float,
    min_ratio: float = MIN_RATIO,
    anchors: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Choose one ratio per group so that the zeros reach ``sparsity`` of all weights with the least predicted loss.

    Every group starts at the lowest ratio of its curve (at least ``min_ratio``). Each loss curve (from
    :func:`loss_curve`) is replaced by its lower convex hull; the hull's segments are filled cheapest first, the cost
    of a segment being its loss per pruned weight (its slope divided by the group's size). Segments of equal cost are
    filled together, in proportion to their lengths, those below their group's anchor first (so groups whose curves
    say nothing stay at their anchors, the base allocation, rather than being spread evenly). The result is the optimum of the additive loss model on the hull
    (a Lagrangian allocation), reaches the target exactly (up to float rounding), and grows with the target: no
    group's ratio falls when the target rises. No group goes beyond the highest ratio of its curve.

    Args:
        curves (Mapping[str, Sequence[tuple[float, float]]]): Group -> ``(ratio, loss)`` points, ratios increasing,
            losses not decreasing.
        sizes (Mapping[str, int]): Group -> number of prunable weights.
        sparsity (float): Zeros wanted over all groups' weights, in (0, 1).
        min_ratio (float): Least ratio of every group (lowered to ``sparsity`` when the target is below it).
            Ratio 0 would make a group's rule protected and take its weights out of the count the target is over.
        anchors (Mapping[str, float], optional): Group -> ratio that equally cheap segments fill up to first.

    Returns:
        (dict[str, float]): Group -> ratio, in the order of ``curves``.

    Raises:
        ValueError: If the curves do not reach the target, or an input is malformed.

    Examples:
        >>> flat, steep = [(0.0, 0.0), (0.9, 0.0)], [(0.0, 0.0), (0.9, 0.5)]
        >>> ratios = choose_ratios({"a": flat, "b": steep}, {"a": 100, "b": 100}, sparsity=0.5)
        >>> {group: round(ratio, 6) for group, ratio in ratios.items()}
        {'a': 0.9, 'b': 0.1}
    """
    if set(curves) != set(sizes) or not curves:
        raise ValueError("curves and sizes must name the same, non-empty set of groups")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} must be in (0, 1)")
    total = sum(sizes[g] for g in curves)
    reach = sum(max(r for r, _ in curves[g]) * sizes[g] for g in curves)
    target = sparsity * total
    if target > reach * (1 + 1e-12):
        raise ValueError(
            f"sparsity={sparsity} is out of reach: the highest measured ratios give at most {reach / total:.2%}; "
            "test higher ratios (ladder=)"
        )
    ratios = {g: max(curves[g][0][0], min(min_ratio, sparsity)) for g in curves}
    need = target - sum(ratios[g] * sizes[g] for g in curves)
    if need < -1e-12 * target:
        raise ValueError(f"sparsity={sparsity} is below the lowest measured ratios; test lower ratios")
    segments = []
    for order, (group, curve) in enumerate(curves.items()):
        hull = _lower_hull(curve)
        anchor = (anchors or {}).get(group, 0.0)
        for (r0, l0), (r1, l1) in zip(hull, hull[1:]):
            cost = (l1 - l0) / (r1 - r0) / sizes[group]
            cuts = sorted({max(r0, ratios[group]), r1, *([anchor] if max(r0, ratios[group]) < anchor < r1 else [])})
            for low, high in zip(cuts, cuts[1:]):
                if high > low:
                    segments.append((cost, low >= anchor, order, low, high, group))
    segments.sort(key=lambda s: s[:4])
    start = 0
    while start < len(segments) and need > 0:
        stop = start
        while stop < len(segments) and segments[stop][:2] == segments[start][:2]:
            stop += 1
        tied = segments[start:stop]
        capacity = sum((high - low) * sizes[group] for *_, low, high, group in tied)
        share = min(1.0, need / capacity)
        for *_, low, high, group in tied:
            ratios[group] = high if share == 1.0 else low + share * (high - low)
        need -= capacity
        start = stop
    return ratios


def sensitivity_scores(
    points: Mapping[str, Sequence[tuple[float, float]]], sizes: Mapping[str, int]
) -> dict[str, float]:
    """Metric lost per pruned weight of each group: the least-squares slope of its ``(ratio, metric)`` points, negated.

    The slope is taken over all measured points of a group (its reference point included), so one noisy point
    weighs less than in a two-point difference; it is divided by the group's size, so groups of different sizes
    compare by the cost of one more zero. A group with a single distinct ratio scores 0.

    Args:
        points (Mapping[str, Sequence[tuple[float, float]]]): Group -> measured ``(ratio, metric)`` points.
        sizes (Mapping[str, int]): Group -> number of prunable weights.

    Returns:
        (dict[str, float]): Group -> metric lost per pruned weight (negative: pruning it measured a gain).

    Examples:
        >>> sensitivity_scores({"a": [(0.2, 0.8), (0.6, 0.7)], "b": [(0.5, 0.8)]}, {"a": 100, "b": 10})
        {'a': 0.0025, 'b': 0.0}
    """
    scores = {}
    for group, measured in points.items():
        ratios = np.array([r for r, _ in measured], dtype=np.float64)
        metrics = np.array([m for _, m in measured], dtype=np.float64)
        if len(set(ratios.tolist())) < 2:
            scores[group] = 0.0
            continue
        slope = np.sum((ratios - ratios.mean()) * (metrics - metrics.mean())) / np.sum((ratios - ratios.mean()) ** 2)
        scores[group] = round(float(-slope / sizes[group]), 15)
    return scores


def protect_move(
    ratios: Mapping[str, float],
    sizes: Mapping[str, int],
    donor: str,
    low: float,
    receivers: Sequence[str],
    caps: Mapping[str, float],
) -> dict[str, float]:
    """Lower ``donor`` towards ``low`` and give the zeros it frees to ``receivers`` in order, each up to its cap.

    The total number of zeros is kept: the donor gives up only as many as the receivers can take. Every other group
    keeps its ratio.

    Args:
        ratios (Mapping[str, float]): Group -> current ratio.
        sizes (Mapping[str, int]): Group -> number of prunable weights.
        donor (str): Group whose ratio is lowered.
        low (float): Ratio the donor goes down to at most (never raised by this move).
        receivers (Sequence[str]): Groups that take the zeros, first filled first; the donor is not one of them.
        caps (Mapping[str, float]): Group -> highest ratio a receiver is raised to.

    Returns:
        (dict[str, float]): Group -> new ratio, in the order of ``ratios``.

    Examples:
        >>> protect_move({"a": 0.6, "b": 0.5, "c": 0.2}, {"a": 100, "b": 100, "c": 100}, "a", 0.2, ["c", "b"],
        ...              {"b": 0.9, "c": 0.4})
        {'a': 0.2, 'b': 0.7, 'c': 0.4}
    """
    if donor in receivers:
        raise ValueError(f"group {donor!r} cannot give zeros to itself")
    freed = max(0.0, ratios[donor] - low) * sizes[donor]
    room = {g: max(0.0, caps[g] - ratios[g]) * sizes[g] for g in receivers}
    moved = min(freed, sum(room.values()))
    new = dict(ratios)
    new[donor] = ratios[donor] - moved / sizes[donor]
    left = moved
    for group in receivers:
        take = min(left, room[group])
        new[group] = ratios[group] + take / sizes[group]
        left -= take
    return {g: round(r, 12) for g, r in new.items()}


def refine(
    measure: Callable[[Mapping[str, float]], Mapping[str, float]],
    start: Mapping[str, float],
    start_metrics: Mapping[str, float],
    scores: Mapping[str, float],
    sizes: Mapping[str, int],
    floors: Mapping[str, float],
    caps: Mapping[str, float],
    budget: int,
    margin: float = DEFAULT_MARGIN,
    steps: Sequence[float] = REFINE_STEPS,
    metric: str = "mAP50",
) -> tuple[dict[str, float], dict[str, float], list[dict[str, Any]]]:
    """Move zeros from the most sensitive groups to the least sensitive ones, keeping only moves that measure better.

    Each pass goes through the groups that lose ``metric`` when pruned (score above 0), most sensitive first. A
    candidate lowers the donor a fraction of the way to its floor and gives the freed zeros to the groups less
    sensitive than it, least sensitive first, each up to its cap (:func:`protect_move`), so the total zeros never
    change. The candidate is measured as a whole (all groups pruned together) and kept only if its ``metric`` beats
    the best allocation so far by more than ``margin``. Passes use the fractions of ``steps`` in turn (a full move,
    then smaller ones); the loop stops when ``budget`` measurements are spent or no candidate is left. A candidate
    that moves no weight is skipped without a measurement.

    Args:
        measure (Callable): Ratios -> ``{"mAP50": ..., ...}``, with every group pruned at once.
        start (Mapping[str, float]): Group -> ratio of the allocation to start from (already measured).
        start_metrics (Mapping[str, float]): Its metrics.
        scores (Mapping[str, float]): Group -> ``metric`` lost per pruned weight (:func:`sensitivity_scores`).
        sizes (Mapping[str, int]): Group -> number of prunable weights.
        floors (Mapping[str, float]): Group -> lowest ratio a donor goes down to.
        caps (Mapping[str, float]): Group -> highest ratio a receiver goes up to.
        budget (int): Most measurements.
        margin (float): ``metric`` a candidate must gain over the best so far to be kept.
        steps (Sequence[float]): Fraction of the way to the floor a donor moves, one pass per fraction.
        metric (str): The key of the metrics that decides (one of :data:`METRICS`).

    Returns:
        (tuple): The best ratios, their metrics, and one record per measured candidate (``donor``, ``fraction``,
        ``moved`` weights, ``ratios``, the metrics, ``accepted``).
    Examples:
        >>> measure = lambda ratios: {"mAP50": 0.8 - 0.2 * ratios["a"]}  # only group a costs
        >>> start = {"a": 0.5, "b": 0.5}
        >>> best, metrics, trail = refine(measure, start, measure(start), {"a": 2e-3, "b": 0.0}, {"a": 100, "b": 100},
        ...                               {"a": 0.1, "b": 0.1}, {"a": 0.9, "b": 0.9}, budget=3)
        >>> best, len(trail)
        ({'a': 0.1, 'b': 0.9}, 1)
    """
    metric = check_metric(metric)
    best, best_metrics, trail = dict(start), dict(start_metrics), []
    donors = sorted((g for g in start if scores[g] > 0), key=lambda g: -scores[g])
    by_cost = sorted(start, key=lambda g: scores[g])
    for fraction in steps:
        for donor in donors:
            if len(trail) >= budget:
                return best, best_metrics, trail
            receivers = [g for g in by_cost if scores[g] < scores[donor]]
            low = best[donor] - fraction * (best[donor] - floors[donor])
            candidate = protect_move(best, sizes, donor, low, receivers, caps)
            moved = round((best[donor] - candidate[donor]) * sizes[donor])
            if moved < 1:
                continue
            metrics = dict(measure(candidate))
            accepted = metrics[metric] > best_metrics[metric] + margin
            trail.append({"donor": donor, "fraction": fraction, "moved": moved, "ratios": candidate, **metrics,
                          "accepted": accepted})
            if accepted:
                best, best_metrics = candidate, metrics
    return best, best_metrics, trail


def layout_rules(
    ruleset: RuleSet, groups: Sequence[LayerGroup], ratios: Mapping[str, float], description: str | None = None
) -> dict[str, Any]:
    """The rules dict of a scan: the input rules in their order, each scanned family replaced by its groups.

    A split family becomes one rule per group, with the family's classes and the group's ``layers``, so every weight
    lands in the group it was scanned in and the assignment is otherwise the input rules'. Families that were not
    scanned (protected ones, and those with no prunable weights in the model) keep their rule as written.

    Args:
        ruleset (RuleSet): The input rules.
        groups (Sequence[LayerGroup]): Groups from :func:`plan_groups`.
        ratios (Mapping[str, float]): Group name -> ratio; a group it leaves out gets 0 (kept dense).
        description (str, optional): The file's ``description``.

    Returns:
        (dict): Content that :func:`ultra_sparse.rules.load_rules` accepts.
    """
    by_family: dict[str, list[LayerGroup]] = {}
    for group in groups:
        by_family.setdefault(group.family, []).append(group)
    taken = {r.family for r in ruleset.rules}
    rules = []
    for rule in ruleset.rules:
        if rule.family not in by_family:
            rules.append(_rule_dict(rule, rule.family, rule.ratio, rule.layers))
            continue
        for group in by_family[rule.family]:
            if group.name != rule.family and group.name in taken:
                raise ValueError(f"group {group.name!r} has the name of a family of the rules; rename that family")
            layers = rule.layers if group.layers is None else frozenset(group.layers)
            rules.append(_rule_dict(rule, group.name, float(ratios.get(group.name, 0.0)), layers))
    content: dict[str, Any] = {"rules": rules}
    if description:
        content = {"description": description, **content}
    return content


class RestoreWeights:
    """Element pruning for a scan: prune the model in place, put the saved weights back afterwards.

    With ``importance=taylor`` the scores of the dense weights are computed on the first point, for every Conv and
    Linear weight a point's rules can make prunable, and reused by every other one: each point starts from the same
    restored weights, so it ranks them as ``sparsify`` would.

    Attributes:
        scores (dict[str, torch.Tensor] | None): ``importance=taylor``: the dense weights' taylor scores on
            ``batches``, computed by the first :meth:`prune`.

    Args:
        network (nn.Module): The dense network (changed in place while a point is measured, restored after).
        config (SparsityConfig): ``importance`` and ``scope`` of the pruning; ``rules`` and ``sparsity`` come per call.
        batches (Sequence[dict], optional): Calibration batches for ``importance=taylor``.
    """

    target = "sparsity"  # the key a target given to :meth:`prune` is passed as

    def __init__(self, network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None) -> None:
        """Save a copy of every state tensor of ``network``."""
        self.network, self.config, self.batches = network, config, batches
        self.saved = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.scores: dict[str, torch.Tensor] | None = None

    def prune(self, rules: dict[str, Any], sparsity: float | None = None) -> nn.Module:
        """Prune the network by ``rules`` (ratios as written, or scaled to ``sparsity``) and return it."""
        if self.config.importance == "taylor" and self.scores is None and self.batches is not None:
            weights = [
                f"{n}.weight" for n, m in self.network.named_modules()
                if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)
            ]
            self.scores = taylor_scores(self.network, self.batches, weights)
        config = self.config.replace(rules=rules, sparsity=sparsity)
        sparsify(self.network, config, batches=self.batches, scores=self.scores)
        return self.network

    def restore(self) -> None:
        """Copy the saved tensors back into the network (same tensors, bit for bit)."""
        self.network.load_state_dict(self.saved)


class PruneCopy:
    """Structural pruning for a scan: prune a fresh copy of the dense model; restoring drops the copy.

    The target of a call is ``flops=`` when ``config`` has one (the fraction of GFLOPs removed), else ``sparsity=``.
    With ``batches`` and ``config.reconstruct``, every copy is refitted to the dense outputs after its channels are
    removed, as ``sparsify method=channel data=...`` does, so each point measures the model that command would give.
    With ``importance=taylor`` the loss gradients of the dense network are computed on the first point and reused by
    every other one: every copy has the same weights, so it ranks its channels as ``sparsify`` would.

    Attributes:
        target (str): ``flops`` or ``sparsity``: the key a target given to :meth:`prune` is passed as.
        flops_removed (float | None): FLOPs (not GFLOPs) the last :meth:`prune` removed.
        flops (float | None): FLOPs of the dense network, known after the first :meth:`prune`.
        gradients (dict[str, torch.Tensor] | None): ``importance=taylor``: the dense network's loss gradients on
            ``batches``, computed by the first :meth:`prune`.

    Args:
        network (nn.Module): The dense network (never changed).
        config (SparsityConfig): Settings of the method; ``rules`` and the target come per call.
        batches (Sequence[dict], optional): Calibration batches for the refit (and for ``importance=taylor``).
    """

    def __init__(self, network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None) -> None:
        """Keep the dense network; copies are made per point."""
        self.network, self.config, self.batches, self.pruned = network, config, batches, None
        self.target = "flops" if config.flops is not None else "sparsity"
        self.flops_removed: float | None = None
        self.flops: float | None = None
        self.gradients: dict[str, torch.Tensor] | None = None

    def prune(self, rules: dict[str, Any], target: float | None = None) -> nn.Module:
        """Prune a deep copy of the dense network by ``rules`` (ratios as written, or scaled to ``target``)."""
        if self.config.importance == "taylor" and self.gradients is None and self.batches is not None:
            self.gradients = loss_gradients(self.network, self.batches)
        self.pruned = copy.deepcopy(self.network)
        config = self.config.replace(rules=rules, **{"sparsity": None, "flops": None, self.target: target})
        report = sparsify(self.pruned, config, batches=self.batches, gradients=self.gradients).report
        gflops = report["channel"]["gflops"]
        self.flops = gflops["before"] * 1e9
        self.flops_removed = (gflops["before"] - gflops["after"]) * 1e9
        return self.pruned

    def restore(self) -> None:
        """Drop the pruned copy."""
        self.pruned = None


def check_metric(metric: Any) -> str:
    """Return the name in :data:`METRICS` that ``metric`` gives, in any case; raise ValueError for anything else.

    Examples:
        >>> check_metric("map50-95")
        'mAP50-95'
    """
    names = {m.lower(): m for m in METRICS}
    if not isinstance(metric, str) or metric.lower() not in names:
        raise ValueError(f"metric={metric!r} is not one of {', '.join(METRICS)}")
    return names[metric.lower()]


def check_method(method: str) -> None:
    """Raise ValueError unless a scan can prune by ``method`` in this installation."""
    if method not in ("unstructured", "channel"):
        raise ValueError(f"method={method!r} cannot be scanned; use unstructured or channel")


def make_pruner(
    network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None
) -> RestoreWeights | PruneCopy:
    """The pruner of ``config.method``: in place with saved weights (unstructured) or on refitted copies (channel)."""
    check_method(config.method)
    pruner = RestoreWeights if config.method == "unstructured" else PruneCopy
    return pruner(network, config, batches)


class Evaluator:
    """One Ultralytics detection validator, and its dataloader, used for every validation of a scan.

    Each call validates a deep copy of the network (Ultralytics fuses Conv+BN of the model it validates, in place)
    and returns mAP50 and mAP50-95. The validator's own progress bar and tables are silenced while it runs.

    Args:
        data (str | Path): Dataset YAML.
        imgsz (int): Image size.
        batch (int): Batch size.
        device (str): ``cpu`` or ``cuda:N``.
        workdir (str | Path): Ultralytics' ``save_dir`` for the validator (nothing is written there with plots off).
        single_cls (bool): Validate as one class, as the checkpoint was trained (what ``YOLO(path).val()`` does).
    """

    def __init__(
        self, data: str | Path, imgsz: int, batch: int, device: str, workdir: str | Path, single_cls: bool = False
    ) -> None:
        """Build the validator; its dataloader is built on the first call and kept."""
        from ultralytics.models.yolo.detect import DetectionValidator

        args = {
            "data": str(data), "imgsz": imgsz, "batch": batch, "device": device.replace("cuda:", ""), "mode": "val",
            "rect": True, "single_cls": single_cls, "plots": False, "save_json": False, "workers": 0, "verbose": False,
        }
        self.validator = DetectionValidator(save_dir=Path(workdir), args=args)

    def __call__(self, network: nn.Module) -> dict[str, float]:
        """Validate ``network``; return ``{"mAP50": ..., "mAP50-95": ...}``."""
        with _quiet():
            stats = self.validator(model=copy.deepcopy(network))
        return {"mAP50": float(stats["metrics/mAP50(B)"]), "mAP50-95": float(stats["metrics/mAP50-95(B)"])}


def base_ratios(
    pruner: RestoreWeights, ruleset: RuleSet, groups: Sequence[LayerGroup], sparsity: float
) -> dict[str, float]:
    """Ratio of every group in the base allocation: the input rules scaled to ``sparsity``, as ``sparsify`` does.

    The model is pruned, the zeros of each group counted, and the model restored; nothing is validated.

    Args:
        pruner (RestoreWeights): Element pruner of the model.
        ruleset (RuleSet): The input rules.
        groups (Sequence[LayerGroup]): From :func:`plan_groups`.
        sparsity (float): Overall target.

    Returns:
        (dict[str, float]): Group name -> fraction of its weights that are zero in the base allocation.
    """
    try:
        network = pruner.prune(layout_rules(ruleset, [], {}), sparsity)  # the input rules as they are
        zeros: dict[str, int] = {}
        for w in assign_families(network, load_rules(layout_rules(ruleset, groups, {}))).weights:
            zeros[w.family] = zeros.get(w.family, 0) + int((w.weight == 0).sum())
    finally:
        pruner.restore()
    return {g.name: zeros.get(g.name, 0) / g.params for g in groups}


def context_ladder(base: float) -> tuple[float, ...]:
    """Ratios a group is tested at around its base ratio: half its zeros, and halfway to ``MAX_LADDER_RATIO``.

    Examples:
        >>> context_ladder(0.6)
        (0.3, 0.775)
        >>> context_ladder(0.98)
        (0.49,)
    """
    points = [round(base / 2, 4)] if base >= 2 * MIN_RATIO else []
    if base < MAX_LADDER_RATIO - 0.02:
        points.append(round((base + MAX_LADDER_RATIO) / 2, 4))
    return tuple(points)


def check_budget(budget: int | None, ladders: Mapping[str, Sequence[float]], with_base: bool) -> int:
    """Return the validations a scan may use: ``budget``, or the curves' own count when None; raise if too few.

    A scan needs the dense model, the base allocation (``with_base``), every ladder point and the choice.

    Examples:
        >>> check_budget(None, {"a": (0.3, 0.8), "b": (0.4,)}, with_base=True)
        6
    """
    needed = 2 + with_base + sum(len(points) for points in ladders.values())
    if budget is None:
        return needed
    if budget < needed:
        raise ValueError(f"budget={budget} is below the {needed} validations the curves and the choice need; "
                         "raise budget= or lower groups=")
    return budget


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


def write_scan(result: Mapping[str, Any], folder: str | Path) -> dict[str, Path]:
    """Write a scan's outputs into ``folder``: ``rules.yaml``, ``sensitivity.csv``, ``sensitivity.json``, ``.png``.

    Args:
        result (Mapping[str, Any]): A :func:`scan` result with ``sparsity`` (or ``flops``) and ``description`` added (the
            description becomes the rules file's).
        folder (str | Path): Run folder (created).

    Returns:
        (dict[str, Path]): ``rules``, ``csv``, ``json`` and ``plot`` -> path.
    """
    folder = Path(folder)
    content = {"description": result["description"], "rules": result["rules"]["rules"]}
    load_rules(content)  # the file must load as it is written
    key, target = target_of(result)
    header = (
        f"# Written by ultra-sparse scan. The ratios reach {key}={target} as written; sparsify/train\n"
        f"# with {key}=S scale them all by one factor. Families split by layer keep their classes and add layers:.\n"
    )
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["group", "family", "layers", "params", "ratio", "others", "mAP50", "mAP50-95"])
    total, base = sum(g["params"] for g in result["groups"]), result.get("base")
    writer.writerow(["dense", "", "", total, 0.0, "dense", result["dense"]["mAP50"], result["dense"]["mAP50-95"]])
    if base:
        writer.writerow(["base", "", "", total, target, "base", base["mAP50"], base["mAP50-95"]])
    for group in result["groups"]:
        layers = "" if group["layers"] is None else " ".join(map(str, group["layers"]))
        for point in group["points"]:
            writer.writerow([group["name"], group["family"], layers, group["params"], point["ratio"],
                             "base" if base else "dense", point["mAP50"], point["mAP50-95"]])
    writer.writerow(["choice", "", "", total, target, "all", result["measured"]["mAP50"],
                     result["measured"]["mAP50-95"]])
    for step in result["refinement"]:
        name = f"refine: {step['donor']} x{step['fraction']:g}{' (kept)' if step['accepted'] else ''}"
        writer.writerow([name, "", "", total, target, "all", step["mAP50"], step["mAP50-95"]])
    paths = {name: folder / file for name, file in
             (("rules", "rules.yaml"), ("csv", "sensitivity.csv"), ("json", "sensitivity.json"), ("plot", "sensitivity.png"))}
    atomic_write_bytes(paths["rules"], (header + yaml.safe_dump(content, sort_keys=False, width=120, default_flow_style=None)).encode())
    atomic_write_bytes(paths["csv"], rows.getvalue().encode())
    atomic_write_bytes(paths["json"], json.dumps(result, indent=2).encode())
    plot_sensitivity(result, paths["plot"], (key, target))
    return paths


def capped_groups(result: Mapping[str, Any]) -> list[str]:
    """Groups of a scan result written at the highest ratio they were tested at: the choice had no room above them.

    Examples:
        >>> capped_groups({"groups": [{"name": "a", "written_ratio": 0.75, "points": [{"ratio": 0.3}, {"ratio": 0.75}]},
        ...                           {"name": "b", "written_ratio": 0.5, "points": [{"ratio": 0.3}, {"ratio": 0.75}]}]})
        ['a']
    """
    return [g["name"] for g in result["groups"]
            if g["points"] and g["written_ratio"] >= max(p["ratio"] for p in g["points"]) - 1e-9]


def target_of(result: Mapping[str, Any]) -> tuple[str, float]:
    """The overall target a scan result was made for: ``("flops", F)`` or ``("sparsity", S)``.

    Examples:
        >>> target_of({"sparsity": None, "flops": 0.5}), target_of({"sparsity": 0.7})
        (('flops', 0.5), ('sparsity', 0.7))
    """
    return ("flops", result["flops"]) if result.get("flops") is not None else ("sparsity", result["sparsity"])


def _even_runs(sizes: Sequence[int], parts: int) -> list[list[int]]:
    """Cut ``sizes`` into ``parts`` runs of consecutive indices with the least sum of squared run sizes.

    Examples:
        >>> _even_runs([1, 1, 8, 1, 1], 3)
        [[0, 1], [2], [3, 4]]
    """
    n = len(sizes)
    prefix = np.concatenate(([0], np.cumsum(sizes, dtype=np.float64)))
    cost = np.full((parts + 1, n + 1), math.inf)
    cut = np.zeros((parts + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for k in range(1, parts + 1):
        for end in range(k, n + 1):
            starts = np.arange(k - 1, end)
            totals = cost[k - 1, starts] + (prefix[end] - prefix[starts]) ** 2
            best = int(np.argmin(totals))  # the earliest cut among equals
            cost[k, end], cut[k, end] = totals[best], starts[best]
    runs, end = [], n
    for k in range(parts, 0, -1):
        start = int(cut[k, end])
        runs.append(list(range(start, end)))
        end = start
    return runs[::-1]


def _lower_hull(curve: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower convex hull of points sorted by x (Andrew's monotone chain, lower half)."""
    hull: list[tuple[float, float]] = []
    for point in curve:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (point[1] - y0) - (y1 - y0) * (point[0] - x0) > 0:
                break
            hull.pop()
        hull.append(point)
    return hull


def _rule_dict(rule: Rule, family: str, ratio: float, layers: frozenset[int] | None) -> dict[str, Any]:
    """One rule as YAML content."""
    item: dict[str, Any] = {"family": family, "ratio": ratio, "classes": list(rule.classes)}
    if layers is not None:
        item["layers"] = sorted(layers)
    if rule.protect:
        item["protect"] = True
    return item


@contextmanager
def _quiet() -> Iterator[None]:
    """Raise Ultralytics' log level to WARNING (which also hides its progress bars on 8.4) for the duration."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)
