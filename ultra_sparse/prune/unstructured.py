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

import numpy as np
import torch
import torch.nn as nn

from ..importance import Criterion
from ..rules import Assignment, WeightInfo

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
        zeros (dict[str, int]): Parameter name -> exact zeros the weight holds once the masks are applied.
    """

    masks: dict[str, torch.Tensor]
    scale: float
    family_ratios: dict[str, float]
    zeros: dict[str, int]


def lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Return a bool tensor marking the ``k`` lowest scores; ties go to the earlier position.

    Args:
        scores (torch.Tensor): Scores of any shape.
        k (int): How many to mark, clipped to [0, numel].

    Returns:
        (torch.Tensor): Bool tensor shaped like ``scores`` (on its device), True for the ``k`` lowest.

    Examples:
        >>> lowest_k(torch.tensor([3.0, 1.0, 1.0, 2.0]), 2)
        tensor([False,  True,  True, False])
    """
    values = _as_numpy(scores.detach().reshape(-1))
    return torch.from_numpy(_lowest_k(values, k)).reshape(scores.shape).to(scores.device)


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
    n, z = np.asarray(sizes, dtype=np.int64), np.asarray(zeros, dtype=np.int64)
    r, cap = np.asarray(ratios, dtype=np.float64), np.asarray(caps, dtype=np.int64)
    asked = r * n

    def counts(c: float) -> np.ndarray:  # np.rint rounds half to even, like Python's round()
        return np.maximum(z, np.minimum(cap, np.rint(c * r * n).astype(np.int64)))

    if target is None:
        return counts(1.0).tolist(), 1.0
    if int(z.sum()) >= target:
        return z.tolist(), 0.0
    growable = asked > 0
    high = float(((cap[growable] + 1) / asked[growable]).max()) if growable.any() else 0.0
    if not growable.any() or int(counts(high).sum()) < target:
        most = int(counts(high).sum()) if growable.any() else int(z.sum())
        raise ValueError(
            f"sparsity target of {target} zeros is out of reach: these rules allow at most {most} "
            f"({most / max(1, int(n.sum())):.2%} of prunable weights)"
        )
    low = 0.0
    for _ in range(200):
        mid = (low + high) / 2
        if mid in (low, high):
            break
        if int(counts(mid).sum()) <= target:
            low = mid
        else:
            high = mid
    result, above = counts(low), counts(high)
    missing = target - int(result.sum())
    boundary = np.flatnonzero(above > result)[:missing]  # the earliest units on the rounding boundary
    result[boundary] += 1
    if int(result.sum()) == target:
        return result.tolist(), low
    return above.tolist(), high  # only reachable when rounding gives the exact target at `high`


def compute_masks(
    assignment: Assignment, criterion: Criterion, sparsity: float | None = None, scope: str = "global"
) -> MaskResult:
    """Compute keep-masks for the prunable weights of an assignment.

    All weights are scored and selected in one flat array, unit by unit (numpy's introselect finds each unit's
    threshold), so the cost is a few passes over the weights rather than a sort.

    Args:
        assignment (Assignment): Weights and their families, from :func:`ultra_sparse.rules.assign_families`.
        criterion (Criterion): Importance function, from :func:`ultra_sparse.importance.get_criterion`.
        sparsity (float | None): Overall fraction of zeros wanted over prunable weights; ``None`` applies the
            family ratios as written.
        scope (str): ``layer``: every layer loses its family's ratio. ``global``: every family loses its ratio as a
            whole, its weights ranked together across its layers (no layer above MAX_RATIO).

    Returns:
        (MaskResult): The masks, the factor the ratios were scaled by, and the zeros each weight has once they are
        applied.

    Raises:
        ValueError: If a weight holds NaN or Inf, or the target cannot be reached.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope={scope!r} is not one of layer, global")
    weights = assignment.prunable
    ratios = assignment.ruleset.ratios
    units = _units(weights, scope)
    ordered = [w for unit in units for w in unit]  # every unit is one contiguous run of the flat arrays
    if not ordered:
        return MaskResult({}, 1.0, {}, {})
    values = np.concatenate([_as_numpy(w.weight.reshape(-1)) for w in ordered])
    lengths = np.array([w.weight.numel() for w in ordered], dtype=np.int64)
    starts = _offsets(lengths)[:-1]
    if not math.isfinite(float(values.sum(dtype=np.float64))):  # a float64 sum of float weights overflows never
        bad = next(w.name for w in ordered if not bool(torch.isfinite(w.weight.detach()).all()))
        raise ValueError(f"weight {bad} holds NaN or Inf values; fix the checkpoint before sparsifying")
    is_zero = values == 0
    weight_zeros = _segment_counts(is_zero, starts, lengths)
    weight_caps = np.maximum(weight_zeros, np.floor(MAX_RATIO * lengths).astype(np.int64))
    bounds = _offsets([len(unit) for unit in units])  # unit u holds ordered[bounds[u]:bounds[u + 1]]
    edges = _offsets(lengths)[bounds]  # unit u spans values[edges[u]:edges[u + 1]]
    sizes = np.add.reduceat(lengths, bounds[:-1])
    zeros = np.add.reduceat(weight_zeros, bounds[:-1])
    caps = np.maximum(zeros, np.add.reduceat(weight_caps, bounds[:-1]))
    target = None if sparsity is None else round(sparsity * int(sizes.sum()))
    counts, scale = allocate_zeros(sizes, zeros, [ratios[u[0].family] for u in units], caps, target)

    scores = _scores(ordered, values, criterion)
    pruned = np.zeros(values.size, dtype=bool)
    for u, count in enumerate(counts):
        span, members = slice(edges[u], edges[u + 1]), slice(bounds[u], bounds[u + 1])
        pruned[span] = _prune_unit(scores[span], lengths[members], weight_caps[members], count)
    keep = torch.from_numpy(~pruned).to(ordered[0].weight.device)
    pieces = dict(zip((w.name for w in ordered), keep.split(lengths.tolist())))
    masks = {w.name: pieces[w.name].view(w.weight.shape) for w in weights}  # module order
    zeros_after = _segment_counts(pruned | is_zero, starts, lengths).tolist()
    family_ratios = {f: min(MAX_RATIO, r * scale) for f, r in ratios.items() if any(w.family == f for w in weights)}
    return MaskResult(masks, scale, family_ratios, dict(zip((w.name for w in ordered), zeros_after)))


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


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU numpy view (or copy) of a 1-D tensor; half and bfloat16 are widened to float32, which is exact."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.numpy()


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    """Where each run starts when runs of these lengths are laid end to end, plus the total at the end."""
    return np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))


def _segment_counts(flags: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Number of True flags in each run ``flags[start : start + length]``."""
    return np.array([np.count_nonzero(flags[s : s + n]) for s, n in zip(starts, lengths)], dtype=np.int64)


def _scores(ordered: Sequence[WeightInfo], values: np.ndarray, criterion: Criterion) -> np.ndarray:
    """Scores of all weights as one float32 array, in the order of ``ordered`` (criteria score exact zeros lowest).

    ``values`` holds the weights laid end to end in that order; an elementwise criterion scores it in one call, which
    gives the same values as one call per weight.
    """
    if criterion.elementwise:
        return _as_numpy(criterion("", torch.from_numpy(values)).to(torch.float32))
    return np.concatenate([_as_numpy(criterion(w.name, w.weight.detach()).reshape(-1).float()) for w in ordered])


def _lowest_k(values: np.ndarray, k: int) -> np.ndarray:
    """Bool array marking the ``k`` lowest of a 1-D array; ties at the threshold go to the earlier positions."""
    k = max(0, min(int(k), values.size))
    if k == 0:
        return np.zeros(values.size, dtype=bool)
    if k == values.size:
        return np.ones(values.size, dtype=bool)
    threshold = np.partition(values, k - 1)[k - 1]
    marked = values <= threshold
    if np.count_nonzero(marked) != k:  # ties at the threshold: keep the earliest of them
        marked = values < threshold
        ties = np.flatnonzero(values == threshold)[: k - np.count_nonzero(marked)]
        marked[ties] = True
    return marked


def _prune_unit(scores: np.ndarray, lengths: np.ndarray, caps: np.ndarray, count: int) -> np.ndarray:
    """Mark the ``count`` lowest scores of a unit (its members laid end to end), no member above its cap.

    Returns one bool array (True = prune) over the whole unit. A member whose share would pass its cap is filled to
    the cap and the rest of the budget goes to the others.
    """
    if len(lengths) == 1:
        return _lowest_k(scores, min(count, int(caps[0])))
    offsets = _offsets(lengths)
    members = [slice(offsets[i], offsets[i + 1]) for i in range(len(lengths))]
    result = np.zeros(scores.size, dtype=bool)
    active, budget = list(range(len(members))), count
    while active:
        values = scores if len(active) == len(members) else np.concatenate([scores[members[i]] for i in active])
        marked = _lowest_k(values, budget)
        local = _offsets([lengths[i] for i in active])[:-1]
        taken = np.add.reduceat(marked, local, dtype=np.int64)
        over = [i for i, n in zip(active, taken) if n > caps[i]]
        if not over:
            for i, offset in zip(active, local):
                result[members[i]] = marked[offset : offset + lengths[i]]
            break
        for i in over:
            result[members[i]] = _lowest_k(scores[members[i]], int(caps[i]))
            budget -= int(caps[i])
            active.remove(i)
    return result
