"""Dense against sparse: the same validation for both, the interleaved benchmark for speed, and one table.

``compare_models`` validates two checkpoints with identical settings through ``SparseDetectionValidator``, times them
with ``bench.benchmark_models`` (not with the validation loop's timings, which include a cold first run and data
loading noise), and returns rows of absolute and relative changes. ``write_comparison`` writes ``compare.json``,
``compare.md`` and ``compare.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .bench import benchmark_models, check_settings, format_benchmark_md, parse_device
from .checkpoint import METADATA_KEY, atomic_write_bytes, load_checkpoint
from .report import pattern_of, sparsity_report
from .rules import load_rules

__all__ = [
    "ROW_NAMES",
    "check_inputs",
    "compare_models",
    "format_comparison_md",
    "rules_of",
    "validate",
    "write_comparison",
]

ROW_NAMES = (
    "total params",
    "nonzero params",
    "sparsified weights",
    "file size (MB)",
    "mAP50",
    "mAP50-95",
    "precision",
    "recall",
    "inference ms/img",
    "FPS",
)


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


def rules_of(ckpt: Mapping[str, Any]) -> str:
    """The rules a sparse checkpoint was made with, if still loadable, else ``default``."""
    rules = ((ckpt.get(METADATA_KEY) or {}).get("config") or {}).get("rules") or "default"
    try:
        load_rules(rules)
    except (ValueError, FileNotFoundError, TypeError):
        return "default"
    return str(rules)


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
    backend: str = "torch",
) -> dict[str, Any]:
    """Validate and benchmark a dense and a sparse checkpoint with identical settings.

    Args:
        dense (str | Path): Dense checkpoint.
        sparse (str | Path): Sparse checkpoint.
        data (str | Path): Dataset YAML.
        folder (str | Path): Run folder; validations write into ``folder/val-dense`` and ``folder/val-sparse``.
        imgsz (int): Image size for validation and timing.
        batch (int): Validation batch size (speed is timed at batch 1: latency per image).
        device (Any): ``cpu`` or a CUDA device.
        half (bool): FP16 (CUDA only).
        runs (int): Timed benchmark runs per model.
        warmup (int): Untimed benchmark runs per model.
        backend (str): Benchmark backend, ``torch`` or ``onnxruntime``.

    Returns:
        (dict): ``settings``, ``dense`` and ``sparse`` (weights, sizes, sparsity, metrics, families, and ``nm``: the
        N:M check of a ``method=nm`` sparse checkpoint, else None), ``rows``
        (``metric``, ``dense``, ``sparse``, ``abs_change``, ``rel_change``) and ``benchmark``.

    Raises:
        ValueError: On bad settings or unreadable checkpoints.
        FileNotFoundError: If a file is missing.

    Examples:
        >>> result = compare_models("best.pt", "best-sparse.pt", "data.yaml", "runs/sparse/compare")  # doctest: +SKIP
        >>> [row["metric"] for row in result["rows"]][:3]  # doctest: +SKIP
        ['total params', 'nonzero params', 'sparsified weights']
    """
    settings = check_settings(imgsz=imgsz, batch=batch, runs=runs, warmup=warmup, backend=backend)
    device = parse_device(device, half)
    loaded = check_inputs({"dense": dense, "sparse": sparse}, data)
    rules = rules_of(loaded["sparse"][1])
    pattern = pattern_of((loaded["sparse"][1].get(METADATA_KEY) or {}).get("config"))
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
        dense, sparse, imgsz=imgsz, batch=1, device=device, half=half, runs=runs, warmup=warmup, backend=backend,
        workdir=folder / "onnx" if backend == "onnxruntime" else None,
    )
    return {
        "settings": {**settings, "data": str(data), "device": device, "half": bool(half), "rules": rules,
                     "benchmark_batch": 1},
        "dense": sides["dense"],
        "sparse": sides["sparse"],
        "rows": _rows(sides, bench),
        "benchmark": bench,
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
    lines = [
        "# Dense vs sparse",
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
            f"half={s['half']}; prunable weights counted with rules `{s['rules']}`.",
        ]
    if result.get("benchmark"):
        lines += ["", "## Speed", "", format_benchmark_md(result["benchmark"]).rstrip()]
    return "\n".join(lines) + "\n"


def write_comparison(result: Mapping[str, Any], folder: str | Path) -> tuple[Path, Path, Path]:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` into ``folder``; return their paths."""
    from .plots import plot_comparison

    folder = Path(folder)
    json_path, md_path, png_path = folder / "compare.json", folder / "compare.md", folder / "compare.png"
    atomic_write_bytes(json_path, json.dumps(result, indent=2).encode())
    atomic_write_bytes(md_path, format_comparison_md(result).encode())
    plot_comparison(result, png_path)
    return json_path, md_path, png_path


def _rows(sides: Mapping[str, Any], bench: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The comparison rows, in ``ROW_NAMES`` order."""

    def values(side: Mapping[str, Any], name: str) -> dict[str, float]:
        t, m, b = side["totals"], side["metrics"], bench["models"][name]
        return {
            "total params": t["all"]["params"],
            "nonzero params": t["all"]["nonzero"],
            "sparsified weights": t["prunable"]["sparsity"],
            "file size (MB)": side["file_bytes"] / 1e6,
            "mAP50": m["metrics/mAP50(B)"],
            "mAP50-95": m["metrics/mAP50-95(B)"],
            "precision": m["metrics/precision(B)"],
            "recall": m["metrics/recall(B)"],
            "inference ms/img": b["ms_per_image"],
            "FPS": b["fps"],
        }

    dense, sparse = values(sides["dense"], "dense"), values(sides["sparse"], "sparse")
    units = {
        "total params": "count",
        "nonzero params": "count",
        "sparsified weights": "%",
        "file size (MB)": "2f",
        "inference ms/img": "2f",
        "FPS": "2f",
    }
    rows = []
    for metric in ROW_NAMES:
        d, s = dense[metric], sparse[metric]
        rows.append(
            {
                "metric": metric,
                "unit": units.get(metric, ""),
                "dense": d,
                "sparse": s,
                "abs_change": s - d,
                "rel_change": (s - d) / d if d and units.get(metric) != "%" else None,  # no % of a %
            }
        )
    return rows


def _fmt(value: float, unit: str, sign: bool = False) -> str:
    """Format one table cell."""
    if unit == "count":
        return f"{int(value):+,}" if sign else f"{int(value):,}"
    if unit == "%":
        return f"{100 * value:+.2f} pp" if sign else f"{value:.2%}"
    if unit == "2f":
        return f"{value:+.2f}" if sign else f"{value:.2f}"
    return f"{value:+.4f}" if sign else f"{value:.4f}"
