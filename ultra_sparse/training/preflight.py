"""Checks before a sparse training run writes anything: keys, resume, data file, model task, rebuild, start decision.

Ultralytics writes the run folder before it looks at the data file or the model; a run refused here leaves nothing
behind.

Examples:
    >>> check_data("missing.yaml")
    Traceback (most recent call last):
    ...
    FileNotFoundError: data=missing.yaml not found (pass the dataset YAML by path)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn
from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg

from ..checkpoint import load_checkpoint
from ..config import SparsityConfig, check_imgsz
from ..metadata import SparseMetadata
from ..methods import method_of
from ..rules import trained_network
from .new_classes import class_output_names, keeps_yaml_shapes
from .start import StartPlan, decide_start, training_state

__all__ = [
    "check_data", "check_no_qat", "check_rebuild", "check_resumable", "dataset_fields", "imgsz_of", "preflight",
    "rebuild_reason",
]


def check_resumable(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint to resume and refuse one that cannot resume (finished, stripped, or not a training run).

    Returns:
        (dict): The checkpoint.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is unreadable or its run is finished.
    """
    _, ckpt = load_checkpoint(path)
    epochs = (ckpt.get("train_args") or {}).get("epochs")
    start = ckpt.get("epoch", -1) + 1
    if ckpt.get("optimizer") is None or not isinstance(epochs, int) or not 0 < start < epochs:
        raise ValueError(
            f"{path} is a finished run (or not a training checkpoint): nothing to resume; start a new run with "
            f"model={path} data=..."
        )
    return ckpt


def preflight(
    task: str, freeze_bn: bool, cfg: Any, overrides: dict, own: dict, check_task: Callable[[nn.Module | None, str | None], None]
) -> tuple[StartPlan | None, dict | None]:
    """Check a run before anything is written; return its start plan and a resumed sparsity state.

    Checks the keys (Ultralytics' own and the sparsity keys), a resume's checkpoint and the fit of its masks, the data
    file, the model's task (through ``check_task``), a channel-pruned start that the dataset would rebuild dense, and
    the start decision (:func:`~ultra_sparse.training.start.decide_start`).

    Args:
        task (str): The trainer's task.
        freeze_bn (bool): ``freeze_bn=True`` was given.
        cfg: The trainer's ``cfg``.
        overrides (dict): Ultralytics' keys (the sparsity keys taken out).
        own (dict): The sparsity keys given.
        check_task (Callable): Raises for a model (or ``task=``) of another task.

    Returns:
        (tuple): The :class:`~ultra_sparse.training.start.StartPlan` (None for a plain run or a resume) and the resumed
            ``ultra_sparse`` state (None unless resuming a sparse run).
    """
    if "distill_model" in overrides and "distill_model" not in DEFAULT_CFG_DICT:
        import ultralytics

        raise ValueError(f"distill_model= needs ultralytics 8.4.77 or later (installed: {ultralytics.__version__})")
    args = get_cfg(cfg, overrides)  # Ultralytics' own key checks, with its suggestions
    check_imgsz(imgsz_of(args.imgsz))  # a size whose batches cannot be allocated fails here, not in the first epoch
    if args.resume:
        path = args.resume if isinstance(args.resume, (str, Path)) and Path(args.resume).exists() else None
        if path is None:
            from ultralytics.utils.files import get_latest_run

            path = get_latest_run()
        if not path:
            raise FileNotFoundError("resume: no checkpoint found; pass model=path/to/last.pt resume=True")
        ckpt = check_resumable(path)
        check_task(ckpt.get("ema") or ckpt.get("model"), args.task)
        meta = SparseMetadata.from_ckpt(ckpt)
        state = meta.state if meta else None
        if state is not None:
            check_no_qat(args)
            net = trained_network((ckpt.get("ema") or ckpt["model"]).float())
            config = SparsityConfig(**state["config"])
            training_state(net, config, 1 << 30, True, state.get("imgsz", 640)).load_state_dict(state)
            return None, state
        return None, None
    if task == "classify":  # no detection-style images to calibrate on
        if own.get("reconstruct"):
            raise ValueError(
                "reconstruct=True refits on the images of a detection-style dataset; a classify run prunes "
                "without it"
            )
        if own.get("importance") == "taylor":
            config = SparsityConfig(**own)
            method_of(config).check_training(config)  # a method that never trains with taylor says so itself
            raise ValueError(
                "importance=taylor ranks channels by the loss on a detection-style dataset's images; a classify "
                "run ranks them by l1, l2 or lamp"
            )
    check_data(args.data, task)
    model = str(args.model or "")
    checkpoint = model.lower().endswith(".pt")
    if freeze_bn and not checkpoint:
        raise ValueError(
            f"freeze_bn=True keeps a checkpoint's BatchNorm statistics and model={model} has none: start from a .pt"
        )
    metadata, net = None, None
    if checkpoint:
        net, ckpt = load_checkpoint(model)
        metadata = SparseMetadata.from_ckpt(ckpt)
    elif own:
        from ultralytics import YOLO

        net = YOLO(model, task=args.task, verbose=False).model
    check_task(net, args.task)
    if net is None:
        return None, None
    check_rebuild(trained_network(net), args.data)
    plan = decide_start(trained_network(net), own, metadata, args.epochs, imgsz_of(args.imgsz))
    if plan is not None or metadata is not None or not keeps_yaml_shapes(trained_network(net)):
        check_no_qat(args)
    if plan is not None:  # reconstruct=None (method=channel): refit wherever the task can
        plan = replace(plan, config=plan.config.calibrated(task != "classify"))
    return plan, None


def check_no_qat(args: Any) -> None:
    """Refuse quantization-aware training (``quantize=8``) in a sparse run or from a sparse or pruned checkpoint.

    Ultralytics' QAT (NVIDIA ModelOpt) wraps the layers whose zeros and pruned channels the run keeps in quantizers;
    the masks, the channel plan and the checkpoints of this package do not follow them. Post-training INT8 of the
    exported artifact composes with both and is measured by ``compare format=... quantize=8``.

    Examples:
        >>> from types import SimpleNamespace
        >>> check_no_qat(SimpleNamespace(quantize=None))
        >>> check_no_qat(SimpleNamespace(quantize=8))
        Traceback (most recent call last):
        ...
        ValueError: quantize=8 (quantization-aware training) is not supported in a sparse run or from a sparse or pruned checkpoint; fine-tune without it, then quantize the exported artifact: ultra-sparse compare ... format=openvino quantize=8 data=D, or yolo export ... format=openvino quantize=8 data=D
    """
    quantize = getattr(args, "quantize", None)
    if str(quantize).lower() in {"8", "int8"}:
        raise ValueError(
            f"quantize={quantize} (quantization-aware training) is not supported in a sparse run or from a sparse or "
            "pruned checkpoint; fine-tune without it, then quantize the exported artifact: ultra-sparse compare ... "
            "format=openvino quantize=8 data=D, or yolo export ... format=openvino quantize=8 data=D"
        )


def rebuild_reason(weights: nn.Module, data: dict) -> str:
    """Why ``weights`` cannot be trained on ``data`` (a dataset dict) as it is, nor adapted ('' when it can)."""
    yaml = getattr(weights, "yaml", None) or {}
    if hasattr(weights, "is_fused") and weights.is_fused():
        return "the checkpoint's network is fused for inference"
    if data.get("nc") is not None and yaml.get("nc") != data["nc"]:
        try:
            class_output_names(weights)
        except ValueError as error:
            return str(error)
    if "kpt_shape" in data and list(yaml.get("kpt_shape") or []) != list(data["kpt_shape"]):
        return f"the checkpoint's keypoint shape {yaml.get('kpt_shape')} differs from the dataset's {data['kpt_shape']}"
    if yaml.get("channels", 3) != data.get("channels", 3):
        return "the checkpoint's input channels differ from the dataset's"
    return ""


def check_rebuild(net: nn.Module, data: Any) -> None:
    """Refuse, before the run starts, a channel-pruned checkpoint that the dataset would have rebuilt dense."""
    fields = dataset_fields(data)
    reason = rebuild_reason(net, fields) if fields else ""
    if reason and not keeps_yaml_shapes(net):
        raise ValueError(
            f"{reason}, so the network would be rebuilt from its YAML, and this checkpoint is channel-pruned "
            "(narrower than its YAML): the rebuild would return the dense network; train it on a dataset that "
            "matches it"
        )


def imgsz_of(imgsz: Any) -> int:
    """The run's ``imgsz`` as one side (the largest of a pair).

    Examples:
        >>> imgsz_of([480, 640]), imgsz_of(320)
        (640, 320)
    """
    return int(max(imgsz)) if isinstance(imgsz, (list, tuple)) else int(imgsz)


def dataset_fields(data: Any) -> dict[str, Any]:
    """The head-deciding fields of a dataset YAML (``nc``, ``kpt_shape``, ``channels``) without resolving its paths;
    an empty dict for anything else (classification folders, dataset names)."""
    import yaml
    from ultralytics.utils.checks import check_file

    text = str(data or "")
    if Path(text).suffix not in {".yaml", ".yml"}:
        return {}
    try:
        fields = yaml.safe_load(Path(check_file(text, download=False, hard=False) or text).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}  # Ultralytics' own dataset check names the problem
    if not isinstance(fields, dict):
        return {}
    names = fields.get("names")
    nc = len(names) if isinstance(names, (list, dict)) else fields.get("nc")
    return {"nc": nc, **{k: fields[k] for k in ("kpt_shape", "channels") if k in fields}}


def check_data(data: Any, task: str = "detect") -> None:
    """Refuse a dataset YAML that does not exist, or a YAML for a classify run (Ultralytics would find out only after
    writing the run folder, with a traceback)."""
    from ultralytics.utils.checks import check_file

    text = str(data or "")
    if "://" in text or Path(text).suffix not in {".yaml", ".yml"}:
        return  # URLs, dataset names and classification folders are Ultralytics' to resolve
    if task == "classify":
        raise ValueError(
            f"data={data} is a dataset YAML and this is a classify run, which trains on a dataset folder "
            "(data=path/to/dir with train/ and val/ folders of class folders)"
        )
    if not check_file(text, download=False, hard=False):
        raise FileNotFoundError(f"data={data} not found (pass the dataset YAML by path)")
