"""N:M semi-structured keep-masks: in every group of M consecutive input-channel weights, the N most important stay.

A group is M consecutive input channels of one output channel at one kernel position (for ``Linear``: M consecutive
inputs of one output row). That is the layout of 2:4 sparse tensor cores: a convolution lowered to a GEMM reduces over
(kernel position, input channel) with the input channel innermost, and TensorRT's sparse convolutions ask for 2:4
along the input channels. A layer is eligible when its input channels per convolution group are a multiple of M;
transposed convolutions, depthwise convolutions (one input channel per group) and other layers are left dense and
reported with the reason.

The pattern fixes the sparsity: 1 - N/M of every eligible weight; family ratios and ``sparsity=`` do not apply
(rules still decide which weights are prunable: protected families stay untouched). Scores come from the shared
importance criteria; exact zeros score lowest, so they are the first pruned in their group. Ties are broken by
position (the earlier weight is pruned first), so the same inputs give the same masks bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..importance import Criterion
from ..rules import Assignment, WeightInfo
from .unstructured import MaskResult

__all__ = ["nm_eligibility", "nm_groups", "nm_masks", "nm_violations", "pattern_fraction"]


def nm_eligibility(module: nn.Module, m: int) -> str | None:
    """Why the weight of ``module`` cannot hold an N:M pattern with groups of ``m``, or None if it can.

    Args:
        module (nn.Module): A Conv1d/2d/3d, ConvTranspose or Linear module.
        m (int): Group size M.

    Returns:
        (str | None): The reason it is not eligible, or None.

    Examples:
        >>> nm_eligibility(nn.Conv2d(3, 16, 3), 4)
        '3 input channels, not a multiple of 4'
        >>> nm_eligibility(nn.Conv2d(64, 64, 3, groups=64), 4)
        'depthwise (1 input channel per group)'
        >>> nm_eligibility(nn.Linear(256, 10), 4) is None
        True
    """
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed convolution (no N:M layout)"
    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return f"{type(module).__name__} (no N:M layout)"
    per_group = module.weight.shape[1]
    groups = getattr(module, "groups", 1)
    if per_group == 1 and groups > 1:
        return "depthwise (1 input channel per group)"
    if per_group % m:
        where = f"{per_group} input channels per group" if groups > 1 else f"{per_group} input channels"
        return f"{where}, not a multiple of {m}"
    return None


def nm_groups(tensor: torch.Tensor, m: int) -> torch.Tensor:
    """The N:M groups of a Conv/Linear weight (or a tensor shaped like one) as rows of length ``m``.

    Input channels (dimension 1) move last, so each row holds ``m`` consecutive input channels of one output channel
    at one kernel position.

    Args:
        tensor (torch.Tensor): Shaped ``(out, in_per_group, *kernel)``, ``in_per_group`` a multiple of ``m``.
        m (int): Group size M.

    Returns:
        (torch.Tensor): Shape ``(groups, m)``.

    Raises:
        ValueError: If the tensor has fewer than 2 dimensions or dimension 1 is not a multiple of ``m``.

    Examples:
        >>> nm_groups(torch.arange(8.0).reshape(1, 4, 2), 4)
        tensor([[0., 2., 4., 6.],
                [1., 3., 5., 7.]])
    """
    if tensor.dim() < 2 or tensor.shape[1] % m:
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} has no groups of {m} input channels")
    return tensor.movedim(1, -1).reshape(-1, m)


def nm_violations(weight: torch.Tensor, n: int, m: int) -> int:
    """Number of groups of ``weight`` holding more than ``n`` non-zero weights (0 means the N:M pattern holds).

    Examples:
        >>> nm_violations(torch.tensor([[1.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 0.0]]), 2, 4)
        1
    """
    nonzero = nm_groups(weight.detach() != 0, m).sum(dim=1)
    return int((nonzero > n).sum())


def pattern_fraction(n: int, m: int) -> float:
    """Fraction of an eligible weight that an N:M pattern zeroes: 1 - N/M.

    Examples:
        >>> pattern_fraction(2, 4)
        0.5
    """
    return 1.0 - n / m


def nm_masks(
    assignment: Assignment, criterion: Criterion, pattern: tuple[int, int], sparsity: float | None = None
) -> MaskResult:
    """Keep-masks with the N most important weights of every group of M kept, for every eligible prunable weight.

    Args:
        assignment (Assignment): Weights and their families, from :func:`ultra_sparse.rules.assign_families`.
        criterion (Criterion): Importance function, from :func:`ultra_sparse.importance.get_criterion`.
        pattern (tuple[int, int]): ``(N, M)``.
        sparsity (float | None): A floor the pattern must reach over prunable weights (sparse training passes its
            schedule's target, which is the pattern's own fraction); the masks are the full pattern whatever it is.
            ``None`` asks nothing.

    Returns:
        (MaskResult): Masks (all True for ineligible weights), ``scale`` 1.0, the fraction each family loses to
        the pattern, and the zeros each weight has once the masks are applied.

    Raises:
        ValueError: If a weight holds NaN or Inf, or ``sparsity`` is more than the pattern zeroes.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.importance import get_criterion
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> a = assign_families(YOLO("yolo11n.yaml").model, load_rules("default"))
        >>> result = nm_masks(a, get_criterion("l1"), (2, 4))
        >>> int(result.masks["model.1.conv.weight"].sum()) * 2 == result.masks["model.1.conv.weight"].numel()
        True
    """
    n, m = pattern
    masks, zeros = {}, {}
    for w in assignment.prunable:
        weight = w.weight.detach()
        if not bool(torch.isfinite(weight).all()):
            raise ValueError(f"weight {w.name} holds NaN or Inf values; fix the checkpoint before sparsifying")
        if nm_eligibility(w.module, m) is None:
            masks[w.name] = _keep_n_per_group(criterion(w.name, weight), n, m).to(weight.device)
        else:
            masks[w.name] = torch.ones_like(weight, dtype=torch.bool)
        zeros[w.name] = int((~masks[w.name] | (weight == 0)).sum())
    total = sum(w.weight.numel() for w in assignment.prunable)
    if sparsity is not None and round(sparsity * total) > sum(zeros.values()):
        raise ValueError(
            f"sparsity={sparsity:.4g} is out of reach for nm={n}:{m}: the pattern zeroes "
            f"{sum(zeros.values()) / max(1, total):.2%} of prunable weights (ineligible layers stay dense)"
        )
    return MaskResult(masks, 1.0, _family_ratios(assignment.prunable, m, pattern_fraction(n, m)), zeros)


def _keep_n_per_group(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask shaped like ``scores``: True for the ``n`` highest scores of each group of ``m`` input channels.

    A stable ascending sort orders each group; its first ``m - n`` entries are pruned, so among equal scores the
    earlier position is pruned first.
    """
    scores = scores.detach().to(torch.float32)
    groups = nm_groups(scores, m)
    order = torch.sort(groups, dim=1, stable=True).indices
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(1, order[:, : m - n], False)
    moved = scores.movedim(1, -1).shape  # the shape nm_groups flattened
    return keep.reshape(moved).movedim(-1, 1)


def _family_ratios(weights: Sequence[WeightInfo], m: int, fraction: float) -> dict[str, float]:
    """Family -> fraction of its weights the pattern zeroes (eligible weights lose ``fraction``, the rest nothing)."""
    params: dict[str, int] = {}
    eligible: dict[str, int] = {}
    for w in weights:
        params[w.family] = params.get(w.family, 0) + w.weight.numel()
        if nm_eligibility(w.module, m) is None:
            eligible[w.family] = eligible.get(w.family, 0) + w.weight.numel()
    return {f: fraction * eligible.get(f, 0) / size for f, size in params.items()}
