"""Exported artifacts: both models exported by Ultralytics' own exporter, validated as artifacts, timed on their runtime.

Users do not deploy a ``.pt``: they export it (ONNX, OpenVINO, TorchScript), often quantized to INT8, and judge the
artifact. ``compare_artifacts`` exports the dense and the sparse checkpoint with ``YOLO(pt).export(format=...,
quantize=..., data=...)`` (INT8 calibrated on ``data=``, as ``yolo export`` does), validates each artifact with
``YOLO(artifact).val(...)`` (the task's own metrics) and times every artifact in one interleaved run
(``bench.time_interleaved``) on its own runtime: an onnxruntime session, an OpenVINO compiled model, ``torch.jit``.
The reference is always the dense FP32 artifact of the same format; each artifact's latency ratio to it is taken per
round (``bench.ratio_summary``). The artifacts stay in ``folder/exports``.

Settings are checked by ``check_deploy_settings`` before anything is exported: the formats and precisions, that
their runtimes are installed (one line naming the extra to install), and that INT8 has ``data=`` to calibrate on.

Examples:
    >>> parse_formats("onnx,openvino")
    ('onnx', 'openvino')
    >>> parse_quantize((32, 8))
    (32, 8)
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .artifact_weights import kernel_zero_fraction
from .bench import ratio_summary, summarize, time_interleaved
from .config import comma_list
from .messages import echo
from .metrics import ACCURACY_KEYS

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "artifact_bytes",
    "artifact_runner",
    "check_deploy_settings",
    "check_runtimes",
    "compare_artifacts",
    "export_artifact",
    "format_artifacts_md",
    "parse_formats",
    "parse_quantize",
    "precision_args",
    "validate_artifact",
]

FORMATS = ("onnx", "openvino", "torchscript")  # Ultralytics export formats timed on their own runtime here
PRECISIONS = {32: "FP32", 16: "FP16", 8: "INT8"}  # quantize= value -> name, as Ultralytics 8.4 spells precision
_ALIASES = {"32": 32, "16": 16, "8": 8, "fp32": 32, "fp16": 16, "int8": 8}
# format -> (module, the extra that installs it), per precision where INT8 needs more
_PACKAGES = {
    "onnx": {None: (("onnx", "onnx"), ("onnxruntime", "onnx"))},
    "openvino": {None: (("openvino", "openvino"),), 8: (("nncf", "openvino"),)},
    "torchscript": {None: ()},
}


def parse_formats(value: Any) -> tuple[str, ...]:
    """The export formats asked: one name, a comma-separated string or a list of ``FORMATS``.

    Raises:
        ValueError: If a format is unknown or repeated, or none is given.

    Examples:
        >>> parse_formats("openvino")
        ('openvino',)
        >>> parse_formats(["onnx", "torchscript"])
        ('onnx', 'torchscript')
    """
    names = comma_list("format", value, f"one of {', '.join(FORMATS)}")
    for name in names:
        if name not in FORMATS:
            raise ValueError(f"format={echo(name)} is not timed here; choose {', '.join(FORMATS)} (or a comma list)")
    return names


def parse_quantize(value: Any) -> tuple[int, ...]:
    """The precisions asked: 32, 16 or 8 (or ``fp32``, ``fp16``, ``int8``), one or a list; FP32 is always exported as
    the reference, so it need not be listed.

    Raises:
        ValueError: If a value is not one of them or repeats.

    Examples:
        >>> parse_quantize(8)
        (8,)
        >>> parse_quantize("32,int8")
        (32, 8)
    """
    values = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        key = str(v).strip().lower() if not isinstance(v, bool) else ""
        if key not in _ALIASES:
            raise ValueError(f"quantize={echo(v)} must be 32, 16 or 8 (FP32, FP16, INT8), or a comma list of them")
        out.append(_ALIASES[key])
    if not out or len(set(out)) != len(out):
        raise ValueError(f"quantize={echo(value)} names a precision twice")
    return tuple(out)


def check_runtimes(formats: Sequence[str], quantize: Sequence[int]) -> None:
    """Raise a one-line ValueError naming the extra to install when a format's exporter or runtime does not import.

    Examples:
        >>> check_runtimes(["torchscript"], [32])
    """
    for fmt in formats:
        needed = [*_PACKAGES[fmt][None], *(p for q in quantize for p in _PACKAGES[fmt].get(q, ()))]
        missing = [module for module, _ in needed if not _imports(module)]
        if missing:
            extra = dict(needed)[missing[0]]
            raise ValueError(
                f"format={fmt} needs {', '.join(missing)}, not installed: pip install 'ultra-sparse[{extra}]'"
            )


def check_deploy_settings(format: Any, quantize: Any = 32, data: Any = None) -> dict[str, Any]:
    """Validate ``format=``/``quantize=`` in one place, before anything is exported.

    Args:
        format (Any): Export formats (see ``parse_formats``).
        quantize (Any): Precisions (see ``parse_quantize``); FP32 is added as the reference.
        data (Any): Dataset YAML for INT8 calibration.

    Returns:
        (dict): ``formats`` and ``precisions`` (FP32 first).

    Raises:
        ValueError: On a bad value, a runtime that is not installed, INT8 without ``data=``, or FP16/INT8 on an
            Ultralytics version that cannot export them.

    Examples:
        >>> check_deploy_settings("torchscript", 32)
        {'formats': ('torchscript',), 'precisions': (32,)}
    """
    formats = parse_formats(format)
    precisions = tuple(dict.fromkeys((32, *parse_quantize(quantize))))
    if 8 in precisions and not data:
        raise ValueError("quantize=8 (INT8) needs data= (a dataset YAML) to calibrate on, as 'yolo export' does")
    if 8 in precisions and "torchscript" in formats:
        raise ValueError("format=torchscript has no INT8 export in Ultralytics; use onnx or openvino for quantize=8")
    if precisions != (32,) and "quantize" not in _ultralytics_keys():
        raise ValueError(
            f"quantize={','.join(map(str, precisions[1:]))} needs ultralytics>=8.4 (its quantize= export key); "
            "this version exports FP32 artifacts only here: pip install -U ultralytics"
        )
    check_runtimes(formats, precisions)
    return {"formats": formats, "precisions": precisions}


def precision_args(quantize: int) -> dict[str, Any]:
    """Ultralytics' export keys for a precision: ``quantize=`` from 8.4 on, ``half=``/``int8=`` before it (where
    ``check_deploy_settings`` lets FP32 through only: INT8 and FP16 exports there are not checked).

    Examples:
        >>> precision_args(8) in ({"quantize": 8}, {"half": False, "int8": True})
        True
    """
    if "quantize" in _ultralytics_keys():
        return {"quantize": quantize}
    return {"half": quantize == 16, "int8": quantize == 8}


def export_artifact(
    weights: str | Path, fmt: str, quantize: int, folder: str | Path, imgsz: int, data: Any = None
) -> Path:
    """Export ``weights`` with Ultralytics' exporter into ``folder`` (never beside the weights); return the artifact.

    The checkpoint is copied into ``folder`` first, because Ultralytics writes the artifact beside its input; the copy
    is removed afterwards.

    Examples:
        >>> export_artifact("best.pt", "openvino", 8, "runs/exports/dense-int8", 640, "data.yaml")  # doctest: +SKIP
        PosixPath('runs/exports/dense-int8/dense_int8_openvino_model')
    """
    from ultralytics import YOLO

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{folder.name.split('-')[0]}.pt"
    shutil.copyfile(weights, source)
    try:
        calibration = {"data": str(data)} if quantize == 8 else {}
        path = YOLO(str(source)).export(
            format=fmt, imgsz=imgsz, device="cpu", batch=1, verbose=False, **calibration, **precision_args(quantize)
        )
    except AssertionError as e:  # Ultralytics refuses an export setting with an assertion
        raise ValueError(f"format={fmt} quantize={quantize}: {' '.join(str(e).split())}") from None
    finally:
        source.unlink(missing_ok=True)
    return Path(path)


def validate_artifact(
    artifact: str | Path, task: str, data: str | Path, imgsz: int, folder: str | Path
) -> dict[str, float]:
    """Validate an exported artifact with Ultralytics' validator of its task; return the task's accuracy.

    Returns:
        (dict): Accuracy row name (``metrics.ACCURACY_KEYS``) -> value, the ones the task reports.

    Examples:
        >>> validate_artifact("dense_openvino_model", "detect", "data.yaml", 640, "runs/val")  # doctest: +SKIP
        {'mAP50': 0.81, 'mAP50-95': 0.23, 'precision': 0.9, 'recall': 0.7}
    """
    from ultralytics import YOLO

    folder = Path(folder)
    metrics = YOLO(str(artifact), task=task).val(
        data=str(data), imgsz=imgsz, batch=1, device="cpu", plots=False, workers=0, verbose=False,
        project=str(folder.parent), name=folder.name, exist_ok=True,
    )
    results = metrics.results_dict
    return {row: float(results[key]) for row, key in ACCURACY_KEYS.items() if key in results}


def artifact_runner(artifact: str | Path, fmt: str, imgsz: int) -> Callable[[], Any]:
    """A zero-argument function running one batch-1 inference of ``artifact`` on its own runtime (CPU).

    ONNX through an onnxruntime session (intra-op spinning off, as ``benchmark`` does, so that idle sessions do not
    steal the cores of the timed one), OpenVINO through a compiled model with the latency hint, TorchScript through
    ``torch.jit.load`` under inference mode.

    Examples:
        >>> run = artifact_runner("dense.onnx", "onnx", 640)  # doctest: +SKIP
        >>> run()  # doctest: +SKIP
    """
    import numpy as np

    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    artifact = Path(artifact)
    if fmt == "onnx":
        from .bench import onnxruntime_session

        session = onnxruntime_session(artifact, ["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        return lambda: session.run(None, feed)
    if fmt == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(next(artifact.glob("*.xml")))), "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda: request.infer({0: x})
    if fmt == "torchscript":
        import torch

        model = torch.jit.load(str(artifact), map_location="cpu").eval()
        tensor = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                model(tensor)

        return run
    raise ValueError(f"format={echo(fmt)} has no runner; choose {', '.join(FORMATS)}")


def artifact_bytes(artifact: str | Path) -> int:
    """Size of an artifact on disk: a file's size, or the total of a folder's files (an OpenVINO model).

    Examples:
        >>> artifact_bytes(__file__) > 0
        True
    """
    path = Path(artifact)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare_artifacts(
    weights: Mapping[str, str | Path],
    folder: str | Path,
    formats: Sequence[str],
    precisions: Sequence[int],
    imgsz: int,
    runs: int,
    warmup: int,
    data: str | Path | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Export, validate and time ``dense`` and ``sparse`` in every format and precision; ratios to dense FP32.

    Call ``check_deploy_settings`` first: this function assumes the runtimes are there and INT8 has ``data``.

    Args:
        weights (Mapping[str, str | Path]): ``dense`` and ``sparse`` checkpoints (dense first).
        folder (str | Path): Run folder; artifacts go to ``folder/exports/<model>-<precision>/``, validations to
            ``folder/val-<model>-<format>-<precision>``.
        formats (Sequence[str]): Export formats (``FORMATS``).
        precisions (Sequence[int]): Precisions, FP32 (32) among them: the reference.
        imgsz (int): Image size for export, validation and timing (batch 1).
        runs (int): Timed rounds; every artifact is timed in each round, the order alternating.
        warmup (int): Untimed rounds first.
        data (str | Path, optional): Dataset YAML: INT8 calibration, and validation when ``validate``.
        validate (bool): Validate each artifact on ``data``.

    Returns:
        (dict): ``settings`` and ``rows``, one per artifact (dense FP32 first in each format): ``model``, ``format``,
        ``precision``, ``path``, ``file_mb``, ``kernel_zeros`` (zeros over the stored convolution kernels, see
        ``artifact_weights``), ``accuracy`` (row -> value, or None unvalidated), ``latency_ms`` (stats),
        ``ratio`` (stats of artifact / dense FP32 of the same format, per round) and ``reference``.

    Examples:
        >>> result = compare_artifacts({"dense": "a.pt", "sparse": "b.pt"}, "runs/cmp", ["openvino"], [32, 8], 640,
        ...     runs=30, warmup=5, data="data.yaml")  # doctest: +SKIP
        >>> [(r["model"], r["precision"]) for r in result["rows"]][:2]  # doctest: +SKIP
        [('dense', 'FP32'), ('sparse', 'FP32')]
    """
    from ultralytics import YOLO

    folder = Path(folder)
    task = YOLO(str(next(iter(weights.values())))).task  # artifacts of either model load as the checkpoints' task
    rows, fns = [], {}
    for fmt in formats:
        for quantize in precisions:
            for name, path in weights.items():
                label = f"{name}-{PRECISIONS[quantize].lower()}"
                artifact = export_artifact(path, fmt, quantize, folder / "exports" / f"{label}-{fmt}", imgsz, data)
                accuracy = None
                if validate:
                    accuracy = validate_artifact(artifact, task, data, imgsz, folder / f"val-{label}-{fmt}")
                key = f"{fmt}/{label}"
                fns[key] = artifact_runner(artifact, fmt, imgsz)
                rows.append({
                    "key": key, "model": name, "format": fmt, "precision": PRECISIONS[quantize], "path": str(artifact),
                    "file_mb": artifact_bytes(artifact) / 1e6, "kernel_zeros": kernel_zero_fraction(artifact, fmt),
                    "accuracy": accuracy,
                })
    times = _time(fns, runs, warmup)
    for row in rows:
        ms = [t * 1e3 for t in times[row["key"]]]
        reference = f"{row['format']}/{next(iter(weights))}-fp32"
        row["latency_ms"] = summarize(ms).to_dict()
        row["ratio"] = ratio_summary([t * 1e3 for t in times[reference]], ms).to_dict()
        row["reference"] = reference
    settings = {"formats": list(formats), "precisions": [PRECISIONS[q] for q in precisions], "imgsz": imgsz,
                "batch": 1, "runs": runs, "warmup": warmup, "data": None if data is None else str(data)}
    return {"settings": settings, "rows": rows}


def format_artifacts_md(result: Mapping[str, Any]) -> str:
    """Render ``compare_artifacts`` as a Markdown table: one row per artifact, the ratio to dense FP32 with its IQR.

    Examples:
        >>> stats = summarize([10.0, 11.0, 12.0]).to_dict()
        >>> row = {"model": "dense", "format": "onnx", "precision": "FP32", "file_mb": 1.0, "accuracy": {"mAP50": 0.5},
        ...        "latency_ms": stats, "ratio": summarize([1.0, 1.0, 1.0]).to_dict(), "key": "onnx/dense-fp32",
        ...        "reference": "onnx/dense-fp32", "kernel_zeros": 0.0}
        >>> print(format_artifacts_md({"settings": {"runs": 3, "warmup": 0, "imgsz": 64}, "rows": [row]}).splitlines()[4])
        | dense | onnx | FP32 | 1.00 | 0.00% | 0.5000 | 11.00 | 10.50-11.50 | 1.000 (ref) |
    """
    s, rows = result["settings"], result["rows"]
    names = list(dict.fromkeys(k for row in rows for k in (row["accuracy"] or {})))
    lines = [
        f"Exported artifacts: imgsz={s['imgsz']} batch 1 on CPU, {s['runs']} interleaved rounds after {s['warmup']} "
        "warm-up; ratio = latency / dense FP32 of the same format, per round (median, IQR)",
        "",
        "| model | format | precision | file MB | kernel zeros | " + "".join(f"{n} | " for n in names)
        + "median ms | IQR ms | ratio |",
        "|---|---|---|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|",
    ]
    for row in rows:
        lat, r = row["latency_ms"], row["ratio"]
        acc = "".join(f"{(row['accuracy'] or {}).get(n, float('nan')):.4f} | " for n in names)
        ratio = "1.000 (ref)" if row["key"] == row["reference"] else f"{r['median']:.3f} ({r['q1']:.3f}-{r['q3']:.3f})"
        zeros = "-" if row.get("kernel_zeros") is None else f"{row['kernel_zeros']:.2%}"
        lines.append(
            f"| {row['model']} | {row['format']} | {row['precision']} | {row['file_mb']:.2f} | {zeros} | {acc}"
            f"{lat['median']:.2f} | {lat['q1']:.2f}-{lat['q3']:.2f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def _time(fns: Mapping[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, list[float]]:
    """``time_interleaved`` over every artifact, with a progress bar outside the timed calls."""
    from ultralytics.utils import TQDM

    def progress(calls):
        return TQDM(calls, desc=f"artifacts: {warmup} warm-up + {runs} timed runs each")

    return time_interleaved(fns, runs=runs, warmup=warmup, progress=progress)


def _ultralytics_keys() -> frozenset[str]:
    """The keys of the installed Ultralytics' configuration (8.4 has ``quantize``, 8.3 ``half`` and ``int8``)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return frozenset(DEFAULT_CFG_DICT)


def _imports(module: str) -> bool:
    """Whether ``module`` imports (a module set to None in ``sys.modules`` does not)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
