"""HyperACE: hypergraph-based adaptive correlation enhancement, as described in the YOLOv13 paper.

Pixels of a feature map are the vertices of a hypergraph. AdaHyperedgeGen learns M hyperedge prototypes, shifts
them by a context vector pooled from the whole map, and scores every vertex against every prototype to give a soft
participation matrix A (B, N, M), each row a distribution over hyperedges. AdaHGConv passes messages
vertex -> hyperedge (a participation-weighted mean of the vertices) and hyperedge -> vertex (each vertex mixes the
hyperedges it takes part in), with a residual. HyperACE fuses three backbone scales into the middle one and runs a
high-order hypergraph branch (C3AH) next to a low-order depthwise-separable branch and a shortcut.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.nn.modules import Conv

from ._validate import check_choice, check_int, check_ratio
from .dsc import DSBottleneck, DSC3k

__all__ = ["C3AH", "AdaHGComputation", "AdaHGConv", "AdaHyperedgeGen", "FuseModule", "HyperACE"]

CONTEXTS = ("mean", "max", "both")


class AdaHyperedgeGen(nn.Module):
    """Adaptive hyperedge generation: soft vertex-to-hyperedge participation from context-shifted prototypes.

    prototypes = base (M, D) + context_net(pool(X)) viewed as (M, D); A = softmax over hyperedges of the head-averaged
    scaled dot products between projected vertices and prototypes.

    Attributes:
        prototypes (nn.Parameter): Static hyperedge prototypes, shape (M, D).
        context_net (nn.Linear): Maps the pooled context (D or 2D) to per-sample prototype offsets (M * D).
        proj (nn.Linear): Projects vertices into the prototype space.

    Examples:
        >>> gen = AdaHyperedgeGen(32, num_hyperedges=8, num_heads=4)
        >>> a = gen(torch.randn(2, 99, 32))
        >>> a.shape, bool(torch.allclose(a.sum(-1), torch.ones(2, 99)))
        (torch.Size([2, 99, 8]), True)
    """

    def __init__(self, dim: int, num_hyperedges: int = 8, num_heads: int = 4, context: str = "both"):
        """Initialize prototypes and projections.

        Args:
            dim (int): Vertex feature size D.
            num_hyperedges (int): Number of hyperedges M.
            num_heads (int): Similarity heads; must divide `dim`.
            context (str): Global context pooling: 'mean', 'max' or 'both' (concatenated).
        """
        super().__init__()
        check_int("dim", dim)
        check_int("num_hyperedges", num_hyperedges)
        check_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.context = check_choice("context", context, CONTEXTS)
        self.num_hyperedges, self.num_heads = num_hyperedges, num_heads
        self.prototypes = nn.Parameter(torch.empty(num_hyperedges, dim))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        self.context_net = nn.Linear(dim * (2 if context == "both" else 1), num_hyperedges * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the participation matrix (B, N, M) of vertices `x` (B, N, D); rows sum to 1."""
        b, n, d = x.shape
        if self.context == "mean":
            ctx = x.mean(1)
        elif self.context == "max":
            ctx = x.amax(1)
        else:
            ctx = torch.cat((x.mean(1), x.amax(1)), -1)
        protos = self.prototypes + self.context_net(ctx).view(b, self.num_hyperedges, d)
        h, dh = self.num_heads, d // self.num_heads
        q = self.proj(x).view(b, n, h, dh)
        logits = torch.einsum("bnhd,bmhd->bnm", q, protos.view(b, self.num_hyperedges, h, dh)) / (h * dh**0.5)
        return logits.softmax(-1)


class AdaHGConv(nn.Module):
    """Adaptive hypergraph convolution: vertex -> hyperedge -> vertex message passing with a residual.

    E = edge_proj(D_e^-1 A^T X) (hyperedge features, D_e the hyperedge degrees), X' = X + node_proj(A E).

    Attributes:
        edge_generator (AdaHyperedgeGen): Builds the participation matrix A.
        edge_proj (nn.Sequential): Linear + GELU on hyperedge features.
        node_proj (nn.Sequential): Linear + GELU on the vertex update.

    Examples:
        >>> m = AdaHGConv(32, num_hyperedges=8, num_heads=4)
        >>> m(torch.randn(2, 99, 32)).shape
        torch.Size([2, 99, 32])
    """

    def __init__(self, dim: int, num_hyperedges: int = 8, num_heads: int = 4, context: str = "both"):
        """Initialize the hyperedge generator and projections.

        Args:
            dim (int): Vertex feature size.
            num_hyperedges (int): Number of hyperedges.
            num_heads (int): Similarity heads of the hyperedge generator; must divide `dim`.
            context (str): Context pooling of the hyperedge generator: 'mean', 'max' or 'both'.
        """
        super().__init__()
        self.edge_generator = AdaHyperedgeGen(dim, num_hyperedges, num_heads, context)
        self.edge_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.node_proj = nn.Sequential(nn.Linear(dim, dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update vertex features `x` (B, N, D) through the hypergraph."""
        a = self.edge_generator(x)  # (B, N, M)
        degree = a.sum(1).clamp_min(torch.finfo(a.dtype).tiny).unsqueeze(-1)  # (B, M, 1)
        edges = self.edge_proj(a.transpose(1, 2) @ x / degree)  # (B, M, D)
        return x + self.node_proj(a @ edges)


class AdaHGComputation(nn.Module):
    """Runs AdaHGConv on a feature map, treating each pixel as a vertex.

    Attributes:
        hgnn (AdaHGConv): The hypergraph convolution.

    Examples:
        >>> m = AdaHGComputation(32, num_hyperedges=8, num_heads=4)
        >>> m(torch.randn(2, 32, 9, 11)).shape
        torch.Size([2, 32, 9, 11])
    """

    def __init__(self, dim: int, num_hyperedges: int = 8, num_heads: int = 4, context: str = "both"):
        """Initialize the hypergraph convolution.

        Args:
            dim (int): Channels of the feature map.
            num_hyperedges (int): Number of hyperedges.
            num_heads (int): Similarity heads; must divide `dim`.
            context (str): Context pooling: 'mean', 'max' or 'both'.
        """
        super().__init__()
        self.hgnn = AdaHGConv(dim, num_hyperedges, num_heads, context)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Flatten (B, C, H, W) to vertices (B, HW, C), convolve, and restore the map."""
        b, c, h, w = x.shape
        y = self.hgnn(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, c, h, w)


class C3AH(nn.Module):
    """CSP block around adaptive hypergraph computation: cv3(cat(m(cv1(x)), cv2(x))).

    Attributes:
        cv1 (Conv): 1 x 1, c1 -> hidden, feeds the hypergraph.
        cv2 (Conv): 1 x 1, c1 -> hidden, the cross-stage shortcut.
        m (AdaHGComputation): Hypergraph computation on the hidden features.
        cv3 (Conv): 1 x 1 fusion, 2 * hidden -> c2.

    Examples:
        >>> m = C3AH(24, 32, num_heads=4)
        >>> m(torch.randn(2, 24, 9, 11)).shape
        torch.Size([2, 32, 9, 11])
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        e: float = 1.0,
        num_hyperedges: int = 8,
        num_heads: int = 4,
        context: str = "both",
    ):
        """Initialize the CSP convolutions and the hypergraph computation.

        Args:
            c1 (int): Input channels.
            c2 (int): Output channels.
            e (float): Hidden channels as a fraction of c2.
            num_hyperedges (int): Number of hyperedges.
            num_heads (int): Similarity heads; must divide the hidden channels.
            context (str): Context pooling: 'mean', 'max' or 'both'.
        """
        super().__init__()
        check_int("c1", c1)
        check_int("c2", c2)
        c_ = max(int(c2 * check_ratio("e", e)), 1)
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c1, c_, 1)
        self.m = AdaHGComputation(c_, num_hyperedges, num_heads, context)
        self.cv3 = Conv(2 * c_, c2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the hypergraph branch next to the shortcut and fuse them."""
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class FuseModule(nn.Module):
    """Fuses several feature maps at the size of the middle one: resize, concatenate, 1 x 1 convolution.

    Larger maps are average-pooled and smaller maps nearest-upsampled to the exact size of the middle input
    (`len(c1) // 2`), so any input sizes work, including odd ones.

    Attributes:
        cv (Conv): 1 x 1 fusion, sum(c1) -> c2.

    Examples:
        >>> m = FuseModule([8, 16, 32], 24)
        >>> xs = [torch.randn(1, 8, 18, 22), torch.randn(1, 16, 9, 11), torch.randn(1, 32, 5, 6)]
        >>> m(xs).shape
        torch.Size([1, 24, 9, 11])
    """

    def __init__(self, c1: list[int], c2: int):
        """Initialize the fusion convolution.

        Args:
            c1 (list[int]): Channels of each input map.
            c2 (int): Output channels.
        """
        super().__init__()
        if not isinstance(c1, (list, tuple)) or not c1:
            raise TypeError(f"c1 must be a non-empty list of input channel counts, got {c1!r}")
        for i, c in enumerate(c1):
            check_int(f"c1[{i}]", c)
        self.cv = Conv(sum(c1), check_int("c2", c2), 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Resize every map to the middle map's size, concatenate and fuse."""
        size = xs[len(xs) // 2].shape[2:]
        resized = [
            x
            if x.shape[2:] == size
            else F.adaptive_avg_pool2d(x, size)
            if x.shape[2] >= size[0]
            else F.interpolate(x, size=size, mode="nearest")
            for x in xs
        ]
        return self.cv(torch.cat(resized, 1))


class HyperACE(nn.Module):
    """Hypergraph-based adaptive correlation enhancement over multi-scale features (YOLOv13's HyperACE).

    The inputs (e.g. P3, P4, P5) are fused at the middle scale (FuseModule) to c2 channels; `cv1` projects them to
    three hidden parts of h = e1 * c2 channels: one goes through the high-order hypergraph branch (`hyper`, a C3AH),
    one through `n` chained low-order depthwise-separable blocks (`m`), one passes through. The parts and every
    low-order block output ((3 + n) * h channels) are fused by `cv2` to c2 channels at the middle scale.

    Attributes:
        fuse (FuseModule): Multi-scale fusion.
        cv1 (Conv): 1 x 1, c2 -> 3 * h.
        hyper (C3AH): High-order correlation branch.
        m (nn.ModuleList): Low-order branch, DSC3k or DSBottleneck blocks.
        cv2 (Conv): 1 x 1 fusion, (3 + n) * h -> c2.

    Examples:
        >>> m = HyperACE([16, 32, 64], 32, n=1, num_hyperedges=4, num_heads=2)
        >>> xs = [torch.randn(1, 16, 18, 22), torch.randn(1, 32, 9, 11), torch.randn(1, 64, 5, 6)]
        >>> m(xs).shape
        torch.Size([1, 32, 9, 11])
    """

    def __init__(
        self,
        c1: list[int],
        c2: int,
        n: int = 1,
        num_hyperedges: int = 8,
        dsc3k: bool = True,
        shortcut: bool = False,
        e1: float = 0.5,
        e2: float = 1.0,
        context: str = "both",
        num_heads: int = 4,
    ):
        """Initialize the fusion, branches and output convolution.

        Args:
            c1 (list[int]): Channels of each input map (the middle one sets the output size).
            c2 (int): Output channels.
            n (int): Number of low-order blocks.
            num_hyperedges (int): Number of hyperedges of the high-order branch.
            dsc3k (bool): Low-order blocks are DSC3k (True) or single DSBottlenecks (False).
            shortcut (bool): Residuals inside the low-order blocks.
            e1 (float): Hidden channels h of each part as a fraction of c2.
            e2 (float): Hidden channels of the C3AH as a fraction of h.
            context (str): Context pooling of the hyperedge generator: 'mean', 'max' or 'both'.
            num_heads (int): Similarity heads of the hyperedge generator; must divide the C3AH hidden channels.
        """
        super().__init__()
        check_int("n", n)
        c_ = max(int(check_int("c2", c2) * check_ratio("e1", e1)), 1)
        self.c = c_
        self.fuse = FuseModule(c1, c2)
        self.cv1 = Conv(c2, 3 * c_, 1)
        self.hyper = C3AH(c_, c_, e2, num_hyperedges, num_heads, context)
        self.m = nn.ModuleList(
            DSC3k(c_, c_, 2, shortcut, k1=3, k2=7) if dsc3k else DSBottleneck(c_, c_, shortcut) for _ in range(n)
        )
        self.cv2 = Conv((3 + n) * c_, c2, 1)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Fuse the input maps and enhance them with high- and low-order correlations."""
        high, low, skip = self.cv1(self.fuse(xs)).chunk(3, 1)
        y = [self.hyper(high), skip, low]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))
