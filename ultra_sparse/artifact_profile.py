"""Where an exported artifact spends its time: its runtime's own per-operation profile, summed per network block.

OpenVINO (``PERF_COUNT``) and ONNX Runtime (``enable_profiling``) time every operation of an inference. Operations
carry the name of the Ultralytics module they came from (``__module.model.22.cv2.0.0.conv/...`` in OpenVINO,
``/model.22/cv2.0/cv2.0.0/conv/Conv`` in ONNX), so their times add up per top-level block ``model.N``; what no block
owns (input conversion, the post-processing concatenations) is ``other``. Profiled times run above the wall-clock
latency (the profiler's own cost), so read them as shares of the whole, not as latencies.

Examples:
    >>> block_of("__module.model.22.cv2.0.0.conv/aten::_convolution/Convolution"), block_of("/model.3/cv1/conv/Conv")
    ('model.22', 'model.3')
    >>> block_of("images_QuantizeLinear")
    'other'
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["PROFILED_FORMATS", "block_of", "block_times"]

PROFILED_FORMATS = ("onnx", "openvino")  # runtimes with a per-operation profile that names the source modules
_BLOCK = re.compile(r"(?<![A-Za-z0-9])model\.(\d+)(?!\d)")


def block_of(operation: str) -> str:
    """The top-level block (``model.N``) an operation of an exported Ultralytics network came from, else ``other``."""
    found = _BLOCK.search(operation)
    return f"model.{found.group(1)}" if found else "other"


def block_times(artifact: str | Path, fmt: str, imgsz: int, runs: int = 20, warmup: int = 5) -> dict[str, float]:
    """Mean profiled milliseconds per batch-1 inference of ``artifact``, per block, on its runtime (CPU).

    Args:
        artifact (str | Path): An ONNX file or an OpenVINO model folder.
        fmt (str): ``onnx`` or ``openvino``.
        imgsz (int): Square input size the artifact was exported at.
        runs (int): Profiled inferences averaged.
        warmup (int): Inferences run first and left out.

    Returns:
        (dict[str, float]): ``{"model.0": ms, ..., "other": ms}``.

    Raises:
        ValueError: For a format whose runtime gives no per-operation profile here.
    """
    profilers = {"onnx": _onnxruntime_profile, "openvino": _openvino_profile}
    if fmt not in profilers:
        raise ValueError(f"format={fmt!r}: per-block times are read from {', '.join(PROFILED_FORMATS)} artifacts only")
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    totals: dict[str, float] = defaultdict(float)
    for operation, ms in profilers[fmt](Path(artifact), x, runs, warmup):
        totals[block_of(operation)] += ms / runs
    return dict(sorted(totals.items(), key=lambda item: _order(item[0])))


def _order(block: str) -> tuple[int, int]:
    """Blocks by index, ``other`` last."""
    return (1, 0) if block == "other" else (0, int(block.split(".")[1]))


def _openvino_profile(artifact: Path, x: np.ndarray, runs: int, warmup: int):
    """(operation name, ms) for every executed operation of ``runs`` profiled OpenVINO inferences."""
    import openvino as ov

    xml = artifact if artifact.suffix == ".xml" else next(artifact.glob("*.xml"))
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"PERF_COUNT": "YES", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer({0: x})
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            yield info.node_name, info.real_time.total_seconds() * 1e3


def _onnxruntime_profile(artifact: Path, x: np.ndarray, runs: int, warmup: int):
    """(operation name, ms) for every operation kernel of the last ``runs`` of ``warmup + runs`` ONNX Runtime runs."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ultra-sparse-profile-") as folder:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    first = starts[-runs] if len(starts) >= runs else 0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= first:
            yield event["name"][: -len("_kernel_time")], event["dur"] / 1e3
