"""Sensitivity scan: measure how accuracy falls when one group of layers is pruned, then choose ratios from it.

A scan splits the prunable weights of a model into groups (each family of the rules, and large families further into
runs of consecutive top-level layers), prunes ONE group at a time at a ladder of ratios with every other weight dense
(or at the base allocation), and validates each point with one Ultralytics validator and one dataloader for the whole
scan (the weights are restored between points, the checkpoint is never reloaded). From the measured curves it chooses
one ratio per group that reaches an overall sparsity with the smallest predicted loss, and writes them as an ordinary
rules file: the same families, large ones split with the ``layers:`` key, so ``sparsify rules=FILE`` and
``train rules=FILE`` take it as it is.

One job per module:

- :mod:`.groups`: which groups (:func:`plan_groups`, :func:`weight_flops`) and their ratios as rules
  (:func:`layout_rules`);
- :mod:`.allocation`: the maths, pure (:func:`loss_curve`, :func:`choose_ratios`, :func:`refine`, the ladders);
- :mod:`.points`: a pruner per method (``prune(rules) -> network`` and ``restore()``, :func:`make_pruner`);
- :mod:`.evaluate`: the validator (:class:`Evaluator`);
- :mod:`.loop`: the scan itself (:func:`scan`);
- :mod:`.outputs`: the files it writes (:func:`write_scan`).

Examples:
    >>> from ultra_sparse.scan import choose_ratios
    >>> ratios = choose_ratios({"a": [(0.0, 0.0), (0.9, 0.0)], "b": [(0.0, 0.0), (0.9, 0.5)]}, {"a": 1, "b": 1}, 0.5)
    >>> {group: round(ratio, 6) for group, ratio in ratios.items()}
    {'a': 0.9, 'b': 0.1}
"""

from .allocation import (
    MAX_LADDER_RATIO,
    METRICS,
    MIN_RATIO,
    check_budget,
    check_metric,
    choose_ratios,
    context_ladder,
    default_ladder,
    flops_sizes,
    loss_curve,
    predicted_loss,
    protect_move,
    refine,
    sensitivity_scores,
)
from .evaluate import Evaluator
from .groups import LayerGroup, layout_rules, plan_groups, weight_flops
from .loop import scan
from .outputs import capped_groups, target_of, write_scan
from .points import PruneCopy, RestoreWeights, base_ratios, check_method, make_pruner

__all__ = [
    "MAX_LADDER_RATIO",
    "METRICS",
    "MIN_RATIO",
    "Evaluator",
    "LayerGroup",
    "RestoreWeights",
    "PruneCopy",
    "base_ratios",
    "capped_groups",
    "check_budget",
    "check_method",
    "check_metric",
    "choose_ratios",
    "protect_move",
    "refine",
    "sensitivity_scores",
    "target_of",
    "context_ladder",
    "default_ladder",
    "flops_sizes",
    "layout_rules",
    "loss_curve",
    "make_pruner",
    "plan_groups",
    "predicted_loss",
    "scan",
    "weight_flops",
    "write_scan",
]
