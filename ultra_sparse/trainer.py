"""Sparse training: :class:`SparseDetectionTrainer`, an Ultralytics DetectionTrainer that keeps masks exact.

:class:`SparseTraining` is the engine-agnostic state shared by the trainer and :mod:`ultra_sparse.callbacks`: the
keep-masks (parameter name -> bool tensor), the :class:`~ultra_sparse.schedule.SparsitySchedule`, and a plain-data state
for checkpoints (masks bit-packed, under the top-level checkpoint key ``ultra_sparse``, never in ``train_args``).

The trainer changes four Ultralytics override points and nothing else:

- ``optimizer_step``: masks gradients, runs the usual step without its EMA update, re-zeroes the masked weights, then
  updates the EMA, so the model, the EMA and every checkpoint hold exact zeros whatever the optimizer (SGD, AdamW,
  MuSGD, whose Muon updates are dense).
- ``run_callbacks``: prunes right after ``on_pretrain_routine_end`` (one-shot) and right before ``on_train_epoch_end``
  (gradual), on the model and the EMA, so validation measures the sparse model.
- ``save_model``: adds the sparsity state to last.pt, best.pt and epochN.pt; ``resume_training`` reads it back.
- ``save_metrics``: adds the achieved ``sparsity`` column to results.csv.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, colorstr

from .checkpoint import METADATA_KEY, atomic_write_bytes
from .config import SPARSITY_KEYS, SparsityConfig
from .importance import get_criterion
from .prune import element_masks
from .prune.unstructured import apply_masks, masks_from_zeros
from .rules import assign_families, load_rules
from .schedule import SparsitySchedule, default_window
from .validator import SparseDetectionValidator

__all__ = ["SPARSE_START_ZEROS", "SparseDetectionTrainer", "SparseTraining", "pack_mask", "prunable_zero_fraction", "start_is_sparse", "unpack_mask", "unwrap"]

SPARSE_START_ZEROS = 0.01  # a start model with this fraction of exact zeros (prunable weights) is treated as sparse


class SparseTraining:
    """Masks and schedule of one sparse training run, bound to one network.

    Args:
        net (nn.Module): The (unwrapped) network being trained; masks are keyed by its parameter names.
        config (SparsityConfig): Sparsity keys of the run. ``importance=taylor`` is not available in training.
        epochs (int): Length of the run, used for the default ``prune_start`` / ``prune_end``.
        sparse_start (bool): The start weights are a sparse checkpoint: their zeros are the first mask (they stay
            zero for the whole run) and the default schedule is ``oneshot``. Otherwise the first mask keeps everything.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, on the parameters' device.
        schedule (SparsitySchedule): Epoch -> target sparsity.
        config (SparsityConfig): The config with schedule, prune_start and prune_end resolved.

    Examples:
        >>> from ultralytics import YOLO
        >>> net = YOLO("yolo11n.yaml").model
        >>> state = SparseTraining(net, SparsityConfig(sparsity=0.5, schedule="oneshot"), epochs=3)
        >>> state.prune(net)
        True
        >>> round(state.sparsity(net), 4)
        0.5
    """

    def __init__(self, net: nn.Module, config: SparsityConfig, epochs: int, sparse_start: bool = False):
        """Bind to ``net``, take its zeros as the first mask and resolve the schedule."""
        if config.importance == "taylor":
            raise ValueError("importance=taylor is not available in training; use l1, l2, l1l2 or lamp")
        self.assignment = assign_families(net, load_rules(config.rules))
        if not self.assignment.prunable:
            raise ValueError(f"rules={config.rules!r} leave no prunable weight in this model")
        if sparse_start:
            self.masks = masks_from_zeros(self.assignment.prunable)
        else:
            self.masks = {w.name: torch.ones_like(w.weight, dtype=torch.bool) for w in self.assignment.prunable}
        initial = self.sparsity(net)
        final = config.sparsity
        if final is None:  # the rule ratios as written decide the final sparsity
            ruled = element_masks(self.assignment, get_criterion(config.importance), None, config).masks
            final = _zero_fraction(ruled.values())
        start, end = default_window(epochs)
        kind = config.schedule or ("oneshot" if sparse_start else "gradual")
        start = start if config.prune_start is None else config.prune_start
        end = max(start, end) if config.prune_end is None else config.prune_end
        if kind == "gradual" and end > epochs:
            raise ValueError(f"prune_end={end} is after the last epoch (epochs={epochs}); the target would not be met")
        self.config = config.replace(schedule=kind, prune_start=start, prune_end=end)
        self.schedule = SparsitySchedule(final, min(initial, final), kind, start, end, config.prune_freq)

    def sparsity(self, net: nn.Module) -> float:
        """Fraction of exact zeros over the prunable weights of ``net`` (the model or its EMA, matched by name)."""
        params = dict(net.named_parameters())
        return _zero_fraction(params[name].detach() for name in self.masks)

    def prune(self, net: nn.Module, target: float | None = None) -> bool:
        """Grow the masks of ``net`` to ``target`` (default: the schedule's current target); zeros never decrease.

        Args:
            net (nn.Module): The network the masks belong to; its weights are scored (masked ones score lowest).
            target (float, optional): Sparsity over prunable weights.

        Returns:
            (bool): True if the masks grew (apply them, and clear optimizer state, afterwards).
        """
        target = self.schedule.target() if target is None else target
        kept = sum(int(m.sum()) for m in self.masks.values())
        total = sum(m.numel() for m in self.masks.values())
        if round(target * total) <= total - kept:
            return False
        self.apply(net)  # scores must see the current zeros
        result = element_masks(self.assignment, get_criterion(self.config.importance), target, self.config)
        self.masks = {name: mask & result.masks[name].to(mask.device) for name, mask in self.masks.items()}
        _broadcast(self.masks)
        return True

    def apply(self, *modules: nn.Module | None) -> None:
        """Zero the masked weights of each module in place (the model, its EMA; ``None`` entries are skipped)."""
        for module in modules:
            if module is not None:
                apply_masks(module, self.masks)

    def bind(self, net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(parameter, mask in the parameter's dtype) pairs: the fast path for masking every step."""
        params = dict(net.named_parameters())
        return [(params[n], m.to(device=params[n].device, dtype=params[n].dtype)) for n, m in self.masks.items()]

    def clear_optimizer_state(self, optimizer: torch.optim.Optimizer | None, net: nn.Module) -> None:
        """Zero optimizer state (momentum, Adam moments) at masked positions, so pruned weights carry nothing over."""
        if optimizer is None:
            return
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name, mask in self.masks.items():
                for value in optimizer.state.get(params[name], {}).values():
                    if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                        value.mul_(mask.to(value.device))

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state for a checkpoint: config, schedule position and bit-packed masks."""
        return {
            "config": self.config.to_dict(),
            "schedule": self.schedule.state_dict(),
            "masks": {name: pack_mask(mask) for name, mask in self.masks.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the config, schedule position and masks written by :meth:`state_dict`."""
        self.config = SparsityConfig(**state["config"])
        self.schedule.load_state_dict(state["schedule"])
        masks = {name: unpack_mask(*packed) for name, packed in state["masks"].items()}
        if set(masks) != set(self.masks) or any(masks[n].shape != m.shape for n, m in self.masks.items()):
            raise ValueError("the checkpoint's sparsity masks do not fit this model")
        self.masks = {name: masks[name].to(m.device) for name, m in self.masks.items()}


def pack_mask(mask: torch.Tensor) -> tuple[tuple[int, ...], torch.Tensor]:
    """Pack a bool mask into (shape, uint8 tensor of 8 elements per byte).

    Examples:
        >>> m = torch.tensor([[True, False, True]])
        >>> torch.equal(unpack_mask(*pack_mask(m)), m)
        True
    """
    flat = mask.detach().reshape(-1).to("cpu", torch.uint8)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)]).reshape(-1, 8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return tuple(mask.shape), (flat * weights).sum(1, dtype=torch.uint8)


def unpack_mask(shape: tuple[int, ...], packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_mask`."""
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    flat = (packed.reshape(-1, 1) & bits).ne(0).reshape(-1)
    return flat[: int(torch.Size(shape).numel())].reshape(shape)


def _zero_fraction(tensors: Iterable[torch.Tensor]) -> float:
    """Fraction of zeros (or False entries) over all given tensors."""
    total = nonzero = 0
    for t in tensors:
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return 1.0 - nonzero / total if total else 0.0


def _broadcast(masks: dict[str, torch.Tensor]) -> None:
    """Under DDP, give every rank rank 0's masks (they are computed from identical weights; this makes it certain)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for name, mask in masks.items():
        buffer = mask.to(torch.uint8)
        dist.broadcast(buffer, src=0)
        masks[name] = buffer.bool()


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers (any Ultralytics version)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def prunable_zero_fraction(net: nn.Module, rules: str = "default") -> float:
    """Fraction of exact zeros over the prunable weights of ``net`` under ``rules``.

    Examples:
        >>> from ultralytics import YOLO
        >>> prunable_zero_fraction(YOLO("yolo11n.yaml").model)
        0.0
    """
    return _zero_fraction(w.weight.detach() for w in assign_families(net, load_rules(rules)).prunable)


def start_is_sparse(net: nn.Module, rules: str = "default") -> bool:
    """Whether ``net`` starts sparse: at least SPARSE_START_ZEROS of its prunable weights are exact zeros.

    Dense trained weights hold practically no exact zeros; any sparse checkpoint, whoever wrote it, passes.

    Examples:
        >>> from ultralytics import YOLO
        >>> start_is_sparse(YOLO("yolo11n.yaml").model)
        False
    """
    return prunable_zero_fraction(net, rules) >= SPARSE_START_ZEROS


class SparseDetectionTrainer(DetectionTrainer):
    """A DetectionTrainer that prunes on a schedule and keeps the pruned weights exactly zero.

    Takes every Ultralytics train key plus the sparsity keys of :class:`~ultra_sparse.config.SparsityConfig`
    (``sparsity``, ``rules``, ``importance``, ``scope``, ``schedule``, ``prune_start``, ``prune_end``,
    ``prune_freq``), which it removes before Ultralytics checks the rest. Without sparsity keys and from a dense
    model it trains exactly like DetectionTrainer; from a sparse model it fine-tunes with the model's zeros as mask.

    Attributes:
        sparsity_config (SparsityConfig | None): The sparsity keys given, or None.
        sparse (SparseTraining | None): Masks and schedule once training has started (None for a plain run).

    Examples:
        >>> from ultralytics import YOLO
        >>> YOLO("best.pt").train(trainer=SparseDetectionTrainer, data="coco8.yaml", sparsity=0.5)  # doctest: +SKIP
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        """Take the sparsity keys out of ``overrides``, validate them, and hand the rest to Ultralytics."""
        overrides = dict(overrides or {})
        own = {k: overrides.pop(k) for k in list(overrides) if k in SPARSITY_KEYS}
        self.sparsity_config = SparsityConfig(**own) if own else None
        if self.sparsity_config is not None and self.sparsity_config.importance == "taylor":
            raise ValueError("importance=taylor is not available in training; use l1, l2, l1l2 or lamp")
        self.sparse: SparseTraining | None = None
        self._resume_state: dict | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        super().__init__(cfg, overrides, _callbacks)
        if self.resume and own:
            LOGGER.warning(f"Resume ignores {sorted(own)}, using the checkpoint's sparsity state.")

    @property
    def net(self) -> nn.Module:
        """The trained network without its DDP / compile wrapper."""
        return unwrap(self.model)

    def train(self):
        """Train; for multi-GPU runs the sparsity keys travel to the DDP workers inside ``vars(self.args)``."""
        with self._ddp_args():
            return super().train()

    @contextmanager
    def _ddp_args(self) -> Iterator[None]:
        """Put the sparsity keys into ``self.args`` while DDP workers are launched (they rebuild from it)."""
        keys = self.sparsity_config.to_dict() if (self._launches_ddp() and self.sparsity_config) else {}
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
        super().run_callbacks(event)
        if event == "on_pretrain_routine_end":
            self._start_sparsity()

    def resume_training(self, ckpt):
        """Resume as Ultralytics does and keep the checkpoint's sparsity state for :meth:`_start_sparsity`."""
        if ckpt is not None and self.resume:
            self._resume_state = ckpt.get(METADATA_KEY)
        super().resume_training(ckpt)

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

    def get_validator(self):
        """Ultralytics' detection validator with the sparsity of the validated weights, counted with this run's rules."""
        stock = super().get_validator()  # also sets the loss names
        validator = SparseDetectionValidator(stock.dataloader, save_dir=self.save_dir, args=stock.args, _callbacks=self.callbacks)
        if self.sparsity_config is not None:
            validator.rules = self.sparsity_config.rules
        return validator

    def save_metrics(self, metrics: dict):
        """Write the metrics row with the achieved sparsity of the EMA (what is validated and saved)."""
        if self.sparse is not None:
            metrics = {**metrics, "sparsity": round(self.sparse.sparsity(self._ema_net()), 6)}
        super().save_metrics(metrics)

    def save_model(self):
        """Save as Ultralytics does, then add the sparsity state under the top-level ``ultra_sparse`` key."""
        saved = super().save_model()
        if self.sparse is not None and self.last.is_file():
            original = self.last.read_bytes()
            ckpt = torch.load(io.BytesIO(original), map_location="cpu", weights_only=False)
            ckpt[METADATA_KEY] = self.sparsity_metadata()
            buffer = io.BytesIO()
            torch.save(ckpt, buffer)
            for path in (self.last, self.best, self.wdir / f"epoch{self.epoch}.pt"):
                if path == self.last or (path.is_file() and path.read_bytes() == original):
                    atomic_write_bytes(path, buffer.getvalue())
        return saved

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
        """Build masks and schedule: from the resumed checkpoint, the start model's zeros, and the sparsity keys."""
        net = self.net
        fine_tune = False
        if self._resume_state is not None:
            state = self._resume_state
            self.sparse = SparseTraining(net, SparsityConfig(**state["config"]), self.epochs, sparse_start=True)
            self.sparse.load_state_dict(state)
            self.sparse.schedule.last_epoch = self.start_epoch
        else:
            config = self.sparsity_config
            zeros = prunable_zero_fraction(net, config.rules if config else "default")
            sparse_start = zeros >= SPARSE_START_ZEROS
            if config is None and not sparse_start:
                return  # a dense model without sparsity keys: plain Ultralytics training
            fine_tune = sparse_start and (config is None or config.sparsity is None)
            if fine_tune:  # fine-tune with mask: keep the zeros, add none (other keys such as rules= still apply)
                config = (config or SparsityConfig()).replace(sparsity=zeros, schedule="oneshot")
            self.sparse = SparseTraining(net, config, self.epochs, sparse_start)
            if self.sparse.config.schedule == "oneshot":
                self.sparse.prune(net)
        self._sync()
        c, s = self.sparse.config, self.sparse.schedule
        ramp = f", epochs {c.prune_start}->{c.prune_end} every {c.prune_freq}" if c.schedule == "gradual" else ""
        plan = (
            "fine-tune with the model's zeros as mask"
            if fine_tune
            else f"{c.schedule} to {s.final:.2%} ({c.rules} rules, {c.importance}, scope={c.scope}{ramp})"
        )
        LOGGER.info(f"{colorstr('sparsity:')} {plan}; now {self.sparse.sparsity(net):.2%} of prunable weights are zero")

    def _prune_epoch_end(self) -> None:
        """Step the schedule; grow the masks of model and EMA if the target rose."""
        if self.sparse.prune(self.net, self.sparse.schedule.step()):
            self._sync()
        LOGGER.info(
            f"{colorstr('sparsity:')} {self.sparse.sparsity(self._ema_net()):.2%} of prunable weights zero "
            f"(target {self.sparse.schedule.target():.2%})"
        )

    def _sync(self) -> None:
        """Apply the masks to model and EMA, clear masked optimizer state, and rebind the per-step pairs."""
        self.sparse.apply(self.net, self._ema_net())
        self.sparse.clear_optimizer_state(self.optimizer, self.net)
        self._pairs = self.sparse.bind(self.net)

    def _ema_net(self) -> nn.Module:
        """The EMA network, or the model where there is no EMA."""
        return self.ema.ema if self.ema is not None else self.net
