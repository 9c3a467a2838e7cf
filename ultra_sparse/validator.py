"""Validators for every task that report sparsity beside Ultralytics' own accuracy and speed.

``SparseDetectionValidator`` (and the segment, pose, OBB and classify siblings, one mixin on each of Ultralytics' task
validators) is a plain Ultralytics validator: precision, recall, mAP (or top-1/top-5) and the per-image speed are
Ultralytics' own numbers, computed the same way. It adds the sparsity of the weights that were validated, counted
before Ultralytics fuses Conv+BN (fusing RepConv-style blocks sums branches and fills zeros in):

- ``sparsity/params``: all parameters; ``sparsity/nonzero``: how many are non-zero;
- ``sparsity/prunable``: zeros over prunable weights (Conv/Linear weights outside the protected head);
- ``sparsity/all``: zeros over all parameters.

These keys are appended to ``metrics.results_dict`` and printed after the accuracy table. ``metrics.keys`` and the
fitness are unchanged, so the printed table and best-checkpoint selection stay Ultralytics'. Inside a training run
(``get_validator`` of a trainer of your own; ultra_sparse's sparse trainers write one ``metrics/sparsity`` column instead), the sparsity keys come after the validation losses in the dict the trainer receives,
so ``results.csv`` keeps Ultralytics' column order with the sparsity columns at the end; they are left out when the
trainer validates only some epochs (``val=False``), where they would change the CSV columns between rows. When
distilling, the student is counted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch.nn as nn
from ultralytics.models.yolo.classify import ClassificationValidator
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.models.yolo.obb import OBBValidator
from ultralytics.models.yolo.pose import PoseValidator
from ultralytics.models.yolo.segment import SegmentationValidator
from ultralytics.nn.autobackend import AutoBackend
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import DetMetrics

from .report import sparsity_report
from .rules import trained_network
from .rules import network_of

__all__ = [
    "SPARSE_VALIDATORS",
    "SPARSITY_KEYS",
    "SparseClassificationValidator",
    "SparseDetMetrics",
    "SparseDetectionValidator",
    "SparseOBBValidator",
    "SparsePoseValidator",
    "SparseSegmentationValidator",
    "SparseValidatorMixin",
    "model_sparsity",
    "sparse_metrics",
    "sparse_validator",
]

SPARSITY_KEYS = ("sparsity/params", "sparsity/nonzero", "sparsity/prunable", "sparsity/all")


def model_sparsity(model: nn.Module, rules: str | dict = "default") -> dict[str, float]:
    """Sparsity of a model under the ``SPARSITY_KEYS`` names.

    Args:
        model (nn.Module): A network or an Ultralytics ``YOLO`` object.
        rules (str | dict): Rule preset, file or parsed rules deciding which weights are prunable (the head is protected in all presets).

    Returns:
        (dict[str, float]): ``sparsity/params``, ``sparsity/nonzero``, ``sparsity/prunable``, ``sparsity/all``.

    Examples:
        >>> from ultralytics import YOLO
        >>> model_sparsity(YOLO("yolo11n.yaml"))["sparsity/prunable"]
        0.0
    """
    totals = sparsity_report(model, rules=rules)["totals"]
    return {
        "sparsity/params": float(totals["all"]["params"]),
        "sparsity/nonzero": float(totals["all"]["nonzero"]),
        "sparsity/prunable": float(totals["prunable"]["sparsity"]),
        "sparsity/all": float(totals["all"]["sparsity"]),
    }


class SparseMetricsMixin:
    """Metrics whose ``results_dict`` also holds the validated model's sparsity.

    Attributes:
        sparsity (dict[str, float]): ``SPARSITY_KEYS`` -> value; empty when the weights could not be read (for
            example an exported ONNX model), in which case ``results_dict`` is exactly Ultralytics'.
    """

    sparsity: dict[str, float]

    @classmethod
    def wrap(cls, metrics: Any) -> Any:
        """Return an instance of ``cls`` holding the state of existing metrics (any Ultralytics version)."""
        new = cls.__new__(cls)
        new.__dict__.update(metrics.__dict__)
        new.sparsity = {}
        return new

    @property
    def results_dict(self) -> dict[str, float]:
        """Ultralytics' results followed by the sparsity keys."""
        return {**super().results_dict, **self.sparsity}


class SparseDetMetrics(SparseMetricsMixin, DetMetrics):
    """``DetMetrics`` whose ``results_dict`` also holds the validated model's sparsity."""


@functools.lru_cache(maxsize=None)
def _metrics_class(base: type) -> type:
    """The sparse subclass of one Ultralytics metrics class."""
    if base is DetMetrics:
        return SparseDetMetrics
    return type(f"Sparse{base.__name__}", (SparseMetricsMixin, base), {"__module__": __name__})


def sparse_metrics(metrics: Any) -> Any:
    """Ultralytics metrics of any task, as metrics whose ``results_dict`` also holds sparsity."""
    if isinstance(metrics, SparseMetricsMixin):
        return metrics
    return _metrics_class(type(metrics)).wrap(metrics)


class SparseValidatorMixin:
    """Sparsity of the validated weights on top of an Ultralytics task validator (put it first in the bases).

    Which weights count as prunable follows the attribute ``rules`` (the head is protected in every preset).

    Attributes:
        rules (str | dict): Rule preset, file or parsed rules used to count prunable weights.
    """

    rules: str | dict = "default"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the task validator (same arguments, on any 8.x version) with sparsity-aware metrics."""
        super().__init__(*args, **kwargs)
        self.metrics = sparse_metrics(self.metrics)

    def __call__(self, trainer: Any = None, model: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """Count the sparsity of the weights about to be validated, then validate as Ultralytics does.

        Args:
            trainer (BaseTrainer, optional): The trainer whose EMA (or model) is validated during training.
            model (nn.Module | str, optional): Model or weights path validated outside training.
            **kwargs (Any): Passed on to the task validator's ``__call__``.

        Returns:
            (dict | None): Ultralytics' statistics with the sparsity keys added (see the module docstring).
        """
        network = self._network(trainer, model)
        self.metrics.sparsity = model_sparsity(network, self.rules) if network is not None else {}
        stats = super().__call__(trainer=trainer, model=model, **kwargs)
        if trainer is None or not isinstance(stats, dict):
            return stats
        rest = {k: v for k, v in stats.items() if k not in SPARSITY_KEYS}
        if not getattr(trainer.args, "val", True):
            return rest
        return {**rest, **{k: round(float(v), 5) for k, v in self.metrics.sparsity.items()}}

    def print_results(self) -> None:
        """Print Ultralytics' accuracy table, then one line of sparsity."""
        super().print_results()
        s = self.metrics.sparsity
        if s:
            LOGGER.info(
                f"{'sparsity':>22s} {int(s['sparsity/nonzero']):,}/{int(s['sparsity/params']):,} parameters non-zero, "
                f"{s['sparsity/prunable']:.2%} zeros over prunable weights, {s['sparsity/all']:.2%} over all parameters"
            )

    def _network(self, trainer: Any, model: Any) -> nn.Module | None:
        """The unfused torch network that will be validated, or None when it has no readable weights."""
        if trainer is not None:
            ema = getattr(trainer, "ema", None)
            return trained_network(network_of(ema.ema if ema is not None else trainer.model))
        if isinstance(model, AutoBackend):  # wraps the network it runs; exported formats have none
            return model.model if isinstance(getattr(model, "model", None), nn.Module) else None
        if isinstance(model, nn.Module):
            return trained_network(model)
        path = Path(str(model or self.args.model or ""))
        if path.suffix == ".pt" and path.is_file():
            from .checkpoint import load_checkpoint

            return load_checkpoint(path)[0]
        return None


class SparseDetectionValidator(SparseValidatorMixin, DetectionValidator):
    """Ultralytics' detection validator plus sparsity of the validated weights.

    Use it wherever a validator class is accepted: ``model.val(validator=SparseDetectionValidator, ...)`` or a
    trainer's ``get_validator``; set ``rules`` on a subclass to count with another rule file.

    Examples:
        >>> from ultralytics import YOLO
        >>> model = YOLO("runs/sparse/sparsify/weights/best-sparse.pt")  # doctest: +SKIP
        >>> metrics = model.val(data="data.yaml", validator=SparseDetectionValidator)  # doctest: +SKIP
        >>> metrics.results_dict["sparsity/prunable"]  # doctest: +SKIP
        0.1
    """


class SparseSegmentationValidator(SparseValidatorMixin, SegmentationValidator):
    """Ultralytics' segmentation validator plus sparsity of the validated weights."""


class SparsePoseValidator(SparseValidatorMixin, PoseValidator):
    """Ultralytics' pose validator plus sparsity of the validated weights."""


class SparseOBBValidator(SparseValidatorMixin, OBBValidator):
    """Ultralytics' OBB validator plus sparsity of the validated weights."""


class SparseClassificationValidator(SparseValidatorMixin, ClassificationValidator):
    """Ultralytics' classification validator plus sparsity of the validated weights."""


SPARSE_VALIDATORS = {
    "detect": SparseDetectionValidator,
    "segment": SparseSegmentationValidator,
    "pose": SparsePoseValidator,
    "obb": SparseOBBValidator,
    "classify": SparseClassificationValidator,
}


def sparse_validator(base: type) -> type:
    """The sparse validator class for an Ultralytics task validator class (or a task name).

    Examples:
        >>> sparse_validator("segment").__name__
        'SparseSegmentationValidator'
        >>> sparse_validator(DetectionValidator) is SparseDetectionValidator
        True
    """
    if isinstance(base, str):
        if base not in SPARSE_VALIDATORS:
            raise ValueError(f"task {base!r} has no sparse validator; tasks: {', '.join(SPARSE_VALIDATORS)}")
        return SPARSE_VALIDATORS[base]
    if issubclass(base, SparseValidatorMixin):
        return base
    for validator in SPARSE_VALIDATORS.values():
        if validator.__mro__[2] is base:
            return validator
    return type(f"Sparse{base.__name__}", (SparseValidatorMixin, base), {"__module__": base.__module__})
