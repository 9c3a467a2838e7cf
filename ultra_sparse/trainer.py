"""Sparse training for every Ultralytics task: one mixin, :class:`SparseTrainerMixin`, on each task trainer.

``SparseDetectionTrainer``, ``SparseSegmentationTrainer``, ``SparsePoseTrainer``, ``SparseOBBTrainer`` and
``SparseClassificationTrainer`` are Ultralytics' own task trainers with the mixin. The mask state and the start
decision live in :mod:`ultra_sparse.masking` (shared with the callbacks). The mixin changes these override points:

- ``__init__``: takes the sparsity keys out and checks everything before Ultralytics writes the run folder: keys,
  rules, window, reachability, NaN/Inf weights, the data file, a resume's state and mask fit.
- ``get_model``: trains a copy of the checkpoint's own network instead of rebuilding it from its YAML (Ultralytics
  copies only shape-matching tensors, which turns a channel-pruned model back into the full one).
- ``optimizer_step``: masks gradients, runs the usual step without its EMA update, re-zeroes the masked weights, then
  updates the EMA, so the model, the EMA and every checkpoint hold exact zeros whatever the optimizer.
- ``run_callbacks``: starts sparsity right after ``on_pretrain_routine_end`` and prunes right before
  ``on_train_epoch_end``, on the model and the EMA, so validation measures the sparse model (``method=channel``
  steps at epoch ends and first refits the layers that have lost inputs, except in classify runs and with
  ``reconstruct=False``, which follow the ramp at every ``on_train_batch_end``); warns at the end of a run that stopped
  below its target.
- ``validate``: no epoch becomes best.pt before the ramp reaches its target.
- ``save_model``: writes last.pt, best.pt and epochN.pt once each, atomically, with the ``ultra_sparse`` state.
- ``final_eval``: Ultralytics' end-of-run strip of last.pt and best.pt is written atomically too, and compressed; a
  ``method=channel`` run removes its zeroed channels there (:mod:`ultra_sparse.channel_training`).
- ``save_metrics`` / ``get_validator``: the ``metrics/sparsity`` column and the task's sparse validator.

``freeze_bn=True`` keeps every BatchNorm layer of the trained network in eval mode at every batch: layers normalise
with the checkpoint's running statistics, which stay as they are, while their scale and shift still train. On a short
fine-tune of a channel-pruned model it removed the early collapse of live batch statistics (see docs/channel.md).

With knowledge distillation (``distill_model=``, Ultralytics 8.4.77+) the masks belong to the student.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from copy import deepcopy
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, colorstr

from .channel_training import ChannelTraining, remove_zeroed_channels
from .checkpoint import METADATA_KEY, atomic_write_bytes, deflate_zip, load_checkpoint
from .config import SPARSITY_KEYS, SparsityConfig
from .masking import (
    SPARSE_START_ZEROS,
    SparseTraining,
    StartPlan,
    broadcast_state,
    decide_start,
    pack_mask,
    prunable_zero_fraction,
    start_is_sparse,
    start_training,
    trained_network,
    training_state,
    unpack_mask,
    unwrap,
)
from .messages import echo
from .new_classes import class_output_names, keeps_yaml_shapes, replace_class_outputs
from .validator import SPARSITY_KEYS as VALIDATOR_SPARSITY_KEYS
from .validator import sparse_validator

__all__ = [
    "SPARSE_START_ZEROS",
    "SPARSE_TRAINERS",
    "SparseClassificationTrainer",
    "SparseDetectionTrainer",
    "SparseOBBTrainer",
    "SparsePoseTrainer",
    "SparseSegmentationTrainer",
    "SparseTrainerMixin",
    "SparseTraining",
    "check_resumable",
    "freeze_batchnorm",
    "pack_mask",
    "prunable_zero_fraction",
    "start_is_sparse",
    "unpack_mask",
    "unwrap",
]

_CAPTURED: ContextVar[dict | None] = ContextVar("ultra_sparse_captured_checkpoints", default=None)


class _CapturedPath(type(Path())):
    """A checkpoint path whose ``write_bytes`` hands the bytes to the trainer while a save is captured.

    Paths derived with ``/`` keep the class (``wdir / "epoch3.pt"``), so every file of one save is captured.
    """

    def write_bytes(self, data):
        """Keep ``data`` for the capturing save, or write it as usual outside one."""
        captured = _CAPTURED.get()
        if captured is None:
            return super().write_bytes(data)
        captured[Path(self)] = bytes(data)
        return len(data)


@contextmanager
def _atomic_strip(transform: Callable[[bytes], bytes] | None = None) -> Iterator[None]:
    """Context: the trainer's ``strip_optimizer`` writes to a file beside its target, then replaces it atomically.

    The stripped checkpoint is DEFLATE-compressed on the way (plain ``torch.load`` reads it); exact zeros and pruned
    models shrink. Ultralytics' own function does the stripping; only where its bytes land changes. ``transform``
    rewrites the stripped bytes first (a ``method=channel`` run removes its zeroed channels there).
    """
    import ultralytics.engine.trainer as engine

    strip = engine.strip_optimizer

    def strip_atomically(f, s="", updates=None):
        target = Path(s or f)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".strip-") as staging:
            staged = Path(staging) / target.name
            ckpt = strip(f, str(staged), updates=updates)
            if staged.exists():
                stripped = staged.read_bytes()
                payload = deflate_zip(transform(stripped) if transform else stripped)
                atomic_write_bytes(target, payload)
                LOGGER.info(f"{colorstr('ultra_sparse:')} {target} replaced in one step, {len(payload) / 1e6:.1f}MB compressed")
        return ckpt

    engine.strip_optimizer = strip_atomically
    try:
        yield
    finally:
        engine.strip_optimizer = strip


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


class SparseTrainerMixin:
    """Sparse training on top of an Ultralytics task trainer (put it first in the bases).

    Takes every Ultralytics train key plus the sparsity keys of :class:`~ultra_sparse.config.SparsityConfig`, which
    it removes before Ultralytics checks the rest. Without sparsity keys and from a dense model it trains exactly like
    the task trainer; from a sparse model it fine-tunes with the model's zeros as mask.

    Attributes:
        task (str): The Ultralytics task this trainer trains.
        sparsity_config (SparsityConfig | None): The sparsity keys given, or None.
        sparse (SparseTraining | None): Masks and schedule once training has started (None for a plain run).
        freeze_bn (bool): Whether BatchNorm layers keep the checkpoint's running statistics (``freeze_bn=True``).
    """

    task = "detect"

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        """Take the sparsity keys and ``freeze_bn`` out of ``overrides``, check the whole start, then hand the rest to
        Ultralytics."""
        overrides = dict(overrides or {})
        own = {k: overrides.pop(k) for k in list(overrides) if k in SPARSITY_KEYS}
        self.freeze_bn = overrides.pop("freeze_bn", False)
        if not isinstance(self.freeze_bn, bool):
            raise TypeError(f"freeze_bn={echo(self.freeze_bn)} must be True or False")
        self.sparsity_config = SparsityConfig(**own) if own else None
        self.sparse: SparseTraining | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._calibration: list[dict[str, Any]] | None = None
        self._plan, self._resume_state = self._preflight(cfg, overrides, own)
        super().__init__(cfg, overrides, _callbacks)
        if self.resume and own:
            LOGGER.warning(f"Resume ignores {sorted(own)}, using the checkpoint's sparsity state.")

    def _preflight(self, cfg, overrides: dict, own: dict) -> tuple[StartPlan | None, dict | None]:
        """Check the run before anything is written; return the start plan and a resumed sparsity state."""
        if "distill_model" in overrides and "distill_model" not in DEFAULT_CFG_DICT:
            import ultralytics

            raise ValueError(f"distill_model= needs ultralytics 8.4.77 or later (installed: {ultralytics.__version__})")
        args = get_cfg(cfg, overrides)  # Ultralytics' own key checks, with its suggestions
        if args.resume:
            path = args.resume if isinstance(args.resume, (str, Path)) and Path(args.resume).exists() else None
            if path is None:
                from ultralytics.utils.files import get_latest_run

                path = get_latest_run()
            if not path:
                raise FileNotFoundError("resume: no checkpoint found; pass model=path/to/last.pt resume=True")
            ckpt = check_resumable(path)
            self._check_task(ckpt.get("ema") or ckpt.get("model"), args.task)
            state = ckpt.get(METADATA_KEY)
            if isinstance(state, dict) and "masks" in state:
                net = trained_network((ckpt.get("ema") or ckpt["model"]).float())
                config = SparsityConfig(**state["config"])
                training_state(net, config, 1 << 30, True, state.get("imgsz", 640)).load_state_dict(state)
                return None, state
            return None, None
        if self.task == "classify":  # no detection-style images to calibrate on
            if own.get("reconstruct"):
                raise ValueError(
                    "reconstruct=True refits on the images of a detection-style dataset; a classify run prunes "
                    "without it"
                )
            if own.get("importance") == "taylor" and own.get("method") == "channel":
                raise ValueError(
                    "importance=taylor ranks channels by the loss on a detection-style dataset's images; a classify "
                    "run ranks them by l1, l2 or lamp"
                )
        _check_data(args.data, self.task)
        model = str(args.model or "")
        checkpoint = model.lower().endswith(".pt")
        if self.freeze_bn and not checkpoint:
            raise ValueError(
                f"freeze_bn=True keeps a checkpoint's BatchNorm statistics and model={model} has none: start from a .pt"
            )
        metadata, net = None, None
        if checkpoint:
            net, ckpt = load_checkpoint(model)
            metadata = ckpt.get(METADATA_KEY)
        elif own:
            from ultralytics import YOLO

            net = YOLO(model, task=args.task, verbose=False).model
        self._check_task(net, args.task)
        if net is None:
            return None, None
        self._check_rebuild(trained_network(net), args.data)
        plan = decide_start(trained_network(net), own, metadata, args.epochs, _imgsz(args.imgsz))
        if plan is not None and plan.config.method == "channel":  # reconstruct=None: refit wherever the task can
            plan = replace(plan, config=plan.config.calibrated(self.task != "classify"))
        return plan, None

    def _check_task(self, net: nn.Module | None, task: str | None) -> None:
        """Refuse a model (or a ``task=``) of another task with one line naming the trainer to use."""
        from ultralytics.nn.tasks import guess_model_task

        task = guess_model_task(trained_network(net)) if net is not None else task or self.task
        if task != self.task:
            name = SPARSE_TRAINERS[task].__name__ if task in SPARSE_TRAINERS else "none"
            raise ValueError(
                f"{type(self).__name__} trains {self.task} models and this is a {task} model: use {name} "
                "(SparseYOLO and 'ultra-sparse train' pick the trainer by task)"
            )

    @property
    def net(self) -> nn.Module:
        """The trained network: without its DDP / compile wrapper, and the student when distilling."""
        return trained_network(self.model)

    def get_model(self, cfg=None, weights=None, verbose: bool = True):
        """Train a copy of the checkpoint's own network, not a rebuild from its YAML with shape-matching tensors.

        A dataset with another class count keeps the network too: only the head's class outputs are replaced
        (:mod:`ultra_sparse.new_classes`). Falls back to the task trainer's rebuild where the dataset needs another
        head that cannot be adapted (keypoint shape, input channels) or the checkpoint was fused for inference; a
        channel-pruned checkpoint in that case was refused before the run started.
        """
        reason = self._rebuild_reason(weights, self.data) if isinstance(weights, nn.Module) else "no checkpoint"
        if reason:
            if isinstance(weights, nn.Module) and verbose:
                LOGGER.info(f"{colorstr('ultra_sparse:')} {reason}: the network is rebuilt from its YAML as Ultralytics does")
            return super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        model = deepcopy(weights).float()
        old_nc = getattr(model.model[-1], "nc", None)
        replaced = replace_class_outputs(model, self.data["nc"])
        if replaced:
            LOGGER.info(
                f"{colorstr('ultra_sparse:')} the checkpoint has {old_nc or 'other'} classes and the dataset "
                f"{self.data['nc']}: replaced the {len(replaced)} class output layers ({', '.join(replaced)}), newly "
                "initialised; every other layer keeps its weights and shape"
            )
        if hasattr(model, "criterion"):
            model.criterion = None  # built afresh from this run's hyperparameters
        for param in model.parameters():
            param.requires_grad_(True)
        dropout = getattr(self.args, "dropout", 0.0)
        for module in model.modules():
            if isinstance(module, nn.Dropout) and dropout:
                module.p = dropout
        if verbose:
            count = sum(p.numel() for p in model.parameters())
            tensors = len(model.state_dict())
            kept = f"{tensors - 2 * len(replaced)}/{tensors} tensors kept" if replaced else f"all {tensors} tensors kept"
            LOGGER.info(
                f"{colorstr('ultra_sparse:')} training the checkpoint's own network ({count:,} parameters, {kept}), "
                "not a rebuild from its YAML"
            )
        return model

    @staticmethod
    def _rebuild_reason(weights: nn.Module, data: dict) -> str:
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

    def _check_rebuild(self, net: nn.Module, data: Any) -> None:
        """Refuse, before the run starts, a channel-pruned checkpoint that the dataset would have rebuilt dense."""
        fields = _dataset_fields(data)
        reason = self._rebuild_reason(net, fields) if fields else ""
        if reason and not keeps_yaml_shapes(net):
            raise ValueError(
                f"{reason}, so the network would be rebuilt from its YAML, and this checkpoint is channel-pruned "
                "(narrower than its YAML): the rebuild would return the dense network; train it on a dataset that "
                "matches it"
            )

    def train(self):
        """Train; for multi-GPU runs the sparsity keys travel to the DDP workers inside ``vars(self.args)``."""
        with self._ddp_args():
            return super().train()

    @contextmanager
    def _ddp_args(self) -> Iterator[None]:
        """Put the sparsity keys and ``freeze_bn`` into ``self.args`` while DDP workers are launched (they rebuild from
        it)."""
        keys = {}
        if self._launches_ddp():
            keys = self.sparsity_config.to_dict() if self.sparsity_config else {}
            if self.freeze_bn:
                keys["freeze_bn"] = True
        for key, value in keys.items():
            setattr(self.args, key, value)
        try:
            yield
        finally:
            for key in keys:
                delattr(self.args, key)

    def _launches_ddp(self) -> bool:
        """Whether ``train()`` will start DDP workers (8.4 decides in ``__init__``, 8.3 inside ``train``)."""
        if hasattr(self, "ddp"):
            return bool(self.ddp)
        device = self.args.device
        count = len(device) if isinstance(device, (list, tuple)) else len(str(device).split(",")) if device else 0
        return count > 1 and "LOCAL_RANK" not in os.environ

    def run_callbacks(self, event: str):
        """Run the event's callbacks, pruning first at epoch ends and starting sparsity after pretrain routine end."""
        if event == "on_train_epoch_end" and self.sparse is not None:
            self._prune_epoch_end()
        if event == "on_train_epoch_start":
            self._batches = 0
        if event == "on_train_batch_start" and self.freeze_bn:
            freeze_batchnorm(self.net)
        if event == "on_train_batch_end" and isinstance(self.sparse, ChannelTraining) and not self._refits():
            self._prune_batch_end()
        if event == "on_train_end" and self.sparse is not None and not self.sparse.reached(self._ema_net()):
            LOGGER.warning(
                f"sparsity: the run ended at {self.sparse.sparsity(self._ema_net()):.2%}, below its target "
                f"{self.sparse.schedule.final:.2%} (it stopped before prune_end={self.sparse.config.prune_end}, e.g. "
                "by time= or patience=); resume it or fine-tune further to reach the target"
            )
        super().run_callbacks(event)
        if event == "on_pretrain_routine_end":
            self._start_sparsity()
            if self.freeze_bn:
                LOGGER.info(
                    f"{colorstr('ultra_sparse:')} freeze_bn=True: BatchNorm layers normalise with the checkpoint's "
                    "running statistics, which stay fixed; their scale and shift train"
                )

    def optimizer_step(self):
        """Mask gradients, step without the EMA update, re-zero masked weights, then update the EMA."""
        if self.sparse is None:
            return super().optimizer_step()
        for param, mask in self._pairs:
            if param.grad is not None:
                param.grad.mul_(mask)  # clipping and optimizer state see live weights only
        ema, self.ema = self.ema, None
        try:
            super().optimizer_step()
        finally:
            self.ema = ema
        with torch.no_grad():
            for param, mask in self._pairs:
                param.mul_(mask)  # dense updates (Muon, weight decay on non-zero state) are undone here
        if self.ema:
            self.ema.update(self.model)

    def validate(self):
        """Validate as Ultralytics does; while the pruning ramp has not reached its target, no epoch becomes best.pt.

        best.pt is the best model AT the requested sparsity: an earlier, denser epoch scores higher but is not what
        was asked for (and, for ``method=channel``, could not be pruned to the target without changing its output).
        """
        best = self.best_fitness
        metrics, fitness = super().validate()
        if self.sparse is not None and not self.sparse.reached(self._ema_net()):
            self.best_fitness = best
        return metrics, fitness

    def get_validator(self):
        """The task's validator with the sparsity of the validated weights, counted with this run's rules."""
        stock = super().get_validator()  # also sets the loss names
        validator = sparse_validator(type(stock))(
            dataloader=stock.dataloader, save_dir=self.save_dir, args=stock.args, _callbacks=self.callbacks
        )
        if self._resume_state is not None:
            validator.rules = self._resume_state["config"]["rules"]
        elif self._plan is not None:
            validator.rules = self._plan.config.rules
        return validator

    def save_metrics(self, metrics: dict):
        """Write the metrics row with ONE sparsity column, ``metrics/sparsity``: zeros over prunable weights of the EMA
        (what is validated and saved), every epoch of a sparse run. Ultralytics 8.4 plots every ``metrics/`` column in
        results.png; the validator's own sparsity keys, which would repeat it, are left out of results.csv."""
        metrics = {k: v for k, v in metrics.items() if k not in VALIDATOR_SPARSITY_KEYS}
        if self.sparse is not None:
            metrics["metrics/sparsity"] = round(self.sparse.sparsity(self._ema_net()), 6)
        super().save_metrics(metrics)

    def save_model(self):
        """Save as Ultralytics does, but write each file once, atomically, with the ``ultra_sparse`` state in it.

        Ultralytics serialises the checkpoint once and writes it to last.pt (and best.pt, epochN.pt) in place; here
        those writes are captured in memory, the state is added (in a sparse run), and each file is replaced
        atomically, so a kill during a save leaves the previous file whole.
        """
        paths = {"last": self.last, "best": self.best, "wdir": self.wdir}
        for key, path in paths.items():
            setattr(self, key, _CapturedPath(path))
        token = _CAPTURED.set({})
        try:
            saved = super().save_model()
            captured = _CAPTURED.get()
        finally:
            _CAPTURED.reset(token)
            for key, path in paths.items():
                setattr(self, key, path)
        payloads = {}
        for path, data in (captured or {}).items():
            if data not in payloads:
                payloads[data] = data if self.sparse is None else self._with_state(data)
            atomic_write_bytes(path, payloads[data])
        return saved

    def final_eval(self):
        """Strip and validate as Ultralytics does, but write the stripped last.pt and best.pt atomically, compressed.

        Ultralytics rewrites both files in place at the end of a run (``strip_optimizer``); a kill during that write
        would destroy the run's result.
        """
        channel = isinstance(self.sparse, ChannelTraining)
        with _atomic_strip(remove_zeroed_channels if channel else None):
            return super().final_eval()

    def _with_state(self, data: bytes) -> bytes:
        """The checkpoint ``data`` with this run's ``ultra_sparse`` state added."""
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        ckpt[METADATA_KEY] = self.sparsity_metadata()
        buffer = io.BytesIO()
        torch.save(ckpt, buffer)
        return buffer.getvalue()

    def sparsity_metadata(self) -> dict[str, Any]:
        """What checkpoints store under ``ultra_sparse``: version, achieved and target sparsity, and the state."""
        from . import __version__

        return {
            "version": __version__,
            "sparsity": self.sparse.sparsity(self._ema_net()),
            "target": self.sparse.schedule.target(),
            **self.sparse.state_dict(),
        }

    def _handle_nan_recovery(self, epoch):
        """Recover as Ultralytics does (reloading last.pt), then re-apply the current masks to model and EMA."""
        recovered = super()._handle_nan_recovery(epoch)
        if recovered and self.sparse is not None:
            self._sync()
        return recovered

    def _start_sparsity(self) -> None:
        """Bind masks and schedule to the trained network: from the resumed state or from the start plan."""
        net, state = self.net, self._resume_state
        if state is None and self._plan is None:
            return
        config = SparsityConfig(**state["config"]) if state is not None else self._plan.config
        refit = partial(self._refit, config.calib_batches) if config.reconstruct else None
        batches = partial(self._calibration_batches, config.calib_batches) if config.importance == "taylor" else None
        if state is not None:
            self.sparse = training_state(net, config, self.epochs, True, state.get("imgsz", 640), refit, batches)
            self.sparse.load_state_dict(state)
            self.sparse.schedule.last_epoch = self.start_epoch
        else:
            self.sparse = start_training(net, self._plan, self.epochs, _imgsz(self.args.imgsz), refit, batches)
        self._sync()

    def _refits(self) -> bool:
        """Whether this is a ``method=channel`` run that refits at its pruning steps (``reconstruct=True``)."""
        return isinstance(self.sparse, ChannelTraining) and bool(self.sparse.config.reconstruct)

    def _refit(self, calib_batches: int, net: nn.Module, removal: dict) -> dict[str, Any]:
        """Refit the layers that have lost inputs to ``removal``, before the masks zero the new channels.

        The EMA restarts from the refitted network (an average across the change would mix two networks) and so does
        the optimizer's state (momentum built on the weights the fit replaced). Under DDP every rank fits and then
        takes rank 0's result.

        Args:
            calib_batches (int): Batches of 8 calibration images to fit on.
            net (nn.Module): The trained network, full width, its removed channels not yet zeroed.
            removal (dict): The run's whole channel removal so far.

        Returns:
            (dict): The fit (:class:`~ultra_sparse.prune.reconstruct.Reconstruction` as a dict).
        """
        from .prune.reconstruct import reconstruct_masked

        device = next(net.parameters()).device
        done = reconstruct_masked(net, removal, self._calibration_images(calib_batches).to(device))
        broadcast_state(net)
        if self.ema is not None:
            self._ema_net().load_state_dict(net.state_dict())
        if self.optimizer is not None:
            self.optimizer.state.clear()
        LOGGER.info(
            f"{colorstr('ultra_sparse:')} refitted {done.layers} layers that have lost input channels on {done.images} "
            f"calibration images (relative output error {done.error_before:.3f} -> {done.error_after:.3f})"
        )
        return done.to_dict()

    def _calibration_batches(self, calib_batches: int) -> list[dict[str, Any]]:
        """The run's calibration batches, loaded once and kept on the CPU.

        Spread over the train split, letterboxed, with the task's own labels: the refit fits on their images,
        ``importance=taylor`` ranks channels by their loss.
        """
        if self._calibration is None:
            from .calibration import calibration_batches, model_stride

            stride = model_stride(self.net)
            self._calibration = list(
                calibration_batches(self.args.data, _imgsz(self.args.imgsz), 8, calib_batches, stride, task=self.task)
            )
        return self._calibration

    def _calibration_images(self, calib_batches: int) -> torch.Tensor:
        """The images of :meth:`_calibration_batches`, as one tensor."""
        return torch.cat([b["img"] for b in self._calibration_batches(calib_batches)])

    def _prune_epoch_end(self) -> None:
        """Step the schedule; grow the masks of model and EMA if the target rose."""
        self._grow(self.sparse.schedule.step())
        LOGGER.info(f"{colorstr('sparsity:')} {self.sparse.progress(self._ema_net())}")

    def _prune_batch_end(self) -> None:
        """``method=channel``: follow the ramp batch by batch (the schedule itself steps at epoch ends)."""
        self._batches = getattr(self, "_batches", 0) + 1
        self._grow(self.sparse.schedule.at(self.epoch + self._batches / max(1, len(self.train_loader))))

    def _grow(self, target: float) -> None:
        """Prune to ``target`` and, where the masks grew, apply them to model and EMA.

        The features Ultralytics' distillation captured in the last forward pass (used up by its loss) are dropped
        first: they hold autograd history, which a copy of the network (a channel plan, a refit) cannot take.
        """
        for name in ("_student_feats", "_teacher_feats"):
            captured = getattr(unwrap(self.model), name, None)
            if isinstance(captured, dict):
                captured.clear()
        if self.sparse.prune(self.net, target):
            self._sync()

    def _sync(self) -> None:
        """Apply the masks to model and EMA, clear masked optimizer state, and rebind the per-step pairs."""
        self.sparse.apply(self.net, self._ema_net())
        self.sparse.clear_optimizer_state(self.optimizer, self.net)
        self._pairs = self.sparse.bind(self.net)

    def _ema_net(self) -> nn.Module:
        """The EMA network (the student's EMA when distilling), or the model where there is no EMA."""
        return trained_network(self.ema.ema) if self.ema is not None else self.net


def freeze_batchnorm(net: nn.Module) -> None:
    """Put every BatchNorm layer of ``net`` in eval mode: it normalises with, and no longer updates, its running
    statistics; its affine weights still train.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).train()
        >>> freeze_batchnorm(net)
        >>> net[0].training, net[1].training
        (True, False)
    """
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _imgsz(imgsz: Any) -> int:
    """The run's ``imgsz`` as one side (the largest of a pair)."""
    return int(max(imgsz)) if isinstance(imgsz, (list, tuple)) else int(imgsz)


def _dataset_fields(data: Any) -> dict[str, Any]:
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


def _check_data(data: Any, task: str) -> None:
    """Refuse a dataset YAML that does not exist (Ultralytics would look for it only after writing the run folder)."""
    from ultralytics.utils.checks import check_file

    text = str(data or "")
    if "://" in text or Path(text).suffix not in {".yaml", ".yml"}:
        return  # URLs, dataset names and classification folders are Ultralytics' to resolve
    if not check_file(text, download=False, hard=False):
        raise FileNotFoundError(f"data={data} not found (pass the dataset YAML by path)")


class SparseDetectionTrainer(SparseTrainerMixin, DetectionTrainer):
    """A DetectionTrainer that prunes on a schedule and keeps the pruned weights exactly zero.

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("best.pt").train(trainer=SparseDetectionTrainer, data="coco8.yaml", sparsity=0.5)  # doctest: +SKIP
    """

    task = "detect"


class SparseSegmentationTrainer(SparseTrainerMixin, SegmentationTrainer):
    """A SegmentationTrainer with the guarantees of :class:`SparseDetectionTrainer`."""

    task = "segment"


class SparsePoseTrainer(SparseTrainerMixin, PoseTrainer):
    """A PoseTrainer with the guarantees of :class:`SparseDetectionTrainer`."""

    task = "pose"


class SparseOBBTrainer(SparseTrainerMixin, OBBTrainer):
    """An OBBTrainer with the guarantees of :class:`SparseDetectionTrainer`."""

    task = "obb"


class SparseClassificationTrainer(SparseTrainerMixin, ClassificationTrainer):
    """A ClassificationTrainer with the guarantees of :class:`SparseDetectionTrainer`."""

    task = "classify"


SPARSE_TRAINERS = {
    t.task: t
    for t in (SparseDetectionTrainer, SparseSegmentationTrainer, SparsePoseTrainer, SparseOBBTrainer, SparseClassificationTrainer)
}
