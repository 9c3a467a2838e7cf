"""Split blocks in the tracing copy of channel pruning: ``cv1``'s output cut in equal parts becomes one conv per part.

Ultralytics blocks that chunk ``cv1``'s output in two halves (C2f and its kin C3k2/C2fCIB/C2fPSA/DSC3k2/TokenC3, C2,
RepNCSPELAN4/ELAN1, C2PSA, PSA), and HyperACE, which chunks it in three parts, are mapped wrongly by Torch-Pruning
1.6.1 (C2f sends both halves into one concat). In the copy each becomes a TWIN: ``cv1`` is replaced by one
convolution per part (``cv1a``, ``cv1b``, ``cv1c``) and the forward uses them as the block uses its chunks, with no
chunk. Everything inside (bottlenecks, residual adds, RepConv branches) is traced as it is; the parts map back onto
``cv1``'s channels (``cv1b`` channel j is ``cv1`` channel c + j). The parts lose the same number of channels, so the
stock ``forward`` (chunk) and ``forward_split`` both still work after pruning.

Examples:
    >>> from ultralytics.nn.modules import C2f
    >>> twin_pieces(C2f(8, 8))
    2
"""

from __future__ import annotations

import copy
import types

import torch
import torch.nn as nn

__all__ = ["TWIN_CLASSES", "make_twin", "twin_pieces", "twin_ready"]

# blocks whose forward chunks/splits cv1's output in equal parts: class -> number of parts
TWIN_CLASSES = {"C2f": 2, "C2": 2, "RepNCSPELAN4": 2, "C2PSA": 2, "PSA": 2, "HyperACE": 3}
_PART_NAMES = "abc"


def _kind(block: nn.Module) -> str | None:
    """The twin class ``block`` is (by class or base-class name), or None."""
    names = {c.__name__ for c in type(block).__mro__}
    return next((k for k in TWIN_CLASSES if k in names), None)


def twin_pieces(block: nn.Module) -> int:
    """Parts ``cv1``'s output is cut in by ``block``'s forward (0 for a block that is not a split block)."""
    kind = _kind(block)
    return TWIN_CLASSES[kind] if kind else 0


def twin_ready(block: nn.Module) -> bool:
    """True if the block's ``cv1`` is an ungrouped Ultralytics Conv (conv, optional bn) cut in equal parts."""
    conv = getattr(getattr(block, "cv1", None), "conv", None)
    pieces = twin_pieces(block)
    return bool(pieces) and isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.out_channels % pieces == 0


def _part(cv1: nn.Module, lo: int, hi: int) -> nn.Module:
    """A copy of the Conv ``cv1`` that computes only its output channels ``lo:hi``."""
    part = copy.deepcopy(cv1)
    conv = part.conv
    conv.weight = nn.Parameter(conv.weight.detach()[lo:hi].clone())
    conv.out_channels = hi - lo
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[lo:hi].clone())
    bn = getattr(part, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        bn.num_features = hi - lo
        for key in ("weight", "bias"):
            if getattr(bn, key) is not None:
                setattr(bn, key, nn.Parameter(getattr(bn, key).detach()[lo:hi].clone()))
        for key in ("running_mean", "running_var"):
            if getattr(bn, key) is not None:
                setattr(bn, key, getattr(bn, key)[lo:hi].clone())
    return part


def make_twin(block: nn.Module, name: str, aliases: dict[str, tuple[str, int, str]]) -> None:
    """Give a split block one convolution per part of ``cv1`` and a forward that uses them as the block does.

    Args:
        block (nn.Module): The block, in the tracing copy (changed in place).
        name (str): Its name in the network.
        aliases (dict): Filled with part layer name -> (real ``cv1`` layer name, channel offset, ``"<name>:<part>"``).
    """
    pieces = twin_pieces(block)
    c = block.cv1.conv.out_channels // pieces
    for i in range(pieces):
        part = f"cv1{_PART_NAMES[i]}"
        block.add_module(part, _part(block.cv1, i * c, (i + 1) * c))
        for layer in ("conv", "bn"):
            aliases[f"{name}.{part}.{layer}"] = (f"{name}.cv1.{layer}", i * c, f"{name}:{i}")
    block.forward = types.MethodType(_TWIN_FORWARDS[_kind(block)], block)


def _c2f_twin(self, x):
    """C2f: both halves, then every inner block's output, concatenated."""
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2_twin(self, x):
    """C2: the inner blocks on the first half, concatenated with the second."""
    return self.cv2(torch.cat((self.m(self.cv1a(x)), self.cv1b(x)), 1))


def _elan_twin(self, x):
    """RepNCSPELAN4/ELAN1: both halves, cv2 on the second, cv3 on cv2's output, concatenated."""
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
    return self.cv4(torch.cat(y, 1))


def _c2psa_twin(self, x):
    """C2PSA: the PSA blocks on the second half, concatenated with the first."""
    return self.cv2(torch.cat((self.cv1a(x), self.m(self.cv1b(x))), 1))


def _psa_twin(self, x):
    """PSA: attention and FFN residuals on the second half, concatenated with the first."""
    b = self.cv1b(x)
    b = b + self.attn(b)
    b = b + self.ffn(b)
    return self.cv2(torch.cat((self.cv1a(x), b), 1))


def _hyperace_twin(self, xs):
    """HyperACE: the fused inputs cut in three (high-order, low-order, skip); the low-order chain's outputs too."""
    x = self.fuse(xs)
    y = [self.hyper(self.cv1a(x)), self.cv1c(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


_TWIN_FORWARDS = {
    "C2f": _c2f_twin, "C2": _c2_twin, "RepNCSPELAN4": _elan_twin, "C2PSA": _c2psa_twin, "PSA": _psa_twin,
    "HyperACE": _hyperace_twin,
}
