"""Channel pruning while training (``method=channel`` in ``ultra-sparse train``): masks now, removal at the end.

Pruning half of a small detector's GFLOPs in one step leaves it at mAP 0 and a short fine-tune does not bring it all
back. A training run with ``method=channel`` instead removes channels a little at a time: the target follows the
cubic ramp of the schedule, each step plans the channels to remove on the current weights (channels already zeroed
rank lowest, so each plan contains the last) and zeroes them as structured masks
(:mod:`ultra_sparse.prune.channel_masks`), which the trainer keeps after every optimizer step, in the EMA too. With a
refit (``reconstruct=True``, the trainer's default outside classify runs) the steps come at epoch ends and each one
first refits, through the ``refit`` callback, the layers that have lost inputs; without one the ramp is followed
batch by batch. When the run ends, the zeroed channels are removed for real: last.pt and best.pt are
smaller dense networks of stock classes that compute exactly what the masked ones did.

:class:`ChannelTraining` has the interface of :class:`ultra_sparse.methods.state.SparseTraining` that the trainer uses,
so the trainer drives both kinds of run the same way.
"""

from __future__ import annotations

import copy
import io
from typing import Any, Callable

import torch
import torch.nn as nn
from ultralytics.utils import LOGGER, colorstr

from ...calibration import loss_ready
from ...config import SparsityConfig
from ...metadata import SparseMetadata
from ...prune.channel import ChannelPlan, plan_channels
from ...prune.channel_masks import Removal, channel_masks, merge_removals, pack_removal, unpack_removal
from ...rules import assign_families, check_prunable, load_rules
from ..state import SparseTraining, broadcast_masks, resolved_schedule, unpack_masks
from .oneshot import remove_planned

__all__ = ["ChannelTraining", "remove_zeroed_channels"]


class ChannelTraining(SparseTraining):
    """Channel masks and schedule of one ``method=channel`` training run, bound to one network.

    The schedule counts what the config targets: the fraction of GFLOPs removed (``flops=``) or of prunable
    parameters (``sparsity=``, also when neither is given: then the family ratios as written set the final value).

    Args:
        net (nn.Module): The (unwrapped) network being trained, unpruned.
        config (SparsityConfig): ``method="channel"`` keys of the run.
        epochs (int): Length of the run, for the default ``prune_start`` / ``prune_end``.
        imgsz (int): Image size GFLOPs are counted at (the run's ``imgsz``).
        refit (Callable, optional): Called as ``refit(net, removal)`` whenever a step grows the removal, before the
            new channels are zeroed (the trainer refits the layers that have lost inputs there, ``reconstruct=True``);
            returns the fit's :class:`~ultra_sparse.prune.reconstruct.Reconstruction` as a dict.
        batches (Callable, optional): Returns the calibration batches (with labels, on the CPU) that
            ``importance=taylor`` ranks channels on, by the loss gradients of the current weights at every step;
            required by ``taylor`` from the first :meth:`prune` on.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask of the zeroed channels.
        removal (dict[tuple[str, str], list[int]]): The channels zeroed so far, as plans name them.
        planned (float): The highest target planned so far.
        estimate (dict[str, float]): ``sparsity`` and ``flops`` removed by the last plan (counted, not measured).
        reconstruction (dict | None): The last refit with the number of refitted ``steps`` (``reconstruct=True``).

    Examples:
        >>> from ultralytics import YOLO
        >>> net = YOLO("yolo11n.yaml").model
        >>> state = ChannelTraining(net, SparsityConfig(method="channel", flops=0.3, schedule="oneshot"), 3, 64)
        >>> state.prune(net)
        True
        >>> state.apply(net)
        >>> state.reached(net)
        True
    """

    def __init__(
        self,
        net: nn.Module,
        config: SparsityConfig,
        epochs: int,
        imgsz: int = 640,
        refit: Callable[[nn.Module, Removal], dict] | None = None,
        batches: Callable[[], list[dict]] | None = None,
    ):
        """Bind to ``net`` with nothing zeroed yet and resolve the schedule."""
        if config.method != "channel":
            raise ValueError(f"ChannelTraining needs method=channel, got method={config.method!r}")
        self.assignment = assign_families(net, load_rules(config.rules))
        check_prunable(self.assignment, config.sparsity if config.flops is None else config.flops)
        self.prunable = tuple(w.name for w in self.assignment.prunable)
        self._shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
        self.imgsz, self.config, self.refit, self.batches = imgsz, config, refit, batches
        self.key = "flops" if config.flops is not None else "sparsity"
        self.masks: dict[str, torch.Tensor] = {}
        self.removal: dict[tuple[str, str], list[int]] = {}
        self.planned, self.estimate = 0.0, {"sparsity": 0.0, "flops": 0.0}
        self.plan_facts: dict[str, Any] = {}
        self.reconstruction: dict[str, Any] | None = None
        final = getattr(config, self.key)
        if final is None:  # the family ratios as written decide how much is removed
            final = self._plan(net, None, ranked=False).estimate[self.key]
        self.config, self.schedule = resolved_schedule(config, config.schedule or "gradual", epochs, min(final, 0.999))

    @property
    def batchwise(self) -> bool:
        """Whether the ramp is followed at every batch end: without a refit (``reconstruct=False``)."""
        return not self.config.reconstruct

    def reached(self, net: nn.Module) -> bool:
        """Whether the final target has been planned and zeroed (a channel plan hits it within one channel group)."""
        return self.planned >= self.schedule.final

    def check_reachable(self, net: nn.Module) -> None:
        """Raise ValueError now if the final target cannot be planned with these rules (before any epoch runs)."""
        self._plan(net, self.schedule.final, ranked=False)

    def prune(self, net: nn.Module, target: float | None = None) -> bool:
        """Plan ``target`` (default: the schedule's current one) on the current weights and zero the new channels.

        Zeroed channels stay zeroed: the removal only grows. Where it grows, ``refit`` (if given) sees ``net`` before
        the new masks exist.

        Returns:
            (bool): True if more channels were zeroed (apply the masks, and clear optimizer state, afterwards).
        """
        target = self.schedule.target() if target is None else min(target, self.schedule.final)
        if target <= self.planned:
            return False
        self.apply(net)  # the plan must see the current zeros
        plan = self._plan(net, target)
        self.planned, self.estimate = target, plan.estimate
        self.plan_facts = {k: getattr(plan, k) for k in ("scale", "family_ratios", "whole", "inside", "split_blocks", "bracket")}
        removal = merge_removals(self.removal, plan.remove)
        if removal == self.removal:
            return False
        self.removal = removal
        if self.refit is not None:
            steps = (self.reconstruction or {}).get("steps", 0) + 1
            self.reconstruction = {**self.refit(net, removal), "steps": steps}
        self.masks = channel_masks(net, removal)
        broadcast_masks(self.masks)
        return True

    def progress(self, net: nn.Module) -> str:
        """One line on where the run stands, for the log."""
        return (
            f"channels of {self.estimate['flops']:.2%} of GFLOPs and {self.estimate['sparsity']:.2%} of prunable "
            f"parameters zeroed (target {self.key} {self.schedule.target():.2%}; removed for real when the run ends)"
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state for a checkpoint: config, schedule, masks, the removal and what was planned."""
        return {
            **super().state_dict(),
            "removal": pack_removal(self.removal),
            "planned": self.planned,
            "estimate": dict(self.estimate),
            "plan": self.plan_facts,
            "imgsz": self.imgsz,
            "reconstruction": self.reconstruction,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` wrote.

        Raises:
            ValueError: If the stored masks do not fit this network (names or shapes).
        """
        masks = unpack_masks(state["masks"], self._shapes, "channel")
        self.config = SparsityConfig(**state["config"])
        self.schedule.load_state_dict(state["schedule"])
        self.removal = unpack_removal(state["removal"])
        self.planned, self.estimate, self.imgsz = float(state["planned"]), dict(state["estimate"]), int(state["imgsz"])
        self.plan_facts = dict(state["plan"])
        self.reconstruction = state.get("reconstruction")
        device = self.assignment.prunable[0].weight.device
        self.masks = {name: mask.to(device) for name, mask in masks.items()}

    def _plan(self, net: nn.Module, target: float | None, ranked: bool = True):
        """A channel plan of ``net`` at ``target`` (``None``: the family ratios as written), made on a CPU copy.

        ``ranked=False`` plans only to count (is the target reachable, what do the ratios remove): ``taylor`` ranks by
        ``l1`` there, since how many channels a group may lose does not depend on which ones.
        """
        config = self.config if target is None else self.config.replace(**{self.key: target})
        if target is None:
            config = config.replace(sparsity=None, flops=None)
        if config.importance == "taylor" and not ranked:
            config = config.replace(importance="l1")
        twin = copy.deepcopy(net).float().cpu()
        assignment = assign_families(twin, self.assignment.ruleset)
        if config.importance != "taylor":
            return plan_channels(twin, assignment, config, self.imgsz)
        if self.batches is None:
            raise ValueError("importance=taylor ranks channels by the loss on calibration batches: pass batches=")
        with loss_ready(twin):
            return plan_channels(twin, assignment, config, self.imgsz, self.batches())


def remove_zeroed_channels(data: bytes) -> bytes:
    """A stripped checkpoint of a ``method=channel`` run with its zeroed channels removed for real.

    The checkpoint's own recorded removal is used, so the smaller network computes what the masked one did. Its
    ``ultra_sparse`` entry becomes what ``ultra-sparse sparsify method=channel`` writes (config, scale, totals and the
    ``channel`` section: params and GFLOPs before and after), so later runs treat it as a dense, pruned model.
    Checkpoints without a channel removal are returned unchanged.

    Args:
        data (bytes): The serialised checkpoint (Ultralytics' ``strip_optimizer`` output).

    Returns:
        (bytes): The serialised checkpoint with the smaller network.
    """
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    meta = SparseMetadata.from_ckpt(ckpt)
    state = meta.state if meta else None
    if state is None or "removal" not in state or ckpt.get("model") is None:
        return data
    config = SparsityConfig(**state["config"])
    net = ckpt["model"]
    dtype = next(net.parameters()).dtype
    net.float()
    plan = ChannelPlan(unpack_removal(state["removal"]), **state["plan"], estimate=state["estimate"])
    result = remove_planned(net, assign_families(net, load_rules(config.rules)), config, plan, int(state["imgsz"]))
    result.report["channel"]["reconstruction"] = state.get("reconstruction")
    ckpt["model"] = net.to(dtype)
    SparseMetadata.of_result(result, config).to_ckpt(ckpt)
    p, g = result.report["channel"]["params"], result.report["channel"]["gflops"]
    LOGGER.info(
        f"{colorstr('ultra_sparse:')} zeroed channels removed: params {p['before']:,} -> {p['after']:,}, "
        f"GFLOPs {g['before']:.4g} -> {g['after']:.4g} at imgsz {state['imgsz']}"
    )
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()
