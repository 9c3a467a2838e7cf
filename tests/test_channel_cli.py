"""``ultra-sparse sparsify method=channel`` end to end: a stock-class checkpoint that plain Ultralytics loads, predicts,
validates and exports with ultra_sparse and torch_pruning blocked from import; report, bad input, training, ONNX."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import cli, tree

MODEL_13 = str(Path(__file__).resolve().parents[1] / "cfg" / "models" / "yolov13-tokenc3-lsnet-n.yaml")

# Runs in a process where importing ultra_sparse or torch_pruning fails: load, predict, validate, export, run the ONNX.
PLAIN = """
import sys
for name in ("ultra_sparse", "torch_pruning"):
    sys.modules[name] = None
import numpy as np, onnxruntime as ort
from ultralytics import YOLO
path, data, project = sys.argv[1:4]
model = YOLO(path)
params = sum(p.numel() for p in model.model.parameters())
assert model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, device="cpu", verbose=False)
metrics = YOLO(path).val(data=data, imgsz=64, batch=8, device="cpu", workers=0, plots=False, project=project, name="v")
onnx = YOLO(path).export(format="onnx", imgsz=64, device="cpu")
script = YOLO(path).export(format="torchscript", imgsz=64, device="cpu")
session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
out = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})[0]
print("RESULT", params, out.shape[1], float(metrics.box.map50) >= 0, script.endswith(".torchscript"))
"""


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, trained_checkpoint):
    folder = tmp_path_factory.mktemp("channel")
    model = folder / "best.pt"
    shutil.copy(trained_checkpoint, model)
    out = cli("sparsify", f"model={model}", "method=channel", "flops=0.5", "rules=default", f"project={folder / 'runs'}",
              "name=c", cwd=folder)
    assert out.returncode == 0, out.stderr
    return folder, model, folder / "runs" / "c"


def test_sparsify_channel_writes_pruned_checkpoint_and_report(pruned_run, trained_checkpoint):
    folder, model, run = pruned_run
    weights = run / "weights" / "best-pruned.pt"
    assert weights.is_file() and model.read_bytes() == trained_checkpoint.read_bytes()
    section = json.loads((run / "best-pruned-report.json").read_text())["channel"]
    assert section["gflops"]["after"] <= 0.52 * section["gflops"]["before"]
    assert section["params"]["after"] < section["params"]["before"]
    md = (run / "best-pruned-report.md").read_text()
    assert "Channel pruning (flops=0.5" in md
    assert md.index("Channel pruning (") < md.index("Zeros in the smaller network") < md.index("| scope | params")
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    assert ckpt["ultra_sparse"]["channel"]["params"]["after"] == sum(p.numel() for p in ckpt["model"].parameters())
    assert json.loads(json.dumps(ckpt["ultra_sparse"])) == ckpt["ultra_sparse"]  # metadata is plain data


@pytest.mark.slow
@pytest.mark.integration
def test_plain_ultralytics_without_ultra_sparse_or_torch_pruning(pruned_run, synthetic_data):
    folder, _, run = pruned_run
    weights = run / "weights" / "best-pruned.pt"
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    out = subprocess.run([sys.executable, "-c", PLAIN, str(weights), str(synthetic_data), str(folder / "plain")],
                         cwd=folder, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = next(line for line in out.stdout.splitlines() if line.startswith("RESULT")).split()
    assert int(result[1]) == sum(p.numel() for p in ckpt["model"].parameters()) and result[3:] == ["True", "True"]


def test_report_command_reads_a_pruned_checkpoint(pruned_run):
    folder, _, run = pruned_run
    out = cli("report", f"model={run / 'weights' / 'best-pruned.pt'}", cwd=folder)
    assert out.returncode == 0, out.stderr
    assert "Channel pruning (flops=0.5" in out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_train_keeps_the_pruned_shapes(pruned_run, synthetic_data, tmp_path):
    from ultra_sparse.cli import main

    _, _, run = pruned_run
    weights = run / "weights" / "best-pruned.pt"
    count = sum(p.numel() for p in torch.load(weights, map_location="cpu", weights_only=False)["model"].parameters())
    common = ["imgsz=64", "batch=8", "workers=0", "device=cpu", "plots=False", "amp=False", "epochs=1"]
    assert main(["train", f"model={weights}", f"data={synthetic_data}", f"project={tmp_path}", "name=ft", *common]) == 0
    for kind in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "ft" / "weights" / kind, map_location="cpu", weights_only=False)
        assert sum(p.numel() for p in (ckpt.get("ema") or ckpt["model"]).parameters()) == count, kind


@pytest.mark.parametrize(
    "name, rules, target",
    [
        ("yolo11n.yaml", "default", {"flops": 0.5}),
        pytest.param("yolov8n.yaml", "default", {"flops": 0.5}, marks=pytest.mark.slow),
        pytest.param("yolov9t.yaml", "default", {"flops": 0.5}, marks=pytest.mark.slow),
        pytest.param("yolov10n.yaml", "default", {"flops": 0.5}, marks=pytest.mark.slow),
        pytest.param(MODEL_13, "tokenc3_lsnet", {"sparsity": 0.3}, marks=pytest.mark.slow),
    ],
    ids=lambda v: Path(v).stem if isinstance(v, str) and v.endswith(".yaml") else None,
)
def test_onnx_export_of_pruned_model_runs_in_onnxruntime(tmp_path, name, rules, target):
    import onnxruntime as ort
    from ultralytics import YOLO

    from ultra_sparse import sparsify
    from ultra_sparse.checkpoint import save_checkpoint

    model = YOLO(name)
    sparsify(model, method="channel", rules=rules, imgsz=64, **target)
    path = save_checkpoint(model.model, {}, tmp_path / "pruned.pt", None)
    onnx = YOLO(str(path)).export(format="onnx", imgsz=64, device="cpu", simplify=False)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    net = YOLO(str(path)).model.float().eval()
    with torch.no_grad():
        expected = net(x)
    expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=5e-2, rtol=1e-2)  # FP16 checkpoint, exported in FP32
