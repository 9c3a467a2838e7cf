"""Dense against sparse (or pruned): the same validation for both, the interleaved benchmark for speed, one table.

``compare_models`` validates two checkpoints with identical settings through the sparse validator of their task,
times them with ``bench.benchmark_models`` (not with the validation loop's timings, which include a cold first run and
data loading noise), and returns rows of absolute and relative changes. The two may differ in architecture (a
channel-pruned model against its dense parent) but not in task or classes. ``write_comparison`` writes
``compare.json``, ``compare.md`` and ``compare.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from .bench import benchmark_models, check_comparable, check_settings, format_benchmark_md, parse_device
from .checkpoint import atomic_write_bytes, load_checkpoint
from .config import comma_list
from .deploy import check_deploy_settings, compare_artifacts, format_artifacts_md
from .metrics import ACCURACY_KEYS
from .plots import plot_comparison, plot_tradeoff
from .report import pattern_of, sparsity_report
from .metadata import SparseMetadata, recorded_rules
from .rules import load_rules

__all__ = [
    "ACCURACY_KEYS",
    "ROW_NAMES",
    "check_inputs",
    "compare_models",
    "format_comparison_md",
    "reference_models",
    "row_names",
    "validate",
    "write_comparison",
]

SIZE_ROWS = ("total params", "nonzero params", "sparsified weights", "GFLOPs", "file size (MB)")
ROW_NAMES = (*SIZE_ROWS, "mAP50", "mAP50-95", "precision", "recall")  # a detection comparison's rows before speed
UNITS = {
    "total params": "count",
    "nonzero params": "count",
    "sparsified weights": "%",
    "GFLOPs": "3f",
    "file size (MB)": "2f",
}


def row_names(backends: tuple[str, ...] | list[str], results: Mapping[str, Any] | None = None) -> list[str]:
    """Every row of a comparison timed with ``backends``: size rows, the accuracy rows of the task, then latency and
    FPS per backend.

    Args:
        backends (tuple[str, ...] | list[str]): Benchmark backends timed.
        results (Mapping[str, Any], optional): A validation's ``results_dict``: its task's accuracy rows (segment adds
            mask mAP, pose adds pose mAP, classify has top-1/top-5 accuracy). Default: detection's.

    Examples:
        >>> row_names(["torch"])[-2:]
        ['latency ms/img (torch)', 'FPS (torch)']
        >>> row_names([], {"metrics/accuracy_top1": 0.9, "metrics/accuracy_top5": 1.0})[len(SIZE_ROWS):]
        ['top-1 accuracy', 'top-5 accuracy']
    """
    accuracy = ROW_NAMES[len(SIZE_ROWS):] if results is None else [r for r, k in ACCURACY_KEYS.items() if k in results]
    return [*SIZE_ROWS, *accuracy, *(row for b in backends for row in (f"latency ms/img ({b})", f"FPS ({b})"))]


KIND_WORDS = {
    "unstructured": "same shapes: unstructured zeros",
    "nm": "same shapes: N:M zeros",
    "structured": "different shapes: channel-pruned or another architecture",
}


def check_inputs(weights: Mapping[str, Any], data: Any = None) -> dict[str, Any]:
    """Check that checkpoints (and a dataset YAML) exist and load; return ``name -> (model, ckpt)``.

    Args:
        weights (Mapping[str, Any]): Key name (``dense``, ``sparse``, ``model``) -> checkpoint path.
        data (Any): Dataset YAML path, when one is needed.

    Returns:
        (dict[str, tuple]): Key name -> ``(model, ckpt)`` from ``load_checkpoint``.

    Raises:
        ValueError: If a key is missing or a checkpoint is unreadable.
        FileNotFoundError: If a file does not exist.
    """
    for key, path in weights.items():
        if not path:
            raise ValueError(f"{key}= is required (a trained .pt checkpoint)")
    if data is not None:
        if not data:
            raise ValueError("data= is required (a dataset YAML)")
        if not Path(str(data)).exists():  # a YAML, or a folder for classification
            raise FileNotFoundError(f"data={data} not found (pass the dataset YAML, or a classification folder, by path)")
    loaded = {}
    for key, path in weights.items():
        try:
            loaded[key] = load_checkpoint(path)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"{key}={str(e).split('=', 1)[-1]}") from None
    return loaded


def validate(
    weights: str | Path, data: str | Path, imgsz: int, batch: int, device: str, half: bool, rules: str, folder: Path
) -> dict[str, Any]:
    """Validate one checkpoint with the sparse validator of its task and return its results dict and speed.

    Args:
        weights (str | Path): Checkpoint.
        data (str | Path): Dataset YAML.
        imgsz (int): Image size.
        batch (int): Batch size.
        device (str): ``cpu`` or ``cuda:N`` (from ``bench.parse_device``).
        half (bool): FP16 validation (CUDA only).
        rules (str): Rules counting prunable weights.
        folder (Path): Ultralytics' save_dir for this validation.

    Returns:
        (dict): ``results`` (metrics.results_dict) and ``speed_ms`` (per image, from the validation loop).
    """
    from ultralytics import YOLO
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from .validator import sparse_validator

    model = YOLO(str(weights))
    base = sparse_validator(model.task)  # the checkpoint's task picks the validator
    validator = type(base.__name__, (base,), {"rules": rules})
    precision = {}
    if half:
        precision = {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}
    metrics = model.val(
        data=str(data), imgsz=imgsz, batch=batch, device=device.removeprefix("cuda:"), plots=False, workers=0,
        project=str(folder.parent), name=folder.name, exist_ok=True, validator=validator, **precision,
    )
    return {"results": dict(metrics.results_dict), "speed_ms": dict(metrics.speed)}


def compare_models(
    dense: str | Path,
    sparse: str | Path,
    data: str | Path,
    folder: str | Path,
    imgsz: int = 640,
    batch: int = 16,
    device: Any = "cpu",
    half: bool = False,
    runs: int = 30,
    warmup: int = 5,
    backend: str | list[str] = "torch",
    format: str | list[str] | None = None,
    quantize: Any = 32,
    also: str | Path | list[str | Path] | None = None,
) -> dict[str, Any]:
    """Validate and benchmark a dense and a sparse (or channel-pruned) checkpoint with identical settings.

    Everything that can be refused is checked before the first validation: settings, the benchmark backends and
    their packages, the device, both checkpoints, and that both detect the same classes.

    Args:
        dense (str | Path): Dense (reference) checkpoint.
        sparse (str | Path): Sparse or pruned checkpoint of the same task and classes.
        data (str | Path): Dataset YAML.
        folder (str | Path): Run folder; validations write into ``folder/val-dense`` and ``folder/val-sparse``.
        imgsz (int): Image size for validation and timing.
        batch (int): Validation batch size (speed is timed at batch 1: latency per image).
        device (Any): ``cpu`` or a CUDA device.
        half (bool): FP16 (CUDA only).
        runs (int): Timed benchmark runs per model.
        warmup (int): Untimed benchmark runs per model.
        backend (str | list[str]): Benchmark backends: ``torch``, ``onnxruntime``, both (``torch,onnxruntime``), or
            ``auto`` (torch, plus onnxruntime where installed); all are timed in one interleaved run.
        format (str | list[str], optional): Export formats (``deploy.FORMATS``): both models are also exported,
            each artifact validated and timed on its runtime (see ``deploy.compare_artifacts``).
        quantize (Any): Precisions of the exports (32, 16, 8, one or a list); dense FP32 is always the reference.
        also (str | Path | list, optional): Further checkpoints of the same task and classes (the next-smaller stock
            model, say), exported, validated and timed with the others (needs ``format``): ``also-<stem>`` rows.

    Returns:
        (dict): ``settings``, ``kind`` (``unstructured``, ``nm`` or ``structured``: see ``bench.pair_kind``),
        ``dense`` and ``sparse`` (weights, sizes, sparsity, metrics, families, and ``nm``: the N:M check of a
        ``method=nm`` sparse checkpoint, else None), ``rows`` (``metric``, ``unit``, ``dense``, ``sparse``,
        ``abs_change``, ``rel_change``; see ``row_names``), ``benchmark`` and ``artifacts`` (None without
        ``format``).

    Raises:
        ValueError: On bad settings, a missing benchmark package, unreadable checkpoints or different classes.
        FileNotFoundError: If a file is missing.

    Examples:
        >>> result = compare_models("best.pt", "best-sparse.pt", "data.yaml", "runs/sparse/compare")  # doctest: +SKIP
        >>> [row["metric"] for row in result["rows"]][:3]  # doctest: +SKIP
        ['total params', 'nonzero params', 'sparsified weights']
    """
    settings = check_settings(imgsz=imgsz, batch=batch, runs=runs, warmup=warmup, backend=backend)
    device = parse_device(device, half)
    deploy = check_deploy_settings(format, quantize, data) if format is not None else None
    if deploy is None and quantize != 32:
        raise ValueError(f"quantize={quantize} needs format= (the export formats to quantize, e.g. format=openvino)")
    references = reference_models(also)
    if references and deploy is None:
        raise ValueError("also= places further models among the exported artifacts: add format= (e.g. format=openvino)")
    loaded = check_inputs({"dense": dense, "sparse": sparse, **references}, data)
    check_comparable({name: model for name, (model, _) in loaded.items()})
    meta = SparseMetadata.from_ckpt(loaded["sparse"][1])
    rules = recorded_rules(meta)
    pattern = pattern_of(meta.config if meta else None)
    folder = Path(folder)
    sides = {}
    for name, path in (("dense", dense), ("sparse", sparse)):
        report = sparsity_report(loaded[name][0], rules=rules, pattern=pattern if name == "sparse" else None)
        val = validate(path, data, imgsz, batch, device, half, rules, folder / f"val-{name}")
        sides[name] = {
            "weights": str(path),
            "file_bytes": Path(path).stat().st_size,
            "totals": report["totals"],
            "families": report["families"],
            "metrics": val["results"],
            "val_speed_ms": val["speed_ms"],
            "nm": report["nm"],
        }
    bench = benchmark_models(
        dense, sparse, imgsz=imgsz, batch=1, device=device, half=half, runs=runs, warmup=warmup,
        backend=list(settings["backends"]), workdir=folder / "onnx" if "onnxruntime" in settings["backends"] else None,
    )
    artifacts = None
    if deploy:
        artifacts = compare_artifacts(
            {"dense": dense, "sparse": sparse, **references}, folder, deploy["formats"], deploy["precisions"], imgsz,
            runs, warmup,
            data=data,
        )
    return {
        "settings": {**settings, "data": str(data), "device": device, "half": bool(half), "rules": rules,
                     "rules_name": load_rules(rules).name, "benchmark_batch": 1},
        "kind": bench["kind"],
        "dense": sides["dense"],
        "sparse": sides["sparse"],
        "rows": _rows(sides, bench),
        "benchmark": bench,
        "artifacts": artifacts,
    }


def format_comparison_md(result: Mapping[str, Any]) -> str:
    """Render a comparison as Markdown: the table, the speed verdict and the benchmark details.

    Examples:
        >>> rows = [{"metric": "mAP50", "unit": "", "dense": 0.8, "sparse": 0.79, "abs_change": -0.01,
        ...          "rel_change": -0.0125}]
        >>> print(format_comparison_md({"rows": rows, "settings": {}, "benchmark": None}).splitlines()[4])
        | mAP50 | 0.8000 | 0.7900 | -0.0100 | -1.25% |
    """
    s = result["settings"]
    kind = result.get("kind")
    lines = [
        "# Dense vs sparse" + (f" ({KIND_WORDS[kind]})" if kind else ""),
        "",
        "| metric | dense | sparse | change | change % |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        unit = row.get("unit", "")
        rel = "-" if row["rel_change"] is None else f"{row['rel_change']:+.2%}"
        lines.append(
            f"| {row['metric']} | {_fmt(row['dense'], unit)} | {_fmt(row['sparse'], unit)} "
            f"| {_fmt(row['abs_change'], unit, sign=True)} | {rel} |"
        )
    nm = (result.get("sparse") or {}).get("nm")
    if nm:
        verdict = "holds in every group" if nm["holds"] else f"does NOT hold in {len(nm['violating_layers'])} layers"
        lines += [
            "",
            f"N:M pattern {nm['pattern']} of the sparse model: {verdict} of its {nm['eligible_layers']} eligible layers "
            f"({len(nm['ineligible_layers'])} prunable layers not eligible, left dense).",
        ]
    if s:
        lines += [
            "",
            f"Validated on `{s['data']}` at imgsz={s['imgsz']}, batch={s['batch']}, device={s['device']}, "
            f"half={s['half']}; prunable weights counted with rules `{s['rules_name']}`.",
        ]
    bench = result.get("benchmark")
    if bench:
        lines += ["", *[f"Speed ({b}): {t['verdict']}" for b, t in bench["timings"].items()]]
        lines += ["", "## Speed", "", format_benchmark_md(bench).rstrip()]
    if result.get("artifacts"):
        lines += ["", "## Exported artifacts", "", format_artifacts_md(result["artifacts"]).rstrip()]
    return "\n".join(lines) + "\n"


def write_comparison(result: Mapping[str, Any], folder: str | Path) -> tuple[Path, ...]:
    """Write ``compare.json``, ``compare.md``, ``compare.png`` and, with exported artifacts, ``tradeoff.png`` (every
    artifact on accuracy against latency) into ``folder``; return their paths."""
    folder = Path(folder)
    json_path, md_path, png_path = folder / "compare.json", folder / "compare.md", folder / "compare.png"
    atomic_write_bytes(json_path, json.dumps(result, indent=2).encode())
    atomic_write_bytes(md_path, format_comparison_md(result).encode())
    plot_comparison(result, png_path)
    if not result.get("artifacts"):
        return json_path, md_path, png_path
    return json_path, md_path, png_path, plot_tradeoff(result["artifacts"], folder / "tradeoff.png")


def reference_models(also: str | Path | Sequence[str | Path] | None) -> dict[str, str]:
    """``also=`` as named checkpoints: ``also-<file stem>`` -> path, in the order given.

    Raises:
        ValueError: If a checkpoint is named twice.

    Examples:
        >>> reference_models("runs/yolo26n-best.pt,yolo11n.pt")
        {'also-yolo26n-best': 'runs/yolo26n-best.pt', 'also-yolo11n': 'yolo11n.pt'}
        >>> reference_models(None)
        {}
    """
    if also is None:
        return {}
    paths = comma_list("also", also if isinstance(also, str) else [str(p) for p in also], "a checkpoint path")
    names = {f"also-{Path(p).stem}": p for p in paths}
    if len(names) != len(paths):
        raise ValueError(f"also={','.join(paths)} names a checkpoint twice (or two with one file name)")
    return names


def _rows(sides: Mapping[str, Any], bench: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The comparison rows, in ``row_names`` order (the task's accuracy rows); GFLOPs and speed come from the
    benchmark."""
    backends = list(bench["timings"])

    def values(side: Mapping[str, Any], name: str) -> dict[str, float | None]:
        t, m = side["totals"], side["metrics"]
        out = {
            "total params": t["all"]["params"],
            "nonzero params": t["all"]["nonzero"],
            "sparsified weights": t["prunable"]["sparsity"],
            "GFLOPs": bench["models"][name]["gflops"],
            "file size (MB)": side["file_bytes"] / 1e6,
            **{row: m[key] for row, key in ACCURACY_KEYS.items() if key in m},
        }
        for backend in backends:
            timed = bench["timings"][backend]["models"][name]
            out[f"latency ms/img ({backend})"] = timed["ms_per_image"]
            out[f"FPS ({backend})"] = timed["fps"]
        return out

    dense, sparse = values(sides["dense"], "dense"), values(sides["sparse"], "sparse")
    rows = []
    for metric in row_names(backends, sides["dense"]["metrics"]):
        d, s = dense[metric], sparse[metric]
        unit = UNITS.get(metric, "2f" if metric.startswith(("latency", "FPS")) else "")
        known = d is not None and s is not None
        rows.append(
            {
                "metric": metric,
                "unit": unit,
                "dense": d,
                "sparse": s,
                "abs_change": s - d if known else None,
                "rel_change": (s - d) / d if known and d and unit != "%" else None,  # no % of a %
            }
        )
    return rows


def _fmt(value: float | None, unit: str, sign: bool = False) -> str:
    """Format one table cell; a dash where the value is unknown (GFLOPs without a counter)."""
    if value is None:
        return "-"
    if unit == "count":
        return f"{int(value):+,}" if sign else f"{int(value):,}"
    if unit == "%":
        return f"{100 * value:+.2f} pp" if sign else f"{value:.2%}"
    if unit in ("2f", "3f"):
        digits = int(unit[0])
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"
    return f"{value:+.4f}" if sign else f"{value:.4f}"
