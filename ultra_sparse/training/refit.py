"""The calibration batches of a training run and the refit of the layers that lose input channels.

A ``method=channel`` run with ``reconstruct=True`` refits, at each pruning step, the layers whose inputs lost channels
(:func:`refit_layers`) on calibration images from the train split; ``importance=taylor`` ranks channels by the loss on
the same batches (:class:`RunCalibration` loads them once).

Examples:
    >>> RunCalibration("coco8.yaml", 640, "detect").loaded
    False
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from ultralytics.utils import LOGGER, colorstr

from ..calibration import calibration_batches, model_stride
from ..prune.reconstruct import reconstruct_masked
from ..methods.state import broadcast_state

__all__ = ["RunCalibration", "refit_layers"]


class RunCalibration:
    """The calibration batches of one run, loaded once and kept on the CPU.

    Spread over the train split, letterboxed, with the task's own labels: the refit fits on their images,
    ``importance=taylor`` ranks channels by their loss.

    Args:
        data (str): The run's dataset YAML.
        imgsz (int): The run's image size (one side).
        task (str): The Ultralytics task (its labels go with the batches).
    """

    def __init__(self, data: Any, imgsz: int, task: str):
        """Remember where the batches come from; nothing is loaded yet."""
        self.data, self.imgsz, self.task = data, imgsz, task
        self._batches: list[dict[str, Any]] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the batches have been loaded."""
        return self._batches is not None

    def batches(self, net: nn.Module, count: int) -> list[dict[str, Any]]:
        """``count`` batches of 8 images at ``net``'s stride (loaded on the first call)."""
        if self._batches is None:
            self._batches = list(calibration_batches(self.data, self.imgsz, 8, count, model_stride(net), task=self.task))
        return self._batches

    def images(self, net: nn.Module, count: int) -> torch.Tensor:
        """The images of :meth:`batches`, as one tensor."""
        return torch.cat([b["img"] for b in self.batches(net, count)])


def refit_layers(
    net: nn.Module,
    removal: dict,
    images: torch.Tensor,
    ema_net: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Refit the layers of ``net`` that have lost inputs to ``removal``, before the masks zero the new channels.

    The EMA restarts from the refitted network (an average across the change would mix two networks) and so does the
    optimizer's state (momentum built on the weights the fit replaced). Under DDP every rank fits and then takes rank
    0's result.

    Args:
        net (nn.Module): The trained network, full width, its removed channels not yet zeroed.
        removal (dict): The run's whole channel removal so far.
        images (torch.Tensor): Calibration images, on ``net``'s device.
        ema_net (nn.Module, optional): The EMA network, set to the refitted weights.
        optimizer (torch.optim.Optimizer, optional): Its state is cleared.

    Returns:
        (dict): The fit (:class:`~ultra_sparse.prune.reconstruct.Reconstruction` as a dict).
    """
    done = reconstruct_masked(net, removal, images)
    broadcast_state(net)
    if ema_net is not None:
        ema_net.load_state_dict(net.state_dict())
    if optimizer is not None:
        optimizer.state.clear()
    LOGGER.info(
        f"{colorstr('ultra_sparse:')} refitted {done.layers} layers that have lost input channels on {done.images} "
        f"calibration images (relative output error {done.error_before:.3f} -> {done.error_after:.3f})"
    )
    return done.to_dict()
