"""The sparse trainers train the checkpoint's own network, never a rebuild from its YAML (issue: channel pruning)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)


def _shrunk_checkpoint(source: Path, out: Path, keep: int = 8) -> int:
    """Save ``source`` with layer 0 cut to ``keep`` output channels (and layer 1's inputs); return its parameter count."""
    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    net = ckpt["model"]
    first, second = net.model[0], net.model[1]
    conv = nn.Conv2d(first.conv.in_channels, keep, first.conv.kernel_size, first.conv.stride, first.conv.padding, bias=False)
    conv.weight.data = first.conv.weight.data[:keep].clone()
    bn = nn.BatchNorm2d(keep, eps=first.bn.eps, momentum=first.bn.momentum)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data = getattr(first.bn, name).data[:keep].clone()
    first.conv, first.bn = conv.half(), bn.half()
    consumer = nn.Conv2d(keep, second.conv.out_channels, second.conv.kernel_size, second.conv.stride, second.conv.padding, bias=False)
    consumer.weight.data = second.conv.weight.data[:, :keep].clone()
    second.conv = consumer.half()
    net.float()(torch.zeros(1, 3, 64, 64))  # the forward still works
    net.half()
    torch.save(ckpt, out)
    return sum(p.numel() for p in net.parameters())


def _params(path: Path) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return sum(p.numel() for p in (ckpt.get("ema") or ckpt["model"]).parameters())


def test_channel_shrunk_model_keeps_its_shapes_through_train_resume_and_reload(trained_checkpoint, synthetic_data, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse import SparseYOLO

    pruned = tmp_path / "pruned.pt"
    count = _shrunk_checkpoint(trained_checkpoint, pruned)
    assert count < _params(trained_checkpoint)
    model = SparseYOLO(str(pruned))
    model.train(data=str(synthetic_data), epochs=2, save_period=1, project=str(tmp_path), name="run", sparsity=0.3, schedule="oneshot", **COMMON)
    assert sum(p.numel() for p in model.trainer.model.parameters()) == count
    weights = tmp_path / "run" / "weights"
    assert _params(weights / "last.pt") == _params(weights / "best.pt") == _params(weights / "epoch0.pt") == count
    assert sum(p.numel() for p in YOLO(str(weights / "best.pt")).model.parameters()) == count

    resumed = tmp_path / "resumed" / "weights"
    resumed.mkdir(parents=True)
    ckpt = torch.load(weights / "epoch0.pt", map_location="cpu", weights_only=False)
    ckpt["train_args"] = {**ckpt["train_args"], "save_dir": str(resumed.parent), "project": str(tmp_path), "name": "resumed"}
    torch.save(ckpt, resumed / "last.pt")
    again = SparseYOLO(str(resumed / "last.pt"))
    again.train(resume=True)
    assert sum(p.numel() for p in again.trainer.model.parameters()) == count
    assert _params(resumed / "last.pt") == count


def test_volleyball_checkpoint_transfers_every_tensor(volleyball, tmp_path):
    """Ultralytics' rebuild transferred 1303/1339 tensors of this older checkpoint and re-initialised its cls branch."""
    from ultra_sparse import SparseYOLO

    weights = volleyball
    source = SparseYOLO(str(weights)).model.float().state_dict()
    seen = {}

    class Stop(Exception):
        pass

    def capture(trainer):
        seen.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        raise Stop

    model = SparseYOLO(str(weights))
    model.add_callback("on_train_start", capture)
    with pytest.raises(Stop):
        model.train(data=str(weights.parent / "split.yaml"), epochs=1, fraction=0.02, project=str(tmp_path), name="vb", **COMMON)
    assert set(seen) == set(source)
    for name, value in source.items():
        assert torch.equal(seen[name].float(), value.float()), name
