"""Tests for the deterministic synthetic shapes dataset."""

import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo_cfg_"))

from ultra_sparse.synthetic import CLASS_NAMES, make_synthetic_dataset  # noqa: E402


def _files(root: Path) -> dict:
    """Map every image and label file under root to its bytes."""
    files = [p for d in ("images", "labels") for p in (root / d).rglob("*.*")]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def _labels(root: Path, split: str):
    """Yield (image, [(cls, cx, cy, w, h), ...]) for every sample of a split."""
    for label in sorted((root / "labels" / split).glob("*.txt")):
        image = cv2.imread(str(root / "images" / split / f"{label.stem}.png"))
        yield image, [tuple(float(v) for v in line.split()) for line in label.read_text().splitlines()]


def test_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n_train=12, n_val=4, seed=3).parent
    b = make_synthetic_dataset(tmp_path / "b", n_train=12, n_val=4, seed=3).parent
    c = make_synthetic_dataset(tmp_path / "c", n_train=12, n_val=4, seed=4).parent
    files_a = _files(a)
    assert len(files_a) == 2 * (12 + 4)
    assert files_a == _files(b)
    files_c = _files(c)
    assert files_c.keys() == files_a.keys()
    assert all(files_c[k] != files_a[k] for k in files_a if k.endswith(".png"))
    # data.yaml differs only by its path line
    strip = lambda p: [line for line in (p / "data.yaml").read_text().splitlines() if not line.startswith("path:")]
    assert strip(a) == strip(b)


def test_labels_valid_and_tight(tmp_path):
    root = make_synthetic_dataset(tmp_path / "d", n_train=60, n_val=10, imgsz=96).parent
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert data["path"] == str(root) and Path(data["path"]).is_absolute()
    assert data["names"] == dict(enumerate(CLASS_NAMES)) and data["train"] == "images/train"
    counts = np.zeros(len(CLASS_NAMES), int)
    for split in ("train", "val"):
        for image, labels in _labels(root, split):
            assert image.shape == (96, 96, 3)
            assert 1 <= len(labels) <= 4
            mask = np.zeros(image.shape[:2], bool)
            for cls, cx, cy, w, h in labels:
                assert cls == int(cls) and 0 <= cls < len(CLASS_NAMES)
                counts[int(cls)] += 1
                x1, y1, x2, y2 = (round(v * 96) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
                assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
                assert 0.14 <= max(w, h) <= 0.47
                assert not mask[y1:y2, x1:x2].any(), "boxes overlap"
                mask[y1:y2, x1:x2] = True
                # Background estimate from a 2-pixel ring around the box (boxes are at least 2 pixels apart).
                r1, r2, c1, c2 = max(y1 - 2, 0), min(y2 + 2, 96), max(x1 - 2, 0), min(x2 + 2, 96)
                ring = np.ones((r2 - r1, c2 - c1), bool)
                ring[y1 - r1 : y2 - r1, x1 - c1 : x2 - c1] = False
                crop = image[r1:r2, c1:c2].astype(float)
                shape = np.linalg.norm(crop - np.median(crop[ring], 0), axis=-1) > 60
                inside = shape[y1 - r1 : y2 - r1, x1 - c1 : x2 - c1]
                # Tight: the shape touches all four box edges. Enclosing: the ring is (almost) background.
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
                assert shape[ring].mean() < 0.05
                assert inside.mean() > 0.3  # a filled shape, not a speck
    assert (counts > 0).all()


def test_reuse_is_idempotent(tmp_path):
    root = tmp_path / "r"
    yaml_path = make_synthetic_dataset(root, n_train=5, n_val=2)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    t0 = time.perf_counter()
    assert make_synthetic_dataset(root, n_train=5, n_val=2) == yaml_path
    assert time.perf_counter() - t0 < 1.0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folders left behind


def test_moved_dataset_is_repointed(tmp_path):
    make_synthetic_dataset(tmp_path / "a", n_train=3, n_val=2)
    (tmp_path / "a").rename(tmp_path / "b")
    yaml_path = make_synthetic_dataset(tmp_path / "b", n_train=3, n_val=2)
    assert yaml.safe_load(yaml_path.read_text())["path"] == str(tmp_path / "b")


def test_other_arguments_need_overwrite(tmp_path):
    root = tmp_path / "o"
    make_synthetic_dataset(root, n_train=4, n_val=2, seed=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_dataset(root, n_train=4, n_val=2, seed=1)
    make_synthetic_dataset(root, n_train=4, n_val=2, seed=0)  # still intact and reusable
    (root / "labels" / "train.cache").write_bytes(b"written by a training run")
    yaml_path = make_synthetic_dataset(root, n_train=3, n_val=2, seed=1, overwrite=True)
    assert yaml.safe_load(yaml_path.read_text())["synthetic"]["seed"] == 1
    assert len(list((root / "images" / "train").iterdir())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_incomplete_dataset_needs_overwrite(tmp_path):
    root = tmp_path / "i"
    make_synthetic_dataset(root, n_train=3, n_val=2)
    image = root / "images" / "val" / "000001.png"
    content = image.read_bytes()
    image.unlink()
    with pytest.raises(FileExistsError, match="missing"):
        make_synthetic_dataset(root, n_train=3, n_val=2)
    make_synthetic_dataset(root, n_train=3, n_val=2, overwrite=True)
    assert image.read_bytes() == content


def test_refuses_foreign_folder(tmp_path):
    root = tmp_path / "user"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="not written by make_synthetic_dataset"):
            make_synthetic_dataset(root, n_train=2, n_val=1, overwrite=overwrite)
    assert [p.name for p in root.iterdir()] == ["notes.txt"] and (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]
    # A user file added to a generated dataset is protected as well.
    gen = tmp_path / "gen"
    make_synthetic_dataset(gen, n_train=2, n_val=1)
    (gen / "images" / "train" / "mine.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="mine.jpg"):
        make_synthetic_dataset(gen, n_train=3, n_val=1, overwrite=True)
    assert (gen / "images" / "train" / "mine.jpg").exists()


def test_empty_folder_and_file_root(tmp_path):
    (tmp_path / "empty").mkdir()
    assert make_synthetic_dataset(tmp_path / "empty", n_train=2, n_val=1).is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_synthetic_dataset(tmp_path / "file", n_train=2, n_val=1)


@pytest.mark.parametrize(
    "kwargs, error, text",
    [
        ({"n_train": 0}, ValueError, "n_train"),
        ({"n_val": -1}, ValueError, "n_val"),
        ({"imgsz": 31}, ValueError, "imgsz"),
        ({"seed": -1}, ValueError, "seed"),
        ({"n_train": 2.0}, TypeError, "n_train"),
        ({"imgsz": "96"}, TypeError, "imgsz"),
        ({"n_val": True}, TypeError, "n_val"),
        ({"seed": None}, TypeError, "seed"),
    ],
)
def test_bad_input(tmp_path, kwargs, error, text):
    with pytest.raises(error, match=text):
        make_synthetic_dataset(tmp_path / "x", **kwargs)
    assert not any(tmp_path.iterdir())


def test_accepted_by_ultralytics(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    yaml_path = make_synthetic_dataset(tmp_path / "u", n_train=4, n_val=2, imgsz=64)
    data = check_det_dataset(str(yaml_path))
    assert data["nc"] == 3 and data["names"] == dict(enumerate(CLASS_NAMES))
    assert Path(data["train"]) == tmp_path / "u" / "images" / "train"
    assert Path(data["val"]) == tmp_path / "u" / "images" / "val"


@pytest.mark.slow
def test_trains_end_to_end(tmp_path):
    from ultralytics import YOLO

    data = make_synthetic_dataset(tmp_path / "t_data", n_train=16, n_val=8, imgsz=64)
    YOLO("yolo11n.yaml").train(
        data=str(data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(tmp_path), name="t",
        plots=False,
    )
    assert (tmp_path / "t" / "weights" / "last.pt").is_file()
    # The label cache written by training keeps the dataset reusable.
    assert (tmp_path / "t_data" / "labels" / "train.cache").is_file()
    assert make_synthetic_dataset(tmp_path / "t_data", n_train=16, n_val=8, imgsz=64) == data
