"""The sparsity report: what it lists and what it counts."""

from __future__ import annotations

import torch
from ultralytics import YOLO

from ultra_sparse import sparsity_report


def test_fixed_dfl_kernel_is_left_out_of_families_and_layers_but_counted_in_all():
    net = YOLO("yolo11n.yaml").model
    report = sparsity_report(net, "default")
    assert "fixed" not in {f["family"] for f in report["families"]}
    assert not any(x["name"].endswith("dfl.conv.weight") for x in report["layers"])
    params = sum(p.numel() for p in net.parameters())
    zeros = sum(p.numel() - int(torch.count_nonzero(p)) for p in net.parameters())
    assert report["totals"]["all"]["params"] == params
    assert report["totals"]["all"]["zeros"] == zeros  # DFL's arange kernel holds one exact zero, counted here
