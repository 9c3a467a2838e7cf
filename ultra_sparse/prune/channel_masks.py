"""A channel removal as keep-masks: the planned channels zeroed in the dense network, for pruning while training.

A removal is what :func:`ultra_sparse.prune.channel.plan_channels` plans: ``(module name, "out" | "in")`` -> channel
indices. Zeroing a removed output channel's filter and its BatchNorm scale and shift makes the channel exactly zero
(after SiLU, ReLU and the like too), and zeroing the consumers' input columns makes that explicit, so the masked dense
network computes what the network with those channels removed computes. A training run keeps these zeros after every
step and removes the channels for real at its end (:func:`ultra_sparse.prune.channel.remove_channels`).

Removals are stored in checkpoints as plain lists (:func:`pack_removal`).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

__all__ = ["Removal", "channel_masks", "merge_removals", "pack_removal", "unpack_removal"]

Removal = dict[tuple[str, str], list[int]]


def channel_masks(net: nn.Module, removal: Removal) -> dict[str, torch.Tensor]:
    """Keep-masks (parameter name -> bool tensor) that zero the channels of ``removal`` in ``net``.

    Output channels zero a Conv2d/Linear filter (and bias) or a BatchNorm's scale and shift; input channels zero the
    columns a Conv2d/Linear reads them with (a depthwise convolution's inputs are its outputs).

    Args:
        net (nn.Module): The unpruned network the removal was planned on.
        removal (Removal): ``(module name, "out" | "in")`` -> channel indices.

    Returns:
        (dict[str, torch.Tensor]): Masks of the parameters the removal touches, on their parameters' devices.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        >>> masks = channel_masks(net, {("0", "out"): [1], ("1", "out"): [1]})
        >>> masks["0.weight"][:, 0, 0, 0].tolist(), masks["1.bias"].tolist()
        ([True, False, True, True], [True, False, True, True])
    """
    modules = dict(net.named_modules())
    masks: dict[str, torch.Tensor] = {}

    def mask(name: str, key: str) -> torch.Tensor:
        param = getattr(modules[name], key)
        return masks.setdefault(f"{name}.{key}", torch.ones_like(param, dtype=torch.bool))

    for (name, kind), indices in removal.items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"the channel removal names {name}, which this network does not have")
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        if kind == "out" or depthwise or isinstance(module, nn.BatchNorm2d):
            for key in ("weight", "bias"):
                if getattr(module, key, None) is not None:
                    mask(name, key)[indices] = False
        else:
            mask(name, "weight")[:, indices] = False
    return masks


def merge_removals(*removals: Removal) -> Removal:
    """The union of removals, indices sorted.

    Examples:
        >>> merge_removals({("a", "out"): [0, 2]}, {("a", "out"): [1, 2], ("b", "in"): [3]})
        {('a', 'out'): [0, 1, 2], ('b', 'in'): [3]}
    """
    merged: dict[tuple[str, str], set[int]] = {}
    for removal in removals:
        for key, indices in removal.items():
            merged.setdefault(key, set()).update(int(i) for i in indices)
    return {key: sorted(indices) for key, indices in merged.items()}


def pack_removal(removal: Removal) -> list[list]:
    """A removal as plain lists ``[name, kind, indices]`` (what checkpoints store).

    Examples:
        >>> unpack_removal(pack_removal({("a", "out"): [1]}))
        {('a', 'out'): [1]}
    """
    return [[name, kind, list(indices)] for (name, kind), indices in removal.items()]


def unpack_removal(packed: Iterable[list]) -> Removal:
    """Inverse of :func:`pack_removal`."""
    return {(str(name), str(kind)): [int(i) for i in indices] for name, kind, indices in packed}
