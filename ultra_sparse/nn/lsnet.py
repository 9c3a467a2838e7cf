"""LSNet's "see large, focus small" token mixer (LKP, SKA, LSConv) and an LSNet block (LSBlock).

LSConv perceives a large neighbourhood cheaply (large-kernel depthwise convolution in LKP) and uses what it sees
to predict, for every pixel, small dynamic kernels that SKA then applies to a small neighbourhood of the input.
Channels are split into `groups` groups; all channels of a group share one predicted k x k kernel per pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from ._validate import check_int, check_ratio

__all__ = ["LKP", "LSBlock", "LSConv", "SKA"]


def _check_kernel(name: str, value) -> int:
    """Return an odd positive kernel size or raise TypeError/ValueError."""
    check_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name} must be odd so the kernel is centred, got {value}")
    return value


class LKP(nn.Module):
    """Large-kernel perception: predicts per-pixel small kernels from a large receptive field.

    1 x 1 reduce to c/2 -> lks x lks depthwise -> 1 x 1 -> 1 x 1 to `groups * sks * sks` kernel weights, normalised
    per group. Output shape: (B, groups, sks * sks, H, W).

    Attributes:
        cv1 (Conv): 1 x 1 reduction, c -> c/2, with activation.
        cv2 (Conv): lks x lks depthwise convolution, no activation.
        cv3 (Conv): 1 x 1 mixing, with activation.
        cv4 (nn.Conv2d): 1 x 1 projection to the kernel weights.
        norm (nn.GroupNorm): Normalises each group's kernel weights.

    Examples:
        >>> lkp = LKP(16, lks=7, sks=3, groups=4)
        >>> lkp(torch.randn(2, 16, 9, 11)).shape
        torch.Size([2, 4, 9, 9, 11])
    """

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8):
        """Initialize the perception convolutions.

        Args:
            c (int): Input channels (at least 2).
            lks (int): Large depthwise kernel size (odd).
            sks (int): Small dynamic kernel size (odd).
            groups (int): Number of kernel-sharing channel groups; must divide `c`.
        """
        super().__init__()
        check_int("c", c, 2)
        _check_kernel("lks", lks)
        _check_kernel("sks", sks)
        check_int("groups", groups)
        if c % groups:
            raise ValueError(f"groups={groups} must divide the channel count c={c}")
        c_ = c // 2
        self.sks, self.groups = sks, groups
        self.cv1 = Conv(c, c_, 1)
        self.cv2 = Conv(c_, c_, lks, g=c_, act=False)
        self.cv3 = Conv(c_, c_, 1)
        self.cv4 = nn.Conv2d(c_, groups * sks * sks, 1)
        self.norm = nn.GroupNorm(groups, groups * sks * sks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return per-pixel kernels of shape (B, groups, sks * sks, H, W)."""
        w = self.norm(self.cv4(self.cv3(self.cv2(self.cv1(x)))))
        return w.view(x.shape[0], self.groups, self.sks * self.sks, *x.shape[2:])


class SKA(nn.Module):
    """Small-kernel aggregation: applies per-pixel dynamic k x k kernels, one kernel per channel group.

    out[b, c, y, x] = sum_{i, j} w[b, g(c), i * k + j, y, x] * in[b, c, y + i - k//2, x + j - k//2], zero padded,
    where channel c belongs to group g(c) = c // (C / groups). Implemented as a sum of k*k shifted products, so it
    needs no custom kernel, runs on any device and any H x W, and keeps memory at a few input-sized tensors.
    Has no parameters.

    Examples:
        >>> x, w = torch.randn(2, 16, 9, 11), torch.randn(2, 4, 9, 9, 11)
        >>> SKA()(x, w).shape
        torch.Size([2, 16, 9, 11])
    """

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Aggregate the k x k neighbourhood of every pixel of `x` with the kernels `w`.

        Args:
            x (torch.Tensor): Input of shape (B, C, H, W).
            w (torch.Tensor): Kernels of shape (B, G, k * k, H, W); G must divide C and k must be odd.

        Returns:
            (torch.Tensor): Output of shape (B, C, H, W).
        """
        b, c, h, wd = x.shape
        g, kk = w.shape[1], w.shape[2]
        k = math.isqrt(int(kk))  # int(): under ONNX tracing a shape entry is a tensor
        if k * k != kk or k % 2 == 0 or c % g or w.shape[0] != b or tuple(w.shape[3:]) != (h, wd):
            raise ValueError(f"kernel shape {tuple(w.shape)} does not fit input shape {tuple(x.shape)}")
        r = k // 2
        xp = F.pad(x, (r, r, r, r)).view(b, g, c // g, h + 2 * r, wd + 2 * r)
        w = w.unsqueeze(2)  # (B, G, 1, k*k, H, W): one kernel shared by the channels of a group
        out = x.new_zeros(b, g, c // g, h, wd)
        for i in range(k):
            for j in range(k):
                out = out + xp[..., i : i + h, j : j + wd] * w[:, :, :, i * k + j]
        return out.view(b, c, h, wd)


class LSConv(nn.Module):
    """LSNet's "see large, focus small" convolution: x + BN(SKA(x, LKP(x))).

    Attributes:
        lkp (LKP): Predicts per-pixel small kernels from a large receptive field.
        ska (SKA): Applies them to the input.
        bn (nn.BatchNorm2d): Normalises the aggregated features before the residual sum.

    Examples:
        >>> m = LSConv(16, groups=4)
        >>> m(torch.randn(2, 16, 9, 11)).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8):
        """Initialize LKP, SKA and the batch norm.

        Args:
            c (int): Input and output channels.
            lks (int): Large perception kernel size (odd).
            sks (int): Small aggregation kernel size (odd).
            groups (int): Number of kernel-sharing channel groups; must divide `c`.
        """
        super().__init__()
        self.lkp = LKP(c, lks, sks, groups)
        self.ska = SKA()
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix tokens with dynamic small kernels and add the input."""
        return x + self.bn(self.ska(x, self.lkp(x)))


class LSBlock(nn.Module):
    """An LSNet block: depthwise 3 x 3 local mixing, LSConv token mixing, pointwise FFN, each with a residual.

    The FFN's pointwise convolutions (`cv1`, `cv2`) and the depthwise convolution (`dw`) lie outside LSConv, so a
    model with LSBlocks has LSNet weights that are not LSConv weights.

    Attributes:
        dw (Conv): 3 x 3 depthwise convolution with batch norm, no activation.
        mixer (LSConv): Token mixer.
        cv1 (Conv): FFN expansion, c -> e * c, with activation.
        cv2 (Conv): FFN projection, e * c -> c, no activation.

    Examples:
        >>> m = LSBlock(16, groups=4)
        >>> m(torch.randn(2, 16, 9, 11)).shape
        torch.Size([2, 16, 9, 11])
    """

    def __init__(self, c: int, lks: int = 7, sks: int = 3, groups: int = 8, e: float = 2.0):
        """Initialize the block.

        Args:
            c (int): Input and output channels.
            lks (int): LSConv large perception kernel size (odd).
            sks (int): LSConv small aggregation kernel size (odd).
            groups (int): LSConv kernel-sharing groups; must divide `c`.
            e (float): FFN hidden channels as a multiple of `c`.
        """
        super().__init__()
        c_ = max(int(c * check_ratio("e", e)), 1)
        self.dw = Conv(c, c, 3, g=c, act=False)
        self.mixer = LSConv(c, lks, sks, groups)
        self.cv1 = Conv(c, c_, 1)
        self.cv2 = Conv(c_, c, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply local mixing, token mixing and the FFN, each as a residual branch."""
        x = self.mixer(x + self.dw(x))
        return x + self.cv2(self.cv1(x))
