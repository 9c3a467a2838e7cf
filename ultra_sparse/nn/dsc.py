"""Depthwise-separable convolution blocks of the YOLOv13 family (DSConv, DSBottleneck, DSC3k, DSC3k2).

Depthwise-separable convolutions split a dense k x k convolution into a per-channel (depthwise) k x k convolution
and a 1 x 1 (pointwise) convolution, which cuts parameters and FLOPs by roughly a factor of k*k for wide layers.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import C2f, C3, Conv
from ultralytics.nn.modules.conv import autopad

from ._validate import check_int, check_ratio

__all__ = ["DSBottleneck", "DSC3k", "DSC3k2", "DSConv"]


class DSConv(nn.Module):
    """Depthwise-separable convolution: depthwise k x k, pointwise 1 x 1, batch norm, activation.

    Attributes:
        dw (nn.Conv2d): Depthwise k x k convolution (one filter per input channel, carries stride and dilation).
        pw (nn.Conv2d): Pointwise 1 x 1 convolution mapping c1 to c2 channels.
        bn (nn.BatchNorm2d): Batch norm over the c2 output channels.
        act (nn.Module): Activation, Ultralytics' `Conv.default_act` unless told otherwise.

    Examples:
        >>> m = DSConv(16, 32, k=3, s=2)
        >>> m(torch.randn(1, 16, 9, 11)).shape
        torch.Size([1, 32, 5, 6])
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, d: int = 1, act=True):
        """Initialize the depthwise and pointwise convolutions.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            k (int): Depthwise kernel size.
            s (int): Depthwise stride.
            p (int, optional): Depthwise padding; 'same'-style padding when None.
            d (int): Depthwise dilation.
            act (bool | nn.Module): True for the default activation, a module to use it, False for none.
        """
        super().__init__()
        for name, value in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("d", d)):
            check_int(name, value)
        self.dw = nn.Conv2d(c1, c1, k, s, autopad(k, p, d), dilation=d, groups=c1, bias=False)
        self.pw = nn.Conv2d(c1, c2, 1, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = Conv.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply depthwise conv, pointwise conv, batch norm and activation."""
        return self.act(self.bn(self.pw(self.dw(x))))


class DSBottleneck(nn.Module):
    """Bottleneck of two DSConv layers (small then large kernel) with an optional residual connection.

    Attributes:
        cv1 (DSConv): First DSConv, c1 -> hidden channels, kernel `k1`.
        cv2 (DSConv): Second DSConv, hidden -> c2 channels, kernel `k2`, dilation `d2`.
        add (bool): Whether the input is added to the output (only when shortcut and c1 == c2).

    Examples:
        >>> m = DSBottleneck(16, 16)
        >>> m(torch.randn(2, 16, 9, 11)).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(
        self, c1: int, c2: int, shortcut: bool = True, e: float = 0.5, k1: int = 3, k2: int = 5, d2: int = 1
    ):
        """Initialize the two DSConv layers.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            shortcut (bool): Add the input to the output when c1 == c2.
            e (float): Hidden channels as a fraction of c2.
            k1 (int): Kernel size of the first DSConv.
            k2 (int): Kernel size of the second DSConv.
            d2 (int): Dilation of the second DSConv.
        """
        super().__init__()
        c_ = max(int(c2 * check_ratio("e", e)), 1)
        self.cv1 = DSConv(c1, c_, k1)
        self.cv2 = DSConv(c_, c2, k2, d=d2)
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply both DSConv layers and the optional residual."""
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class DSC3k(C3):
    """C3 CSP block whose inner blocks are DSBottlenecks (Ultralytics' C3 with `m` replaced).

    Examples:
        >>> m = DSC3k(16, 24, n=2)
        >>> m(torch.randn(1, 16, 9, 11)).shape
        torch.Size([1, 24, 9, 11])
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        k1: int = 3,
        k2: int = 5,
        d2: int = 1,
    ):
        """Initialize the CSP convolutions and `n` DSBottlenecks.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            n (int): Number of DSBottlenecks.
            shortcut (bool): Residual connections inside the bottlenecks.
            g (int): Groups of the CSP convolutions' bottlenecks (kept for C3 signature compatibility).
            e (float): Hidden channels as a fraction of c2.
            k1 (int): First kernel size of each DSBottleneck.
            k2 (int): Second kernel size of each DSBottleneck.
            d2 (int): Dilation of each DSBottleneck's second DSConv.
        """
        for name, value in (("c1", c1), ("c2", c2), ("n", n)):
            check_int(name, value)
        super().__init__(c1, c2, n, shortcut, g, check_ratio("e", e))
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(DSBottleneck(c_, c_, shortcut, 1.0, k1, k2, d2) for _ in range(n)))


class DSC3k2(C2f):
    """C3k2-style CSP block with depthwise-separable inner blocks (Ultralytics' C2f with `m` replaced).

    Each of the `n` inner blocks is a DSC3k (two DSBottlenecks) when `dsc3k` is True, else one DSBottleneck.

    Examples:
        >>> m = DSC3k2(16, 32, n=1, dsc3k=True)
        >>> m(torch.randn(1, 16, 9, 11)).shape
        torch.Size([1, 32, 9, 11])
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        dsc3k: bool = False,
        e: float = 0.5,
        g: int = 1,
        shortcut: bool = True,
        k1: int = 3,
        k2: int = 7,
        d2: int = 1,
    ):
        """Initialize the CSP convolutions and `n` inner blocks.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            n (int): Number of inner blocks.
            dsc3k (bool): Use DSC3k inner blocks instead of single DSBottlenecks.
            e (float): Hidden channels as a fraction of c2.
            g (int): Groups (kept for C2f signature compatibility).
            shortcut (bool): Residual connections inside the inner blocks.
            k1 (int): First kernel size of each DSBottleneck.
            k2 (int): Second kernel size of each DSBottleneck.
            d2 (int): Dilation of each DSBottleneck's second DSConv.
        """
        for name, value in (("c1", c1), ("c2", c2), ("n", n)):
            check_int(name, value)
        super().__init__(c1, c2, n, shortcut, g, check_ratio("e", e))
        self.m = nn.ModuleList(
            DSC3k(self.c, self.c, 2, shortcut, g, 0.5, k1, k2, d2)
            if dsc3k
            else DSBottleneck(self.c, self.c, shortcut, 0.5, k1, k2, d2)
            for _ in range(n)
        )
