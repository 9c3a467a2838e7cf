"""The counting side of channel pruning: how many channels each group loses at a scale factor, what that removes
(parameters and GFLOPs counted from channel counts), and the search for the scale factor that meets a target.

Nothing here traces or changes a network: :mod:`ultra_sparse.prune.channel` plans with these counts and removes the
chosen channels.

Examples:
    >>> rounded_keep(21, 32, 1, 8)
    24
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..calibration import model_stride

__all__ = [
    "MAX_CHANNEL_RATIO", "LayerCosts", "SlotCounter", "TargetOutOfReach", "output_positions", "rounded_keep",
    "search_scale",
]

MAX_CHANNEL_RATIO = 0.9  # no group loses more than this fraction of its channels, whatever the scale factor


class TargetOutOfReach(ValueError):
    """A channel target above what the rules allow; ``most`` is the largest fraction they can remove.

    Examples:
        >>> error = TargetOutOfReach("the target 80.00% is out of reach", most=0.784)
        >>> isinstance(error, ValueError), error.most
        (True, 0.784)
    """

    def __init__(self, message: str, most: float):
        """Keep the message and the reachable maximum."""
        super().__init__(message)
        self.most = most


class SlotCounter:
    """How many slots each group loses at a scale factor, and what that removes from every layer (no tracing)."""

    def __init__(self, groups: list, scope: str, round_to: int):
        """Pool the slot scores of each family once (``scope=global``) and tie the parts of split blocks."""
        self.groups, self.scope, self.round_to = groups, scope, round_to
        self.slots = np.array([g.slots for g in groups], dtype=np.int64)
        # a part of a split block narrower than 16 is rounded as part of cv1 (its width is what must stay a multiple)
        self.parts = np.array([g.pieces if g.half and g.slots < 16 else g.parts for g in groups], dtype=np.int64)
        self.widths = np.array([g.parts for g in groups], dtype=np.int64)  # channels one slot removes from each layer
        self.ratios = np.array([g.ratio for g in groups], dtype=np.float64)
        self.cap = np.floor(MAX_CHANNEL_RATIO * self.slots).astype(np.int64)
        index = {g.half: i for i, g in enumerate(groups) if g.half}
        self.ties = [
            [index[f"{g.half.rsplit(':', 1)[0]}:{k}"] for k in range(g.pieces)]
            for g in groups if g.half and g.half.endswith(":0")
        ]
        self.families: list[tuple[float, np.ndarray]] = []
        if scope == "global":
            by_family: dict[str, list[int]] = {}
            for i, g in enumerate(groups):
                by_family.setdefault(g.family, []).append(i)
            for members in by_family.values():
                pooled = sorted((float(s), i) for i in members for s in groups[i].scores)
                self.families.append((groups[members[0]].ratio, np.array([i for _, i in pooled], dtype=np.int64)))

    def counts(self, scale: float) -> np.ndarray:
        """Slots removed from each group at ``scale`` (a split block's parts equal, widths rounded)."""
        raw = np.zeros(len(self.groups), dtype=np.int64)
        if self.scope == "global":
            for ratio, pooled in self.families:
                k = math.floor(min(ratio * scale, MAX_CHANNEL_RATIO) * len(pooled) + 1e-9)
                raw += np.bincount(pooled[:k], minlength=len(self.groups))
        else:
            raw = np.floor(np.minimum(self.ratios * scale, MAX_CHANNEL_RATIO) * self.slots + 1e-9).astype(np.int64)
        raw = np.minimum(raw, self.cap)
        keep = np.array([rounded_keep(int(s - n), int(s), int(p), self.round_to)
                         for s, n, p in zip(self.slots, raw, self.parts)], dtype=np.int64)
        counts = self.slots - keep
        for tie in self.ties:  # the parts of a split block lose the same number of CHANNELS (a slot may hold several)
            unit = math.lcm(*(int(self.widths[i]) for i in tie))
            channels = min(int(counts[i] * self.widths[i]) for i in tie) // unit * unit
            counts[tie] = channels // self.widths[tie]
        return counts

    def removed(self, counts: np.ndarray) -> dict[tuple[str, str], int]:
        """Number of channels each layer loses (``(name, "out" | "in")`` -> count) for slot counts ``counts``."""
        total: dict[tuple[str, str], int] = {}
        for g, n in zip(self.groups, counts):
            if n:
                for key, cumulative in g.cumulative.items():
                    total[key] = total.get(key, 0) + int(cumulative[n])
        return total

    def removal(self, counts: np.ndarray) -> dict[tuple[str, str], list[int]]:
        """The channel indices each layer loses for slot counts ``counts`` (each group's least important slots)."""
        remove: dict[tuple[str, str], set[int]] = {}
        for g, n in zip(self.groups, counts):
            for key, per_slot in g.targets.items():
                for s in g.order[:n]:
                    remove.setdefault(key, set()).update(per_slot[s])
        return {key: sorted(idxs) for key, idxs in remove.items() if idxs}

    def differing(self, a: np.ndarray, b: np.ndarray) -> int:
        """Groups whose counts differ between two plans, a split block's parts counted once."""
        diff = set(np.flatnonzero(a != b).tolist())
        return len(diff) - sum(len(tie) - 1 for tie in self.ties if tie[0] in diff)


def rounded_keep(keep: int, slots: int, parts: int, round_to: int) -> int:
    """Channels a group keeps per part, rounded so that the layer's width stays a multiple of its rounding step.

    The step is ``round_to`` where the layer is at least twice as wide, else halved until it is (an even step of
    16 or more halves, so not below 8): at ``round_to=16`` a 24-channel layer keeps 8 or 16, not only 16. Layers
    narrower than 16 channels are not rounded; at least one channel (or one step) is kept.

    Examples:
        >>> rounded_keep(21, 32, 1, 8)
        24
        >>> rounded_keep(13, 16, 2, 8)
        12
        >>> rounded_keep(5, 6, 1, 8)
        5
        >>> rounded_keep(40, 64, 1, 16), rounded_keep(10, 24, 1, 16)
        (48, 8)
    """
    width = slots * parts
    if width < 16 or round_to <= 1:
        return max(keep, 1)
    step = round_to
    while step >= 16 and step % 2 == 0 and 2 * step > width:
        step //= 2
    step //= math.gcd(step, parts)
    rounded = max(step, int(math.floor(keep / step + 0.5)) * step)
    return min(rounded, slots)


def search_scale(counter: SlotCounter, saved, target: float) -> tuple[float, np.ndarray, dict[str, Any]]:
    """Find the scale factor whose plan removes ``target`` within one channel group: bisection on counted costs."""
    groups = counter.groups
    top = MAX_CHANNEL_RATIO / max(min(g.ratio for g in groups), 1e-9) if groups else 1.0
    low, high = 0.0, top
    below, above = counter.counts(low), counter.counts(high)
    if saved(above) < target:
        raise TargetOutOfReach(
            f"the target {target:.2%} is out of reach: at most {saved(above):.2%} can be removed with these rules "
            f"(no group loses more than {MAX_CHANNEL_RATIO:.0%} of its channels; protected and whole blocks lose none)",
            most=saved(above),
        )
    for _ in range(60):
        mid = (low + high) / 2
        counts = counter.counts(mid)
        if saved(counts) < target:
            low, below = mid, counts
        else:
            high, above = mid, counts
        if counter.differing(below, above) <= 1 or high - low < 1e-9:
            break
    if counter.differing(below, above) > 1:  # groups that cross at the same scale (scope=layer: equal widths)
        below, above = _one_group_at_a_time(counter, saved, target, below, above)
    got_below, got_above = saved(below), saved(above)
    bracket = {"below": got_below, "above": got_above, "groups": counter.differing(below, above)}
    return ((low, below) if target - got_below < got_above - target else (high, above)) + (bracket,)


def _one_group_at_a_time(
    counter: SlotCounter, saved, target: float, below: np.ndarray, above: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Step from the plan below the target to the one above it one group at a time (a split block's parts
    together), the group whose next channels matter least first; return the two plans around the target."""
    tie_of = {i: tie for tie in counter.ties for i in tie}
    steps, seen = [], set()
    for i in np.flatnonzero(below != above).tolist():
        if i in seen:
            continue
        members = tie_of.get(i, [i])
        seen.update(members)
        scores = [counter.groups[j].scores[counter.groups[j].order[below[j]:above[j]]] for j in members]
        steps.append((float(torch.cat(scores).mean()), members))
    current = below.copy()
    for _, members in sorted(steps, key=lambda step: step[0]):
        step = current.copy()
        step[members] = above[members]
        if saved(step) >= target:
            return current, step
        current = step
    return current, above


def output_positions(net: nn.Module, imgsz: int, modules: Iterable[nn.Module]) -> dict[nn.Module, int]:
    """Output positions of each of ``modules`` (one channel's map of one image) in a forward pass at ``imgsz``.

    The image side is rounded up to the model's stride, as Ultralytics' ``get_flops`` does; a module that does not
    run is left out, and one that runs twice keeps its last call's size.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1))
        >>> output_positions(net, 64, [net[0]])[net[0]]
        1024
    """
    sizes: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.__setitem__(m, o[0, 0].numel())) for m in modules]
    stride = model_stride(net)
    side = max(stride, math.ceil(imgsz / stride) * stride)
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, side, side, dtype=next(net.parameters()).dtype))
    finally:
        for h in hooks:
            h.remove()
    return sizes


class LayerCosts:
    """Parameters and GFLOPs of a network after a removal, counted from channel counts as thop counts them."""

    def __init__(self, net: nn.Module, imgsz: int, prunable: Iterable[str]):
        """Record every conv/linear/BatchNorm's shape and output size at ``imgsz``; measure dense GFLOPs.

        ``prunable`` names the layers whose weights count as prunable (the ``sparsity=`` denominator).
        """
        from ultralytics.utils.torch_utils import get_flops

        self.layers: dict[str, dict[str, Any]] = {}
        modules = {m: n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
        sizes = output_positions(net, imgsz, modules)
        for m, name in modules.items():
            if m not in sizes:
                continue
            if isinstance(m, nn.Conv2d):
                entry = {"out": m.out_channels, "in": m.in_channels, "k": m.weight[0, 0].numel(), "groups": m.groups,
                         "bias": m.bias is not None, "type": "conv"}
            elif isinstance(m, nn.Linear):
                entry = {"out": m.out_features, "in": m.in_features, "k": 1, "groups": 1, "bias": m.bias is not None,
                         "type": "linear"}
            else:
                entry = {"out": m.num_features, "in": m.num_features, "k": 1, "groups": 1, "bias": m.affine,
                         "type": "bn"}
            self.layers[name] = {**entry, "hw": sizes[m]}
        self.prunable_weights = set(prunable) & set(self.layers)
        self.dense_gflops = get_flops(net, imgsz)
        self._dense = self._count({})

    def _count(self, removed: dict[tuple[str, str], int]) -> dict[str, float]:
        """Params of prunable weights, all conv/linear/bn params and ops, after ``removed`` (channel counts)."""
        prunable = params = ops = 0
        for name, layer in self.layers.items():
            out = layer["out"] - removed.get((name, "out"), 0)
            cin = layer["in"] - removed.get((name, "in"), 0)
            groups = layer["groups"]
            if layer["type"] == "conv" and groups == layer["out"] and groups > 1:
                cin, groups = out, out  # depthwise
            if layer["type"] == "bn":
                params += 2 * out if layer["bias"] else 0
                ops += (4 if layer["bias"] else 2) * out * layer["hw"]  # thop: normalise 2 ops, affine 2 more
                continue
            weight = out * (cin // groups) * layer["k"]
            params += weight + (out if layer["bias"] else 0)
            ops += out * layer["hw"] * (cin // groups) * layer["k"]
            if name in self.prunable_weights:
                prunable += weight
        return {"prunable": prunable, "params": params, "ops": ops}

    def saved(self, removed: dict[tuple[str, str], int]) -> dict[str, float]:
        """Fractions removed: ``sparsity`` (of prunable weights) and ``flops`` (of dense GFLOPs)."""
        now = self._count(removed)
        dense_ops = self.dense_gflops * 1e9 / 2 if self.dense_gflops else self._dense["ops"]
        return {
            "sparsity": 1 - now["prunable"] / max(1, self._dense["prunable"]),
            "flops": (self._dense["ops"] - now["ops"]) / max(1.0, dense_ops),
        }
