"""The ``ultra_sparse`` record of a checkpoint: one type for what pruning and training runs store there.

Every checkpoint this package writes carries, under the key ``ultra_sparse``, plain data (no class of this package,
so that a bare ``torch.load`` reads it anywhere). Two kinds of writers fill it, with one shared core:

- a RESULT (``sparsify``, and a channel-pruning run once it removed its channels): ``version``, ``source`` (the input
  file, where known), ``config`` (with the rules as a parsed dict), ``scale``, ``family_ratios``, ``totals`` and, for
  ``method=channel``, the ``channel`` section of the report;
- a TRAINING state (``last.pt``/``best.pt`` of a run whose masks are live): ``version``, ``config``, ``sparsity``,
  ``target`` and the mask state a resumed run restores (``schedule``, ``masks``; for channel pruning also the
  ``removal`` and what was planned).

:class:`SparseMetadata` reads either from a checkpoint and writes either back, in that same flat layout, so files
written before it existed load unchanged.

Examples:
    >>> meta = SparseMetadata.from_ckpt({"ultra_sparse": {"version": "0.1", "config": {"method": "nm"}, "scale": 1.0}})
    >>> meta.method, meta.result, meta.state is None
    ('nm', {'scale': 1.0}, True)
    >>> meta.to_dict()["scale"]
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ._version import __version__
from .config import SparsityConfig
from .rules import load_rules, rules_as_dict

__all__ = ["METADATA_KEY", "SparseMetadata", "config_record", "recorded_rules"]

METADATA_KEY = "ultra_sparse"
_CORE = ("version", "source", "config")
_RESULT_KEYS = ("scale", "family_ratios", "totals", "channel")


def config_record(config: SparsityConfig) -> dict[str, Any]:
    """``config`` as a checkpoint records it: its fields, with the rules as a parsed dict (usable anywhere)."""
    return {**config.to_dict(), "rules": rules_as_dict(config.rules)}


@dataclass(frozen=True)
class SparseMetadata:
    """What a checkpoint records under ``ultra_sparse`` (see the module doc for the two kinds).

    Attributes:
        config (dict[str, Any]): The ``SparsityConfig`` fields it was made with.
        version (str): The ultra_sparse version that wrote it.
        source (str | None): The checkpoint it was made from, where known.
        result (dict[str, Any]): A result's ``scale``, ``family_ratios``, ``totals`` and ``channel`` section.
        training (dict[str, Any]): A training state's ``sparsity``, ``target`` and mask state.
    """

    config: dict[str, Any]
    version: str = __version__
    source: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_ckpt(cls, ckpt: Mapping[str, Any]) -> SparseMetadata | None:
        """The record of a loaded checkpoint, or None where it has none (a dense Ultralytics checkpoint)."""
        data = ckpt.get(METADATA_KEY) if isinstance(ckpt, Mapping) else None
        if not isinstance(data, Mapping) or not data:
            return None
        rest = {k: v for k, v in data.items() if k not in _CORE}
        result = {k: rest.pop(k) for k in _RESULT_KEYS if k in rest}
        config = data.get("config")
        return cls(dict(config) if isinstance(config, Mapping) else {}, str(data.get("version", "")),
                   data.get("source"), result, rest)

    @classmethod
    def of_result(cls, result: Any, config: SparsityConfig, source: str | None = None) -> SparseMetadata:
        """The record of a one-shot result (a ``SparsifyResult``) made with ``config`` from ``source``."""
        report = result.report
        return cls(
            config_record(config), source=source,
            result={
                "scale": result.scale,
                "family_ratios": {f["family"]: f["ratio_asked"] for f in report["families"]},
                "totals": report["totals"],
                **({"channel": report["channel"]} if "channel" in report else {}),
            },
        )

    @classmethod
    def of_training(cls, state: Mapping[str, Any], sparsity: float, target: float | None) -> SparseMetadata:
        """The record of a training run: its mask state (``SparseTraining.state_dict()``), sparsity and target."""
        rest = {k: v for k, v in state.items() if k != "config"}
        return cls(dict(state["config"]), training={"sparsity": sparsity, "target": target, **rest})

    @property
    def method(self) -> str:
        """The method it was made with (``unstructured`` where older records name none)."""
        return self.config.get("method") or "unstructured"

    @property
    def state(self) -> dict[str, Any] | None:
        """The mask state a training run resumes from (``SparseTraining.load_state_dict``), or None for a result."""
        return {"config": self.config, **self.training} if "masks" in self.training else None

    def to_dict(self) -> dict[str, Any]:
        """The record as checkpoints store it (flat, plain data)."""
        return {
            "version": self.version,
            **({"source": self.source} if self.source is not None else {}),
            "config": self.config,
            **self.result,
            **self.training,
        }

    def to_ckpt(self, ckpt: dict[str, Any]) -> None:
        """Store the record in ``ckpt`` under ``ultra_sparse``, replacing any earlier one."""
        ckpt[METADATA_KEY] = self.to_dict()


def recorded_rules(metadata: SparseMetadata | None) -> str | dict[str, Any]:
    """The rules a checkpoint's record names (``config.rules``), or ``default`` if it names none or has no record.

    Reads the parsed dict that checkpoints store and the older forms (a preset name, or a rules file path, which
    only resolves from the folder it was given in: where it no longer loads, ``default`` is used with a warning).

    Args:
        metadata (SparseMetadata | None): A checkpoint's record (:meth:`SparseMetadata.from_ckpt`).

    Returns:
        (str | dict): Something :func:`ultra_sparse.rules.load_rules` accepts.

    Examples:
        >>> recorded_rules(SparseMetadata({"rules": "tokenc3_lsnet"}))
        'tokenc3_lsnet'
        >>> recorded_rules(None)
        'default'
    """
    rules = (metadata.config.get("rules") if metadata else None) or "default"
    try:
        load_rules(rules)
    except (ValueError, TypeError, FileNotFoundError) as e:
        from ultralytics.utils import LOGGER

        LOGGER.warning(f"ultra-sparse: the checkpoint's recorded rules no longer load ({e}); counting with default")
        return "default"
    return rules
