"""``ultra-sparse compare``: validate and benchmark a dense and a sparse (or pruned) checkpoint, tabulate the changes."""

from __future__ import annotations

from typing import Any

from ..bench import BACKENDS
from ..compare import compare_models, format_comparison_md, write_comparison
from ..deploy import FORMATS
from .benchmark import settings_from
from .common import OUTPUT_KEYS, check_new_file, claimed_run_dir, run_dir

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse compare dense=W1 sparse=W2 data=D [imgsz=640] [batch=16] [device=cpu|0] [half]\n"
    "                            [runs=30] [warmup=5] [backend=auto] [format=onnx,openvino] [quantize=32,8]\n"
    "                            [also=W3,W4] [name=..]\n\n"
    "Validates both checkpoints with identical settings and times them with the interleaved benchmark (batch 1).\n"
    "They may differ in architecture (a channel-pruned model against its dense parent), not in task or classes.\n"
    "Prints params, non-zero params, sparsified weights, GFLOPs, file size, the task's accuracy (mAP50, mAP50-95,\n"
    "precision, recall; segment and pose add mask or pose mAP, classify shows top-1 and top-5 accuracy),\n"
    "latency ms/img and FPS per backend with absolute and relative changes, and a speed verdict per backend;\n"
    "writes compare.json, compare.md, compare.png.\n"
    "With format=, both models are also exported by Ultralytics' exporter (quantize=8: INT8 calibrated on data=),\n"
    "each artifact validated by Ultralytics' validator and timed interleaved on its own runtime; one row per\n"
    "artifact: format, precision, file size, accuracy, latency and its ratio (IQR) to the dense FP32 artifact.\n"
    "The artifacts are kept in the run folder (exports/); tradeoff.png draws each on accuracy against latency.\n"
    "also= adds reference checkpoints (the next-smaller stock model, say), exported, validated and timed alike."
)
KEYS = {
    "dense": "dense checkpoint (.pt) (required)",
    "sparse": "sparse checkpoint (.pt) (required)",
    "data": "dataset YAML, by path (required)",
    "imgsz": "image size for validation and timing (default 640)",
    "batch": "validation batch size (default 16); speed is timed at batch 1",
    "device": "cpu (default) or a CUDA device such as 0",
    "half": "FP16, CUDA only (default False)",
    "runs": "timed benchmark runs per model, at least 10 (default 30)",
    "warmup": "untimed benchmark runs per model (default 5)",
    "backend": f"benchmark backends: {', '.join(BACKENDS)}, both as torch,onnxruntime (timed in one interleaved run), "
    "or auto: torch, plus onnxruntime where onnx and onnxruntime are installed (default auto)",
    "format": f"also export both models and compare the artifacts: {', '.join(FORMATS)}, or a comma list "
    "(default: none)",
    "quantize": "precisions of the exports with format=: 32, 16, 8 (INT8, needs data=), or a comma list such as "
    "32,8; dense FP32 is always exported as the reference (default 32)",
    "also": "further checkpoints of the same task and classes, one or a comma list, exported, validated and timed "
    "with the others (needs format=; default: none)",
    **OUTPUT_KEYS,
}


def run(args: dict[str, Any]) -> None:
    """Compare ``dense=`` and ``sparse=`` on ``data=``; print the table and write the three files."""
    from ultralytics.utils import LOGGER

    args = dict(args)
    dense, sparse, data = args.pop("dense", None), args.pop("sparse", None), args.pop("data", None)
    if data is None:
        raise ValueError("data= is required (a dataset YAML)")
    project, name = args.pop("project", None), args.pop("name", None)
    check_new_file(run_dir(project, name, "compare"), "project")
    settings = settings_from(args, batch=16, runs=30, warmup=5, backend="auto", format=None, quantize=32, also=None)
    with claimed_run_dir(project, name, "compare") as folder:
        result = compare_models(dense, sparse, data, folder, **settings)
        paths = write_comparison(result, folder)
    LOGGER.info(f"\n{format_comparison_md(result)}\nultra-sparse: results in {', '.join(str(p) for p in paths)}")
