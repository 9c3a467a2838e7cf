"""Pure statistics of a benchmark: medians and quartiles of latencies, the per-round ratio and what it means.

Nothing here runs a model or reads a clock: every function takes numbers, so the verdict is tested on made-up timings.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Sequence

__all__ = ["HONEST_NOTE", "MIN_RUNS", "Stats", "ratio_summary", "summarize", "verdict"]

MIN_RUNS = 10  # quartiles of fewer rounds say little about the spread
HONEST_NOTE = (
    "Unstructured sparsity (zeros scattered inside dense tensors) does not speed up dense kernels: the same "
    "multiply-adds run whatever the values. Speed-ups need structure: channel pruning (smaller dense layers) or 2:4 "
    "semi-structured sparsity on GPUs with sparse tensor cores (large matrix multiplies only)."
)


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
    spread = f"IQR {ratio.q1:.2f}-{ratio.q3:.2f}"
    if ratio.q1 <= 1.0 <= ratio.q3:
        return f"no measurable speed-up (ratio {ratio.median:.2f}, {spread} includes 1.00)"
    if ratio.q3 < 1.0:
        return f"speed-up: sparse is {1 / ratio.median:.2f}x faster (ratio {ratio.median:.2f}, {spread})"
    return f"slow-down: sparse is {ratio.median:.2f}x slower (ratio {ratio.median:.2f}, {spread})"

