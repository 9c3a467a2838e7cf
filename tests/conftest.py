"""Shared fixtures: an isolated Ultralytics config folder, a small synthetic dataset and a briefly trained model.

The session fixtures are built once per test run, in pytest's temp folder, never in the working directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultra_sparse_yolo_cfg_"))
os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """data.yaml of a small deterministic shapes dataset (24 train / 8 val images at 64 px)."""
    from ultra_sparse.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data") / "shapes", n_train=24, n_val=8, imgsz=64, seed=0)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, synthetic_data) -> Path:
    """best.pt of yolo11n trained one epoch on the synthetic dataset at imgsz=64 (read-only: copy before changing)."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("baseline")
    YOLO("yolo11n.yaml").train(
        data=str(synthetic_data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(project),
        name="train", plots=False, verbose=False, seed=0, deterministic=True, amp=False,
    )
    return project / "train" / "weights" / "best.pt"


@pytest.fixture(scope="session")
def volleyball() -> Path:
    """The real YOLOv9t volleyball checkpoint of ../shared/realdata (tests using it skip where it is absent)."""
    path = REALDATA / "volleyball" / "yolov9t-volleyball.pt"
    if not path.is_file():
        pytest.skip("../shared/realdata is not available")
    return path


@pytest.fixture(scope="session")
def shrunk_checkpoint(tmp_path_factory, trained_checkpoint) -> Path:
    """The trained yolo11n with channels removed by hand: a structured pair for compare and benchmark.

    Half of ``model.0``'s output channels (its conv and BN) go, with the matching input channels of ``model.1``'s conv
    (``model.0`` feeds nothing else). The classes stay stock Ultralytics ones; the file keeps Ultralytics' checkpoint
    layout. 8 * 27 + 2 * 8 + 32 * 8 * 9 = 2536 parameters are removed.
    """
    import torch

    ckpt = torch.load(trained_checkpoint, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float()
    first, second = model.model[0], model.model[1]
    keep = first.conv.out_channels // 2
    first.conv.weight = torch.nn.Parameter(first.conv.weight.detach()[:keep].clone())
    first.conv.out_channels = keep
    bn = first.bn
    bn.weight = torch.nn.Parameter(bn.weight.detach()[:keep].clone())
    bn.bias = torch.nn.Parameter(bn.bias.detach()[:keep].clone())
    bn.running_mean, bn.running_var = bn.running_mean[:keep].clone(), bn.running_var[:keep].clone()
    bn.num_features = keep
    second.conv.weight = torch.nn.Parameter(second.conv.weight.detach()[:, :keep].clone())
    second.conv.in_channels = keep
    path = tmp_path_factory.mktemp("shrunk") / "shrunk.pt"
    torch.save({**ckpt, "model": model.half(), "ema": None}, path)
    return path

