"""SparseDetectionValidator: Ultralytics' own numbers, plus sparsity, standalone and inside a trainer."""

from __future__ import annotations

import csv
from copy import copy
from pathlib import Path

import pytest

from ultra_sparse.validator import SPARSITY_KEYS, SparseDetectionValidator, model_sparsity

ACCURACY_KEYS = ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "fitness")


@pytest.fixture(scope="module")
def sparse_checkpoint(tmp_path_factory, trained_checkpoint) -> Path:
    """The trained checkpoint with 30% of its prunable weights zeroed."""
    from ultra_sparse.commands.sparsify import run

    out = tmp_path_factory.mktemp("sparse") / "sparse.pt"
    run({"model": str(trained_checkpoint), "sparsity": 0.3, "out": str(out)})
    return out


def _val(weights: Path, data: Path, folder: Path, **kwargs):
    from ultralytics import YOLO

    return YOLO(str(weights)).val(
        data=str(data), imgsz=64, batch=8, device="cpu", workers=0, plots=False, verbose=False,
        project=str(folder), name="val", **kwargs,
    )


def test_numbers_equal_plain_val(sparse_checkpoint, synthetic_data, tmp_path):
    plain = _val(sparse_checkpoint, synthetic_data, tmp_path)
    ours = _val(sparse_checkpoint, synthetic_data, tmp_path, validator=SparseDetectionValidator)
    for key in ACCURACY_KEYS:
        assert ours.results_dict[key] == plain.results_dict[key], key
    assert set(ours.speed) == set(plain.speed)
    assert list(ours.results_dict)[: len(ACCURACY_KEYS)] == list(plain.results_dict)
    assert ours.keys == plain.keys  # the printed table and the trainer's columns are Ultralytics'
    assert ours.fitness == plain.fitness


def test_sparsity_keys_match_the_checkpoint(sparse_checkpoint, synthetic_data, tmp_path):
    from ultralytics import YOLO

    expected = model_sparsity(YOLO(str(sparse_checkpoint)))  # counted before val fuses Conv+BN
    metrics = _val(sparse_checkpoint, synthetic_data, tmp_path, validator=SparseDetectionValidator)
    assert {k: metrics.results_dict[k] for k in SPARSITY_KEYS} == expected
    assert expected["sparsity/prunable"] == pytest.approx(0.3, abs=1e-3)
    assert 0 < expected["sparsity/all"] < expected["sparsity/prunable"]


def test_dense_model_reports_zero_sparsity(trained_checkpoint, synthetic_data, tmp_path):
    metrics = _val(trained_checkpoint, synthetic_data, tmp_path, validator=SparseDetectionValidator)
    assert metrics.results_dict["sparsity/prunable"] < 1e-3
    assert metrics.results_dict["sparsity/nonzero"] <= metrics.results_dict["sparsity/params"]


@pytest.mark.parametrize("val", [True, False])
def test_inside_a_trainer(trained_checkpoint, synthetic_data, tmp_path, val):
    """A trainer using the validator trains, picks best by Ultralytics' fitness and keeps results.csv rectangular.

    With val=True the sparsity columns come last; with val=False (only the last epoch validated) they are left out.
    """
    from ultralytics.models.yolo.detect import DetectionTrainer

    class Trainer(DetectionTrainer):
        def get_validator(self):
            super().get_validator()  # sets loss_names
            return SparseDetectionValidator(
                dataloader=self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
            )

    trainer = Trainer(
        overrides=dict(
            model=str(trained_checkpoint), data=str(synthetic_data), epochs=1 if val else 2, imgsz=64, batch=8,
            workers=0, device="cpu", project=str(tmp_path), name="train", plots=False, verbose=False, amp=False,
            val=val,
        )
    )
    trainer.train()
    with open(trainer.csv, newline="") as f:
        header = [h.strip() for h in next(csv.reader(f))]
        rows = list(csv.reader(f))
    assert len(rows) == (1 if val else 2)
    assert all(len(row) == len(header) for row in rows)
    sparsity_cols = [h for h in header if h.startswith("sparsity/")]
    assert sparsity_cols == (list(SPARSITY_KEYS) if val else [])
    if val:
        first = header.index(SPARSITY_KEYS[0])
        assert header.index("metrics/mAP50-95(B)") < header.index("val/dfl_loss") < first
    assert trainer.best_fitness is not None
    assert trainer.best.is_file()
