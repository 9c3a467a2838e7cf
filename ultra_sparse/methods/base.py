"""What every pruning method supplies (:class:`Method`) and what a one-shot run returns (:class:`SparsifyResult`).

The registry in :mod:`ultra_sparse.methods` maps each ``config.method`` to one :class:`Method`; callers look the method
up instead of branching on its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..config import SparsityConfig

if TYPE_CHECKING:
    from .state import SparseTraining

__all__ = ["Method", "SparsifyResult"]


@dataclass(frozen=True)
class SparsifyResult:
    """What :func:`ultra_sparse.sparsify` did.

    Attributes:
        masks (dict[str, torch.Tensor]): Parameter name -> bool keep-mask, for every prunable weight (empty for
            ``method=channel``: nothing is masked, channels are gone).
        report (dict): The sparsity report of the model afterwards (see :func:`ultra_sparse.report.sparsity_report`);
            for ``method=channel`` its ``channel`` entry holds channels, params and GFLOPs before and after, per family,
            and the blocks kept whole with their reasons.
        scale (float): Factor every rule ratio was multiplied by to reach the overall target.
    """

    masks: dict[str, torch.Tensor]
    report: dict[str, Any]
    scale: float


@dataclass(frozen=True)
class Method:
    """One pruning method: what one-shot ``sparsify`` and sparse training need that differs between methods.

    Attributes:
        name (str): The ``method=`` value.
        removes (bool): Whether it removes whole channels (a smaller dense network) instead of zeroing weights.
        sparsify (Callable): One-shot: ``sparsify(net, assignment, config, batches, imgsz, gradients, scores)`` prunes
            ``net`` in place and returns a :class:`SparsifyResult`; refuses the inputs the method does not take.
        training_state (Callable): ``training_state(net, config, epochs, sparse_start, imgsz, refit, batches)``: the
            mask state of a training run (a :class:`~ultra_sparse.methods.state.SparseTraining`).
        check_training (Callable): Raises ValueError for keys the method does not train with.
        fine_tune (Callable | None): ``fine_tune(config, zeros)``: the keys of a fine-tune that keeps a sparse start's
            zeros (``zeros``: their fraction); None when training must start from a dense model.
        suffix (Callable): ``suffix(config)``: the output file's suffix (``sparse``, ``2of4``, ``pruned``).
        finish (Callable | None): Rewrites the serialised final checkpoints of a training run (bytes -> bytes).
        callbacks (str): Why plain callbacks cannot train this method ('' when they can).

    Examples:
        >>> from ultra_sparse.methods import method_of
        >>> method_of(SparsityConfig(method="nm", nm="2:4")).suffix(SparsityConfig(method="nm", nm="2:4"))
        '2of4'
    """

    name: str
    removes: bool
    sparsify: Callable[..., SparsifyResult]
    training_state: Callable[..., SparseTraining]
    check_training: Callable[[SparsityConfig], None]
    fine_tune: Callable[[SparsityConfig, float], SparsityConfig] | None
    suffix: Callable[[SparsityConfig], str]
    finish: Callable[[bytes], bytes] | None = None
    callbacks: str = ""
