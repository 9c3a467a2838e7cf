"""Sparse training as plain Ultralytics callbacks, for runs that keep their own trainer class.

Prefer :class:`~ultra_sparse.trainer.SparseDetectionTrainer`. Ultralytics fires no callback between
``optimizer.step()`` and ``ema.update()``, so callbacks can only restore the zeros at batch end, on the model and on
the EMA. The weights seen by every forward pass and saved in checkpoints are still exact zeros, but:

- gradients are not masked: gradient clipping counts pruned weights, optimizer state (momentum, Adam moments) refills
  at pruned positions after every step, and Muon (MuSGD) orthogonalises updates that include them;
- both model and EMA are masked after every batch (also between accumulation steps), twice the work of the trainer;
- checkpoints carry no ``ultra_sparse`` state and results.csv no ``sparsity`` column, and ``resume=True`` restarts
  the schedule: a resumed run keeps its zeros only if it starts from a sparse checkpoint without new sparsity keys.
"""

from __future__ import annotations

from typing import Any

from ultralytics.utils import LOGGER, colorstr

from .config import SparsityConfig
from .trainer import SparseTraining, start_is_sparse, unwrap

__all__ = ["SparseCallbacks", "add_sparse_callbacks"]


class SparseCallbacks:
    """Callbacks named after Ultralytics events that prune on a schedule and restore the zeros at batch end.

    Args:
        config (SparsityConfig): The sparsity keys.

    Attributes:
        sparse (SparseTraining | None): Masks and schedule once training has started.
    """

    def __init__(self, config: SparsityConfig):
        """Store the config; masks are built when training starts."""
        if config.importance == "taylor":
            raise ValueError("importance=taylor is not available in training; use l1, l2, l1l2 or lamp")
        self.config = config
        self.sparse: SparseTraining | None = None

    def on_pretrain_routine_end(self, trainer: Any) -> None:
        """Bind masks to the trainer's model; prune once for ``schedule=oneshot``."""
        net = unwrap(trainer.model)
        self.sparse = SparseTraining(net, self.config, trainer.epochs, start_is_sparse(net, self.config.rules))
        if self.sparse.config.schedule == "oneshot":
            self.sparse.prune(net)
        self._restore(trainer, clear_state=True)

    def on_train_batch_end(self, trainer: Any) -> None:
        """Zero the pruned weights of model and EMA again (the step and the EMA update moved them)."""
        self._restore(trainer, clear_state=False)

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Step the schedule and grow the masks before validation."""
        if self.sparse.prune(unwrap(trainer.model), self.sparse.schedule.step()):
            self._restore(trainer, clear_state=True)
        else:
            self._restore(trainer, clear_state=False)  # a timed stop may skip the last batch end
        LOGGER.info(f"{colorstr('sparsity:')} {self.sparse.sparsity(unwrap(trainer.model)):.2%} of prunable weights zero")

    def _restore(self, trainer: Any, clear_state: bool) -> None:
        """Apply masks to model and EMA; optionally zero optimizer state at masked positions."""
        net = unwrap(trainer.model)
        self.sparse.apply(net, trainer.ema.ema if trainer.ema else None)
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
    callbacks = SparseCallbacks(SparsityConfig(**keys))
    for event in ("on_pretrain_routine_end", "on_train_batch_end", "on_train_epoch_end"):
        target.add_callback(event, getattr(callbacks, event))
    return callbacks
