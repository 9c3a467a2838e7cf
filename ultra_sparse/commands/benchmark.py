"""``ultra-sparse benchmark``: time a dense and a sparse (or pruned) checkpoint in one process, interleaved, honestly."""

from __future__ import annotations

import json
from typing import Any

from ..bench import BACKENDS, benchmark_models, check_settings, format_benchmark_md, parse_device
from ..compare import check_inputs
from ..deploy import FORMATS, check_deploy_settings, compare_artifacts, format_artifacts_md
from .common import OUTPUT_KEYS, check_new_file, claim_run_dir, claimed_run_dir, run_dir, write_new_files

__all__ = ["HELP", "KEYS", "run", "settings_from"]

HELP = (
    "usage: ultra-sparse benchmark dense=W1 sparse=W2 [imgsz=640] [batch=1] [device=cpu|0] [half]\n"
    "                              [runs=50] [warmup=10] [backend=auto|torch|onnxruntime|torch,onnxruntime]\n"
    "                              [format=onnx,openvino,torchscript] [quantize=32,8 data=D] [name=..]\n\n"
    "Times both checkpoints in one process on the same input: warm-up first, then interleaved runs (A B, B A, ...)\n"
    "under inference mode (CUDA synchronised on GPU), every backend in the same run. They may differ in\n"
    "architecture (channel-pruned), not in task or classes. Prints params, GFLOPs, file size, median, IQR and\n"
    "min-max latency, FPS, and the sparse/dense ratio per round: a ratio whose IQR includes 1.0 is no measurable\n"
    "speed-up, one whose IQR lies below (above) 1.0 a speed-up (slow-down).\n"
    "Writes benchmark.json and benchmark.md; ONNX exports go to a temporary folder, never beside the weights.\n"
    "With format=, both models are also exported by Ultralytics' exporter (quantize=8: INT8 calibrated on data=)\n"
    "and every artifact is timed interleaved on its own runtime, its ratio (IQR) taken to the dense FP32 artifact;\n"
    "the artifacts are kept in the run folder (exports/)."
)
KEYS = {
    "dense": "dense checkpoint (.pt) (required)",
    "sparse": "sparse checkpoint (.pt) (required)",
    "imgsz": "square input size, a multiple of 32 (default 640)",
    "batch": "images per inference (default 1)",
    "device": "cpu (default) or a CUDA device such as 0",
    "half": "FP16 inference, CUDA only (default False)",
    "runs": "timed runs per model, at least 10 (default 50)",
    "warmup": "untimed runs per model before timing (default 10)",
    "backend": f"{', '.join(BACKENDS)}, both as torch,onnxruntime (one interleaved run), or auto: torch, plus "
    "onnxruntime where onnx and onnxruntime are installed (default auto)",
    "format": f"also export both models and time the artifacts: {', '.join(FORMATS)}, or a comma list (default: none)",
    "quantize": "precisions of the exports with format=: 32, 16, 8 (INT8, needs data=), or a comma list such as "
    "32,8; dense FP32 is always exported as the reference (default 32)",
    "data": "dataset YAML to calibrate INT8 exports on (quantize=8)",
    **OUTPUT_KEYS,
}


def settings_from(args: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """Pop the shared speed settings from ``args`` with defaults; raise TypeError on a non-boolean ``half``.

    Examples:
        >>> settings_from({"imgsz": 320, "half": False}, runs=5)
        {'imgsz': 320, 'device': 'cpu', 'half': False, 'runs': 5}
    """
    out = {"imgsz": args.pop("imgsz", 640), "device": args.pop("device", "cpu"), "half": args.pop("half", False)}
    if not isinstance(out["half"], bool):
        raise TypeError(f"half={out['half']!r} must be True or False")
    for key, value in defaults.items():
        out[key] = args.pop(key, value)
    return out


def run(args: dict[str, Any]) -> None:
    """Benchmark ``dense=`` against ``sparse=``; print the table and write benchmark.json/.md."""
    from ultralytics.utils import LOGGER

    args = dict(args)
    dense, sparse = args.pop("dense", None), args.pop("sparse", None)
    project, name = args.pop("project", None), args.pop("name", None)
    formats, quantize, data = args.pop("format", None), args.pop("quantize", 32), args.pop("data", None)
    check_new_file(run_dir(project, name, "benchmark"), "project")
    settings = settings_from(args, batch=1, runs=50, warmup=10, backend="auto")
    check_settings(**{k: settings[k] for k in ("imgsz", "batch", "runs", "warmup", "backend")})
    parse_device(settings["device"], settings["half"])
    deploy = check_deploy_settings(formats, quantize, data) if formats is not None else None
    if deploy is None and (quantize != 32 or data is not None):
        raise ValueError("quantize= and data= are for exported artifacts: add format= (e.g. format=openvino)")
    check_inputs({"dense": dense, "sparse": sparse}, data)  # errors name the key, before any timing
    if deploy is None:
        result = benchmark_models(dense, sparse, **settings)
        text = format_benchmark_md(result)
        folder = claim_run_dir(project, name, "benchmark")
        _write(result, text, folder)
    else:
        with claimed_run_dir(project, name, "benchmark") as folder:
            result = benchmark_models(dense, sparse, **settings)
            result["artifacts"] = compare_artifacts(
                {"dense": dense, "sparse": sparse}, folder, deploy["formats"], deploy["precisions"],
                settings["imgsz"], settings["runs"], settings["warmup"], data=data, validate=False,
            )
            text = f"{format_benchmark_md(result)}\n{format_artifacts_md(result['artifacts'])}"
            _write(result, text, folder)
    LOGGER.info(f"{text}\nultra-sparse: results in {folder}")


def _write(result: dict[str, Any], text: str, folder) -> None:
    """Write benchmark.json and benchmark.md into the claimed run ``folder``."""
    files = {folder / "benchmark.json": json.dumps(result, indent=2).encode(), folder / "benchmark.md": text.encode()}
    write_new_files(files, folder)
