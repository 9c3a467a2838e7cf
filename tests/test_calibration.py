"""Calibration batches: spread over the whole train split, deterministic, preprocessed as the trainer feeds them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ultra_sparse.calibration import calibration_batches, spread_indices


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [(10, 4, [0, 3, 6, 9]), (24, 8, [0, 3, 7, 10, 13, 16, 20, 23]), (5, 1, [0]), (3, 8, [0, 1, 2]), (4, 4, [0, 1, 2, 3])],
)
def test_spread_indices_cover_the_range_evenly(total, count, expected):
    assert spread_indices(total, count) == expected


def _train_images(data: Path) -> list[str]:
    info = yaml.safe_load(data.read_text())
    folder = Path(info["path"]) / info["train"] if "path" in info else data.parent / info["train"]
    return sorted(str(p) for p in folder.iterdir() if p.suffix in {".jpg", ".png"})


def test_calibration_images_are_spread_over_the_split_not_its_first_files(synthetic_data):
    files = _train_images(synthetic_data)
    assert len(files) == 24
    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=4, n_batches=2))
    used = [f for b in batches for f in b["im_file"]]
    assert used == [files[i] for i in spread_indices(24, 8)]
    assert files[-1] in used  # the first 8 files would stop at index 7
    assert [tuple(b["img"].shape) for b in batches] == [(4, 3, 64, 64)] * 2
    assert all(0.0 <= float(b["img"].min()) and float(b["img"].max()) <= 1.0 for b in batches)
    again = [f for b in calibration_batches(str(synthetic_data), imgsz=64, batch=4, n_batches=2) for f in b["im_file"]]
    assert again == used


def test_a_split_smaller_than_the_request_is_used_whole(synthetic_data):
    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=16, n_batches=4))
    assert [len(b["im_file"]) for b in batches] == [16, 8]
