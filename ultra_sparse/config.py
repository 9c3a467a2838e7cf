"""SparsityConfig: the validated settings of one sparsification, built from keyword or key=value arguments.

The checks of single values (:func:`check_choice`, :func:`positive_int`) are shared by the other configs and commands.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .messages import echo

__all__ = [
    "IMPORTANCES",
    "MAX_IMGSZ",
    "METHODS",
    "SCHEDULES",
    "SCOPES",
    "SPARSITY_KEYS",
    "SparsityConfig",
    "check_choice",
    "check_imgsz",
    "comma_list",
    "positive_int",
]

METHODS = ("unstructured", "channel", "nm")
IMPORTANCES = ("l1", "l2", "l1l2", "lamp", "taylor")
SCOPES = ("layer", "global")
SCHEDULES = ("oneshot", "gradual")


@dataclass(frozen=True)
class SparsityConfig:
    """Settings of a sparsification run, checked when built.

    Attributes:
        method (str): ``unstructured`` (exact zeros in dense tensors, the default), ``channel`` (whole channels
            removed: smaller dense layers) or ``nm`` (N:M semi-structured zeros, see ``nm``).
        sparsity (float | None): Overall fraction of zeros wanted over prunable weights, in [0, 1) (for
            ``method=channel``: the fraction of prunable parameters removed). ``None`` applies the rule ratios as
            written. Not taken by ``method=nm``, whose pattern fixes the zeros.
        flops (float | None): ``method=channel`` only: the fraction of GFLOPs to remove, in [0, 1). At most one of
            ``sparsity`` and ``flops``.
        rules (str | dict): A preset name from ``cfg/sparsity`` (``default``, ``tokenc3_lsnet``), a path to a rules
            YAML, or the parsed content of one.
        importance (str): Weight importance criterion: ``l1``, ``l2``, ``l1l2``, ``lamp`` or ``taylor`` (for
            ``method=channel`` the channel-level forms of ``l1``, ``l2``, ``lamp``, ``taylor``; ``l1l2`` is refused).
        scope (str | None): ``global`` (each family loses its ratio as a whole, spread over its layers by one
            ranking) or ``layer`` (each layer loses its family's ratio: the reference scheme's per-layer way).
            ``None`` picks what measured best for the method: ``global`` for unstructured and N:M zeros (far more
            accurate at high sparsity), ``layer`` for channels (a global channel ranking empties some layers).
        schedule (str | None): ``oneshot`` or ``gradual`` when training; ``None`` lets the trainer choose
            (``method=nm`` prunes once: ``None`` becomes ``oneshot`` and ``gradual`` is refused).
        prune_start (int | None): First epoch of the gradual ramp; ``None`` picks a default for the run length.
        prune_end (int | None): Epoch at which the gradual ramp reaches ``sparsity``; ``None`` picks a default.
        prune_freq (int): Epochs between two pruning steps of the gradual ramp.
        calib_batches (int): Calibration batches for ``importance=taylor`` and the ``method=channel`` refit
            (``sparsify data=``, ``scan``, ``train method=channel``, where ``taylor`` ranks every step on them).
        round_to (int): ``method=channel`` only: channel counts of layers with at least 16 channels stay multiples of
            this; on a layer narrower than twice it the step is halved, again as needed, not below 8 (8 by default; 1
            turns rounding off).
        reconstruct (bool | None): ``method=channel`` only: refit the layers that lost input channels to the dense
            model's outputs on calibration images (least squares; needs them: ``data=``). ``None`` reconstructs
            whenever calibration images are given: ``sparsify data=``, and every training run but classify.
        nm (str): ``method=nm`` only: the pattern ``"N:M"``, N kept in every group of M consecutive input-channel
            weights (default ``"2:4"``); it zeroes 1 - N/M of every eligible weight, family ratios do not apply.

    Examples:
        >>> cfg = SparsityConfig(sparsity=0.1, rules="tokenc3_lsnet")
        >>> cfg.scope, SparsityConfig(method="channel", flops=0.5).scope
        ('global', 'layer')
        >>> cfg, rest = SparsityConfig.from_args({"sparsity": 0.5, "epochs": 3})
        >>> rest
        {'epochs': 3}
    """

    method: str = "unstructured"
    sparsity: float | None = None
    flops: float | None = None
    rules: str | dict = "default"
    importance: str = "l1"
    scope: str | None = None
    schedule: str | None = None
    prune_start: int | None = None
    prune_end: int | None = None
    prune_freq: int = 1
    calib_batches: int = 8
    round_to: int = 8
    reconstruct: bool | None = None
    nm: str = "2:4"

    def __post_init__(self):
        """Validate every field; raise TypeError or ValueError naming the key and the bad value."""
        check_choice("method", self.method, METHODS)
        for key in ("sparsity", "flops"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _fraction(key, getattr(self, key)))
        if self.flops is not None and self.method != "channel":
            use = "its pattern fixes the zeros" if self.method == "nm" else "use sparsity="
            raise ValueError(f"flops={self.flops} needs method=channel (method={self.method!r} counts zeros: {use})")
        if self.flops is not None and self.sparsity is not None:
            raise ValueError("give sparsity= or flops=, not both")
        if isinstance(self.rules, Path):
            object.__setattr__(self, "rules", str(self.rules))
        if not isinstance(self.rules, (str, dict)) or not self.rules:
            raise TypeError(f"rules={echo(self.rules)} must be a preset name, a path to a rules YAML or a rules dict")
        check_choice("importance", self.importance, IMPORTANCES)
        if self.method == "channel" and self.importance == "l1l2":
            raise ValueError(
                "importance=l1l2 ranks single weights; method=channel ranks whole channels: use l1, l2, lamp or taylor"
            )
        if self.scope is None:
            object.__setattr__(self, "scope", "layer" if self.method == "channel" else "global")
        check_choice("scope", self.scope, SCOPES)
        if self.schedule is not None:
            check_choice("schedule", self.schedule, SCHEDULES)
        minimums = {"prune_start": 0, "prune_end": 0, "prune_freq": 1, "calib_batches": 1, "round_to": 1}
        for key, minimum in minimums.items():
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _integer(key, getattr(self, key), minimum))
        if self.reconstruct is not None and not isinstance(self.reconstruct, bool):
            raise TypeError(f"reconstruct={echo(self.reconstruct)} must be True or False")
        if self.reconstruct and self.method != "channel":
            raise ValueError(f"reconstruct=True needs method=channel (method={self.method!r} keeps every channel)")
        object.__setattr__(self, "nm", _nm_pattern(self.nm))
        _check_method_keys(self)
        if self.method == "nm":
            _check_nm(self)
        if self.prune_start is not None and self.prune_end is not None and self.prune_end < self.prune_start:
            raise ValueError(f"prune_end={self.prune_end} must not come before prune_start={self.prune_start}")

    @property
    def nm_pattern(self) -> tuple[int, int]:
        """``nm`` as the pair (N, M).

        Examples:
            >>> SparsityConfig(method="nm", nm="1:4").nm_pattern
            (1, 4)
        """
        n, m = self.nm.split(":")
        return int(n), int(m)

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> tuple[SparsityConfig, dict[str, Any]]:
        """Split a mapping into a SparsityConfig and the keys that are not sparsity keys.

        Args:
            args (Mapping[str, Any]): Keyword arguments, for example the key=value pairs of a command line.

        Returns:
            (tuple[SparsityConfig, dict]): The config and a new dict of the remaining keys, in their order.
        """
        own = {k: v for k, v in args.items() if k in SPARSITY_KEYS}
        rest = {k: v for k, v in args.items() if k not in SPARSITY_KEYS}
        return cls(**own), rest

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a plain dict (what checkpoints and reports store)."""
        return asdict(self)

    def calibrated(self, given: bool) -> SparsityConfig:
        """This config with ``reconstruct`` decided for ``method=channel``: ``None`` becomes whether calibration images
        are ``given``.

        Raises:
            ValueError: If ``reconstruct=True`` and no calibration images are given.

        Examples:
            >>> SparsityConfig(method="channel").calibrated(True).reconstruct
            True
        """
        if self.reconstruct and not given:
            raise ValueError("reconstruct=True needs calibration images: pass data= (a dataset YAML)")
        if self.method != "channel" or self.reconstruct is not None:
            return self
        return self.replace(reconstruct=given)

    def replace(self, **changes: Any) -> SparsityConfig:
        """Return a copy with some fields changed, validated again."""
        return SparsityConfig(**{**self.to_dict(), **changes})


SPARSITY_KEYS = frozenset(f.name for f in fields(SparsityConfig))


def _fraction(key: str, value: Any) -> float:
    """Return ``value`` (a real number type, numpy's too; never a bool) as a float in [0, 1), or raise naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{key}={echo(value)} must be a number in [0, 1)")
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{key}={echo(value)} is outside [0, 1)")
    return float(value)


def _nm_pattern(value: Any) -> str:
    """Return ``value`` as a normalised ``"N:M"`` string with 0 < N < M <= 32, or raise naming ``nm``."""
    text = str(value).strip() if isinstance(value, str) else None
    parts = text.split(":") if text else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"nm={echo(value)} must be N:M, for example 2:4")
    n, m = (int(p) for p in parts)
    if not 0 < n < m <= 32:
        raise ValueError(f"nm={echo(value)} needs 0 < N < M <= 32")
    return f"{n}:{m}"


def _check_method_keys(config: SparsityConfig) -> None:
    """Refuse a key of another method set away from its default: it would be silently ignored.

    A key left at its default changes nothing under any method (stored configs hold the defaults of every key).

    Examples:
        >>> SparsityConfig(sparsity=0.3, round_to=16)
        Traceback (most recent call last):
        ...
        ValueError: round_to=16 applies to method=channel only (this is method='unstructured'): add method=channel or drop round_to=
    """
    defaults = {f.name: f.default for f in fields(SparsityConfig)}
    owners = {"nm": ("nm",), "round_to": ("channel",)}
    if config.importance != "taylor":
        owners["calib_batches"] = ("channel",)  # the refit's images; importance=taylor ranks on them under any method
    for key, methods in owners.items():
        value = getattr(config, key)
        if config.method not in methods and value != defaults[key]:
            raise ValueError(
                f"{key}={value} applies to method={methods[0]} only (this is method={config.method!r}): "
                f"add method={methods[0]} or drop {key}="
            )


def _check_nm(config: SparsityConfig) -> None:
    """Refuse keys that ``method=nm`` cannot honour and resolve its schedule (the pattern is drawn once)."""
    if config.sparsity is not None:
        raise ValueError(
            f"sparsity={config.sparsity} does not apply to method=nm: the pattern nm={config.nm} fixes the zeros "
            "(1 - N/M of every eligible weight); drop sparsity="
        )
    if config.schedule == "gradual":
        raise ValueError("schedule=gradual does not apply to method=nm: the N:M pattern is drawn once (schedule=oneshot)")
    object.__setattr__(config, "schedule", "oneshot")


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise ValueError naming ``key`` unless ``value`` is one of ``choices``.

    Examples:
        >>> check_choice("scope", "layer", SCOPES)
        >>> check_choice("scope", "model", SCOPES)
        Traceback (most recent call last):
        ValueError: scope='model' is not one of layer, global
    """
    if value not in choices:
        raise ValueError(f"{key}={echo(value)} is not one of {', '.join(choices)}")


MAX_IMGSZ = 8192  # largest image side taken: one 3 x 8192 x 8192 image is 0.8 GB in FP32 before any feature map


def check_imgsz(value: object, key: str = "imgsz") -> int:
    """Return ``value`` if it is a positive integer of at most :data:`MAX_IMGSZ`, else raise naming it.

    Larger sizes cannot be allocated on common machines; they are refused before any work instead of failing inside
    torch or OpenCV.

    Examples:
        >>> check_imgsz(640)
        640
        >>> check_imgsz(100000)
        Traceback (most recent call last):
        ...
        ValueError: imgsz=100000 is larger than 8192, the largest image size taken (its tensors could not be allocated)
    """
    value = positive_int(key, value)
    if value > MAX_IMGSZ:
        raise ValueError(
            f"{key}={value} is larger than {MAX_IMGSZ}, the largest image size taken (its tensors could not be allocated)"
        )
    return value


def comma_list(key: str, value: Any, choices: str) -> tuple[str, ...]:
    """``value`` as a tuple of names: a comma list in one string, or a list of strings; none empty, none twice.

    ``choices`` says what a name may be, for the error (membership is the caller's to check).

    Examples:
        >>> comma_list("format", "onnx, openvino", "onnx or openvino")
        ('onnx', 'openvino')
        >>> comma_list("format", "onnx,onnx", "onnx or openvino")
        Traceback (most recent call last):
        ...
        ValueError: format='onnx,onnx' names a format twice
    """
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{key}={echo(value)} must be {choices}, or a comma list of them")
    if len(set(names)) != len(names):
        raise ValueError(f"{key}={echo(value)} names a {key} twice")
    return tuple(names)


def positive_int(key: str, value: object) -> int:
    """Return ``value`` if it is a positive integer (not a bool), else raise naming ``key``.

    Examples:
        >>> positive_int("imgsz", 64)
        64
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={echo(value)} must be a positive integer")
    return value


def _integer(key: str, value: Any, minimum: int) -> int:
    """Return ``value`` (an integral type, numpy's too; never a bool) as an int >= ``minimum``, or raise naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{key}={echo(value)} must be an integer")
    if value < minimum:
        raise ValueError(f"{key}={echo(value)} must be >= {minimum}")
    return int(value)
