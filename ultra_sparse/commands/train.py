"""``ultra-sparse train``: Ultralytics detection training with sparsity keys (gradual, one-shot, fine-tune-with-mask)."""

from __future__ import annotations

from typing import Any

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse train model=M data=D [sparsity=0.5] [schedule=gradual|oneshot] [rules=default]\n"
    "                          [importance=l1] [scope=global] [prune_start=N] [prune_end=N] [prune_freq=1]\n"
    "                          [any Ultralytics train key: epochs, imgsz, batch, optimizer, resume, ...]\n\n"
    "Trains like 'yolo detect train' and keeps pruned weights exactly zero in the model, the EMA and every\n"
    "checkpoint. From a sparse checkpoint without sparsity= it fine-tunes with the checkpoint's zeros as mask.\n"
    "Checkpoints load with plain YOLO(path); results.csv gains a 'sparsity' column."
)


class _TrainKeys(dict):
    """The documented keys of ``train``; every other key passes on to Ultralytics, which checks it and suggests."""

    def __contains__(self, key: object) -> bool:
        """Every key is accepted here: Ultralytics rejects unknown ones with its own suggestion."""
        return True


KEYS = _TrainKeys(
    {
        "model": "model YAML (from scratch), .pt checkpoint, or a sparse .pt to fine-tune with its mask (required)",
        "data": "dataset YAML (required unless resuming)",
        "sparsity": "final fraction of zeros over prunable weights, in [0, 1) (default: none; a sparse model keeps "
        "its own)",
        "schedule": "gradual (cubic ramp, default for a dense model) or oneshot (prune at the start, default for a "
        "sparse model)",
        "rules": "rule preset (default, tokenc3_lsnet) or path to a rules YAML (default: default)",
        "importance": "l1 (default), l2, l1l2, lamp",
        "method": "unstructured (default) or nm: N:M semi-structured zeros drawn once at the start (schedule=oneshot, "
        "no sparsity=); to fine-tune an N:M checkpoint, give no sparsity keys",
        "nm": "method=nm: the N:M pattern (default 2:4), see docs/nm.md",
        "scope": "global (default: each family ranked across its layers) or layer (per-layer ratios)",
        "prune_start": "epochs completed before the gradual ramp starts (default 0)",
        "prune_end": "epochs completed when the ramp reaches sparsity= (default: two thirds of epochs)",
        "prune_freq": "epochs between pruning steps of the ramp (default 1)",
    }
)


def run(args: dict[str, Any]) -> None:
    """Train ``args['model']`` with :class:`~ultra_sparse.model.SparseYOLO`; user errors raise ValueError etc."""
    from ..model import SparseYOLO

    args = dict(args)
    model = args.pop("model", None)
    if not model:
        raise ValueError("model= is required, e.g. model=yolo11n.yaml or model=runs/detect/train/weights/best.pt")
    SparseYOLO(str(model)).train(**args)
