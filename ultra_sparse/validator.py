"""A detection validator that reports sparsity beside Ultralytics' own accuracy and speed.

``SparseDetectionValidator`` is a plain ``DetectionValidator``: precision, recall, mAP50, mAP50-95 and the per-image
speed are Ultralytics' own numbers, computed the same way. It adds the sparsity of the weights that were validated,
counted before Ultralytics fuses Conv+BN (fusing RepConv-style blocks sums branches and fills zeros in):

- ``sparsity/params``: all parameters; ``sparsity/nonzero``: how many are non-zero;
- ``sparsity/prunable``: zeros over prunable weights (Conv/Linear weights outside the protected head);
- ``sparsity/all``: zeros over all parameters.

These keys are appended to ``metrics.results_dict`` and printed after the accuracy table. ``metrics.keys`` and the
fitness are unchanged, so the printed table and best-checkpoint selection stay Ultralytics'. Inside a training run
(``get_validator`` of a trainer), the sparsity keys come after the validation losses in the dict the trainer receives,
so ``results.csv`` keeps Ultralytics' column order with the sparsity columns at the end; they are left out when the
trainer validates only some epochs (``val=False``), where they would change the CSV columns between rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.nn.autobackend import AutoBackend
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import DetMetrics

from .report import sparsity_report
from .rules import network_of

__all__ = ["SPARSITY_KEYS", "SparseDetMetrics", "SparseDetectionValidator", "model_sparsity"]

SPARSITY_KEYS = ("sparsity/params", "sparsity/nonzero", "sparsity/prunable", "sparsity/all")


def model_sparsity(model: nn.Module, rules: str = "default") -> dict[str, float]:
    """Sparsity of a model under the ``SPARSITY_KEYS`` names.

    Args:
        model (nn.Module): A network or an Ultralytics ``YOLO`` object.
        rules (str): Rule preset or file deciding which weights are prunable (the head is protected in all presets).

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


class SparseDetMetrics(DetMetrics):
    """``DetMetrics`` whose ``results_dict`` also holds the validated model's sparsity.

    Attributes:
        sparsity (dict[str, float]): ``SPARSITY_KEYS`` -> value; empty when the weights could not be read (for
            example an exported ONNX model), in which case ``results_dict`` is exactly Ultralytics'.
    """

    sparsity: dict[str, float]

    @classmethod
    def wrap(cls, metrics: DetMetrics) -> SparseDetMetrics:
        """Return a ``SparseDetMetrics`` holding the state of an existing ``DetMetrics`` (any Ultralytics version)."""
        new = cls.__new__(cls)
        new.__dict__.update(metrics.__dict__)
        new.sparsity = {}
        return new

    @property
    def results_dict(self) -> dict[str, float]:
        """Ultralytics' results (precision, recall, mAP50, mAP50-95, fitness) followed by the sparsity keys."""
        return {**super().results_dict, **self.sparsity}


class SparseDetectionValidator(DetectionValidator):
    """Ultralytics' detection validator plus sparsity of the validated weights.

    Use it wherever a validator class is accepted: ``model.val(validator=SparseDetectionValidator, ...)`` or a
    trainer's ``get_validator``. Which weights count as prunable follows the class attribute ``rules`` (the head is
    protected in every preset); set it on a subclass to use another rule file.

    Attributes:
        rules (str): Rule preset or file used to count prunable weights.

    Examples:
        >>> from ultralytics import YOLO
        >>> model = YOLO("runs/sparse/sparsify/weights/best-sparse.pt")  # doctest: +SKIP
        >>> metrics = model.val(data="data.yaml", validator=SparseDetectionValidator)  # doctest: +SKIP
        >>> metrics.results_dict["sparsity/prunable"]  # doctest: +SKIP
        0.1
    """

    rules = "default"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build a ``DetectionValidator`` (same arguments, on any 8.x version) with sparsity-aware metrics."""
        super().__init__(*args, **kwargs)
        self.metrics = SparseDetMetrics.wrap(self.metrics)

    def __call__(self, trainer: Any = None, model: Any = None, **kwargs: Any) -> dict[str, Any] | None:
        """Count the sparsity of the weights about to be validated, then validate as Ultralytics does.

        Args:
            trainer (BaseTrainer, optional): The trainer whose EMA (or model) is validated during training.
            model (nn.Module | str, optional): Model or weights path validated outside training.
            **kwargs (Any): Passed on to ``DetectionValidator.__call__``.

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
            return network_of(ema.ema if ema is not None else trainer.model)
        if isinstance(model, AutoBackend):  # wraps the network it runs; exported formats have none
            return model.model if isinstance(getattr(model, "model", None), nn.Module) else None
        if isinstance(model, nn.Module):
            return model
        path = Path(str(model or self.args.model or ""))
        if path.suffix == ".pt" and path.is_file():
            from .checkpoint import load_checkpoint

            return load_checkpoint(path)[0]
        return None
