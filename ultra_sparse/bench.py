"""Honest speed: dense and sparse models timed in one process, warmed up, interleaved, with medians and spread.

Unstructured zeros inside dense tensors do not make dense kernels faster, so the expected sparse/dense latency ratio
of a one-shot or fine-tuned unstructured checkpoint is 1.00 within noise. This module measures it rather than assumes
it: both models run in the same process on the same input, warm-up runs are discarded, and the timed runs alternate
between the models (A B, B A, A B, ...) so that drift in machine load hits both alike. Each round gives one pair of
latencies and one sparse/dense ratio; a ratio whose interquartile range contains 1.0 is reported as no measurable
speed-up.

The statistics (``summarize``, ``ratio_summary``, ``verdict``) and the scheduling (``interleaved_order``,
``time_interleaved``) are pure functions that take any timer, so they are tested with fake clocks.
"""

from __future__ import annotations

import importlib
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

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

BACKENDS = ("torch", "onnxruntime")
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


def interleaved_order(names: Sequence[str], runs: int) -> list[tuple[int, str]]:
    """The order in which timed runs are made: one round per run, each round visiting every model once.

    Rounds alternate direction (A B, B A, A B, ...), so neither model always runs first after the other.

    Args:
        names (Sequence[str]): Model names, at least one, no repeats.
        runs (int): Number of rounds (timed runs per model), at least 1.

    Returns:
        (list[tuple[int, str]]): ``(round, name)`` in execution order.

    Raises:
        ValueError: If ``runs`` < 1, ``names`` is empty or repeats a name.

    Examples:
        >>> interleaved_order(["dense", "sparse"], 3)
        [(0, 'dense'), (0, 'sparse'), (1, 'sparse'), (1, 'dense'), (2, 'dense'), (2, 'sparse')]
    """
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ValueError(f"runs={runs!r} must be a positive integer")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"model names must be non-empty and distinct, got {list(names)}")
    order = []
    for r in range(runs):
        for name in names if r % 2 == 0 else reversed(names):
            order.append((r, name))
    return order


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    runs: int,
    warmup: int = 0,
    timer: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
    progress: Callable[[list[tuple[bool, str]]], Iterable[tuple[bool, str]]] | None = None,
) -> dict[str, list[float]]:
    """Call each function ``warmup`` times untimed, then time ``runs`` interleaved rounds.

    Args:
        fns (Mapping[str, Callable]): Name -> zero-argument function (one inference).
        runs (int): Timed rounds.
        warmup (int): Untimed calls per function before timing (interleaved too).
        timer (Callable[[], float]): Clock in seconds.
        sync (Callable[[], None], optional): Called before reading the clock on both sides of a run (for example
            ``torch.cuda.synchronize``) so asynchronous work is counted.
        progress (Callable, optional): Wraps the list of ``(timed, name)`` calls, in order, into the iterable that is
            walked (for example a progress bar); its updates fall outside the timed calls.

    Returns:
        (dict[str, list[float]]): Name -> seconds per timed run, in round order.

    Raises:
        ValueError: If ``warmup`` < 0 or ``runs`` < 1.

    Examples:
        >>> ticks = iter(range(100))
        >>> time_interleaved({"a": lambda: None, "b": lambda: None}, runs=2, timer=lambda: next(ticks))
        {'a': [1, 1], 'b': [1, 1]}
    """
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be a non-negative integer")
    names = list(fns)
    calls = [(False, name) for _, name in interleaved_order(names, warmup)] if warmup else []
    calls += [(True, name) for _, name in interleaved_order(names, runs)]
    times: dict[str, list[float]] = {name: [] for name in names}
    for timed, name in progress(calls) if progress else calls:
        if not timed:
            fns[name]()
            continue
        if sync:
            sync()
        start = timer()
        fns[name]()
        if sync:
            sync()
        times[name].append(timer() - start)
    return times


def parse_device(device: Any, half: bool = False) -> str:
    """Turn a ``device=`` value into a torch device string, checking that it exists.

    Args:
        device (Any): ``cpu``, a CUDA index (``0``), ``cuda`` or ``cuda:N``.
        half (bool): Whether FP16 will be used (needs CUDA).

    Returns:
        (str): ``cpu`` or ``cuda:N``.

    Raises:
        ValueError: If the device is malformed or unavailable, or ``half`` is asked on CPU.

    Examples:
        >>> parse_device("cpu")
        'cpu'
    """
    import torch

    text = str(device).strip().lower()
    if text == "cpu":
        if half:
            raise ValueError("half=True needs a CUDA device (e.g. device=0); FP16 on CPU is not benchmarked")
        return "cpu"
    index = text.removeprefix("cuda").lstrip(":") or "0"
    if not index.isdigit():
        raise ValueError(f"device={device!r} is not cpu, a CUDA index like 0, or cuda:N")
    if not torch.cuda.is_available() or int(index) >= torch.cuda.device_count():
        raise ValueError(f"device={device!r} asks for CUDA but no such CUDA device is available; use device=cpu")
    return f"cuda:{index}"


def benchmark_models(
    dense: str | Path,
    sparse: str | Path,
    imgsz: int = 640,
    batch: int = 1,
    device: Any = "cpu",
    half: bool = False,
    runs: int = 50,
    warmup: int = 10,
    backend: str = "torch",
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Time two checkpoints on the same input, interleaved, and compare their latencies.

    Both models are loaded as Ultralytics deploys them (FP32, Conv+BN fused, eval mode; FP16 with ``half``). With
    ``backend="onnxruntime"`` both are exported to ONNX into ``workdir`` (or a temporary folder that is removed
    afterwards), never beside the weights, and ONNX Runtime sessions are timed the same way.

    Args:
        dense (str | Path): Dense checkpoint (.pt).
        sparse (str | Path): Sparse checkpoint (.pt).
        imgsz (int): Square input size.
        batch (int): Images per inference.
        device (Any): ``cpu`` or a CUDA device (``0``, ``cuda:0``).
        half (bool): FP16 inference (CUDA only).
        runs (int): Timed runs per model, at least ``MIN_RUNS``.
        warmup (int): Untimed runs per model first.
        backend (str): ``torch`` or ``onnxruntime``.
        workdir (str | Path, optional): Folder for ONNX exports; a temporary one when None.

    Returns:
        (dict): ``settings``, ``models`` (per model: latency stats in ms per batch, ``ms_per_image``, ``fps``,
        ``zeros_timed`` = fraction of zeros in the weights actually run), ``ratio`` (stats of sparse/dense per
        round), ``verdict``, ``note`` (why unstructured sparsity is not faster) and ``samples_ms``.

    Raises:
        ValueError: On a bad setting, unreadable checkpoint or missing onnxruntime.
        FileNotFoundError: If a checkpoint is missing.

    Examples:
        >>> result = benchmark_models("dense.pt", "sparse.pt", imgsz=640, runs=30)  # doctest: +SKIP
        >>> result["verdict"]  # doctest: +SKIP
        'no measurable speed-up (ratio 1.00, IQR 0.98-1.02 includes 1.00)'
    """
    settings = check_settings(imgsz=imgsz, batch=batch, runs=runs, warmup=warmup, backend=backend)
    device = parse_device(device, half)
    if backend == "onnxruntime":
        check_onnx_packages()
    models = {name: _load_for_timing(path) for name, path in (("dense", dense), ("sparse", sparse))}

    import torch

    torch.manual_seed(0)
    x = torch.rand(batch, 3, imgsz, imgsz)
    with tempfile.TemporaryDirectory(prefix="ultra_sparse_bench_") as tmp:
        if backend == "torch":
            fns, sync = _torch_runners(models, x, device, half)
        else:
            folder = Path(workdir) if workdir is not None else Path(tmp)
            fns, sync = _onnxruntime_runners(models, x, device, half, folder)
        return _finish(models, fns, sync, settings, device, half, dense, sparse)


def check_settings(imgsz: Any, batch: Any, runs: Any, warmup: Any, backend: Any) -> dict[str, Any]:
    """Validate benchmark settings and return them as a dict; raise ValueError/TypeError naming the bad one."""
    limits = (("imgsz", imgsz, 32), ("batch", batch, 1), ("runs", runs, MIN_RUNS), ("warmup", warmup, 0))
    for key, value, low in limits:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{key}={value!r} must be an integer")
        if value < low:
            raise ValueError(f"{key}={value} must be at least {low}")
    if imgsz % 32:
        raise ValueError(f"imgsz={imgsz} must be a multiple of 32")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown; choose one of {', '.join(BACKENDS)}")
    return {"imgsz": imgsz, "batch": batch, "runs": runs, "warmup": warmup, "backend": backend}


def format_benchmark_md(result: Mapping[str, Any]) -> str:
    """Render a ``benchmark_models`` result as a Markdown table, the verdict and the note.

    Examples:
        >>> stats = summarize([10.0, 11.0, 12.0]).to_dict()
        >>> model = {"latency_ms": stats, "ms_per_image": 11.0, "fps": 90.9, "zeros_timed": 0.0}
        >>> result = {"settings": {"backend": "torch", "device": "cpu", "imgsz": 64, "batch": 1, "half": False,
        ...     "runs": 3, "warmup": 1}, "models": {"dense": model, "sparse": model},
        ...     "ratio": summarize([1.0, 1.0, 1.0]).to_dict(), "verdict": "no measurable speed-up", "note": "..."}
        >>> print(format_benchmark_md(result).splitlines()[2])
        | model | median ms | IQR ms | min-max ms | ms/img | FPS | zeros in timed weights |
    """
    s = result["settings"]
    lines = [
        f"Benchmark: backend={s['backend']} device={s['device']} imgsz={s['imgsz']} batch={s['batch']} "
        f"half={s['half']} runs={s['runs']} warmup={s['warmup']} (interleaved)",
        "",
        "| model | median ms | IQR ms | min-max ms | ms/img | FPS | zeros in timed weights |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        lat = m["latency_ms"]
        lines.append(
            f"| {name} | {lat['median']:.2f} | {lat['q1']:.2f}-{lat['q3']:.2f} | {lat['min']:.2f}-{lat['max']:.2f} "
            f"| {m['ms_per_image']:.2f} | {m['fps']:.1f} | {m['zeros_timed']:.2%} |"
        )
    r = result["ratio"]
    lines += [
        f"| sparse/dense ratio | {r['median']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} "
        f"| {r['min']:.3f}-{r['max']:.3f} | | | |",
        "",
        f"Result: {result['verdict']}",
        "",
        f"Note: {result['note']}",
    ]
    return "\n".join(lines) + "\n"


def _finish(models, fns, sync, settings, device, half, dense, sparse) -> dict[str, Any]:
    """Time the runners and assemble the result dict."""
    from ultralytics.utils import TQDM

    def progress(calls):
        return TQDM(calls, desc=f"benchmark: {settings['warmup']} warm-up + {settings['runs']} timed runs per model")

    times = time_interleaved(fns, runs=settings["runs"], warmup=settings["warmup"], sync=sync, progress=progress)
    ms = {name: [t * 1e3 for t in values] for name, values in times.items()}
    batch = settings["batch"]
    out_models = {}
    for name, values in ms.items():
        lat = summarize(values)
        out_models[name] = {
            "weights": str(dense if name == "dense" else sparse),
            "latency_ms": lat.to_dict(),
            "ms_per_image": lat.median / batch,
            "fps": 1e3 * batch / lat.median,
            "zeros_timed": models[name]["zeros"],
        }
    ratio = ratio_summary(ms["dense"], ms["sparse"])
    return {
        "settings": {**settings, "device": device, "half": bool(half)},
        "models": out_models,
        "ratio": ratio.to_dict(),
        "verdict": verdict(ratio),
        "note": HONEST_NOTE,
        "samples_ms": ms,
    }


def _load_for_timing(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint fused for inference; count the zeros left in its weights (fusing may fill some)."""
    import torch
    from ultralytics.nn.modules.head import Detect

    from .checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
    for m in model.modules():  # Detect and subclasses: one output tensor, as in exported models
        if isinstance(m, Detect):
            m.export = True
    weights = [p for p in model.parameters() if p.dim() > 1]
    total = sum(p.numel() for p in weights)
    nonzero = sum(int(torch.count_nonzero(p)) for p in weights)
    return {"model": model.eval(), "zeros": (total - nonzero) / max(1, total)}


def _torch_runners(models, x, device, half):
    """Zero-argument inference functions for PyTorch, under inference mode, and the CUDA sync (or None)."""
    import torch

    x = x.to(device)
    x = x.half() if half else x
    fns = {}
    for name, entry in models.items():
        model = entry["model"].to(device)
        model = model.half() if half else model

        def run(model=model):
            with torch.inference_mode():
                model(x)

        fns[name] = run
    return fns, (torch.cuda.synchronize if device.startswith("cuda") else None)


def check_onnx_packages() -> None:
    """Raise a ValueError naming every package that ``backend=onnxruntime`` needs and cannot import.

    The models are exported with ``torch.onnx.export`` (needs ``onnx``) and timed with ``onnxruntime``.

    Examples:
        >>> check_onnx_packages()  # doctest: +SKIP
    """
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ValueError(
            f"backend=onnxruntime needs the onnx and onnxruntime packages (missing: {', '.join(missing)}): "
            "pip install onnx onnxruntime"
        )


def _onnxruntime_runners(models, x, device, half, folder: Path):
    """Export each model to ONNX in ``folder`` and return ONNX Runtime inference functions (no sync needed)."""
    import torch

    check_onnx_packages()
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError("backend=onnxruntime on CUDA needs onnxruntime-gpu (CUDAExecutionProvider is missing)")
        providers = [("CUDAExecutionProvider", {"device_id": int(device.split(":")[1])}), "CPUExecutionProvider"]
    folder.mkdir(parents=True, exist_ok=True)
    fns = {}
    for name, entry in models.items():
        path = folder / f"{name}.onnx"
        model = entry["model"].to(device)
        sample = x.to(device)
        if half:
            model, sample = model.half(), sample.half()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, sample, str(path), dynamo=False, opset_version=17, input_names=["images"],
                output_names=["output0"],
            )
        session = ort.InferenceSession(str(path), providers=providers)
        feed = {"images": sample.cpu().numpy()}

        def run(session=session, feed=feed):
            session.run(None, feed)

        fns[name] = run
    return fns, None
