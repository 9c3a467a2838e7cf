"""Allocation maths of a scan, pure: measured points in, ratios out; nothing here touches a model.

Measured ``(ratio, metric)`` points become loss curves (:func:`loss_curve`, read by :func:`predicted_loss`);
:func:`choose_ratios` picks one ratio per group with the least predicted loss for an overall target (group sizes in
weights, or in FLOPs from :func:`flops_sizes`); :func:`refine` moves zeros from the groups that lose the most per weight
(:func:`sensitivity_scores`) to those that lose the least (:func:`protect_move`) while measurements improve. The ladders
say which ratios a group is tested at, and :func:`check_metric` and :func:`check_budget` check a scan's settings.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_MARGIN",
    "MAX_LADDER_RATIO",
    "METRICS",
    "MIN_RATIO",
    "REFINE_STEPS",
    "check_budget",
    "check_metric",
    "choose_ratios",
    "context_ladder",
    "default_ladder",
    "flops_sizes",
    "loss_curve",
    "predicted_loss",
    "protect_move",
    "refine",
    "sensitivity_scores",
]

MAX_LADDER_RATIO = 0.95  # highest ratio a ladder may test (sparsify caps every family at 99%)
MIN_RATIO = 0.01  # every scanned group keeps at least this ratio: a ratio of 0 would protect it and change the target
DEFAULT_BUDGET = 48  # validations of a scan: about 12 minutes at imgsz=640 on 2 CPU cores for a 150-image val split
DEFAULT_MARGIN = 0.005  # metric a refinement step must gain over the best allocation measured so far to be kept
METRICS = ("mAP50", "mAP50-95")  # what a scan can minimise the loss of (the Evaluator measures both)
REFINE_STEPS = (1.0, 0.5, 0.25)  # fractions of the way from a donor's ratio to its floor, one pass each


def default_ladder(sparsity: float) -> tuple[float, ...]:
    """The ratios a group is tested at for an overall target: below it, at it, and halfway from it to 100%.

    Examples:
        >>> default_ladder(0.7)
        (0.42, 0.7, 0.85)
    """
    points = {round(0.6 * sparsity, 2), round(sparsity, 2), round(min(MAX_LADDER_RATIO, (1 + sparsity) / 2), 2)}
    return tuple(sorted(p for p in points if p > 0))


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
