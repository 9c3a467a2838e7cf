"""The pruning methods, keyed by ``config.method``: each supplies its one-shot pass, training state and start rules.

``unstructured`` and ``nm`` zero weights inside dense tensors (:mod:`.element`); ``channel`` removes whole channels
(:mod:`.channel`). Callers look a method up with :func:`method_of` instead of branching on its name; a new method is a
new module and one entry in :data:`METHODS`.

Examples:
    >>> from ultra_sparse.config import SparsityConfig
    >>> method_of(SparsityConfig(method="channel")).removes
    True
    >>> sorted(METHODS)
    ['channel', 'nm', 'unstructured']
"""

from __future__ import annotations

from ..config import SparsityConfig
from .base import Method, SparsifyResult
from .channel import CHANNEL
from .nm import NM
from .unstructured import UNSTRUCTURED

__all__ = ["METHODS", "Method", "SparsifyResult", "method_of"]

METHODS: dict[str, Method] = {m.name: m for m in (UNSTRUCTURED, NM, CHANNEL)}


def method_of(config: SparsityConfig | str) -> Method:
    """The method of ``config`` (or of a ``method=`` name).

    Raises:
        ValueError: For a name that is not a method.

    Examples:
        >>> method_of("nm").name
        'nm'
    """
    name = config if isinstance(config, str) else config.method
    if name not in METHODS:
        raise ValueError(f"method={name!r} is not one of {sorted(METHODS)}")
    return METHODS[name]
