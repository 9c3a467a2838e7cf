"""2:4 masks on a GPU's sparse tensor cores: torch's semi-structured tensors accept them and give the dense output.

Marked ``gpu``: skipped without CUDA, and without sparse tensor cores (compute capability below 8.0). A convolution
is checked as the GEMM it lowers to, weight laid out (output channel, kernel position, input channel), so the 2:4
groups of ``method=nm`` (consecutive input channels) are consecutive along the reduction dimension.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ultra_sparse.importance import get_criterion
from ultra_sparse.prune.nm import nm_masks, nm_violations
from ultra_sparse.rules import assign_families, load_rules

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def semi_structured():
    """torch's ``to_sparse_semi_structured``, where this GPU has sparse tensor cores."""
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need compute capability 8.0 or newer")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured


def masked(layer: nn.Module) -> nn.Module:
    """``layer`` with the 2:4 mask of ``method=nm`` applied (l1 importance), in fp16 on the GPU."""
    torch.manual_seed(0)
    net = nn.Sequential(layer)
    mask = nm_masks(assign_families(net, load_rules("default")), get_criterion("l1"), (2, 4)).masks["0.weight"]
    with torch.no_grad():
        layer.weight.mul_(mask)
    assert nm_violations(layer.weight, 2, 4) == 0
    return layer.half().cuda()


def test_linear_2of4_is_accepted_and_matches_dense(semi_structured):
    layer = masked(nn.Linear(1024, 512, bias=False))
    sparse = semi_structured(layer.weight.detach())
    assert torch.equal(sparse.to_dense(), layer.weight.detach())  # compression kept every non-zero
    x = torch.randn(128, 1024, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(F.linear(x, sparse), F.linear(x, layer.weight), rtol=1e-2, atol=1e-2)


def test_conv_as_gemm_2of4_is_accepted_and_matches_conv2d(semi_structured):
    conv = masked(nn.Conv2d(64, 128, 3, padding=1, bias=False))
    weight = conv.weight.detach()
    gemm = weight.permute(0, 2, 3, 1).reshape(128, -1).contiguous()  # K = (kh, kw, c), c innermost
    sparse = semi_structured(gemm)
    assert torch.equal(sparse.to_dense(), gemm)
    x = torch.randn(2, 64, 16, 16, device="cuda", dtype=torch.float16)
    cols = F.unfold(x, 3, padding=1)  # (batch, c * 9, positions), c outermost
    cols = cols.view(2, 64, 9, -1).permute(0, 3, 2, 1).reshape(-1, 9 * 64)  # (batch * positions, K), c innermost
    out = F.linear(cols, sparse).view(2, 16 * 16, 128).permute(0, 2, 1).reshape(2, 128, 16, 16)
    torch.testing.assert_close(out, F.conv2d(x, weight, padding=1), rtol=1e-2, atol=5e-2)
    wrong = weight.reshape(128, -1).contiguous()  # c outermost: groups of 4 run along kernel positions
    assert not torch.equal(semi_structured(wrong).to_dense(), wrong)  # the layout matters: not 2:4 there
