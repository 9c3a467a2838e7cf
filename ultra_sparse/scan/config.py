"""ScanConfig: the checked settings of one scan, built from keyword or key=value arguments."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..config import SparsityConfig, check_choice, check_imgsz, positive_int
from ..messages import echo
from .allocation import DEFAULT_BUDGET, DEFAULT_MARGIN, MAX_LADDER_RATIO, check_metric, default_ladder
from .points import check_method

__all__ = ["CONTEXTS", "SCAN_KEYS", "ScanConfig"]

CONTEXTS = ("target", "dense")


@dataclass(frozen=True)
class ScanConfig:
    """Settings of a scan, checked when built: the pruning each point applies and how the points are measured.

    Attributes:
        pruning (SparsityConfig): Method (``unstructured`` or ``channel``), the overall target (``sparsity``, or
            ``flops`` with ``method=channel``; required and above 0), rules, importance and the channel keys.
        context (str | None): ``target`` (each group is measured with the others at the base allocation; element
            pruning only) or ``dense`` (with the others dense); None picks ``target`` for ``method=unstructured``,
            else ``dense``.
        groups (int | None): Most layer groups scanned; None picks 12 for ``context=target``, 9 for ``dense``.
        budget (int): Most validations in all.
        margin (float): Metric a refinement candidate must gain over the best allocation so far to be kept, in [0, 1).
        metric (str): What the curves, the choice and the refinement keep: ``mAP50`` or ``mAP50-95`` (any case).
        ladder (tuple[float, ...] | None): ``context=dense`` only: ratios each group is tested at, increasing, in
            (0, ``MAX_LADDER_RATIO``], the last at least a ``sparsity`` target; None picks
            :func:`~ultra_sparse.scan.default_ladder` of the target. Always None for ``context=target``.
        imgsz (int): Image size.
        batch (int): Validation batch size.

    Examples:
        >>> config = ScanConfig(SparsityConfig(sparsity=0.7), context="dense")
        >>> config.groups, config.ladder, config.target
        (9, (0.42, 0.7, 0.85), ('sparsity', 0.7))
        >>> config, rest = ScanConfig.from_args({"sparsity": 0.5, "metric": "map50-95", "model": "best.pt"})
        >>> config.metric, config.context, config.groups, rest
        ('mAP50-95', 'target', 12, {'model': 'best.pt'})
    """

    pruning: SparsityConfig
    context: str | None = None
    groups: int | None = None
    budget: int = DEFAULT_BUDGET
    margin: float = DEFAULT_MARGIN
    metric: str = "mAP50"
    ladder: tuple[float, ...] | None = None
    imgsz: int = 640
    batch: int = 16

    def __post_init__(self):
        """Validate every field and fill in the defaults that depend on others; raise naming the key and the value."""
        if not isinstance(self.pruning, SparsityConfig):
            raise TypeError(f"pruning={echo(self.pruning)} must be a SparsityConfig")
        if self.context is not None:
            check_choice("context", self.context, CONTEXTS)
        margin = self.margin
        if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not 0 <= margin < 1:
            raise ValueError(f"margin={echo(margin)} must be a number in [0, 1)")
        object.__setattr__(self, "metric", check_metric(self.metric))
        method = self.pruning.method
        check_method(method)
        key, target = self.target
        if target is None:
            raise ValueError("sparsity= is required: the overall fraction of zeros the scanned rules reach, e.g. 0.7"
                             + (" (or flops=, the fraction of GFLOPs removed)" if method == "channel" else ""))
        if target == 0:
            raise ValueError(f"{key}=0 needs no scan; give a fraction in (0, 1)")
        if self.context is None:
            object.__setattr__(self, "context", "target" if method == "unstructured" else "dense")
        if self.context == "target" and method != "unstructured":
            raise ValueError("context=target counts zeros per group: use it with method=unstructured, or context=dense")
        if self.ladder is not None and self.context == "target":
            raise ValueError("ladder= needs context=dense (context=target tests each group around its base ratio)")
        if self.groups is None:
            object.__setattr__(self, "groups", 12 if self.context == "target" else 9)
        check_imgsz(self.imgsz)
        for name in ("batch", "groups", "budget"):
            positive_int(name, getattr(self, name))
        if self.context == "dense":
            ladder = default_ladder(target) if self.ladder is None else self.ladder
            object.__setattr__(self, "ladder", _check_ladder(ladder, self.pruning.sparsity))

    @property
    def target(self) -> tuple[str, float | None]:
        """The overall target: ``("flops", F)`` for a GFLOPs target, else ``("sparsity", S)``.

        Examples:
            >>> ScanConfig(SparsityConfig(method="channel", flops=0.5)).target
            ('flops', 0.5)
        """
        if self.pruning.flops is not None:
            return "flops", self.pruning.flops
        return "sparsity", self.pruning.sparsity

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> tuple[ScanConfig, dict[str, Any]]:
        """The ScanConfig of a command line's keys (the sparsity keys go to ``pruning``) and a dict of the others.

        Examples:
            >>> ScanConfig.from_args({"model": "best.pt", "method": "channel", "flops": 0.5, "groups": 4})[1]
            {'model': 'best.pt'}
        """
        pruning, rest = SparsityConfig.from_args(args)
        own = {k: rest.pop(k) for k in list(rest) if k in SCAN_KEYS}
        return cls(pruning, **own), rest


SCAN_KEYS = frozenset(f.name for f in fields(ScanConfig)) - {"pruning"}


def _check_ladder(ladder: Any, sparsity: float | None) -> tuple[float, ...]:
    """Return the ladder as increasing floats in (0, MAX_LADDER_RATIO], the last at least ``sparsity`` when given.

    A flops= target has no such bound (a channel ratio removes more than its share of GFLOPs); the scan checks what
    the highest ratios remove before it measures the curves.

    Examples:
        >>> _check_ladder([0.3, 0.6], 0.5)
        (0.3, 0.6)
    """
    values = list(ladder) if isinstance(ladder, (list, tuple)) else [ladder]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"ladder={ladder!r} must be a list of ratios, e.g. ladder=[0.4,0.7,0.85]")
    if any(not 0 < v <= MAX_LADDER_RATIO for v in values) or sorted(set(values)) != values:
        raise ValueError(f"ladder={ladder!r} must increase strictly, each ratio in (0, {MAX_LADDER_RATIO}]")
    if sparsity is not None and values[-1] < sparsity:
        raise ValueError(f"ladder={ladder!r} must reach sparsity={sparsity}: its last ratio is below it")
    return tuple(float(v) for v in values)
