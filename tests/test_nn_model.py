"""The TokenC3-LSNet reference models: built from YAML by the stock parser plus ultra_sparse.nn.register, trained,
saved, reloaded and validated through Ultralytics; stock models parse exactly as before."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from copy import deepcopy
from pathlib import Path

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultra_sparse_yolo_cfg_"))

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn import tasks  # noqa: E402
from ultralytics.nn import modules  # noqa: E402

if not hasattr(modules, "A2C2f"):  # area attention arrived after 8.3.63; the model YAMLs use it
    pytest.skip("the reference model YAMLs need Ultralytics' A2C2f (ultralytics 8.3.7x or later)", allow_module_level=True)
from ultralytics.nn.modules import A2C2f, Conv, Detect  # noqa: E402

import ultra_sparse.nn as usn  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "cfg" / "models"
FULL, SMALL = MODELS / "yolov13-tokenc3-lsnet.yaml", MODELS / "yolov13-tokenc3-lsnet-n.yaml"


def _numel(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _prunable(m: nn.Module) -> list[nn.Module]:
    """Conv2d / Linear layers inside m."""
    return [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]


def test_full_model_size_and_strides():
    """The reference YAML builds to 4.7M +/- 0.3M parameters at nc=80 with a P2 level (strides 4-32)."""
    model = YOLO(str(FULL)).model
    assert 4.4e6 <= _numel(model) <= 5.0e6
    assert model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    assert isinstance(model.model[-1], Detect) and model.model[-1].nl == 4


def test_small_model_size_and_forward():
    """The small variant stays under 1M parameters and runs on a non-square input."""
    model = YOLO(str(SMALL)).model
    assert _numel(model) < 1.0e6
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 96))
    boxes = 16 * 24 + 8 * 12 + 4 * 6 + 2 * 3  # anchors on P2..P5
    assert y[0].shape == (1, 4 + 80, boxes)


@pytest.mark.parametrize("cfg", [FULL, SMALL], ids=["full", "n"])
def test_every_family_has_prunable_weights(cfg):
    """Each module family of the sparsity rules appears with Conv2d/Linear weights of its own."""
    model = YOLO(str(cfg)).model
    found = {type(m).__name__: m for m in model.modules()}
    for name in ("TokenC3", "LSConv", "LKP", "LSBlock", "HyperACE", "C3AH", "AdaHGComputation", "AdaHGConv",
                 "AdaHyperedgeGen", "FuseModule", "FullPAD_Tunnel", "DownsampleConv", "A2C2f", "DSC3k2", "DSConv"):
        assert name in found, name
    tokenc3 = [m for m in model.model if isinstance(m, usn.TokenC3)]
    assert tokenc3 and all(any(isinstance(x, usn.LSConv) for x in m.modules()) for m in tokenc3)
    assert any(isinstance(m, usn.LSConv) for m in model.model), "standalone LSConv layer"
    for block in (m for m in model.modules() if isinstance(m, usn.LSBlock)):  # LSNet weights outside LSConv
        inside = {id(x) for x in block.mixer.modules()}
        assert [x for x in _prunable(block) if id(x) not in inside]
    for cls in (usn.HyperACE, usn.C3AH, usn.FuseModule, usn.DownsampleConv, A2C2f, usn.DSC3k2, usn.DSConv):
        assert any(_prunable(m) for m in model.modules() if isinstance(m, cls)), cls.__name__
    for cls in (usn.AdaHGConv, usn.AdaHyperedgeGen):
        assert any(isinstance(x, nn.Linear) for m in model.modules() if isinstance(m, cls) for x in m.modules())
    assert any(type(m) is Conv for m in model.model), "plain Conv layer"
    assert sum(isinstance(m, usn.FullPAD_Tunnel) for m in model.model) >= 3


def test_multi_input_layers_are_wired_and_saved():
    """Multi-input rows keep their full `from` list and every input they read is in the save list."""
    model = tasks.DetectionModel(str(SMALL), verbose=True)
    hyperace = next(m for m in model.model if isinstance(m, usn.HyperACE))
    assert hyperace.f == [4, 6, 9] and {4, 6, 9} <= set(model.save)
    for m in model.model:
        if isinstance(m, usn.FullPAD_Tunnel):
            assert len(m.f) == 2 and all(x % m.i in model.save for x in m.f if x != -1)


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml"])
def test_stock_models_parse_exactly_as_before(cfg):
    """A stock YAML builds the same layers through the wrapped parser as through the stock one."""
    assert getattr(tasks.parse_model, "_ultra_sparse", False)
    d = tasks.yaml_model_load(cfg)
    wrapped, save_w = tasks.parse_model(deepcopy(d), ch=3, verbose=False)
    stock, save_s = tasks.parse_model.__wrapped__(deepcopy(d), ch=3, verbose=False)
    assert str(wrapped) == str(stock) and save_w == save_s and _numel(wrapped) == _numel(stock)


def test_register_is_idempotent():
    """Calling register() again keeps the single wrapper."""
    before = tasks.parse_model
    usn.register()
    assert tasks.parse_model is before


class PointwiseProjection(nn.Module):
    """A user layer registered by the test below."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.cv = Conv(c1, c2, 1)

    def forward(self, x):
        return self.cv(x)


def test_register_layer_extends_the_parser():
    """A class registered with register_layer is built with probed c1 and width-scaled c2, mid-model."""
    usn.register_layer(PointwiseProjection, scaled=True)
    cfg = {
        "nc": 2,
        "width_multiple": 0.5,
        "backbone": [[-1, 1, "Conv", [32, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "PointwiseProjection", [96]]],
        "head": [[[1, 2], 1, "Detect", ["nc"]]],
    }
    model = tasks.DetectionModel(cfg, verbose=False)
    layer = model.model[2]
    assert isinstance(layer, PointwiseProjection) and (layer.cv.conv.in_channels, layer.cv.conv.out_channels) == (32, 48)
    assert layer.f == -1 and model.save == [1, 2]


def test_yaml_activation_reaches_registered_layers(tmp_path):
    """A YAML `activation` applies to ultra_sparse layers as it does to stock Conv layers."""
    text = FULL.read_text().replace("nc: 80", "nc: 80\nactivation: nn.ReLU()")
    cfg = tmp_path / "yolov13-tokenc3-lsnet-relu.yaml"
    cfg.write_text(text)
    model = YOLO(str(cfg)).model
    dsconv = next(m for m in model.modules() if isinstance(m, usn.DSConv))
    assert isinstance(dsconv.act, nn.ReLU)
    assert isinstance(Conv.default_act, nn.SiLU), "the process-wide default is restored"


def test_scaled_layer_without_channels_raises(tmp_path):
    """A width-scaled ultra_sparse row without its output channels is a ValueError naming the row."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(SMALL.read_text().replace("[-1, 1, DSConv, [512, 3, 2]]", "[-1, 1, DSConv, []]"))
    with pytest.raises(ValueError, match="row 5"):
        tasks.DetectionModel(str(cfg), verbose=False)


@pytest.mark.slow
def test_small_model_trains_saves_reloads_and_validates(tmp_path, synthetic_data):
    """One CPU epoch at imgsz=64 trains, saves best.pt, which reloads with YOLO(path) and validates."""
    YOLO(str(SMALL)).train(
        data=str(synthetic_data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", project=str(tmp_path),
        name="train", plots=False, val=True, verbose=False, amp=False,
    )
    best = tmp_path / "train" / "weights" / "best.pt"
    assert best.is_file()
    model = YOLO(str(best))
    assert any(isinstance(m, usn.HyperACE) for m in model.model.modules())
    metrics = model.val(data=str(synthetic_data), imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                        project=str(tmp_path), name="val", verbose=False)
    assert metrics.speed["inference"] > 0  # images went through the reloaded model
    # the same numbers as the validation at the end of training (best.pt keeps them; weights saved in FP16)
    recorded = torch.load(best, map_location="cpu", weights_only=False)["train_metrics"]
    assert metrics.box.map50 == pytest.approx(recorded["metrics/mAP50(B)"], abs=1e-3)
    assert metrics.box.map == pytest.approx(recorded["metrics/mAP50-95(B)"], abs=1e-3)

    # A fresh process that only imports ultra_sparse loads it, also under Ultralytics' restricted (weights_only) loading
    code = (
        "import sys, ultra_sparse, ultra_sparse.nn\nfrom ultralytics import YOLO\n"
        "m = YOLO(sys.argv[1])\nprint(type(m.model.model[10]).__name__)"
    )
    for safe in ("0", "1"):
        env = {**os.environ, "ULTRALYTICS_SAFE_LOAD": safe}
        out = subprocess.run([sys.executable, "-c", code, str(best)], env=env, capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().endswith("HyperACE")
