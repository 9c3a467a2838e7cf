"""Importance criteria: a weight tensor in, one score per element out (low scores are pruned first).

Every criterion scores an exact zero below every non-zero weight, so weights that are already zero are the first
counted toward a target.

``l1`` (|w|), ``l2`` (w^2) and ``l1l2`` (0.7|w| + 0.3w^2, the reference scheme's formula) are all strictly increasing
functions of |w|, so they rank weights identically and give identical masks, in layer and in global scope. They are
kept so that configurations of the reference scheme run unchanged. ``lamp`` (Lee et al., 2021) normalises each
layer's scores so that one global ranking compares layers fairly. ``taylor`` is the first-order Taylor estimate
|w * dL/dw| of the loss change, accumulated over calibration batches through the model's own loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn

from .calibration import buffers_kept

__all__ = [
    "TAYLOR_NEEDS_DATA",
    "Criterion",
    "get_criterion",
    "l1",
    "l1l2",
    "l2",
    "lamp",
    "loss_gradients",
    "taylor_scores",
]

TAYLOR_NEEDS_DATA = "importance=taylor needs data= (a dataset YAML whose train split calibrates it)"  # one wording


@dataclass(frozen=True)
class Criterion:
    """An importance criterion: ``criterion(parameter name, weight) -> one score per element``.

    Attributes:
        score (Callable[[str, torch.Tensor], torch.Tensor]): The scoring function.
        elementwise (bool): True if each score depends on its own weight only, so the criterion may score many
            weights at once, concatenated.

    Examples:
        >>> Criterion(l1, elementwise=True)("w", torch.tensor([-2.0])).item()
        2.0
    """

    score: Callable[[str, torch.Tensor], torch.Tensor]
    elementwise: bool = False

    def __call__(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """Score ``weight`` (the parameter called ``name``)."""
        return self.score(name, weight)


def l1(name: str, weight: torch.Tensor) -> torch.Tensor:
    """Magnitude |w|.

    Examples:
        >>> l1("w", torch.tensor([-2.0, 1.0]))
        tensor([2., 1.])
    """
    return weight.detach().abs()


def l2(name: str, weight: torch.Tensor) -> torch.Tensor:
    """Squared magnitude w^2 (ranks exactly like :func:`l1`)."""
    return weight.detach().square()


def l1l2(name: str, weight: torch.Tensor) -> torch.Tensor:
    """The reference scheme's 0.7|w| + 0.3w^2 (strictly increasing in |w|: ranks exactly like :func:`l1`)."""
    w = weight.detach().abs()
    return 0.7 * w + 0.3 * w.square()


def lamp(name: str, weight: torch.Tensor) -> torch.Tensor:
    """LAMP score: w_u^2 divided by the sum of w_v^2 over all weights of the layer at least as large as w_u.

    The largest weight of every layer scores 1, so a global ranking never empties a layer first.

    Examples:
        >>> lamp("w", torch.tensor([1.0, 2.0]))
        tensor([0.2000, 1.0000])
    """
    w2 = weight.detach().float().reshape(-1).square()
    sorted_w2, order = torch.sort(w2, stable=True)
    suffix = sorted_w2.flip(0).cumsum(0).flip(0)  # sum of w^2 over this element and all larger ones
    scores = torch.empty_like(w2)
    scores[order] = sorted_w2 / suffix.clamp_min(torch.finfo(suffix.dtype).tiny)
    return scores.reshape(weight.shape)


def _loss_passes(model: nn.Module, batches: Iterable[dict], params: dict[str, nn.Parameter]) -> Iterator[None]:
    """Run the model's own loss forward and backward on each batch; yield with ``params``' gradients of that batch.

    The model is put back as it was: training mode, ``requires_grad`` flags, no gradients, every buffer (a
    training-mode pass moves the BatchNorm statistics).

    Args:
        model (nn.Module): An Ultralytics model whose ``loss(batch)`` works (``model.args`` holding hyperparameters).
        batches (Iterable[dict]): Preprocessed batches (``img`` as float in [0, 1], plus labels), see
            :func:`ultra_sparse.calibration.calibration_batches`.
        params (dict[str, nn.Parameter]): Parameters that must receive gradients.

    Yields:
        None: Once per batch, its gradients in ``.grad``.

    Raises:
        ValueError: If ``batches`` is empty.
    """
    flags = {n: p.requires_grad for n, p in params.items()}
    training = model.training
    seen = 0
    try:
        model.train()  # the loss needs the training-mode outputs of the head
        for p in params.values():
            p.requires_grad_(True)
        with buffers_kept(model):
            for batch in batches:
                model.zero_grad(set_to_none=True)
                model.loss(batch)[0].sum().backward()
                seen += 1
                yield
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(flags[n])
        model.train(training)
    if not seen:
        raise ValueError(f"{TAYLOR_NEEDS_DATA}: no calibration batch was given")


def loss_gradients(model: nn.Module, batches: Iterable[dict]) -> dict[str, torch.Tensor]:
    """The loss gradient of every parameter, summed over calibration batches; the model is left as it was.

    Channel-level ``taylor`` ranks channel groups by these (Torch-Pruning's group Taylor importance reads ``.grad``).

    Args:
        model (nn.Module): An Ultralytics model whose ``loss(batch)`` works.
        batches (Iterable[dict]): Preprocessed batches, as for :func:`taylor_scores`.

    Returns:
        (dict[str, torch.Tensor]): Parameter name -> summed gradient, on the parameter's device (parameters the loss
        does not reach are left out).

    Raises:
        ValueError: If ``batches`` is empty.

    Examples:
        >>> from ultra_sparse.calibration import loss_ready
        >>> with loss_ready(model):  # doctest: +SKIP
        ...     gradients = loss_gradients(model, batches)
    """
    params = dict(model.named_parameters())
    sums: dict[str, torch.Tensor] = {}
    for _ in _loss_passes(model, batches, params):
        for n, p in params.items():
            if p.grad is not None:
                sums[n] = sums[n] + p.grad.detach() if n in sums else p.grad.detach().clone()
    return sums


def taylor_scores(model: nn.Module, batches: Iterable[dict], names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Accumulate |w * dL/dw| over calibration batches through the model's own loss; every buffer is kept as it was.

    Args:
        model (nn.Module): An Ultralytics model whose ``loss(batch)`` works (``model.args`` holding hyperparameters).
        batches (Iterable[dict]): Preprocessed batches (``img`` as float in [0, 1], plus labels), see
            :func:`ultra_sparse.calibration.calibration_batches`.
        names (Iterable[str]): Parameter names to score.

    Returns:
        (dict[str, torch.Tensor]): Parameter name -> accumulated scores, on the CPU.

    Raises:
        ValueError: If ``batches`` is empty.
    """
    params = dict(model.named_parameters())
    wanted = {n: params[n] for n in names}
    scores = {n: torch.zeros_like(p, dtype=torch.float32, device="cpu") for n, p in wanted.items()}
    for _ in _loss_passes(model, batches, wanted):
        for n, p in wanted.items():
            if p.grad is not None:
                scores[n] += (p.detach() * p.grad.detach()).abs().float().cpu()
    for n, p in wanted.items():  # a zero gradient must not rank a live weight with the dead ones
        scores[n] = torch.where(p.detach().cpu() == 0, -1.0, scores[n])
    return scores


_CRITERIA = {
    "l1": Criterion(l1, elementwise=True),
    "l2": Criterion(l2, elementwise=True),
    "l1l2": Criterion(l1l2, elementwise=True),
    "lamp": Criterion(lamp),
}


def get_criterion(name: str, taylor: dict[str, torch.Tensor] | None = None) -> Criterion:
    """Return the criterion called ``name``.

    Args:
        name (str): ``l1``, ``l2``, ``l1l2``, ``lamp`` or ``taylor``.
        taylor (dict[str, torch.Tensor], optional): Scores from :func:`taylor_scores`, required for ``taylor``.

    Returns:
        (Criterion): A callable ``(parameter name, weight) -> scores``.

    Examples:
        >>> get_criterion("l1")("w", torch.tensor([-3.0])).item()
        3.0
    """
    if name == "taylor":
        if taylor is None:
            raise ValueError(f"{TAYLOR_NEEDS_DATA}: no calibration scores were given")
        return Criterion(lambda param_name, weight: taylor[param_name])
    if name not in _CRITERIA:
        raise ValueError(f"importance={name!r} is not one of {', '.join([*_CRITERIA, 'taylor'])}")
    return _CRITERIA[name]
