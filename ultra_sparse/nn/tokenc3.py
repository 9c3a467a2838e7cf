"""TokenC3: a CSP block whose inner blocks mix tokens with LSConv (this project's own design).

No public reference implementation of a "TokenC3" block exists, so this is ultra_sparse's own reading of the
name: Ultralytics' C2f cross-stage-partial layout (split, chain of inner blocks, concatenate every intermediate
output, fuse) with inner blocks that mix tokens spatially with LSConv and then channels with a pointwise FFN,
in the spirit of a metaformer block (token mixer + channel MLP, each residual).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from ultralytics.nn.modules import C2f, Conv

from ._validate import check_int, check_ratio
from .lsnet import LSConv

__all__ = ["TokenC3", "TokenC3Block"]


class TokenC3Block(nn.Module):
    """Inner block of TokenC3: LSConv token mixing (residual inside LSConv), then a residual pointwise FFN.

    Attributes:
        mixer (LSConv): Spatial token mixer.
        cv1 (Conv): FFN expansion, c -> e * c, with activation.
        cv2 (Conv): FFN projection, e * c -> c, no activation.

    Examples:
        >>> m = TokenC3Block(16, groups=4)
        >>> m(torch.randn(2, 16, 9, 11)).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8, e: float = 2.0):
        """Initialize the token mixer and FFN.

        Args:
            c (int): Input and output channels.
            lks (int): LSConv large perception kernel size (odd).
            sks (int): LSConv small aggregation kernel size (odd).
            groups (int): LSConv kernel-sharing groups; must divide `c`.
            e (float): FFN hidden channels as a multiple of `c`.
        """
        super().__init__()
        c_ = max(int(c * check_ratio("e", e)), 1)
        self.mixer = LSConv(c, lks, sks, groups)
        self.cv1 = Conv(c, c_, 1)
        self.cv2 = Conv(c_, c, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix tokens, then channels."""
        x = self.mixer(x)
        return x + self.cv2(self.cv1(x))


class TokenC3(C2f):
    """CSP block with LSConv token-mixing inner blocks (ultra_sparse's own design, see the module docstring).

    Layout (Ultralytics' C2f with `m` replaced): `cv1` (1 x 1, c1 -> 2h) is split in two halves of h = e * c2
    channels; `n` TokenC3Blocks run in a chain on the second half; both halves and every block output are
    concatenated ((2 + n) * h channels) and fused by `cv2` (1 x 1 -> c2). The LSConv groups are
    gcd(h, groups), so any hidden width works.

    Examples:
        >>> m = TokenC3(16, 32, n=2)
        >>> m(torch.randn(1, 16, 9, 11)).shape
        torch.Size([1, 32, 9, 11])
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        e: float = 0.5,
        lks: int = 7,
        sks: int = 3,
        groups: int = 8,
        ffn: float = 2.0,
    ):
        """Initialize the CSP convolutions and `n` TokenC3Blocks.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            n (int): Number of TokenC3Blocks.
            e (float): Hidden channels h as a fraction of c2 (h must be at least 2).
            lks (int): LSConv large perception kernel size (odd).
            sks (int): LSConv small aggregation kernel size (odd).
            groups (int): Upper bound on LSConv kernel-sharing groups (gcd with h is used).
            ffn (float): FFN hidden channels as a multiple of h.
        """
        for name, value in (("c1", c1), ("c2", c2), ("n", n), ("groups", groups)):
            check_int(name, value)
        super().__init__(c1, c2, n, False, 1, check_ratio("e", e))
        self.m = nn.ModuleList(TokenC3Block(self.c, lks, sks, math.gcd(self.c, groups), ffn) for _ in range(n))
