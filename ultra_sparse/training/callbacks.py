"""Sparse training as plain Ultralytics callbacks, for runs that keep their own trainer class.

Prefer the trainers of :mod:`ultra_sparse.training.trainer`. The callbacks start exactly as the trainers do (one decision,
:func:`ultra_sparse.training.start.decide_start`: a sparse checkpoint keeps its zeros, rules recorded in it apply), but
Ultralytics fires no callback between ``optimizer.step()`` and ``ema.update()``, so callbacks can only restore the
zeros at batch end, on the model and on the EMA. The weights seen by every forward pass and saved in checkpoints are
still exact zeros, but:

- gradients are not masked: gradient clipping counts pruned weights, optimizer state (momentum, Adam moments) refills
  at pruned positions after every step, and Muon (MuSGD) orthogonalises updates that include them;
- both model and EMA are masked after every batch (also between accumulation steps), twice the work of the trainer;
- checkpoints carry no ``ultra_sparse`` state and results.csv no ``metrics/sparsity`` column, and ``resume=True`` restarts
  the schedule: a resumed run keeps its zeros only if it starts from a sparse checkpoint without new sparsity keys;
- bad keys are refused when training starts (after Ultralytics wrote its run folder), not before;
- Ultralytics' own trainer rebuilds the network from its YAML, so a channel-pruned checkpoint would train at full
  width: it is refused (by :func:`add_sparse_callbacks` for a ``YOLO`` model, at the start of training otherwise).
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn
from ultralytics.utils import LOGGER, colorstr

from ..checkpoint import load_checkpoint
from ..config import SparsityConfig
from ..metadata import SparseMetadata
from ..methods import method_of
from ..methods.state import SparseTraining
from ..rules import trained_network
from .new_classes import keeps_yaml_shapes
from .preflight import check_no_qat
from .start import decide_start, start_training

_REBUILT = (
    "this checkpoint is channel-pruned and Ultralytics' own trainer rebuilds it from its YAML at full width: train "
    "it with 'ultra-sparse train', SparseYOLO.train or a Sparse*Trainer"
)

__all__ = ["SparseCallbacks", "add_sparse_callbacks"]


class SparseCallbacks:
    """Callbacks named after Ultralytics events that prune on a schedule and restore the zeros at batch end.

    Args:
        keys (dict): The sparsity keys given (checked here).

    Attributes:
        sparse (SparseTraining | None): Masks and schedule once training has started (None for a plain run).
    """

    def __init__(self, keys: dict[str, Any]):
        """Check the keys; masks are built when training starts."""
        config = SparsityConfig(**keys)
        method = method_of(config)
        if method.callbacks:
            raise ValueError(method.callbacks)
        method.check_training(config)  # keys the method never trains with (importance=taylor) are refused now
        self.keys = dict(keys)
        self.sparse: SparseTraining | None = None

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        """Decide the start as the trainers do, bind masks to the trainer's model, prune once for ``oneshot``."""
        net = trained_network(trainer.model)
        model = str(getattr(trainer.args, "model", "") or "")
        metadata = None
        if model.lower().endswith(".pt"):
            start, ckpt = load_checkpoint(model)
            _refuse_rebuilt(trained_network(start), net)
            metadata = SparseMetadata.from_ckpt(ckpt)
        plan = decide_start(net, self.keys, metadata, trainer.epochs)
        if plan is not None or metadata is not None:
            check_no_qat(trainer.args)
        if plan is not None:
            self.sparse = start_training(net, plan, trainer.epochs)
            self._restore(trainer, clear_state=True)

    def on_train_batch_end(self, trainer: Any) -> None:
        """Zero the pruned weights of model and EMA again (the step and the EMA update moved them)."""
        if self.sparse is not None:
            self._restore(trainer, clear_state=False)

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Step the schedule and grow the masks before validation."""
        if self.sparse is None:
            return
        grew = self.sparse.prune(trained_network(trainer.model), self.sparse.schedule.step())
        self._restore(trainer, clear_state=grew)  # also after a timed stop that skipped the last batch end
        LOGGER.info(f"{colorstr('sparsity:')} {self.sparse.sparsity(trained_network(trainer.model)):.2%} of prunable weights zero")

    def _restore(self, trainer: Any, clear_state: bool) -> None:
        """Apply masks to model and EMA; optionally zero optimizer state at masked positions."""
        net = trained_network(trainer.model)
        self.sparse.apply(net, trained_network(trainer.ema.ema) if trainer.ema else None)
        if clear_state:
            self.sparse.clear_optimizer_state(trainer.optimizer, net)


def add_sparse_callbacks(target: Any, **keys: Any) -> SparseCallbacks:
    """Register sparse-training callbacks on a ``YOLO`` model or a trainer.

    Args:
        target: Anything with Ultralytics' ``add_callback(event, fn)`` (a ``YOLO`` model, a trainer).
        **keys (Any): Sparsity keys (``sparsity``, ``rules``, ``schedule``, ...).

    Returns:
        (SparseCallbacks): The registered callbacks (their ``sparse`` attribute holds masks once training starts).

    Examples:
        >>> from ultralytics import YOLO
        >>> model = YOLO("yolo11n.yaml")
        >>> cb = add_sparse_callbacks(model, sparsity=0.5, schedule="oneshot")
        >>> model.train(data="coco8.yaml", epochs=1)  # doctest: +SKIP
    """
    callbacks = SparseCallbacks(keys)
    net = getattr(target, "model", None)
    if isinstance(net, nn.Module) and isinstance(getattr(net, "yaml", None), dict) and not keeps_yaml_shapes(net):
        raise ValueError(_REBUILT)
    for event in ("on_pretrain_routine_end", "on_train_batch_end", "on_train_epoch_end"):
        target.add_callback(event, getattr(callbacks, event))
    return callbacks


def _refuse_rebuilt(start: nn.Module, trained: nn.Module) -> None:
    """Refuse a run whose trainer rebuilt a channel-pruned start network wider than it was."""
    shapes = {k: v.shape for k, v in trained.state_dict().items()}
    if any(k in shapes and shapes[k] != v.shape for k, v in start.state_dict().items()) and not keeps_yaml_shapes(start):
        raise ValueError(_REBUILT)
