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
