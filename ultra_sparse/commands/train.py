"""``ultra-sparse train``: Ultralytics training of any task with sparsity keys (gradual, one-shot, fine-tune-with-mask)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import ROUND_TO_HELP

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse train model=M data=D [sparsity=0.5] [schedule=gradual|oneshot] [rules=default]\n"
    "                          [importance=l1] [scope=global] [prune_start=N] [prune_end=N] [prune_freq=1]\n"
    "                          [method=unstructured|channel|nm] [flops=0.5] [round_to=8] [reconstruct=True]\n"
    "                          [calib_batches=8] [freeze_bn=False] [latency=0.6 backend=openvino [quantize=8]]\n"
    "                          [any Ultralytics train key: epochs, imgsz, batch, optimizer, resume, ...]\n\n"
    "Trains like 'yolo train' (detect, segment, pose, obb, classify: the checkpoint's task decides) and keeps\n"
    "pruned weights exactly zero in the model, the EMA and every checkpoint. It trains the checkpoint's own network\n"
    "(a channel-pruned model keeps its shapes). From a sparse checkpoint without sparsity= it fine-tunes with the\n"
    "checkpoint's zeros as mask. method=channel zeroes whole channels along the ramp and removes them when the run\n"
    "ends: last.pt and best.pt are smaller networks. distill_model=dense.pt adds a teacher (ultralytics 8.4.77+).\n"
    "Checkpoints load with plain YOLO(path); results.csv gains a 'sparsity' column."
)


KEYS = {  # documented here; every Ultralytics train key is taken too and checked by Ultralytics
    "model": "model YAML (from scratch), .pt checkpoint, or a sparse .pt to fine-tune with its mask (required)",
    "data": "dataset YAML (a folder for classify; required unless resuming)",
    "method": "unstructured (default); channel: whole channels zeroed along the ramp (at epoch ends with the refit, "
    "batch by batch with reconstruct=False) and removed from last.pt and best.pt when the run ends (see "
    "docs/channel.md); "
    "nm: N:M semi-structured zeros drawn once at the start (schedule=oneshot, no sparsity=)",
    "flops": "method=channel: fraction of GFLOPs to remove, in [0, 1) (or sparsity=: fraction of prunable "
    "parameters)",
    "round_to": ROUND_TO_HELP,
    "reconstruct": "method=channel: True refits, at every pruning step, the layers that lose input channels to the "
    "network's own outputs just before the step (least squares on calib_batches x 8 train images); the ramp then "
    "steps at epoch ends, every prune_freq. False: no refit, the ramp steps batch by batch (default True, except in "
    "classify runs, which prune without it; see docs/channel.md)",
    "calib_batches": "method=channel with the refit or importance=taylor: batches of 8 train images the refit fits on "
    "and taylor ranks on (default 8)",
    "nm": "method=nm: the N:M pattern (default 2:4), see docs/nm.md",
    "sparsity": "final fraction of zeros over prunable weights, in [0, 1) (default: none; a sparse model keeps "
    "its own)",
    "schedule": "gradual (cubic ramp, default for a dense model) or oneshot (prune at the start, default for a "
    "sparse model)",
    "rules": "rule preset (default, tokenc3_lsnet, thin_head) or path to a rules YAML (default: the rules recorded in a "
    "sparse checkpoint, else default)",
    "importance": "l1 (default), l2, l1l2 (not for method=channel), lamp, taylor (method=channel only: each step "
    "ranks channels by the loss gradients on the calibration batches; not in classify runs)",
    "scope": "global (default: each family ranked across its layers) or layer (per-layer ratios; the default for "
    "method=channel)",
    "prune_start": "epochs completed before the gradual ramp starts (default 0)",
    "prune_end": "epochs completed when the ramp reaches sparsity= (default: two thirds of epochs)",
    "prune_freq": "epochs between pruning steps of the ramp (default 1)",
    "freeze_bn": "True: BatchNorm layers normalise with the checkpoint's running statistics, kept fixed, while their "
    "scale and shift train (default False; for short fine-tunes of a channel-pruned model, see docs/channel.md; give "
    "it again with resume=True)",
    "distill_model": "teacher checkpoint for knowledge distillation (dis= weight; ultralytics 8.4.77+)",
    "latency": "method=channel from a .pt: latency to reach, as a ratio to the dense model's FP32 latency on "
    "backend= (e.g. 0.6); flops= is found before training by pruning, exporting and timing candidates of the start "
    "checkpoint on this machine (see docs/channel.md)",
    "backend": "with latency=: the runtime timed, onnxruntime, openvino or torchscript",
    "quantize": "with latency=: the precision timed, 32 (default), 16 or 8 (INT8, calibrated on data=); without "
    "latency=, Ultralytics' quantization-aware training, refused in sparse runs",
    "probes": "with latency=: at most this many candidates are pruned, exported and timed (default 7)",
}


def run(args: dict[str, Any]) -> None:
    """Train ``args['model']`` with :class:`~ultra_sparse.model.SparseYOLO`; user errors raise ValueError etc."""
    from ..model import SparseYOLO
    from ..training.preflight import check_resumable

    args = dict(args)
    model = args.pop("model", None)
    if not model:
        raise ValueError("model= is required, e.g. model=yolo11n.yaml or model=runs/detect/train/weights/best.pt")
    task = args.pop("task", None)  # 'ultra-sparse detect train ...' or task: in a cfg file, as for 'yolo'
    if args.get("resume"):
        check_resumable(model)  # Ultralytics would start a new run on a default dataset instead
    elif not args.get("data"):
        raise ValueError("data= is required (a dataset YAML), unless resuming with resume=True")
    search = None
    if "latency" in args:
        args, search = measured_flops(str(model), args)
    yolo = SparseYOLO(str(model), task=task)
    if search:  # the run folder exists once the trainer is made: the search's report goes there first
        yolo.add_callback("on_pretrain_routine_start", lambda trainer: write_search_report(trainer.save_dir, search))
    yolo.train(**args)


def write_search_report(folder: Path, search: dict[str, Any]) -> None:
    """Write a latency search's report into a run folder: ``latency-search.json`` and ``latency-search.md``.

    Examples:
        >>> import tempfile
        >>> probe = {"flops": 0.5, "ratio": 0.58, "iqr": 0.02}
        >>> search = {"latency": 0.6, "backend": "openvino", "quantize": 32, "max_probes": 7, "reachable_flops": 0.78,
        ...           "probes": [probe], "chosen": probe, "wall_s": 40.0, "note": "measured on this machine"}
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_search_report(folder, search)
        >>> sorted(p.name for p in folder.iterdir())
        ['latency-search.json', 'latency-search.md']
    """
    import json

    from ..report import latency_lines
    from .common import write_new_files

    folder = Path(folder)
    write_new_files({
        folder / "latency-search.json": json.dumps(search, indent=2).encode(),
        folder / "latency-search.md": ("\n".join(latency_lines(search, "# Latency search of this run")) + "\n").encode(),
    })


def measured_flops(model: str, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The train keys with ``latency=`` (and ``backend=``, ``quantize=``, ``probes=``) replaced by the ``flops=`` that
    meets it, measured on the start checkpoint before training, and the search's report section.

    With the layer scope of channel pruning (its default), the widths a GFLOPs target gives depend on the weights only
    where two groups tie at the target, so the run ends with the widths the probes timed, or next to them.

    Raises:
        ValueError: On a resume, a start that is not a ``.pt``, bad latency settings, or a target no probe reached.
    """
    from ultralytics.utils import LOGGER

    from ..calibration import model_imgsz
    from ..checkpoint import check_finite, load_checkpoint
    from ..config import SparsityConfig, check_imgsz
    from ..latency import check_latency_settings, find_flops

    args = dict(args)
    latency, backend = args.pop("latency"), args.pop("backend", None)
    quantize, probes = args.pop("quantize", 32), args.pop("probes", 7)
    if args.get("resume"):
        raise ValueError("latency= decides a new run's flops=; resume=True goes on with the flops= it found")
    if not model.lower().endswith(".pt"):
        raise ValueError(f"latency= times pruned copies of the start checkpoint: model={model} must be a .pt")
    config, _ = SparsityConfig.from_args(args)
    target = check_latency_settings(latency, backend, quantize, config, args.get("data"), probes)
    net, _ = load_checkpoint(model)
    check_finite(net, f"model={model}")
    imgsz = check_imgsz(max(args["imgsz"]) if isinstance(args.get("imgsz"), (list, tuple)) else args.get("imgsz") or model_imgsz(net))
    found, search = find_flops(net, config, target, imgsz, args.get("data"))
    chosen = search["chosen"]
    LOGGER.info(
        f"ultra-sparse: latency={search['latency']} on {search['backend']} (quantize={search['quantize']}): training "
        f"to flops={found.flops}, measured {chosen['ratio']:.3f} of dense (IQR {chosen['iqr']:.3f}) after "
        f"{len(search['probes'])} probes in {search['wall_s']:.0f} s; {search['note']}"
    )
    return {**args, "flops": found.flops}, search
