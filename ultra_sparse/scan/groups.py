"""Layer groups of a scan: which weights are pruned together, what they cost, and their ratios as a rules dict.

:func:`plan_groups` splits the prunable weights of a model into groups: each family of the rules, large families further
into runs of consecutive top-level layers of even cost (elements, or for a GFLOPs target the multiply-accumulates of
:func:`weight_flops`). :func:`layout_rules` writes one ratio per group as an ordinary rules dict (split families with
the ``layers:`` key), which ``sparsify`` and ``train`` take as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch.nn as nn

from ..prune.channel import output_positions
from ..rules import Assignment, Rule, RuleSet

__all__ = ["LayerGroup", "layout_rules", "plan_groups", "weight_flops"]


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

    Examples:
        >>> from ultra_sparse.rules import load_rules
        >>> rules = load_rules({"rules": [{"family": "conv", "ratio": 0.2, "classes": ["Conv2d"]}]})
        >>> layout_rules(rules, [LayerGroup("conv:0-1", "conv", (0, 1), 100)], {"conv:0-1": 0.5})["rules"]
        [{'family': 'conv:0-1', 'ratio': 0.5, 'classes': ['Conv2d'], 'layers': [0, 1]}]
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


def _rule_dict(rule: Rule, family: str, ratio: float, layers: frozenset[int] | None) -> dict[str, Any]:
    """One rule as YAML content."""
    item: dict[str, Any] = {"family": family, "ratio": ratio, "classes": list(rule.classes)}
    if layers is not None:
        item["layers"] = sorted(layers)
    if rule.protect:
        item["protect"] = True
    return item
