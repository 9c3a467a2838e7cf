"""Timing models: dense and sparse run in one process, warmed up, interleaved (A B, B A, ...), on the same input.

Both models run in the same process on the same input, warm-up runs are discarded, and the timed runs alternate
between the models so that drift in machine load hits both alike. Each round gives one pair of latencies; the
statistics of ``stats`` turn them into medians, the per-round ratio and a verdict. The scheduling
(``interleaved_order``, ``time_interleaved``) takes any timer, so it is tested with fake clocks.
"""

from __future__ import annotations

import importlib
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..config import check_imgsz, comma_list
from ..messages import echo
from .models import check_comparable, kind_of_pair, model_facts, prepare_for_timing
from .stats import MIN_RUNS, outcome, ratio_summary, speed_note, summarize, verdict

__all__ = [
    "BACKENDS",
    "benchmark_models",
    "check_onnx_packages",
    "check_settings",
    "format_benchmark_md",
    "interleaved_order",
    "missing_onnx_packages",
    "onnxruntime_session",
    "parse_device",
    "resolve_backends",
    "time_interleaved",
]

BACKENDS = ("torch", "onnxruntime")


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
    backend: str | Sequence[str] = "torch",
    workdir: str | Path | None = None,
) -> dict[str, Any]:
    """Time two checkpoints on the same input, interleaved, and compare their latencies.

    The two models may differ in architecture (a channel-pruned model against its dense parent) but must solve the
    same task over the same classes. Both are loaded as Ultralytics deploys them (FP32, Conv+BN fused, eval mode; FP16
    with ``half``). Every backend asked is timed in the same interleaved run: with ``torch`` and ``onnxruntime``, each
    round runs the four model/backend pairs, alternating the order. For ONNX Runtime both models are exported into
    ``workdir`` (or a temporary folder that is removed afterwards), never beside the weights.

    Args:
        dense (str | Path): Dense (reference) checkpoint (.pt).
        sparse (str | Path): Sparse or pruned checkpoint (.pt).
        imgsz (int): Square input size; GFLOPs are counted at this size too.
        batch (int): Images per inference.
        device (Any): ``cpu`` or a CUDA device (``0``, ``cuda:0``).
        half (bool): FP16 inference (CUDA only).
        runs (int): Timed runs per model and backend, at least ``MIN_RUNS``.
        warmup (int): Untimed runs per model and backend first.
        backend (str | Sequence[str]): ``torch``, ``onnxruntime``, both (``torch,onnxruntime`` or a list), or
            ``auto`` (torch, plus onnxruntime where its packages are installed); see ``resolve_backends``.
        workdir (str | Path, optional): Folder for ONNX exports; a temporary one when None.

    Returns:
        (dict): ``settings`` (``backends``: those timed), ``kind`` (``stats.pair_kind``), ``models`` (per model:
        ``params``, ``nonzero``, ``gflops``, ``file_mb``, ``zeros_timed`` = fraction of zeros in the weights actually
        run), ``gflops_ratio``, ``timings`` (per backend: ``models`` with latency stats in ms per batch,
        ``ms_per_image`` and ``fps``; ``ratio`` = stats of sparse/dense per round; ``outcome``; ``verdict``;
        ``samples_ms``) and ``note`` (``stats.speed_note`` of the kind).

    Raises:
        ValueError: On a bad setting, an unreadable checkpoint, models of different classes, or a missing package.
        FileNotFoundError: If a checkpoint is missing.

    Examples:
        >>> result = benchmark_models("dense.pt", "sparse.pt", imgsz=640, runs=30)  # doctest: +SKIP
        >>> result["timings"]["torch"]["verdict"]  # doctest: +SKIP
        'no measurable speed-up (ratio 1.00, IQR 0.98-1.02 includes 1.00)'
    """
    from ..checkpoint import load_checkpoint

    settings = check_settings(imgsz=imgsz, batch=batch, runs=runs, warmup=warmup, backend=backend)
    device = parse_device(device, half)
    paths = {"dense": dense, "sparse": sparse}
    loaded = {name: load_checkpoint(path) for name, path in paths.items()}
    check_comparable({name: model for name, (model, _) in loaded.items()})
    kind = kind_of_pair(loaded["dense"], loaded["sparse"])
    facts = {name: model_facts(model, paths[name], imgsz) for name, (model, _) in loaded.items()}
    timed = {name: prepare_for_timing(model) for name, (model, _) in loaded.items()}
    for name, entry in timed.items():
        facts[name]["zeros_timed"] = entry["zeros"]

    import torch

    torch.manual_seed(0)
    x = torch.rand(batch, 3, imgsz, imgsz)
    fns = {}
    with tempfile.TemporaryDirectory(prefix="ultra_sparse_bench_") as tmp:
        for name in settings["backends"]:
            if name == "torch":
                runners = _torch_runners(timed, x, device, half)
            else:
                runners = _onnxruntime_runners(timed, x, device, half, Path(workdir) if workdir is not None else Path(tmp))
            fns.update({f"{name}/{model}": fn for model, fn in runners.items()})
        sync = torch.cuda.synchronize if device.startswith("cuda") else None
        times = _time_with_progress(fns, sync, settings)
    gflops_pair = [facts[name]["gflops"] for name in ("dense", "sparse")]
    gflops_ratio = gflops_pair[1] / gflops_pair[0] if all(gflops_pair) else None
    return {
        "settings": {**settings, "device": device, "half": bool(half)},
        "kind": kind,
        "models": facts,
        "gflops_ratio": gflops_ratio,
        "timings": {name: _judge(times, name, batch) for name in settings["backends"]},
        "note": speed_note(kind, gflops_ratio),
    }


def resolve_backends(backend: str | Sequence[str]) -> tuple[str, ...]:
    """The backends to time: one name, several (a comma-separated string or a list), or ``auto``.

    ``auto`` is ``torch`` plus ``onnxruntime`` where the ``onnx`` and ``onnxruntime`` packages import. A backend asked
    by name must be usable: ``onnxruntime`` without its packages is refused here, before any work.

    Raises:
        ValueError: If a name is unknown or repeated, or ``onnxruntime`` is asked without its packages.

    Examples:
        >>> resolve_backends("torch")
        ('torch',)
        >>> resolve_backends(["torch", "onnxruntime"])  # doctest: +SKIP
        ('torch', 'onnxruntime')
    """
    if backend == "auto":
        return BACKENDS if not missing_onnx_packages() else ("torch",)
    names = comma_list("backend", backend, f"auto, one of {', '.join(BACKENDS)}")
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f"backend={echo(name)} is unknown; choose auto or {', '.join(BACKENDS)} (or both: torch,onnxruntime)")
    if "onnxruntime" in names:
        check_onnx_packages()
    return tuple(names)


def check_settings(imgsz: Any, batch: Any, runs: Any, warmup: Any, backend: Any) -> dict[str, Any]:
    """Validate benchmark settings and return them as a dict; raise ValueError/TypeError naming the bad one.

    ``backends`` in the result is ``resolve_backends(backend)``: a missing package is refused here, before any work.

    Examples:
        >>> check_settings(imgsz=64, batch=1, runs=10, warmup=0, backend="torch")["backends"]
        ('torch',)
    """
    limits = (("imgsz", imgsz, 32), ("batch", batch, 1), ("runs", runs, MIN_RUNS), ("warmup", warmup, 0))
    for key, value, low in limits:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{key}={echo(value)} must be an integer")
        if value < low:
            raise ValueError(f"{key}={value} must be at least {low}")
    check_imgsz(imgsz)
    if imgsz % 32:
        raise ValueError(f"imgsz={imgsz} must be a multiple of 32")
    backends = resolve_backends(backend)
    return {"imgsz": imgsz, "batch": batch, "runs": runs, "warmup": warmup, "backend": backend, "backends": backends}


def format_benchmark_md(result: Mapping[str, Any]) -> str:
    """Render a ``benchmark_models`` result as Markdown: the models, the timings per backend, verdicts and the note.

    Examples:
        >>> stats = summarize([10.0, 11.0, 12.0]).to_dict()
        >>> facts = {"params": 100, "nonzero": 90, "gflops": 1.0, "file_mb": 0.5, "zeros_timed": 0.1}
        >>> timing = {"models": {m: {"latency_ms": stats, "ms_per_image": 11.0, "fps": 90.9} for m in ("dense", "sparse")},
        ...     "ratio": summarize([1.0, 1.0, 1.0]).to_dict(), "verdict": "no measurable speed-up"}
        >>> result = {"settings": {"backends": ["torch"], "device": "cpu", "imgsz": 64, "batch": 1, "half": False,
        ...     "runs": 3, "warmup": 1}, "kind": "unstructured", "models": {"dense": facts, "sparse": facts},
        ...     "timings": {"torch": timing}, "note": "..."}
        >>> print(format_benchmark_md(result).splitlines()[7])
        | backend | model | median ms | IQR ms | min-max ms | ms/img | FPS |
    """
    s = result["settings"]
    lines = [
        f"Benchmark: backends={','.join(s['backends'])} device={s['device']} imgsz={s['imgsz']} batch={s['batch']} "
        f"half={s['half']} runs={s['runs']} warmup={s['warmup']} "
        f"(interleaved{', all backends in one run' if len(s['backends']) > 1 else ''}); "
        f"pair: {result['kind']}",
        "",
        "| model | params | nonzero | GFLOPs | file MB | zeros in timed weights |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        flops = "-" if m["gflops"] is None else f"{m['gflops']:.3f}"
        lines.append(
            f"| {name} | {m['params']:,} | {m['nonzero']:,} | {flops} | {m['file_mb']:.2f} | {m['zeros_timed']:.2%} |"
        )
    lines += [
        "",
        "| backend | model | median ms | IQR ms | min-max ms | ms/img | FPS |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for backend, timing in result["timings"].items():
        for name, m in timing["models"].items():
            lat = m["latency_ms"]
            lines.append(
                f"| {backend} | {name} | {lat['median']:.2f} | {lat['q1']:.2f}-{lat['q3']:.2f} "
                f"| {lat['min']:.2f}-{lat['max']:.2f} | {m['ms_per_image']:.2f} | {m['fps']:.1f} |"
            )
        r = timing["ratio"]
        lines.append(
            f"| {backend} | sparse/dense ratio | {r['median']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} "
            f"| {r['min']:.3f}-{r['max']:.3f} | | |"
        )
    lines.append("")
    lines += [f"Result ({backend}): {timing['verdict']}" for backend, timing in result["timings"].items()]
    lines += ["", f"Note: {result['note']}"]
    return "\n".join(lines) + "\n"


def _time_with_progress(fns, sync, settings) -> dict[str, list[float]]:
    """``time_interleaved`` over every runner, with a progress bar outside the timed calls."""
    from ultralytics.utils import TQDM

    def progress(calls):
        return TQDM(
            calls,
            desc=f"benchmark: {settings['warmup']} warm-up + {settings['runs']} timed runs per model and backend",
        )

    return time_interleaved(fns, runs=settings["runs"], warmup=settings["warmup"], sync=sync, progress=progress)


def _judge(times: Mapping[str, list[float]], backend: str, batch: int) -> dict[str, Any]:
    """Latency statistics of both models on one backend, their per-round ratio, its outcome and verdict."""
    ms = {name: [t * 1e3 for t in times[f"{backend}/{name}"]] for name in ("dense", "sparse")}
    models = {}
    for name, values in ms.items():
        lat = summarize(values)
        models[name] = {"latency_ms": lat.to_dict(), "ms_per_image": lat.median / batch, "fps": 1e3 * batch / lat.median}
    ratio = ratio_summary(ms["dense"], ms["sparse"])
    return {"models": models, "ratio": ratio.to_dict(), "outcome": outcome(ratio), "verdict": verdict(ratio), "samples_ms": ms}


def _torch_runners(models, x, device, half):
    """Zero-argument inference functions for PyTorch, under inference mode."""
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
    return fns


def missing_onnx_packages() -> list[str]:
    """The packages that ``backend=onnxruntime`` needs and cannot import: ``onnx`` (export) and ``onnxruntime``."""
    missing = []
    for name in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def check_onnx_packages() -> None:
    """Raise a ValueError naming every package that ``backend=onnxruntime`` needs and cannot import.

    The models are exported with ``torch.onnx.export`` (needs ``onnx``) and timed with ``onnxruntime``.

    Examples:
        >>> check_onnx_packages()  # doctest: +SKIP
    """
    missing = missing_onnx_packages()
    if missing:
        raise ValueError(
            f"backend=onnxruntime needs the onnx and onnxruntime packages (missing: {', '.join(missing)}): "
            "pip install onnx onnxruntime"
        )


def onnxruntime_session(path: str | Path, providers: list) -> Any:
    """An ONNX Runtime session for timing beside others: intra-op threads do not spin while idle.

    The sessions are timed in turn: an idle session's threads must not spin-wait on the cores the timed one needs.

    Examples:
        >>> session = onnxruntime_session("model.onnx", ["CPUExecutionProvider"])  # doctest: +SKIP
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _onnxruntime_runners(models, x, device, half, folder: Path):
    """Export each model to ONNX in ``folder`` and return ONNX Runtime inference functions."""
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
        session = onnxruntime_session(path, providers)
        feed = {"images": sample.cpu().numpy()}

        def run(session=session, feed=feed):
            session.run(None, feed)

        fns[name] = run
    return fns
