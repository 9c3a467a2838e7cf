"""The mask state of a sparse training run: :class:`SparseTraining` and the small tools every mask state shares.

It sits with the methods, below the registry: each method's ``training_state`` builds on it (the element methods use it
as it is, the channel method subclasses it), and :mod:`ultra_sparse.training` drives whichever state a method made.

:class:`SparseTraining` holds the keep-masks (parameter name -> bool tensor) of an element method (``unstructured``,
``nm``) and the :class:`~ultra_sparse.schedule.SparsitySchedule`, with a plain-data state for checkpoints (masks
bit-packed by :func:`pack_mask`). The trainer and the callbacks drive it through a small protocol that every mask state
keeps (the channel method's :class:`~ultra_sparse.methods.channel.training.ChannelTraining` too): ``prune``, ``apply``,
``bind``, ``clear_optimizer_state``, ``sparsity``, ``reached``, ``check_reachable``, ``progress``, ``state_dict``,
``load_state_dict`` and the attributes ``config``, ``schedule``, ``masks``, ``assignment`` and ``batchwise``.

Examples:
    >>> m = torch.tensor([[True, False, True]])
    >>> torch.equal(unpack_mask(*pack_mask(m)), m)
    True
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from ..config import SparsityConfig
from ..importance import get_criterion
from ..prune import element_masks
from ..prune.unstructured import apply_masks, masks_from_zeros
from ..metadata import config_record
from ..rules import assign_families, check_prunable, load_rules
from ..schedule import SparsitySchedule, default_window

__all__ = [
    "SparseTraining",
    "broadcast_masks",
    "broadcast_state",
    "pack_mask",
    "prunable_zero_fraction",
    "refuse_taylor",
    "resolved_schedule",
    "unpack_mask",
    "unpack_masks",
    "zero_fraction",
]


class SparseTraining:
    """Masks and schedule of one sparse training run, bound to one network.

    Args:
        net (nn.Module): The (unwrapped) network being trained; masks are keyed by its parameter names.
        config (SparsityConfig): Sparsity keys of the run. ``importance=taylor`` is for ``method=channel`` only.
        epochs (int): Length of the run, used for the default ``prune_start`` / ``prune_end``.
        sparse_start (bool): The start weights are a sparse checkpoint: the zeros of every Conv/Linear weight are the
            first mask (they stay zero for the whole run, protected families included) and the default schedule is
            ``oneshot``. Otherwise the first mask keeps everything.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, on the parameters' device.
        prunable (tuple[str, ...]): Names of the weights the rules let grow their masks (sparsity is counted on them).
        schedule (SparsitySchedule): Epoch -> target sparsity.
        config (SparsityConfig): The config with schedule, prune_start and prune_end resolved.
        batchwise (bool): Whether the trainer follows the ramp at every batch end (element masks grow at epoch ends).

    Examples:
        >>> from ultralytics import YOLO
        >>> net = YOLO("yolo11n.yaml").model
        >>> state = SparseTraining(net, SparsityConfig(sparsity=0.5, schedule="oneshot"), epochs=3)
        >>> state.prune(net)
        True
        >>> state.apply(net)
        >>> round(state.sparsity(net), 4)
        0.5
    """

    batchwise = False

    def __init__(self, net: nn.Module, config: SparsityConfig, epochs: int, sparse_start: bool = False):
        """Bind to ``net``, take its zeros as the first mask and resolve the schedule."""
        refuse_taylor(config)
        self.assignment = assign_families(net, load_rules(config.rules))
        check_prunable(self.assignment, config.sparsity)
        self.prunable = tuple(w.name for w in self.assignment.prunable)
        self._shapes = {w.name: tuple(w.weight.shape) for w in self.assignment.weights}
        if sparse_start:
            held = [w for w in self.assignment.weights if w.family != "fixed" and not bool(w.weight.detach().all())]
            self.masks = {**masks_from_zeros(self.assignment.prunable), **masks_from_zeros(held)}
        else:
            self.masks = {w.name: torch.ones_like(w.weight, dtype=torch.bool) for w in self.assignment.prunable}
        initial = self.sparsity(net)
        final = config.sparsity
        if final is None:  # the rule ratios as written decide the final sparsity
            final = zero_fraction(self._masks_at(None, config).values())
        kind = config.schedule or ("oneshot" if sparse_start else "gradual")
        self.config, self.schedule = resolved_schedule(config, kind, epochs, final, initial)

    def sparsity(self, net: nn.Module) -> float:
        """Fraction of exact zeros over the prunable weights of ``net`` (the model or its EMA, matched by name)."""
        params = dict(net.named_parameters())
        return zero_fraction(params[name].detach() for name in self.prunable)

    def reached(self, net: nn.Module) -> bool:
        """Whether ``net`` holds at least the zeros of the schedule's final target (counted exactly)."""
        params = dict(net.named_parameters())
        total = sum(params[n].numel() for n in self.prunable)
        nonzero = sum(int(torch.count_nonzero(params[n].detach())) for n in self.prunable)
        return total - nonzero >= round(self.schedule.final * total)

    def check_reachable(self, net: nn.Module) -> None:
        """Raise ValueError now if the final target cannot be reached with these rules (before any epoch runs)."""
        if self.schedule.final > self.sparsity(net):
            self._masks_at(self.schedule.final, self.config)

    def progress(self, net: nn.Module) -> str:
        """One line on where the run stands, for the log."""
        return f"{self.sparsity(net):.2%} of prunable weights zero (target {self.schedule.target():.2%})"

    def prune(self, net: nn.Module, target: float | None = None) -> bool:
        """Grow the masks of ``net`` to ``target`` (default: the schedule's current target); zeros never decrease.

        Args:
            net (nn.Module): The network the masks belong to; its weights are scored (masked ones score lowest).
            target (float, optional): Sparsity over prunable weights.

        Returns:
            (bool): True if the masks grew (apply them, and clear optimizer state, afterwards).
        """
        target = self.schedule.target() if target is None else target
        kept = sum(int(self.masks[n].sum()) for n in self.prunable)
        total = sum(self.masks[n].numel() for n in self.prunable)
        if round(target * total) <= total - kept:
            return False
        self.apply(net)  # scores must see the current zeros
        grown = self._masks_at(target, self.config)
        self.masks = {n: m & grown[n].to(m.device) if n in grown else m for n, m in self.masks.items()}
        broadcast_masks(self.masks)
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
            "config": config_record(self.config),  # usable anywhere
            "schedule": self.schedule.state_dict(),
            "masks": {name: pack_mask(mask) for name, mask in self.masks.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the config, schedule position and masks written by :meth:`state_dict`.

        Raises:
            ValueError: If the stored masks do not fit this network (names or shapes).
        """
        masks = unpack_masks(state["masks"], self._shapes, "sparsity")
        if not set(self.prunable) <= set(masks):
            where = sorted(set(self.prunable) - set(masks))[0]
            raise ValueError(f"the checkpoint's sparsity masks do not fit this model (first misfit: {where})")
        self.config = SparsityConfig(**state["config"])
        self.schedule.load_state_dict(state["schedule"])
        device = self.assignment.prunable[0].weight.device
        self.masks = {name: mask.to(device) for name, mask in masks.items()}

    def _masks_at(self, target: float | None, config: SparsityConfig) -> dict[str, torch.Tensor]:
        """Element masks of the prunable weights at ``target`` (``None``: the rule ratios as written)."""
        return element_masks(self.assignment, get_criterion(config.importance), target, config).masks


def resolved_schedule(
    config: SparsityConfig, kind: str, epochs: int, final: float, initial: float = 0.0
) -> tuple[SparsityConfig, SparsitySchedule]:
    """The config with ``schedule``, ``prune_start`` and ``prune_end`` resolved for a run of ``epochs``, and its schedule.

    Raises:
        ValueError: If a gradual ramp would end after the last epoch.

    Examples:
        >>> config, schedule = resolved_schedule(SparsityConfig(sparsity=0.5), "gradual", 6, 0.5)
        >>> config.prune_end, schedule.at(4)
        (4, 0.5)
    """
    start, end = default_window(epochs)
    start = start if config.prune_start is None else config.prune_start
    end = max(start, end) if config.prune_end is None else config.prune_end
    if kind == "gradual" and end > epochs:
        raise ValueError(f"prune_end={end} is after the last epoch (epochs={epochs}); the target would not be met")
    schedule = SparsitySchedule(final, min(initial, final), kind, start, end, config.prune_freq)
    return config.replace(schedule=kind, prune_start=start, prune_end=end), schedule


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
    """Inverse of :func:`pack_mask`.

    Raises:
        ValueError: If ``packed`` does not hold exactly the bits of ``shape`` (a damaged or edited state).

    Examples:
        >>> unpack_mask((17, 3), pack_mask(torch.ones(16, 3, dtype=torch.bool))[1])
        Traceback (most recent call last):
        ...
        ValueError: a stored mask of 48 bits cannot have shape (17, 3) (51 elements)
    """
    size = int(torch.Size(shape).numel())
    if packed.numel() != -(-size // 8):
        raise ValueError(f"a stored mask of {8 * packed.numel()} bits cannot have shape {tuple(shape)} ({size} elements)")
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    flat = (packed.reshape(-1, 1) & bits).ne(0).reshape(-1)
    return flat[:size].reshape(shape)


def unpack_masks(stored: dict[str, Any], shapes: dict[str, tuple[int, ...]], kind: str) -> dict[str, torch.Tensor]:
    """A checkpoint's packed masks, unpacked and checked against the network's weight ``shapes``.

    Raises:
        ValueError: If a mask is damaged or does not fit (names the first misfit); ``kind`` names the masks.
    """
    try:
        masks = {name: unpack_mask(*packed) for name, packed in stored.items()}
    except ValueError as e:
        raise ValueError(f"the checkpoint's {kind} masks are damaged: {e}") from None
    misfit = [n for n, m in masks.items() if shapes.get(n) != tuple(m.shape)]
    if misfit:
        raise ValueError(f"the checkpoint's {kind} masks do not fit this model (first misfit: {misfit[0]})")
    return masks


def prunable_zero_fraction(net: nn.Module, rules: str | dict = "default") -> float:
    """Fraction of exact zeros over the prunable weights of ``net`` under ``rules``.

    Examples:
        >>> from ultralytics import YOLO
        >>> prunable_zero_fraction(YOLO("yolo11n.yaml").model) < 1e-5  # random init: an exact zero is rare
        True
    """
    return zero_fraction(w.weight.detach() for w in assign_families(net, load_rules(rules)).prunable)


def refuse_taylor(config: SparsityConfig) -> None:
    """Refuse ``importance=taylor`` for masks of single weights in training (it ranks whole channels there).

    Examples:
        >>> refuse_taylor(SparsityConfig(importance="l1"))
    """
    if config.importance == "taylor":
        raise ValueError(
            "importance=taylor ranks whole channels in training (method=channel); masks of single weights use l1, l2, "
            "l1l2 or lamp"
        )


def zero_fraction(tensors: Iterable[torch.Tensor]) -> float:
    """Fraction of zeros (or False entries) over all given tensors.

    Examples:
        >>> zero_fraction([torch.tensor([0.0, 1.0]), torch.tensor([True, False])])
        0.5
    """
    total = nonzero = 0
    for t in tensors:
        total += t.numel()
        nonzero += int(torch.count_nonzero(t))
    return 1.0 - nonzero / total if total else 0.0


def broadcast_masks(masks: dict[str, torch.Tensor]) -> None:
    """Under DDP, give every rank rank 0's masks (they are computed from identical weights; this makes it certain)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for name, mask in masks.items():
        buffer = mask.to(torch.uint8)
        dist.broadcast(buffer, src=0)
        masks[name] = buffer.bool()


def broadcast_state(net: nn.Module) -> None:
    """Under DDP, give every rank rank 0's parameters and buffers of ``net`` (after a change each rank made itself)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    for tensor in net.state_dict().values():
        dist.broadcast(tensor, src=0)
