"""Least-squares reconstruction after channel removal: the layers that lost inputs are refitted on calibration images.

Removing a channel is exact for the layer that produced it (its other filters do not change) but not for the layers
that read it: their outputs lose that channel's contribution. Each such convolution can make up for much of it with
the inputs it keeps, because channels are correlated. For every ``Conv2d`` that lost input channels, in the order the
network runs them, the weights are refitted so that its output on the calibration images matches the DENSE model's
output of the same layer (kept output channels only, before its BatchNorm):

    W = argmin ||A W^T - Y||^2 + lambda ||W - W0||^2

``A`` holds the layer's input patches in the PRUNED network (so the fit also makes up for the layers before it, as
already refitted), ``Y`` the dense layer's outputs at the same positions, ``W0`` the weights before the fit, and
``lambda`` is ``damping`` times the mean diagonal of ``A^T A`` (a ridge towards the original weights, so directions
the images do not excite keep their trained values). This is the reconstruction step of channel pruning as in
He et al. 2017 ("Channel pruning for accelerating very deep neural networks") and ThiNet (Luo et al. 2017).

The whole fit costs one forward pass of each network over the calibration images: the dense pass records the targets
at sampled output positions; in the pruned pass each layer is refitted in a forward pre-hook, just before it runs, so
the layers after it see its refitted output. The images therefore go through as one batch.

Only the shapes' values change: the pruned network keeps its layers and classes.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DAMPING", "ROWS", "Reconstruction", "reconstruct_layers", "reconstruct_masked"]

ROWS = 16384  # output positions sampled per layer: enough rows for a 3x3 conv of 256 inputs (2304 unknowns) and more
DAMPING = 1e-2  # ridge towards the original weights, relative to the mean diagonal of A^T A (best of 1e-4..1e-1 measured)


@dataclass(frozen=True)
class Reconstruction:
    """What :func:`reconstruct_layers` refitted.

    Attributes:
        layers (int): Convolutions refitted.
        images (int): Calibration images.
        rows (int): Output positions sampled per layer (at most).
        damping (float): Relative ridge weight.
        error_before (float): Mean over the refitted layers of ``||A W0^T - Y|| / ||Y||`` on the sampled positions.
        error_after (float): The same with the refitted weights (never above ``error_before`` layer by layer).
    """

    layers: int
    images: int
    rows: int
    damping: float
    error_before: float
    error_after: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what reports store)."""
        return asdict(self)


class _Targets:
    """Forward hooks on the dense network: the outputs of each layer to refit at sampled positions."""

    def __init__(self, removal: dict[tuple[str, str], list[int]], rows: int, seed: int):
        self.removal, self.rows = removal, rows
        self.generator = torch.Generator().manual_seed(seed)
        self.positions: dict[str, tuple[torch.Tensor, ...]] = {}
        self.values: dict[str, torch.Tensor] = {}

    def hook(self, name: str):
        """The hook of layer ``name``: sample positions once, keep the dense outputs of its kept channels there."""

        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in self.values:
                return  # a layer run twice is fitted on its first call
            b, c, h, w = output.shape
            flat = torch.randperm(b * h * w, generator=self.generator)[: self.rows].to(output.device)
            where = (flat // (h * w), (flat // w) % h, flat % w)
            kept = _kept(c, self.removal.get((name, "out"), ()), output.device)
            self.positions[name] = where
            self.values[name] = output[where[0], :, where[1], where[2]][:, kept].double()

        return record


def _patches(x: torch.Tensor, conv: nn.Conv2d, where: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The input patches ``conv`` reads at output positions ``where``, as rows laid out like ``conv.weight[i]``."""
    b, oy, ox = where
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    if isinstance(conv.padding, str):
        raise ValueError(f"padding={conv.padding!r} is not supported by the reconstruction")
    ph, pw = conv.padding
    padded = F.pad(x, (pw, pw, ph, ph))
    taps = [padded[b, :, oy * sh + i * dh, ox * sw + j * dw] for i in range(kh) for j in range(kw)]
    return torch.stack(taps, 2).reshape(len(b), -1)


class _Refit:
    """Forward pre-hooks on the pruned network: refit each layer from its current input, just before it runs."""

    def __init__(self, targets: _Targets, damping: float):
        self.targets, self.damping = targets, damping
        self.errors: list[tuple[float, float]] = []

    def hook(self, name: str):
        """The pre-hook of layer ``name``."""

        def refit(conv: nn.Conv2d, inputs: tuple) -> None:
            if name not in self.targets.values:
                return  # fitted on its first call already (its target is used up), or never run in the dense pass
            a = _patches(inputs[0], conv, self.targets.positions[name]).double()
            y = self.targets.values.pop(name)
            w0 = conv.weight.detach().reshape(conv.out_channels, -1).double()
            if conv.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], 1)
                w0 = torch.cat([w0, conv.bias.detach().double()[:, None]], 1)
            gram = a.T @ a
            ridge = self.damping * gram.diagonal().mean().clamp_min(1e-12)
            eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
            w = torch.linalg.solve(gram + ridge * eye, a.T @ y + ridge * w0.T).T
            norm = y.norm().clamp_min(1e-12)
            self.errors.append((float((a @ w0.T - y).norm() / norm), float((a @ w.T - y).norm() / norm)))
            if conv.bias is not None:
                conv.bias.copy_(w[:, -1].to(conv.bias.dtype))
                w = w[:, :-1]
            conv.weight.copy_(w.reshape(conv.weight.shape).to(conv.weight.dtype))

        return refit


def reconstruct_layers(
    dense: nn.Module,
    pruned: nn.Module,
    removal: dict[tuple[str, str], list[int]],
    images: torch.Tensor,
    rows: int = ROWS,
    damping: float = DAMPING,
    seed: int = 0,
) -> Reconstruction:
    """Refit, in place, every ``Conv2d`` of ``pruned`` that lost input channels, to the outputs of ``dense``.

    Args:
        dense (nn.Module): The network before the removal (unchanged).
        pruned (nn.Module): The same network with ``removal`` applied (same module names).
        removal (dict): ``(module name, "out" | "in")`` -> removed indices, as planned
            (:class:`ultra_sparse.prune.channel.ChannelPlan`'s ``remove``).
        images (torch.Tensor): Calibration images, ``(N, C, H, W)`` in [0, 1], on the networks' device; run as one
            batch.
        rows (int): Output positions sampled per layer.
        damping (float): Ridge towards the original weights, relative to the mean diagonal of ``A^T A``; 0 is plain
            least squares.
        seed (int): Seed of the sampled positions.

    Returns:
        (Reconstruction): Layers refitted and their relative output errors before and after.

    Examples:
        >>> import copy
        >>> from ultra_sparse.prune.channel import remove_channels
        >>> dense = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
        >>> removal = {("0", "out"): [3], ("2", "in"): [3]}
        >>> pruned = remove_channels(copy.deepcopy(dense), removal)
        >>> reconstruct_layers(dense, pruned, removal, torch.rand(2, 3, 8, 8)).layers
        1
    """
    modules = dict(pruned.named_modules())
    names = _refitted(modules, removal)
    dense_modules = dict(dense.named_modules())
    targets = _Targets(removal, rows, seed)
    refit = _Refit(targets, damping)
    modes = dense.training, pruned.training
    hooks = [dense_modules[n].register_forward_hook(targets.hook(n)) for n in names]
    try:
        dense.eval()
        pruned.eval()
        with torch.no_grad():
            dense(images)
            for h in hooks:
                h.remove()
            hooks = [modules[n].register_forward_pre_hook(refit.hook(n)) for n in names]
            pruned(images)
    finally:
        for h in hooks:
            h.remove()
        dense.train(modes[0])
        pruned.train(modes[1])
    before = [b for b, _ in refit.errors]
    after = [a for _, a in refit.errors]
    return Reconstruction(
        len(refit.errors), len(images), rows, damping,
        sum(before) / max(1, len(before)), sum(after) / max(1, len(after)),
    )


def reconstruct_masked(net: nn.Module, removal: dict[tuple[str, str], list[int]], images: torch.Tensor) -> Reconstruction:
    """Refit, in place, the layers of a full-width ``net`` that lose inputs to ``removal``, before masks zero them.

    Channel pruning while training zeroes channels with masks instead of removing them. ``net`` is the network as it
    stands before the masks of ``removal`` are applied; it is both the reference and the network refitted. The fit
    is made on a copy with the channels removed (:func:`reconstruct_layers`, each layer to ``net``'s own output) and
    written to the kept rows and columns of ``net``'s layers; once the masks zero the rest, ``net`` computes what the
    refitted smaller network computes.

    Args:
        net (nn.Module): The full-width network (its removed channels not yet zeroed).
        removal (dict): ``(module name, "out" | "in")`` -> channel indices, from plans of ``net``.
        images (torch.Tensor): Calibration images, ``(N, C, H, W)`` in [0, 1], on ``net``'s device. The fit samples
            ``ROWS`` positions per layer with ridge ``DAMPING``, as :func:`reconstruct_layers` does by default.

    Returns:
        (Reconstruction): Layers refitted and their relative output errors before and after.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
        >>> reconstruct_masked(net, {("0", "out"): [3], ("2", "in"): [3]}, torch.rand(2, 3, 8, 8)).layers
        1
    """
    from .channel import remove_channels

    pruned = remove_channels(copy.deepcopy(net), removal)
    done = reconstruct_layers(net, pruned, removal, images)
    refitted = dict(pruned.named_modules())
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name in _refitted(modules, removal):
            conv, small = modules[name], refitted[name]
            out = _kept(conv.out_channels, removal.get((name, "out"), ()), conv.weight.device)
            inputs = _kept(conv.in_channels, removal.get((name, "in"), ()), conv.weight.device)
            conv.weight[out[:, None], inputs] = small.weight
            if conv.bias is not None:
                conv.bias[out] = small.bias
    return done


def _refitted(modules: dict[str, nn.Module], removal: dict[tuple[str, str], list[int]]) -> list[str]:
    """The layers a reconstruction refits: plain (not grouped) convolutions that lose input channels."""
    return [
        name for (name, kind) in removal
        if kind == "in" and isinstance(modules.get(name), nn.Conv2d) and modules[name].groups == 1
    ]


def _kept(count: int, removed: Iterable[int], device: torch.device) -> torch.Tensor:
    """Indices of ``range(count)`` not in ``removed``."""
    keep = torch.ones(count, dtype=torch.bool)
    keep[list(removed)] = False
    return keep.nonzero().flatten().to(device)
