"""Pure statistics of a benchmark: medians and quartiles of latencies, the per-round ratio and what it means.

Nothing here runs a model or reads a clock: every function takes numbers, so the verdict is tested on made-up timings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Sequence

__all__ = [
    "HONEST_NOTE",
    "MIN_RUNS",
    "NM_NOTE",
    "OUTCOMES",
    "PAIR_KINDS",
    "Stats",
    "outcome",
    "pair_kind",
    "ratio_summary",
    "ratio_text",
    "speed_note",
    "summarize",
    "verdict",
]

MIN_RUNS = 10  # quartiles of fewer rounds say little about the spread
HONEST_NOTE = (
    "Unstructured sparsity (zeros scattered inside dense tensors) does not speed up dense kernels: the same "
    "multiply-adds run whatever the values. Speed-ups need structure: channel pruning (smaller dense layers) or 2:4 "
    "semi-structured sparsity on GPUs with sparse tensor cores (large matrix multiplies only)."
)
NM_NOTE = (
    "N:M zeros sit inside dense tensors, and the kernels timed here are dense: they do the same multiply-adds "
    "whatever the values. A 2:4 pattern speeds up only semi-structured sparse kernels on GPUs with sparse tensor "
    "cores (benchmarks/nm_speed.py times those)."
)
PAIR_KINDS = ("unstructured", "nm", "structured")
OUTCOMES = ("speed-up", "none", "slow-down")


@dataclass(frozen=True)
class Stats:
    """Median and spread of a sample.

    Attributes:
        n (int): Sample size.
        median (float): Median.
        q1 (float): First quartile (25th percentile, linear interpolation).
        q3 (float): Third quartile (75th percentile).
        min (float): Smallest value.
        max (float): Largest value.
    """

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        """Interquartile range ``q3 - q1``."""
        return self.q3 - self.q1

    def to_dict(self) -> dict[str, float]:
        """Plain dict (for JSON), with the IQR added."""
        return {**asdict(self), "iqr": self.iqr}


def summarize(values: Sequence[float]) -> Stats:
    """Median, quartiles and range of a sample.

    Args:
        values (Sequence[float]): At least one finite number.

    Returns:
        (Stats): The summary.

    Raises:
        ValueError: If ``values`` is empty or holds a non-finite number.

    Examples:
        >>> s = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
        >>> (s.median, s.q1, s.q3, s.min, s.max)
        (3.0, 2.0, 4.0, 1.0, 5.0)
    """
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("cannot summarize an empty sample")
    if not all(math.isfinite(v) for v in data):
        raise ValueError(f"sample holds a non-finite value: {data}")
    if len(data) == 1:
        q1 = q3 = data[0]
    else:
        q1, _, q3 = statistics.quantiles(data, n=4, method="inclusive")
    return Stats(n=len(data), median=statistics.median(data), q1=q1, q3=q3, min=data[0], max=data[-1])


def ratio_summary(dense: Sequence[float], sparse: Sequence[float]) -> Stats:
    """Summarize the per-round ratios ``sparse[i] / dense[i]`` of paired latencies (below 1: sparse is faster).

    Args:
        dense (Sequence[float]): Dense latencies, one per round.
        sparse (Sequence[float]): Sparse latencies of the same rounds.

    Returns:
        (Stats): Median and spread of the ratios.

    Raises:
        ValueError: If the samples differ in length, are empty, or hold a non-positive dense latency.

    Examples:
        >>> ratio_summary([2.0, 2.0, 4.0], [1.0, 2.0, 4.0]).median
        1.0
    """
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples differ in length: {len(dense)} dense, {len(sparse)} sparse")
    if any(d <= 0 for d in dense):
        raise ValueError("dense latencies must be positive")
    return summarize([s / d for d, s in zip(dense, sparse)])


def ratio_text(value: float) -> str:
    """A ratio with two decimals, or three where two would round it to 1.00 without being 1.0.

    A spread that excludes 1.0 must not read as if it touched it ("IQR 1.00-1.27" for a first quartile of 1.004).

    Examples:
        >>> ratio_text(0.8123), ratio_text(1.004), ratio_text(0.9996), ratio_text(1.0)
        ('0.81', '1.004', '1.000', '1.00')
    """
    text = f"{value:.2f}"
    return f"{value:.3f}" if text == "1.00" and value != 1.0 else text


def outcome(ratio: Stats) -> str:
    """What a sparse/dense latency ratio shows: ``speed-up``, ``none`` or ``slow-down`` (one of ``OUTCOMES``).

    The spread decides, not the median: an interquartile range that contains 1.0 is ``none`` whatever the median;
    a range wholly below 1.0 is a speed-up, wholly above a slow-down.

    Examples:
        >>> outcome(summarize([0.6, 0.62, 0.65])), outcome(summarize([0.9, 1.0, 1.1])), outcome(summarize([1.2, 1.3]))
        ('speed-up', 'none', 'slow-down')
    """
    if ratio.q1 <= 1.0 <= ratio.q3:
        return "none"
    return "speed-up" if ratio.q3 < 1.0 else "slow-down"


def verdict(ratio: Stats) -> str:
    """Say what a sparse/dense latency ratio means, honestly.

    A ratio whose interquartile range contains 1.0 is "no measurable speed-up"; a range wholly below 1.0 is a
    speed-up, wholly above 1.0 a slow-down.

    Args:
        ratio (Stats): Summary of per-round sparse/dense latency ratios.

    Returns:
        (str): One phrase.

    Examples:
        >>> verdict(summarize([0.97, 1.0, 1.02, 1.04]))
        'no measurable speed-up (ratio 1.01, IQR 0.99-1.02 includes 1.00)'
        >>> verdict(summarize([0.48, 0.5, 0.52]))
        'speed-up: sparse is 2.00x faster (ratio 0.50, IQR 0.49-0.51)'
    """
    spread = f"IQR {ratio_text(ratio.q1)}-{ratio_text(ratio.q3)}"
    result = outcome(ratio)
    if result == "none":
        return f"no measurable speed-up (ratio {ratio.median:.2f}, {spread} includes 1.00)"
    if result == "speed-up":
        return f"speed-up: sparse is {1 / ratio.median:.2f}x faster (ratio {ratio.median:.2f}, {spread})"
    return f"slow-down: sparse is {ratio.median:.2f}x slower (ratio {ratio.median:.2f}, {spread})"



def pair_kind(same_shapes: bool, method: str | None = None) -> str:
    """The kind of a dense/sparse pair (one of ``PAIR_KINDS``), which decides the note that goes with its verdict.

    Models whose parameters differ in shape are ``structured`` (channel pruning, or another architecture): their
    speed can change, and only the measurement says by how much. Models of the same shapes differ only in values:
    ``nm`` when the sparse checkpoint's ultra_sparse metadata says ``method=nm``, else ``unstructured`` (zeros, if
    any, inside dense tensors). A ``method=channel`` checkpoint is ``structured`` even if no channel was removed.

    Args:
        same_shapes (bool): Whether both models have the same parameter names and shapes.
        method (str, optional): ``config.method`` from the sparse checkpoint's ultra_sparse metadata, if any.

    Returns:
        (str): ``unstructured``, ``nm`` or ``structured``.

    Examples:
        >>> pair_kind(True), pair_kind(True, "nm"), pair_kind(False), pair_kind(False, "unstructured")
        ('unstructured', 'nm', 'structured', 'structured')
    """
    # Method branch on the name stored in a checkpoint's metadata: benchmark statistics stay free of the pruning code.
    if not same_shapes or method == "channel":
        return "structured"
    return "nm" if method == "nm" else "unstructured"


def speed_note(kind: str, gflops_ratio: float | None = None) -> str:
    """The note printed under a verdict: what speed to expect from a pair of this kind, and why.

    Unstructured pairs get the fixed ``HONEST_NOTE`` and N:M pairs ``NM_NOTE``; structured pairs get their GFLOPs
    ratio as the compute expectation against which the measured ratio can be read.

    Args:
        kind (str): One of ``PAIR_KINDS``.
        gflops_ratio (float, optional): Sparse/dense GFLOPs, where both were counted.

    Returns:
        (str): The note.

    Raises:
        ValueError: If ``kind`` is unknown.

    Examples:
        >>> speed_note("structured", 0.5)[:62]
        'The models differ in shape (channel pruning or another archite'
        >>> speed_note("unstructured") == HONEST_NOTE
        True
    """
    if kind == "unstructured":
        return HONEST_NOTE
    if kind == "nm":
        return NM_NOTE
    if kind != "structured":
        raise ValueError(f"pair kind {kind!r} is unknown; one of {', '.join(PAIR_KINDS)}")
    expectation = (
        f" Their GFLOPs ratio {gflops_ratio:.2f} is the compute expectation for the latency ratio; latency usually "
        "falls less, where memory traffic and per-layer overheads weigh (small inputs, thin layers, fast GPUs)."
        if gflops_ratio is not None
        else ""
    )
    return f"The models differ in shape (channel pruning or another architecture): their speed ratio is measured.{expectation}"
