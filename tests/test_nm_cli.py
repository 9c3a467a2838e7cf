"""method=nm end to end: ``ultra-sparse sparsify method=nm``, plain-Ultralytics loading, bad input, and training.

The training tests start from the nm checkpoint (fine-tune with mask) and from a dense one (``method=nm``, pruned
once at the start) and check the pattern in last.pt and best.pt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, tree

COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)

# Counts the groups of 4 consecutive input channels holding more than 2 non-zeros, in a process without ultra_sparse.
PLAIN_CHECK = """
import json, sys
import torch
from ultralytics import YOLO
names = json.loads(sys.argv[2])
params = dict(YOLO(sys.argv[1]).model.named_parameters())
assert "ultra_sparse" not in sys.modules
bad = {n: int(((params[n].detach().unfold(1, 4, 4) != 0).sum(-1) > 2).sum()) for n in names}
zeros = {n: int((p == 0).sum()) for n, p in params.items()}
print(json.dumps({"bad": bad, "zeros": zeros}))
"""


def eligible_names(report: dict) -> list[str]:
    return [x["name"] for x in report["layers"] if x.get("nm") and x["nm"]["eligible"]]


def violations(net: torch.nn.Module, names: list[str]) -> int:
    params = dict(net.named_parameters())
    return sum(int(((params[n].detach().unfold(1, 4, 4) != 0).sum(-1) > 2).sum()) for n in names)


@pytest.fixture(scope="module")
def nm_run(tmp_path_factory, trained_checkpoint):
    folder = tmp_path_factory.mktemp("nm")
    model = folder / "best.pt"
    shutil.copy(trained_checkpoint, model)
    result = cli("sparsify", f"model={model}", "method=nm", f"project={folder / 'runs'}", "name=s", cwd=folder)
    assert result.returncode == 0, result.stderr
    run = folder / "runs" / "s"
    return folder, run / "weights" / "best-2of4.pt", json.loads((run / "best-2of4-report.json").read_text())


def test_sparsify_method_nm_writes_2of4_checkpoint_and_reports(nm_run):
    folder, weights, report = nm_run
    assert weights.is_file() and (weights.parent.parent / "best-2of4-report.md").is_file()
    assert report["nm"]["holds"] and report["nm"]["pattern"] == "2:4" and len(eligible_names(report)) > 50
    assert {x["name"] for x in report["nm"]["ineligible_layers"]} >= {"model.0.conv.weight"}
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    assert ckpt["ultra_sparse"]["config"]["method"] == "nm" and ckpt["ultra_sparse"]["config"]["sparsity"] is None
    assert "N:M pattern 2:4: holds in every group" in (weights.parent.parent / "best-2of4-report.md").read_text()


def test_plain_ultralytics_loads_the_pattern(nm_run):
    """A process that never imports ultra_sparse loads the nm checkpoint with YOLO() and sees the pattern."""
    folder, weights, report = nm_run
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_CHECK, str(weights), json.dumps(eligible_names(report))],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(seen["bad"].values()) == {0}
    assert all(seen["zeros"][x["name"]] == x["zeros"] for x in report["layers"])


def test_report_mode_checks_the_pattern(nm_run):
    folder, weights, _ = nm_run
    out = cli("report", f"model={weights}", cwd=folder)
    assert out.returncode == 0, out.stderr
    assert "N:M pattern 2:4: holds in every group" in out.stdout + out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["method=nm", "flops=0.2"], "flops=0.2 needs method=channel"),
        (["method=nm", "sparsity=0.5"], "does not apply to method=nm"),
        (["method=nm", "schedule=gradual"], "schedule=gradual does not apply to method=nm"),
    ],
)
def test_train_refuses_what_nm_cannot_honour(tmp_path, trained_checkpoint, synthetic_data, args, message):
    model = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, model)
    before = tree(tmp_path)
    out = cli("train", f"model={model}", f"data={synthetic_data}", *args, f"project={tmp_path / 'runs'}", cwd=tmp_path)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("ultra-sparse: error:"), out.stderr
    assert message in lines[0]
    assert tree(tmp_path) == before


@pytest.mark.slow
@pytest.mark.integration
def test_finetune_from_nm_checkpoint_keeps_the_pattern(nm_run, synthetic_data, tmp_path):
    from ultra_sparse.cli import main

    _, weights, report = nm_run
    start = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    argv = [f"model={weights}", f"data={synthetic_data}", "epochs=1", "optimizer=SGD", f"project={tmp_path}", "name=ft"]
    assert main(["train", *argv, *[f"{k}={v}" for k, v in COMMON.items()]]) == 0
    names, start_params = eligible_names(report), dict(start.named_parameters())
    for kind in ("last.pt", "best.pt"):
        net = torch.load(tmp_path / "ft" / "weights" / kind, map_location="cpu", weights_only=False)["model"]
        assert violations(net, names) == 0, kind
        params = dict(net.named_parameters())
        for name in names:  # the zeros are exactly the checkpoint's: the mask was kept, not redrawn
            assert torch.equal(params[name] == 0, start_params[name] == 0), (kind, name)


@pytest.mark.slow
@pytest.mark.integration
def test_train_method_nm_prunes_once_and_keeps_the_pattern(trained_checkpoint, synthetic_data, tmp_path):
    from ultra_sparse import SparseYOLO

    model = SparseYOLO(str(trained_checkpoint))
    model.train(data=str(synthetic_data), epochs=1, optimizer="SGD", method="nm", project=str(tmp_path), name="nm", **COMMON)
    sparse = model.trainer.sparse
    assert sparse.config.schedule == "oneshot"
    ckpt = torch.load(tmp_path / "nm" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    names = [n for n, m in sparse.masks.items() if not bool(m.all())]
    assert len(names) > 50 and violations(ckpt["model"], names) == 0
    assert ckpt["ultra_sparse"]["config"]["method"] == "nm"


@pytest.mark.slow
@pytest.mark.integration
def test_finetune_from_nm_checkpoint_with_method_nm_given(nm_run, synthetic_data, tmp_path):
    from ultra_sparse import SparseYOLO

    _, weights, report = nm_run
    model = SparseYOLO(str(weights))
    model.train(data=str(synthetic_data), epochs=1, optimizer="SGD", method="nm", project=str(tmp_path), name="c", **COMMON)
    net = torch.load(tmp_path / "c" / "weights" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert violations(net, eligible_names(report)) == 0
