"""Honest speed: benchmark statistics (``stats``) apart from the model runners (``timing``).

Every public name of both modules is importable from ``ultra_sparse.bench``.
"""

from .stats import HONEST_NOTE, MIN_RUNS, Stats, ratio_summary, summarize, verdict
from .timing import (
    BACKENDS,
    benchmark_models,
    check_onnx_packages,
    check_settings,
    format_benchmark_md,
    interleaved_order,
    parse_device,
    time_interleaved,
)

__all__ = [
    "BACKENDS",
    "HONEST_NOTE",
    "MIN_RUNS",
    "Stats",
    "benchmark_models",
    "check_onnx_packages",
    "check_settings",
    "format_benchmark_md",
    "interleaved_order",
    "parse_device",
    "ratio_summary",
    "summarize",
    "time_interleaved",
    "verdict",
]
