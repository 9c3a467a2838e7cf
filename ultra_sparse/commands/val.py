"""``ultra-sparse val``: Ultralytics validation of one checkpoint, with its sparsity."""

from __future__ import annotations

import json
from typing import Any

from ..bench import parse_device
from ..compare import check_inputs, validate
from ..config import check_imgsz, positive_int
from ..metadata import SparseMetadata, recorded_rules
from .benchmark import settings_from
from .common import OUTPUT_KEYS, check_new_file, claimed_run_dir, run_dir, write_new_files

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse val model=W data=D [imgsz=640] [batch=16] [device=cpu|0] [half] [name=..]\n\n"
    "Validates a checkpoint with Ultralytics' validator of its task (detect, segment, pose, obb: P, R, mAP50,\n"
    "mAP50-95; classify: top-1, top-5; and the speed per image) and reports its sparsity: non-zero parameters,\n"
    "zeros over prunable weights and over all parameters.\n"
    "Writes val.json in the run folder."
)
KEYS = {
    "model": "checkpoint (.pt) to validate (required)",
    "data": "dataset YAML, by path (a folder for classify; required)",
    "imgsz": "image size (default 640)",
    "batch": "batch size (default 16)",
    "device": "cpu (default) or a CUDA device such as 0",
    "half": "FP16 validation, CUDA only (default False)",
    **OUTPUT_KEYS,
}


def run(args: dict[str, Any]) -> None:
    """Validate ``model=`` on ``data=``; print Ultralytics' table plus sparsity and write val.json."""
    from ultralytics.utils import LOGGER

    args = dict(args)
    model, data = args.pop("model", None), args.pop("data", None)
    settings = settings_from(args, batch=16)
    check_imgsz(settings["imgsz"])
    positive_int("batch", settings["batch"])
    device = parse_device(settings["device"], settings["half"])
    if data is None:
        raise ValueError("data= is required (a dataset YAML)")
    project, name = args.pop("project", None), args.pop("name", None)
    check_new_file(run_dir(project, name, "val"), "project")
    loaded = check_inputs({"model": model}, data)
    rules = recorded_rules(SparseMetadata.from_ckpt(loaded["model"][1]))
    with claimed_run_dir(project, name, "val") as folder:
        result = validate(model, data, settings["imgsz"], settings["batch"], device, settings["half"], rules, folder)
        payload = {"model": str(model), "data": str(data), **settings, "device": device, "rules": rules, **result}
        write_new_files({folder / "val.json": json.dumps(payload, indent=2).encode()})
    LOGGER.info(f"ultra-sparse: results in {folder / 'val.json'}")
