"""ultra_sparse.nn layers: shapes on odd sizes, gradients, documented parameter counts, argument checks."""

from __future__ import annotations

import io
import os
import tempfile

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultra_sparse_yolo_cfg_"))

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ultra_sparse.nn import (  # noqa: E402
    C3AH,
    LKP,
    SKA,
    AdaHGComputation,
    AdaHGConv,
    AdaHyperedgeGen,
    DownsampleConv,
    DSBottleneck,
    DSC3k,
    DSC3k2,
    DSConv,
    FullPAD_Tunnel,
    FuseModule,
    HyperACE,
    LSBlock,
    LSConv,
    TokenC3,
    TokenC3Block,
    register_layer,
)

B, H, W = 3, 72, 88  # odd channel counts below; H, W not multiples of 32 at the smaller scales
PYRAMID = [(B, 21, 36, 44), (B, 35, 18, 22), (B, 63, 9, 11)]  # P3, P4, P5-like, odd sizes at P5

CASES = [  # module factory, input shape(s), expected output shape
    pytest.param(lambda: DSConv(35, 21, k=3, s=2), (B, 35, H, W), (B, 21, 36, 44), id="DSConv"),
    pytest.param(lambda: DSConv(35, 21, k=5, d=2), (B, 35, H, W), (B, 21, H, W), id="DSConv-2"),
    pytest.param(lambda: DSBottleneck(35, 35), (B, 35, H, W), (B, 35, H, W), id="DSBottleneck"),
    pytest.param(lambda: DSC3k(35, 42, n=2), (B, 35, H, W), (B, 42, H, W), id="DSC3k"),
    pytest.param(lambda: DSC3k2(35, 42, n=2, dsc3k=True), (B, 35, H, W), (B, 42, H, W), id="DSC3k2"),
    pytest.param(lambda: DSC3k2(35, 42, n=1, dsc3k=False), (B, 35, H, W), (B, 42, H, W), id="DSC3k2-2"),
    pytest.param(lambda: LSConv(35, groups=5), (B, 35, H, W), (B, 35, H, W), id="LSConv"),
    pytest.param(lambda: LSConv(35, lks=5, sks=5, groups=7), (B, 35, 9, 11), (B, 35, 9, 11), id="LSConv-2"),
    pytest.param(lambda: LSBlock(35, groups=7), (B, 35, H, W), (B, 35, H, W), id="LSBlock"),
    pytest.param(lambda: TokenC3Block(35, groups=5), (B, 35, H, W), (B, 35, H, W), id="TokenC3Block"),
    pytest.param(lambda: TokenC3(35, 42, n=2), (B, 35, H, W), (B, 42, H, W), id="TokenC3"),
    pytest.param(lambda: LKP(35, groups=5), (B, 35, H, W), (B, 5, 9, H, W), id="LKP"),
    pytest.param(
        lambda: AdaHGComputation(35, num_hyperedges=6, num_heads=5),
        (B, 35, 9, 11),
        (B, 35, 9, 11),
        id="AdaHGComputation",
    ),
    pytest.param(lambda: AdaHGConv(35, num_heads=7, context="max"), (B, 99, 35), (B, 99, 35), id="AdaHGConv"),
    pytest.param(lambda: C3AH(35, 45, num_heads=5, context="mean"), (B, 35, 18, 22), (B, 45, 18, 22), id="C3AH"),
    pytest.param(lambda: FuseModule([21, 35, 63], 40), PYRAMID, (B, 40, 18, 22), id="FuseModule"),
    pytest.param(lambda: HyperACE([21, 35, 63], 40, n=2, num_heads=5), PYRAMID, (B, 40, 18, 22), id="HyperACE"),
    pytest.param(
        lambda: HyperACE([21, 35, 63], 40, dsc3k=False, shortcut=True, num_heads=4),
        PYRAMID,
        (B, 40, 18, 22),
        id="HyperACE-2",
    ),
    pytest.param(lambda: DownsampleConv(35, 70), (B, 35, 71, 87), (B, 70, 36, 44), id="DownsampleConv"),
    pytest.param(lambda: FullPAD_Tunnel(), [(B, 35, H, W), (B, 35, H, W)], (B, 35, H, W), id="FullPAD_Tunnel"),
]


def _inputs(shape):
    """Random input tensor, or list of tensors for multi-input layers."""
    if isinstance(shape, list):
        return [torch.randn(s, requires_grad=True) for s in shape]
    return torch.randn(shape, requires_grad=True)


@pytest.mark.parametrize(("factory", "shape", "expected"), CASES)
def test_forward_backward(factory, shape, expected):
    """Every layer runs forward and backward; every parameter and the input receive finite gradients."""
    torch.manual_seed(0)
    m = factory().train()
    x = _inputs(shape)
    y = m(x)
    assert tuple(y.shape) == expected
    (y.float() ** 2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for t in x if isinstance(x, list) else [x]:
        assert t.grad is not None and torch.isfinite(t.grad).all()


@pytest.mark.parametrize(("factory", "shape", "expected"), CASES)
def test_eval_and_pickle_round_trip(factory, shape, expected):
    """Eval outputs survive a torch.save / torch.load round trip of the whole module (pickled by module path)."""
    torch.manual_seed(0)
    m = factory().eval()
    x = _inputs(shape)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_ska_matches_unfold_reference():
    """SKA equals an explicit unfold-based per-pixel, per-group k x k aggregation (odd C, H, W)."""
    torch.manual_seed(0)
    b, c, g, k, h, w = 2, 15, 3, 5, 7, 9
    x, wt = torch.randn(b, c, h, w), torch.randn(b, g, k * k, h, w)
    patches = F.unfold(x, k, padding=k // 2).view(b, g, c // g, k * k, h, w)
    ref = (patches * wt.unsqueeze(2)).sum(3).view(b, c, h, w)
    torch.testing.assert_close(SKA()(x, wt), ref)


def test_ska_rejects_mismatched_kernels():
    """A kernel tensor that does not fit the input raises ValueError."""
    x = torch.randn(1, 16, 5, 5)
    for wt in (torch.randn(1, 3, 9, 5, 5), torch.randn(1, 4, 8, 5, 5), torch.randn(1, 4, 9, 5, 6)):
        with pytest.raises(ValueError):
            SKA()(x, wt)


def test_fullpad_gate_zero_is_identity_then_learns():
    """With its gate at 0 the tunnel returns x0 bit for bit; the gate is one scalar that receives a gradient."""
    m = FullPAD_Tunnel()
    x0, x1 = torch.randn(2, 7, 9, 11), torch.randn(2, 7, 9, 11) * 1e6
    assert m.gate.item() == 0.0 and sum(p.numel() for p in m.parameters()) == 1
    assert torch.equal(m([x0, x1]), x0)
    m([x0, x1]).sum().backward()
    assert m.gate.grad is not None and m.gate.grad.item() != 0.0
    with torch.no_grad():
        m.gate.fill_(0.5)
    torch.testing.assert_close(m([x0, x1]), x0 + 0.5 * x1)


def test_hyperedge_participation_is_a_distribution():
    """Each vertex's participation over hyperedges is a probability distribution."""
    a = AdaHyperedgeGen(32, num_hyperedges=6, num_heads=4)(torch.randn(2, 50, 32))
    assert a.shape == (2, 50, 6) and (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 50))


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_documented_parameter_counts():
    """Parameter counts follow the documented layouts."""
    c1, c2, k = 35, 21, 3
    assert _numel(DSConv(c1, c2, k)) == c1 * k * k + c1 * c2 + 2 * c2  # dw, pw, bn
    assert _numel(DownsampleConv(c1, c2)) == c1 * c2 + 2 * c2  # 1x1 Conv + bn
    assert _numel(SKA()) == 0
    c, h, lks, sks, g = 40, 20, 7, 3, 8  # LKP: Conv 1x1, dw lks x lks, Conv 1x1, Conv2d 1x1 + bias, GroupNorm
    lkp = c * h + 2 * h + h * lks * lks + 2 * h + h * h + 2 * h + h * g * sks * sks + g * sks * sks + 2 * g * sks * sks
    assert _numel(LKP(c, lks, sks, g)) == lkp
    assert _numel(LSConv(c, lks, sks, g)) == lkp + 2 * c  # + bn
    e = 2  # LSBlock: dw 3x3 Conv, LSConv, FFN Conv 1x1 c -> e*c, Conv 1x1 e*c -> c
    ffn = c * e * c + 2 * e * c + e * c * c + 2 * c
    assert _numel(LSBlock(c, lks, sks, g, e)) == c * 9 + 2 * c + lkp + 2 * c + ffn
    d, m = 32, 8  # AdaHGConv: prototypes, context Linear (2d -> m*d), proj, edge_proj, node_proj
    assert _numel(AdaHGConv(d, m, 4, "both")) == m * d + (2 * d * m * d + m * d) + 3 * (d * d + d)


def test_layers_use_natural_parameter_names():
    """Parameter names read like Ultralytics checkpoints (cv1/cv2/m, lkp/ska, gate)."""
    names = {n for n, _ in TokenC3(16, 16, n=1).named_parameters()}
    assert "m.0.mixer.lkp.cv1.conv.weight" in names and "cv2.conv.weight" in names
    assert {n for n, _ in FullPAD_Tunnel().named_parameters()} == {"gate"}
    names = {n for n, _ in HyperACE([8, 16, 32], 16, num_heads=2).named_parameters()}
    assert "hyper.m.hgnn.edge_generator.prototypes" in names and "fuse.cv.conv.weight" in names


@pytest.mark.parametrize(
    ("factory", "error"),
    [
        (lambda: DSConv(16.0, 8), TypeError),
        (lambda: DSConv(16, 0), ValueError),
        (lambda: DSC3k2(16, 16, n=True), TypeError),
        (lambda: DSBottleneck(16, 16, e=0), ValueError),
        (lambda: LSConv(35, groups=4), ValueError),
        (lambda: LKP(16, sks=4), ValueError),
        (lambda: LKP(1), ValueError),
        (lambda: LSBlock(16, e="2"), TypeError),
        (lambda: TokenC3(16, 16, groups=0), ValueError),
        (lambda: AdaHyperedgeGen(30, num_heads=4), ValueError),
        (lambda: AdaHyperedgeGen(32, context="avg"), ValueError),
        (lambda: C3AH(16, 16, e=-1), ValueError),
        (lambda: FuseModule(16, 8), TypeError),
        (lambda: FuseModule([16, 0], 8), ValueError),
        (lambda: HyperACE([8, 16, 32], 16, n=0), ValueError),
        (lambda: DownsampleConv(16, None), TypeError),
        (lambda: register_layer(int, scaled=True), TypeError),
    ],
)
def test_bad_constructor_arguments_raise(factory, error):
    """Bad constructor input raises TypeError or ValueError naming the value."""
    with pytest.raises(error):
        factory()
