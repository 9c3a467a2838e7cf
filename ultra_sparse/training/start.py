"""The one decision of how a sparse training run starts, shared by the trainers and the callbacks.

- :func:`decide_start` reads the start network, its checkpoint's ``ultra_sparse`` metadata and the sparsity keys, and
  returns a :class:`StartPlan` (or ``None`` for plain training). It checks everything that can be checked before the
  first epoch: rules, window, reachability of the target, NaN/Inf weights.
- :func:`start_training` binds a plan to the trained network: the method's mask state
  (:func:`training_state`), the first masks, one-shot pruning and one log line.

Start rules:

- ``method=channel`` runs hold channel masks instead (the channel method's state) and start from a dense model;
- a start is **sparse** when its checkpoint carries ``ultra_sparse`` metadata of a zeroing method, or at least
  ``SPARSE_START_ZEROS`` of its prunable weights are exact zeros (sparse checkpoints from other tools); a
  channel-pruned checkpoint (``method=channel`` metadata) is dense: its removed channels are gone, not masked;
- a sparse start keeps its zeros as the mask, in every Conv/Linear weight that holds them, whatever ``rules=`` say
  (zeros in protected families never regrow); without ``sparsity=`` it fine-tunes with exactly those zeros;
- without ``rules=``, the rules recorded in the checkpoint's metadata apply (a parsed dict, a preset or a path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch.nn as nn
from ultralytics.utils import LOGGER, colorstr

from ..checkpoint import check_finite
from ..config import SparsityConfig
from ..methods import METHODS, method_of
from ..metadata import SparseMetadata, recorded_rules
from ..methods.state import SparseTraining, prunable_zero_fraction

__all__ = ["SPARSE_START_ZEROS", "StartPlan", "decide_start", "start_training", "training_state"]

SPARSE_START_ZEROS = 0.01  # a start model with this fraction of exact zeros (prunable weights) is treated as sparse


@dataclass(frozen=True)
class StartPlan:
    """How a sparse run starts, decided once by :func:`decide_start`.

    Attributes:
        config (SparsityConfig): The keys with the rules resolved (given, recorded in the checkpoint, or default);
            for a fine-tune with mask, ``sparsity`` is the start's own and ``schedule`` is ``oneshot``.
        sparse_start (bool): The start's zeros are the first mask.
        fine_tune (bool): A sparse start without ``sparsity=``: train with exactly its zeros.
    """

    config: SparsityConfig
    sparse_start: bool
    fine_tune: bool


def decide_start(
    net: nn.Module, keys: Mapping[str, Any], metadata: SparseMetadata | None, epochs: int, imgsz: int = 640
) -> StartPlan | None:
    """Decide how a run starts, and refuse now what would fail later.

    Args:
        net (nn.Module): The start network (the student when distilling).
        keys (Mapping[str, Any]): The sparsity keys given (only these; defaults are not keys).
        metadata (SparseMetadata | None): The start checkpoint's ``ultra_sparse`` record.
        epochs (int): Length of the run.
        imgsz (int): The run's image size (``method=channel`` counts GFLOPs at it).

    Returns:
        (StartPlan | None): The plan, or None for a dense start without sparsity keys (plain training).

    Raises:
        ValueError: Bad keys, ``method=channel`` from a sparse start, rules with nothing to prune, ``prune_end`` after the last epoch,
            an unreachable target, or NaN/Inf weights (naming the parameter).

    Examples:
        >>> from ultralytics import YOLO
        >>> decide_start(YOLO("yolo11n.yaml").model, {}, None, epochs=3) is None
        True
        >>> decide_start(YOLO("yolo11n.yaml").model, {"sparsity": 0.5}, None, epochs=3).config.sparsity
        0.5
    """
    config = SparsityConfig(**keys)
    method = method_of(config)
    method.check_training(config)
    if "rules" not in keys:  # a checkpoint made with custom rules goes on with them
        config = config.replace(rules=recorded_rules(metadata))
    zeros = prunable_zero_fraction(net, config.rules)
    recorded = METHODS.get(metadata.method) if metadata else None
    zero_metadata = metadata is not None and not (recorded and recorded.removes)  # a channel-pruned start is dense
    sparse_start = zero_metadata or zeros >= SPARSE_START_ZEROS
    if not keys and not sparse_start:
        return None
    check_finite(net, "model")
    if method.fine_tune is None and sparse_start:
        raise ValueError(
            f"method={method.name} training starts from a dense model; this one holds {zeros:.2%} zeros over its "
            f"prunable weights (a sparse checkpoint), which {method.name} pruning would not keep: start from the dense "
            "checkpoint"
        )
    fine_tune = sparse_start and config.sparsity is None
    if fine_tune:  # keep the start's zeros
        config = method.fine_tune(config, zeros)
    training_state(net, config, epochs, sparse_start, imgsz).check_reachable(net)
    return StartPlan(config, sparse_start, fine_tune)


def training_state(
    net: nn.Module,
    config: SparsityConfig,
    epochs: int,
    sparse_start: bool = False,
    imgsz: int = 640,
    refit: Callable[[nn.Module, dict], dict] | None = None,
    batches: Callable[[], list[dict]] | None = None,
) -> SparseTraining:
    """The mask state of a run, made by its method: channel masks for ``method=channel``, element masks otherwise.

    ``refit`` and ``batches`` are handed to :class:`~ultra_sparse.methods.channel.ChannelTraining` (``method=channel``
    only).

    Examples:
        >>> from ultralytics import YOLO
        >>> type(training_state(YOLO("yolo11n.yaml").model, SparsityConfig(method="channel"), 3)).__name__
        'ChannelTraining'
    """
    return method_of(config).training_state(net, config, epochs, sparse_start, imgsz, refit, batches)


def start_training(
    net: nn.Module,
    plan: StartPlan,
    epochs: int,
    imgsz: int = 640,
    refit: Callable[[nn.Module, dict], dict] | None = None,
    batches: Callable[[], list[dict]] | None = None,
) -> SparseTraining:
    """Bind a plan to the network being trained: first masks, one-shot pruning, and one log line.

    ``refit`` (``method=channel`` only) is called wherever a step grows the channel removal, one-shot included;
    ``batches`` (``method=channel importance=taylor``) gives the calibration batches each plan ranks channels on.

    Examples:
        >>> from ultralytics import YOLO
        >>> net = YOLO("yolo11n.yaml").model
        >>> state = start_training(net, decide_start(net, {"sparsity": 0.3, "schedule": "oneshot"}, None, 3), 3)
        >>> round(state.sparsity(net), 4)
        0.3
    """
    state = training_state(net, plan.config, epochs, plan.sparse_start, imgsz, refit, batches)
    if state.config.schedule == "oneshot":
        state.prune(net)
    state.apply(net)
    c, s = state.config, state.schedule
    step = "batch by batch" if state.batchwise else f"every {c.prune_freq}"
    ramp = f", epochs {c.prune_start}->{c.prune_end} {step}" if c.schedule == "gradual" else ""
    unit = {"flops": " of GFLOPs", "sparsity": " of prunable parameters"}.get(getattr(state, "key", ""), "")
    what = (
        "fine-tune with the model's zeros as mask"
        if plan.fine_tune
        else f"{c.schedule} to {s.final:.2%}{unit} ({state.assignment.ruleset.name} rules, {c.method}, {c.importance}, "
        f"scope={c.scope}{ramp})"
    )
    LOGGER.info(f"{colorstr('sparsity:')} {what}; now {state.sparsity(net):.2%} of prunable weights are zero")
    return state
