"""Scores and family ratios in, boolean keep-masks out; masks applied in place.

A mask is a bool tensor shaped like its weight: True keeps, False zeroes (the convention of
``torch.nn.utils.prune``). Weights that are already zero rank below every other weight, so they count toward the
target and re-sparsifying a sparse model only adds zeros. Ties are broken by position, so the same inputs give the
same masks bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn as nn

from .importance import Criterion
from .rules import Assignment, WeightInfo

__all__ = [
    "MAX_RATIO",
    "MaskResult",
    "allocate_zeros",
    "apply_masks",
    "compute_masks",
    "lowest_k",
    "masks_from_zeros",
]

MAX_RATIO = 0.99  # no layer (scope=layer) or family (scope=global) loses more than this fraction


@dataclass(frozen=True)
class MaskResult:
    """Masks for the prunable weights of a model and how they were sized.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, for every prunable weight.
        scale (float): Factor every rule ratio was multiplied by (1.0 without an overall target).
        family_ratios (dict[str, float]): Ratio asked of each prunable family after scaling (capped at MAX_RATIO).
    """

    masks: dict[str, torch.Tensor]
    scale: float
    family_ratios: dict[str, float]


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Return a bool tensor marking the ``k`` lowest scores; ties go to the earlier position.

    Args:
        scores (torch.Tensor): Scores of any shape.
        k (int): How many to mark, clipped to [0, numel].

    Returns:
        (torch.Tensor): Bool tensor shaped like ``scores``, True for the ``k`` lowest.

    Examples:
        >>> lowest_k(torch.tensor([3.0, 1.0, 1.0, 2.0]), 2)
        tensor([False,  True,  True, False])
    """
    flat = scores.reshape(-1)
    k = max(0, min(int(k), flat.numel()))
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k == flat.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.topk(flat, k, largest=False, sorted=False).values.max()
    marked = flat <= threshold
    if int(marked.sum()) != k:  # ties at the threshold: keep the earliest of them
        marked = flat < threshold
        ties = torch.nonzero(flat == threshold).reshape(-1)[: k - int(marked.sum())]
        marked[ties] = True
    return marked.reshape(scores.shape)


def allocate_zeros(
    sizes: Sequence[int], zeros: Sequence[int], ratios: Sequence[float], caps: Sequence[int], target: int | None
) -> tuple[list[int], float]:
    """Decide how many zeros each unit (a layer, or a family) ends with.

    Unit ``u`` ends with ``max(zeros[u], min(caps[u], round(c * ratios[u] * sizes[u])))`` zeros, one factor ``c`` for
    all units. Without a target ``c`` is 1. With a target, ``c`` is found by bisection and the few units whose rounding
    sits on the boundary take one zero more, so the total equals ``target`` exactly.

    Args:
        sizes (Sequence[int]): Elements per unit.
        zeros (Sequence[int]): Zeros each unit already has.
        ratios (Sequence[float]): Ratio asked of each unit before scaling.
        caps (Sequence[int]): Most zeros a unit may have.
        target (int | None): Total zeros wanted over all units, or None to apply the ratios as written.

    Returns:
        (tuple[list[int], float]): Zeros per unit and the factor ``c``.

    Raises:
        ValueError: If ``target`` cannot be reached with these ratios and caps.

    Examples:
        >>> allocate_zeros([100, 100], [0, 0], [0.1, 0.3], [99, 99], target=60)[0]
        [15, 45]
    """

    def counts(c: float) -> list[int]:
        return [max(z, min(cap, round(c * r * n))) for n, z, r, cap in zip(sizes, zeros, ratios, caps)]

    if target is None:
        return counts(1.0), 1.0
    if sum(zeros) >= target:
        return list(zeros), 0.0
    growable = [(cap + 1) / (r * n) for n, r, cap in zip(sizes, ratios, caps) if r > 0 and n > 0]
    high = max(growable, default=0.0)
    if not growable or sum(counts(high)) < target:
        most = sum(counts(high)) if growable else sum(zeros)
        raise ValueError(
            f"sparsity target of {target} zeros is out of reach: these rules allow at most {most} "
            f"({most / max(1, sum(sizes)):.2%} of prunable weights)"
        )
    low = 0.0
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if sum(counts(mid)) <= target:
            low = mid
        else:
            high = mid
    result, above = counts(low), counts(high)
    missing = target - sum(result)
    for u in range(len(result)):
        if missing and above[u] > result[u]:
            result[u] += 1
            missing -= 1
    if sum(result) == target:
        return result, low
    return above, high  # only reachable when rounding gives the exact target at `high`


def compute_masks(
    assignment: Assignment, criterion: Criterion, sparsity: float | None = None, scope: str = "layer"
) -> MaskResult:
    """Compute keep-masks for the prunable weights of an assignment.

    Args:
        assignment (Assignment): Weights and their families, from :func:`ultra_sparse.rules.assign_families`.
        criterion (Criterion): Importance function, from :func:`ultra_sparse.importance.get_criterion`.
        sparsity (float | None): Overall fraction of zeros wanted over prunable weights; ``None`` applies the
            family ratios as written.
        scope (str): ``layer``: every layer loses its family's ratio. ``global``: every family loses its ratio as a
            whole, its weights ranked together across its layers (no layer above MAX_RATIO).

    Returns:
        (MaskResult): The masks and the factor the ratios were scaled by.

    Raises:
        ValueError: If a weight holds NaN or Inf, or the target cannot be reached.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} is not one of layer, global")
    weights = assignment.prunable
    ratios = assignment.ruleset.ratios
    for info in weights:
        if not torch.isfinite(info.weight.detach().sum()):  # a sum is finite only if every element is
            raise ValueError(f"weight {info.name} holds NaN or Inf values; fix the checkpoint before sparsifying")
    units = _units(weights, scope)
    weight_zeros = {w.name: _zeros(w.weight) for w in weights}
    sizes = [sum(w.weight.numel() for w in unit) for unit in units]
    zeros = [sum(weight_zeros[w.name] for w in unit) for unit in units]
    caps = [max(z, sum(math.floor(MAX_RATIO * w.weight.numel()) for w in unit)) for unit, z in zip(units, zeros)]
    target = None if sparsity is None else round(sparsity * sum(sizes))
    counts, scale = allocate_zeros(sizes, zeros, [ratios[u[0].family] for u in units], caps, target)
    masks = {}
    for unit, count in zip(units, counts):
        scores = [_ranked_scores(w, criterion) for w in unit]
        for info, pruned in zip(unit, _prune_unit(scores, [weight_zeros[w.name] for w in unit], count)):
            masks[info.name] = ~pruned.reshape(info.weight.shape)
    family_ratios = {f: min(MAX_RATIO, r * scale) for f, r in ratios.items() if any(w.family == f for w in weights)}
    return MaskResult(masks, scale, family_ratios)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the masked elements of ``model``'s parameters in place (parameter identity is kept).

    Args:
        model (nn.Module): The model the masks were computed for.
        masks (Mapping[str, torch.Tensor]): Parameter name -> bool keep-mask.

    Raises:
        ValueError: If a mask names a parameter the model lacks or its shape differs.
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            param = params.get(name)
            if param is None or param.shape != mask.shape:
                got = "missing" if param is None else tuple(param.shape)
                raise ValueError(f"mask for {name} {tuple(mask.shape)} does not fit the model ({got})")
            param.mul_(mask.to(param.device))


def masks_from_zeros(weights: Iterable[WeightInfo]) -> dict[str, torch.Tensor]:
    """Masks that keep exactly the non-zero elements of the given weights (the mask of a sparse checkpoint)."""
    return {w.name: w.weight.detach() != 0 for w in weights}


def _units(weights: Sequence[WeightInfo], scope: str) -> list[list[WeightInfo]]:
    """Group weights into allocation units: one per layer, or one per family (in first-appearance order)."""
    if scope == "layer":
        return [[w] for w in weights]
    families: dict[str, list[WeightInfo]] = {}
    for w in weights:
        families.setdefault(w.family, []).append(w)
    return list(families.values())


def _zeros(weight: torch.Tensor) -> int:
    """Number of exact zeros in ``weight``."""
    return weight.numel() - int(torch.count_nonzero(weight.detach()))


def _ranked_scores(info: WeightInfo, criterion: Criterion) -> torch.Tensor:
    """Scores of one weight, flattened (criteria score exact zeros below every other weight)."""
    weight = info.weight.detach()
    return criterion(info.name, weight).to(device=weight.device, dtype=torch.float32).reshape(-1)


def _prune_unit(scores: list[torch.Tensor], zero_counts: list[int], count: int) -> list[torch.Tensor]:
    """Mark the ``count`` lowest scores of a unit, no member above MAX_RATIO beyond its existing zeros.

    Returns one bool tensor (True = prune) per member, shaped like its flattened scores. A member whose share would
    pass its cap is filled to the cap and the rest of the budget goes to the others.
    """
    caps = [max(zeros, math.floor(MAX_RATIO * s.numel())) for s, zeros in zip(scores, zero_counts)]
    if len(scores) == 1:
        return [lowest_k(scores[0], min(count, caps[0]))]
    result: list[torch.Tensor] = [torch.zeros_like(s, dtype=torch.bool) for s in scores]
    active, budget = list(range(len(scores))), count
    while active:
        marked = lowest_k(torch.cat([scores[i] for i in active]), budget)
        parts = dict(zip(active, marked.split([scores[i].numel() for i in active])))
        over = [i for i in active if int(parts[i].sum()) > caps[i]]
        if not over:
            for i in active:
                result[i] = parts[i]
            break
        for i in over:
            result[i] = lowest_k(scores[i], caps[i])
            budget -= caps[i]
            active.remove(i)
    return result
