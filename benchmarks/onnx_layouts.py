"""How onnxruntime lays out a dense and a pruned checkpoint: blocked convolutions and layout reorders, side by side.

On x86 CPUs onnxruntime's optimizer (level ``ORT_ENABLE_ALL``) rewrites convolutions into its blocked ``NCHWc`` form
(blocks of 16 channels with AVX-512, 8 with AVX2) and inserts ``ReorderInput`` / ``ReorderOutput`` nodes where a
tensor has to change layout. Channel counts that do not fill the blocks cost such reorders, which is one reason why
latency falls less than GFLOPs. This script exports each checkpoint to ONNX with Ultralytics (in a temporary folder,
not simplified), lets onnxruntime optimize it, and counts the nodes of the graph it wrote.

Usage:
    python benchmarks/onnx_layouts.py dense.pt pruned.pt [more.pt ...] [--imgsz 640]

Example (the volleyball YOLOv9t and its flops=0.5 pruning with the scanned rules, 2 CPU cores with AVX-512): 192
blocked convolutions in every model; reorders 66 dense, 139 at ``round_to=8``, 105 at ``round_to=16``.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
from pathlib import Path

BLOCKED_DOMAIN = "com.microsoft.nchwc"


def layout_counts(onnx_path: Path, optimized_path: Path) -> collections.Counter:
    """Optimize ``onnx_path`` with onnxruntime (CPU, all graph optimizations); count blocked and reorder nodes."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(optimized_path)
    options.log_severity_level = 3  # the warning that the written graph is machine-specific is expected here
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    counts = collections.Counter()
    for node in onnx.load(str(optimized_path)).graph.node:
        if node.domain == BLOCKED_DOMAIN:
            counts["blocked " + node.op_type if node.op_type == "Conv" else node.op_type] += 1
        elif node.op_type == "Conv":
            counts["plain Conv"] += 1
    return counts


def main() -> None:
    """Export, optimize and count every checkpoint given; print one row each."""
    import logging

    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.setLevel(logging.WARNING)  # the export's own report would bury the table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--imgsz", type=int, default=640)
    args = parser.parse_args()

    columns = ("blocked Conv", "plain Conv", "ReorderInput", "ReorderOutput")
    print(f"{'checkpoint':40s} " + " ".join(f"{c:>14s}" for c in columns) + f" {'reorders':>9s}")
    with tempfile.TemporaryDirectory(prefix="onnx-layouts-") as folder:
        for index, checkpoint in enumerate(args.checkpoints):
            copy = Path(folder) / f"{index}.pt"  # export writes beside the checkpoint: never into the user's folder
            shutil.copyfile(checkpoint, copy)
            onnx_path = Path(YOLO(copy).export(format="onnx", imgsz=args.imgsz, simplify=False, verbose=False))
            counts = layout_counts(onnx_path, Path(folder) / f"{index}-optimized.onnx")
            reorders = counts["ReorderInput"] + counts["ReorderOutput"]
            print(f"{checkpoint[-40:]:40s} " + " ".join(f"{counts[c]:>14d}" for c in columns) + f" {reorders:>9d}")


if __name__ == "__main__":
    main()
