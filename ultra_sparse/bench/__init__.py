"""Honest speed: benchmark statistics (``stats``) apart from the model runners (``timing``) and model facts (``models``).

Every public name of the three modules is importable from ``ultra_sparse.bench``.
"""

from .models import check_comparable, gflops, kind_of_pair, model_facts, prepare_for_timing
from .stats import (
    HONEST_NOTE,
    MIN_RUNS,
    NM_NOTE,
    OUTCOMES,
    PAIR_KINDS,
    Stats,
    outcome,
    pair_kind,
    ratio_summary,
    speed_note,
    summarize,
    verdict,
)
from .timing import (
    BACKENDS,
    benchmark_models,
    check_onnx_packages,
    check_settings,
    format_benchmark_md,
    interleaved_order,
    missing_onnx_packages,
    onnxruntime_session,
    parse_device,
    resolve_backends,
    time_interleaved,
)

__all__ = [
    "BACKENDS",
    "HONEST_NOTE",
    "MIN_RUNS",
    "NM_NOTE",
    "OUTCOMES",
    "PAIR_KINDS",
    "Stats",
    "benchmark_models",
    "check_comparable",
    "check_onnx_packages",
    "check_settings",
    "format_benchmark_md",
    "gflops",
    "interleaved_order",
    "kind_of_pair",
    "missing_onnx_packages",
    "model_facts",
    "onnxruntime_session",
    "outcome",
    "pair_kind",
    "parse_device",
    "prepare_for_timing",
    "ratio_summary",
    "resolve_backends",
    "speed_note",
    "summarize",
    "time_interleaved",
    "verdict",
]
