"""``ultra-sparse demo``: the whole workflow on generated data, in a few minutes on a laptop CPU.

1. make a small synthetic shapes dataset; 2. train a small dense baseline; 3. sparsify it one-shot (unstructured);
4. fine-tune with the mask to recover accuracy; 5. compare dense against sparse (accuracy, size, honest speed).
With ``channel=True`` (the default) a second leg follows: 6. channel-prune the baseline (``method=channel``, ``flops=``
of its GFLOPs removed, the layers that lost inputs refitted on the train images); 7. fine-tune the pruned checkpoint
(its own, thinner network); 8. compare dense against pruned, where the speed-up is measured rather than assumed.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from ..messages import echo
from .common import OUTPUT_KEYS, check_new_file, claim_run_dir, run_dir

__all__ = ["FLAGS", "HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse demo [model=yolo11n.yaml] [epochs=30] [finetune_epochs=4] [sparsity=0.5] [channel=True]\n"
    "                         [flops=0.5] [device=cpu]\n\n"
    "Generates a synthetic dataset, trains a dense baseline, sparsifies it, fine-tunes with the mask and compares\n"
    "dense against sparse; then (channel=True) channel-prunes the baseline, fine-tunes the pruned model and compares\n"
    "dense against pruned. Everything is written under <project>/<name> (default runs_dir/sparse/demo); every\n"
    "key is checked before the first step."
)
KEYS = {
    "model": "model YAML of the baseline: yolo11n.yaml (default), or yolov13-tokenc3-lsnet-n for this project's "
    "YOLOv13/LSNet/TokenC3 family",
    "rules": "rule preset for sparsify (default: tokenc3_lsnet)",
    "sparsity": "overall sparsity of the one-shot step (default 0.5)",
    "scope": "layer or global (default global)",
    "epochs": "baseline training epochs (default 30)",
    "finetune_epochs": "fine-tune epochs, of the sparse and of the channel-pruned model (default 4)",
    "channel": "also run the channel-pruning leg: prune, fine-tune, compare (default True)",
    "flops": "channel leg: fraction of the baseline's GFLOPs to remove (default 0.5)",
    "imgsz": "image size of data and training, a multiple of 32 (default 96)",
    "n_train": "synthetic training images (default 300)",
    "n_val": "synthetic validation images (default 80)",
    "device": "cpu (default) or a CUDA device such as 0",
    **OUTPUT_KEYS,
}
FLAGS = ("channel",)
COMPARE = {"runs": 30, "warmup": 5, "backend": "auto"}  # the compare steps' benchmark settings
DEFAULTS = {
    "model": "yolo11n.yaml",
    "rules": "tokenc3_lsnet",
    "sparsity": 0.5,
    "scope": "global",
    "epochs": 30,
    "finetune_epochs": 4,
    "channel": True,
    "flops": 0.5,
    "imgsz": 96,
    "n_train": 300,
    "n_val": 80,
    "device": "cpu",
}


def run(args: dict[str, Any]) -> None:
    """Run the demo steps (five, or eight with the channel leg) and print where every output went."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    from ..synthetic import make_synthetic_dataset
    from . import compare, sparsify, train

    opts = {**DEFAULTS, **args}
    model = _check_options(opts)
    folder = claim_run_dir(opts.get("project"), opts.get("name"), "demo")
    common = {"imgsz": opts["imgsz"], "device": opts["device"], "workers": 0, "plots": False, "seed": 0}
    steps = 8 if opts["channel"] else 5
    start = time.time()

    def compare_with_dense(candidates: dict[str, Path]) -> None:
        for name, candidate in candidates.items():
            compare.run({"dense": str(dense), "sparse": str(candidate), "data": str(data), "imgsz": opts["imgsz"],
                         "device": opts["device"], "project": str(folder), "name": name, **COMPARE})

    LOGGER.info(f"\nultra-sparse demo 1/{steps}: synthetic dataset ({opts['n_train']} train / {opts['n_val']} val images)")
    data = make_synthetic_dataset(folder / "data", n_train=opts["n_train"], n_val=opts["n_val"], imgsz=opts["imgsz"])

    LOGGER.info(f"\nultra-sparse demo 2/{steps}: dense baseline {model} for {opts['epochs']} epochs")
    YOLO(model).train(data=str(data), epochs=opts["epochs"], batch=16, project=str(folder), name="baseline", **common)
    dense = folder / "baseline" / "weights" / "best.pt"

    LOGGER.info(f"\nultra-sparse demo 3/{steps}: one-shot sparsify to {opts['sparsity']:.0%} ({opts['rules']} rules)")
    sparse = folder / "sparsify" / "weights" / "best-sparse.pt"
    sparsify.run({"model": str(dense), "sparsity": opts["sparsity"], "rules": opts["rules"], "scope": opts["scope"],
                  "out": str(sparse)})

    LOGGER.info(f"\nultra-sparse demo 4/{steps}: fine-tune with the mask for {opts['finetune_epochs']} epochs")
    train.run({"model": str(sparse), "data": str(data), "epochs": opts["finetune_epochs"], "batch": 16,
               "project": str(folder), "name": "finetune", "rules": opts["rules"], **common})
    recovered = folder / "finetune" / "weights" / "best.pt"

    LOGGER.info(f"\nultra-sparse demo 5/{steps}: compare dense against sparse (one-shot, then fine-tuned)")
    compare_with_dense({"compare-oneshot": sparse, "compare-finetuned": recovered})

    if opts["channel"]:
        LOGGER.info(f"\nultra-sparse demo 6/{steps}: channel-prune the baseline, {opts['flops']:.0%} of its GFLOPs removed")
        pruned = folder / "prune" / "weights" / "best-pruned.pt"
        sparsify.run({"model": str(dense), "method": "channel", "flops": opts["flops"], "rules": opts["rules"],
                      "data": str(data), "out": str(pruned)})  # data: the removal is refitted on its train images

        LOGGER.info(f"\nultra-sparse demo 7/{steps}: fine-tune the pruned model for {opts['finetune_epochs']} epochs")
        train.run({"model": str(pruned), "data": str(data), "epochs": opts["finetune_epochs"], "batch": 16,
                   "project": str(folder), "name": "finetune-pruned", **common})
        pruned_tuned = folder / "finetune-pruned" / "weights" / "best.pt"

        LOGGER.info(f"\nultra-sparse demo 8/{steps}: compare dense against pruned (one-shot, then fine-tuned)")
        compare_with_dense({"compare-pruned": pruned, "compare-pruned-finetuned": pruned_tuned})
    LOGGER.info(f"\nultra-sparse demo done in {time.time() - start:.0f} s; everything is under {folder}")


def _check_options(opts: dict[str, Any]) -> str:
    """Check every demo option as the later steps will, before anything is written; return the model YAML.

    Each step's own checks run here on the demo's values (sparsity settings, the rules against the model's modules,
    image size and device as compare takes them, counts), so a bad value fails in seconds, not after training.
    """
    from ultralytics.nn.tasks import DetectionModel

    from ..bench import check_settings, parse_device
    from ..config import SparsityConfig
    from ..rules import assign_families, check_prunable, load_rules

    config = SparsityConfig(sparsity=opts["sparsity"], rules=opts["rules"], scope=opts["scope"])
    if not isinstance(opts["channel"], bool):
        raise TypeError(f"channel={echo(opts['channel'])} must be True or False")
    if opts["channel"]:
        SparsityConfig(method="channel", flops=opts["flops"], rules=opts["rules"])
    model = _model_yaml(str(opts["model"]))
    for key in ("epochs", "finetune_epochs", "n_train", "n_val"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} must be a positive integer")
    check_settings(imgsz=opts["imgsz"], batch=1, **COMPARE)  # the compare steps' settings
    parse_device(opts["device"])
    check_new_file(run_dir(opts.get("project"), opts.get("name"), "demo"), "project")
    try:
        net = DetectionModel(model, verbose=False)  # built to check the rules against its modules
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"model={opts['model']!r} does not build: {e}") from None
    check_prunable(assign_families(net, load_rules(config.rules)), config.sparsity)
    return model


def _model_yaml(model: str) -> str:
    """Resolve a model name: a shipped model YAML of this project (with or without .yaml) or Ultralytics' own."""
    stem = model[: -len(".yaml")] if model.endswith(".yaml") else model
    shipped = resources.files("ultra_sparse.cfg") / "models" / f"{stem}.yaml"
    if shipped.is_file():
        return str(Path(str(shipped)))
    if not model.endswith((".yaml", ".yml")):
        raise ValueError(f"model={model!r} must be a model YAML, e.g. yolo11n.yaml or yolov13-tokenc3-lsnet-n")
    return model
