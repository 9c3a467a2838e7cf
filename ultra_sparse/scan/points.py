"""The points of a scan: prune the model by one set of rules, hand it to the validator, put the dense model back.

One pruner per method, both with ``prune(rules, target) -> network`` and ``restore()``: :class:`RestoreWeights` zeros
weights in place and copies the saved ones back (element pruning); :class:`PruneCopy` removes channels from a fresh copy
and drops it (structural pruning). :func:`make_pruner` picks the one of a config; :func:`base_ratios` counts where the
input rules put each group's zeros.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.nn as nn

from ..config import SparsityConfig
from ..importance import get_criterion, loss_gradients, taylor_scores
from ..methods import method_of
from ..oneshot import sparsify
from ..prune import element_masks
from ..prune.unstructured import apply_masks
from ..rules import PRUNABLE_TYPES, RuleSet, assign_families, check_prunable, load_rules
from .groups import LayerGroup, layout_rules

__all__ = ["PruneCopy", "RestoreWeights", "base_ratios", "check_method", "make_pruner"]


class RestoreWeights:
    """Element pruning for a scan: prune the model in place, put the saved weights back afterwards.

    With ``importance=taylor`` the scores of the dense weights are computed on the first point, for every Conv and
    Linear weight a point's rules can make prunable, and reused by every other one: each point starts from the same
    restored weights, so it ranks them as ``sparsify`` would.

    Attributes:
        scores (dict[str, torch.Tensor] | None): ``importance=taylor``: the dense weights' taylor scores on
            ``batches``, computed by the first :meth:`prune`.

    Args:
        network (nn.Module): The dense network (changed in place while a point is measured, restored after).
        config (SparsityConfig): ``importance`` and ``scope`` of the pruning; ``rules`` and ``sparsity`` come per call.
        batches (Sequence[dict], optional): Calibration batches for ``importance=taylor``.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import load_rules
        >>> network = YOLO("yolo11n.yaml").model
        >>> pruner = RestoreWeights(network, SparsityConfig())
        >>> pruned = pruner.prune(layout_rules(load_rules("default"), [], {}), 0.5)
        >>> pruned is network, bool((network.model[0].conv.weight == 0).any())
        (True, True)
        >>> pruner.restore()
        >>> bool((network.model[0].conv.weight == 0).any())
        False
    """

    target = "sparsity"  # the key a target given to :meth:`prune` is passed as

    def __init__(self, network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None) -> None:
        """Save a copy of every state tensor of ``network``."""
        self.network, self.config, self.batches = network, config, batches
        self.saved = {k: v.detach().clone() for k, v in network.state_dict().items()}
        self.scores: dict[str, torch.Tensor] | None = None

    def prune(self, rules: dict[str, Any], sparsity: float | None = None) -> nn.Module:
        """Prune the network by ``rules`` (ratios as written, or scaled to ``sparsity``) and return it.

        The element method is called directly: the masks of :func:`ultra_sparse.prune.element_masks`, applied in
        place, are the zeros ``sparsify`` gives, without the report a point does not read.
        """
        if self.config.importance == "taylor" and self.scores is None and self.batches is not None:
            weights = [
                f"{n}.weight" for n, m in self.network.named_modules()
                if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)
            ]
            self.scores = taylor_scores(self.network, self.batches, weights)
        config = self.config.replace(rules=rules, sparsity=sparsity)
        assignment = assign_families(self.network, load_rules(config.rules))
        check_prunable(assignment, config.sparsity)
        criterion = get_criterion(config.importance, self.scores)
        apply_masks(self.network, element_masks(assignment, criterion, config.sparsity, config).masks)
        return self.network

    def restore(self) -> None:
        """Copy the saved tensors back into the network (same tensors, bit for bit)."""
        self.network.load_state_dict(self.saved)


class PruneCopy:
    """Structural pruning for a scan: prune a fresh copy of the dense model; restoring drops the copy.

    The target of a call is ``flops=`` when ``config`` has one (the fraction of GFLOPs removed), else ``sparsity=``.
    With ``batches`` and ``config.reconstruct``, every copy is refitted to the dense outputs after its channels are
    removed, as ``sparsify method=channel data=...`` does, so each point measures the model that command would give.
    With ``importance=taylor`` the loss gradients of the dense network are computed on the first point and reused by
    every other one: every copy has the same weights, so it ranks its channels as ``sparsify`` would.

    Attributes:
        target (str): ``flops`` or ``sparsity``: the key a target given to :meth:`prune` is passed as.
        flops_removed (float | None): FLOPs (not GFLOPs) the last :meth:`prune` removed.
        flops (float | None): FLOPs of the dense network, known after the first :meth:`prune`.
        gradients (dict[str, torch.Tensor] | None): ``importance=taylor``: the dense network's loss gradients on
            ``batches``, computed by the first :meth:`prune`.

    Args:
        network (nn.Module): The dense network (never changed).
        config (SparsityConfig): Settings of the method; ``rules`` and the target come per call.
        batches (Sequence[dict], optional): Calibration batches for the refit (and for ``importance=taylor``).

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import load_rules
        >>> network = YOLO("yolo11n.yaml").model
        >>> pruner = PruneCopy(network, SparsityConfig(method="channel", flops=0.3))
        >>> pruned = pruner.prune(layout_rules(load_rules("default"), [], {}), 0.3)
        >>> pruned is network, round(pruner.flops_removed / pruner.flops, 2)
        (False, 0.3)
    """

    def __init__(self, network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None) -> None:
        """Keep the dense network; copies are made per point."""
        self.network, self.config, self.batches, self.pruned = network, config, batches, None
        self.target = "flops" if config.flops is not None else "sparsity"
        self.flops_removed: float | None = None
        self.flops: float | None = None
        self.gradients: dict[str, torch.Tensor] | None = None

    def prune(self, rules: dict[str, Any], target: float | None = None) -> nn.Module:
        """Prune a deep copy of the dense network by ``rules`` (ratios as written, or scaled to ``target``)."""
        if self.config.importance == "taylor" and self.gradients is None and self.batches is not None:
            self.gradients = loss_gradients(self.network, self.batches)
        self.pruned = copy.deepcopy(self.network)
        config = self.config.replace(rules=rules, **{"sparsity": None, "flops": None, self.target: target})
        report = sparsify(self.pruned, config, batches=self.batches, gradients=self.gradients).report
        gflops = report["channel"]["gflops"]
        self.flops = gflops["before"] * 1e9
        self.flops_removed = (gflops["before"] - gflops["after"]) * 1e9
        return self.pruned

    def restore(self) -> None:
        """Drop the pruned copy."""
        self.pruned = None


def check_method(method: str) -> None:
    """Raise ValueError unless a scan can prune by ``method``: element zeros (``unstructured``) or ``channel``.

    Examples:
        >>> check_method("nm")
        Traceback (most recent call last):
        ValueError: method='nm' cannot be scanned; use unstructured or channel
    """
    if method not in ("unstructured", "channel"):
        raise ValueError(f"method={method!r} cannot be scanned; use unstructured or channel")


def make_pruner(
    network: nn.Module, config: SparsityConfig, batches: Sequence[dict] | None = None
) -> RestoreWeights | PruneCopy:
    """The pruner of ``config.method``: in place with saved weights (unstructured) or on refitted copies (channel).

    Examples:
        >>> from ultralytics import YOLO
        >>> network = YOLO("yolo11n.yaml").model
        >>> [type(make_pruner(network, SparsityConfig(method=m))).__name__ for m in ("unstructured", "channel")]
        ['RestoreWeights', 'PruneCopy']
    """
    check_method(config.method)
    pruner = PruneCopy if method_of(config).removes else RestoreWeights
    return pruner(network, config, batches)


def base_ratios(
    pruner: RestoreWeights, ruleset: RuleSet, groups: Sequence[LayerGroup], sparsity: float
) -> dict[str, float]:
    """Ratio of every group in the base allocation: the input rules scaled to ``sparsity``, as ``sparsify`` does.

    The model is pruned, the zeros of each group counted, and the model restored; nothing is validated.

    Args:
        pruner (RestoreWeights): Element pruner of the model.
        ruleset (RuleSet): The input rules.
        groups (Sequence[LayerGroup]): From :func:`plan_groups`.
        sparsity (float): Overall target.

    Returns:
        (dict[str, float]): Group name -> fraction of its weights that are zero in the base allocation.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import load_rules
        >>> from ultra_sparse.scan import plan_groups
        >>> network, rules = YOLO("yolo11n.yaml").model, load_rules("default")
        >>> groups = plan_groups(assign_families(network, rules), 3)
        >>> ratios = base_ratios(RestoreWeights(network, SparsityConfig()), rules, groups, 0.5)
        >>> round(sum(ratios[g.name] * g.params for g in groups) / sum(g.params for g in groups), 3)
        0.5
    """
    try:
        network = pruner.prune(layout_rules(ruleset, [], {}), sparsity)  # the input rules as they are
        zeros: dict[str, int] = {}
        for w in assign_families(network, load_rules(layout_rules(ruleset, groups, {}))).weights:
            zeros[w.family] = zeros.get(w.family, 0) + int((w.weight == 0).sum())
    finally:
        pruner.restore()
    return {g.name: zeros.get(g.name, 0) / g.params for g in groups}
