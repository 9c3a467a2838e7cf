"""``method=channel``: whole channels removed, so the layers themselves get smaller (real speed and size).

The plan, trace, masks and refit live in :mod:`ultra_sparse.prune` (``channel``, ``channel_trace``, ``channel_masks``,
``reconstruct``); this package puts them to work one-shot (:mod:`.oneshot`) and while training (:mod:`.training`: masks
while the run lasts, removal at its end).
"""

from __future__ import annotations

from ...config import SparsityConfig
from ..base import Method
from .oneshot import channel_sparsify
from .training import ChannelTraining, remove_zeroed_channels

__all__ = ["CHANNEL", "ChannelTraining", "remove_zeroed_channels"]


def _training_state(net, config, epochs, sparse_start=False, imgsz=640, refit=None, batches=None) -> ChannelTraining:
    """The channel masks of a run (``sparse_start`` is refused before: channel runs start dense)."""
    return ChannelTraining(net, config, epochs, imgsz, refit, batches)


def _check_training(config: SparsityConfig) -> None:
    """Every channel key trains (``importance=taylor`` included)."""


CHANNEL = Method(
    name="channel",
    removes=True,
    sparsify=channel_sparsify,
    training_state=_training_state,
    check_training=_check_training,
    fine_tune=None,  # a sparse start's zeros are not channels: channel training starts from a dense model
    suffix=lambda config: "pruned",
    finish=remove_zeroed_channels,
    callbacks=(
        "method=channel trains with 'ultra-sparse train', SparseYOLO.train or a Sparse*Trainer: the end of the run "
        "removes the zeroed channels from last.pt and best.pt, which callbacks cannot do"
    ),
)
"""The channel method.

Examples:
    >>> CHANNEL.removes, CHANNEL.suffix(SparsityConfig(method="channel"))
    (True, 'pruned')
"""
