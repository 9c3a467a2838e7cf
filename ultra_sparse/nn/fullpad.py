"""YOLOv13's full-pipeline aggregation-and-distribution parts: FullPAD_Tunnel and DownsampleConv."""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules import Conv

from ._validate import check_int

__all__ = ["DownsampleConv", "FullPAD_Tunnel"]


class FullPAD_Tunnel(nn.Module):  # noqa: N801 - the name the YOLOv13 paper and the sparsity rules use
    """Gated residual tunnel: out = x0 + gate * x1, with a learnable scalar gate that starts at 0.

    Distributes enhanced features (x1) into a pipeline stage (x0). With the gate at 0 the tunnel returns x0
    exactly, so a fresh model starts as if the tunnel were absent. Takes a list of two maps of equal shape.

    Attributes:
        gate (nn.Parameter): Scalar gate, initialised to 0.

    Examples:
        >>> m = FullPAD_Tunnel()
        >>> x0, x1 = torch.randn(1, 8, 9, 11), torch.randn(1, 8, 9, 11)
        >>> torch.equal(m([x0, x1]), x0)
        True
    """

    def __init__(self):
        """Initialize the gate at 0."""
        super().__init__()
        self.gate = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        """Return x[0] + gate * x[1]."""
        return x[0] + self.gate * x[1]


class DownsampleConv(nn.Module):
    """Halves the spatial size with 2 x 2 average pooling, then adapts channels with a 1 x 1 Conv.

    Pooling uses ceil mode, so an odd size n becomes (n + 1) // 2, like a stride-2 3 x 3 convolution.

    Attributes:
        pool (nn.AvgPool2d): 2 x 2 average pooling, stride 2.
        cv (Conv): 1 x 1 convolution, c1 -> c2.

    Examples:
        >>> m = DownsampleConv(16, 32)
        >>> m(torch.randn(1, 16, 9, 11)).shape
        torch.Size([1, 32, 5, 6])
    """

    def __init__(self, c1: int, c2: int):
        """Initialize pooling and the channel-adapting convolution.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
        """
        super().__init__()
        self.pool = nn.AvgPool2d(2, ceil_mode=True)
        self.cv = Conv(check_int("c1", c1), check_int("c2", c2), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Downsample by 2 and adapt channels."""
        return self.cv(self.pool(x))
