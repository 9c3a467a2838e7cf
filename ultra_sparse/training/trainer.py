"""Sparse training for every Ultralytics task: one mixin, :class:`SparseTrainerMixin`, on each task trainer.

``SparseDetectionTrainer``, ``SparseSegmentationTrainer``, ``SparsePoseTrainer``, ``SparseOBBTrainer`` and
``SparseClassificationTrainer`` are Ultralytics' own task trainers with the mixin. The mask state and the start
decision live in :mod:`ultra_sparse.methods.state` and :mod:`.start` (shared with the callbacks); the checks before a run in
:mod:`.preflight`, the atomic writes in :mod:`.saving`, the refit in :mod:`.refit`. The mixin changes these override
points:

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
  ``method=channel`` run removes its zeroed channels there (the channel method's ``finish``).
- ``save_metrics`` / ``get_validator``: the ``metrics/sparsity`` column and the task's sparse validator.

``freeze_bn=True`` keeps every BatchNorm layer of the trained network in eval mode at every batch: layers normalise
with the checkpoint's running statistics, which stay as they are, while their scale and shift still train. On a short
fine-tune of a channel-pruned model it removed the early collapse of live batch statistics (see docs/channel.md).

With knowledge distillation (``distill_model=``, Ultralytics 8.4.77+) the masks belong to the student.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from copy import deepcopy
from functools import partial
from typing import Any, Iterator

import torch
import torch.nn as nn
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.obb import OBBTrainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, colorstr

from ..config import SPARSITY_KEYS, SparsityConfig
from ..messages import echo
from ..metadata import SparseMetadata
from ..methods import method_of
from ..methods.state import SparseTraining
from ..rules import trained_network, unwrap
from ..validator import SPARSITY_KEYS as VALIDATOR_SPARSITY_KEYS
from ..validator import sparse_validator
from .new_classes import replace_class_outputs
from .preflight import imgsz_of, preflight, rebuild_reason
from .refit import RunCalibration, refit_layers
from .saving import atomic_strip, captured_saves, fresh_run_dir, remove_unstarted_run, with_metadata, write_captured
from .start import start_training, training_state

__all__ = [
    "SPARSE_TRAINERS",
    "SparseClassificationTrainer",
    "SparseDetectionTrainer",
    "SparseOBBTrainer",
    "SparsePoseTrainer",
    "SparseSegmentationTrainer",
    "SparseTrainerMixin",
    "freeze_batchnorm",
]


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
        self._calibration: RunCalibration | None = None
        self._plan, self._resume_state = preflight(self.task, self.freeze_bn, cfg, overrides, own, self._check_task)
        self._fresh_dir = fresh_run_dir(cfg, overrides)
        try:
            super().__init__(cfg, overrides, _callbacks)
        except BaseException:
            remove_unstarted_run(self._fresh_dir)  # Ultralytics wrote the run folder, then failed on the data
            raise
        if self.resume and own:
            LOGGER.warning(f"Resume ignores {sorted(own)}, using the checkpoint's sparsity state.")

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
        (:mod:`.new_classes`). Falls back to the task trainer's rebuild where the dataset needs another
        head that cannot be adapted (keypoint shape, input channels) or the checkpoint was fused for inference; a
        channel-pruned checkpoint in that case was refused before the run started.
        """
        reason = rebuild_reason(weights, self.data) if isinstance(weights, nn.Module) else "no checkpoint"
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

    def train(self):
        """Train; for multi-GPU runs the sparsity keys travel to the DDP workers inside ``vars(self.args)``."""
        try:
            with self._ddp_args():
                return super().train()
        except BaseException:
            remove_unstarted_run(self._fresh_dir)  # a run that failed before its first checkpoint leaves no folder
            raise

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
        if event == "on_train_batch_end" and self.sparse is not None and self.sparse.batchwise:
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
        with captured_saves(self) as captured:
            saved = super().save_model()
        write_captured(captured, None if self.sparse is None else lambda data: with_metadata(data, self.sparsity_metadata()))
        return saved

    def final_eval(self):
        """Strip and validate as Ultralytics does, but write the stripped last.pt and best.pt atomically, compressed.

        Ultralytics rewrites both files in place at the end of a run (``strip_optimizer``); a kill during that write
        would destroy the run's result.
        """
        finish = method_of(self.sparse.config).finish if self.sparse is not None else None
        with atomic_strip(finish):  # method=channel removes its zeroed channels there
            return super().final_eval()

    def sparsity_metadata(self) -> SparseMetadata:
        """What checkpoints store under ``ultra_sparse``: the mask state, achieved and target sparsity."""
        return SparseMetadata.of_training(
            self.sparse.state_dict(), self.sparse.sparsity(self._ema_net()), self.sparse.schedule.target()
        )

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
            self.sparse = start_training(net, self._plan, self.epochs, imgsz_of(self.args.imgsz), refit, batches)
        self._sync()

    def _refit(self, calib_batches: int, net: nn.Module, removal: dict) -> dict[str, Any]:
        """Refit the layers of ``net`` that have lost inputs to ``removal`` (:func:`~.refit.refit_layers`); the EMA and
        the optimizer's state restart from the fit."""
        images = self._run_calibration().images(self.net, calib_batches).to(next(net.parameters()).device)
        return refit_layers(net, removal, images, self._ema_net() if self.ema is not None else None, self.optimizer)

    def _calibration_batches(self, calib_batches: int) -> list[dict[str, Any]]:
        """The run's calibration batches, loaded once and kept on the CPU (``importance=taylor`` ranks by their loss)."""
        return self._run_calibration().batches(self.net, calib_batches)

    def _run_calibration(self) -> RunCalibration:
        """Where this run's calibration batches come from (:class:`~.refit.RunCalibration`)."""
        if self._calibration is None:
            self._calibration = RunCalibration(self.args.data, imgsz_of(self.args.imgsz), self.task)
        return self._calibration

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
