"""Exported artifacts: compare and benchmark export both models, validate the artifacts and time them on their runtime.

Detection through the ``compare`` command (ONNX and OpenVINO, FP32; ONNX INT8 through ``benchmark``: OpenVINO's
NNCF calibration takes about 15 s a model, and classification covers it), FP16 of both formats against their FP32
outputs, classification through ``compare_artifacts`` (both formats, FP32 and INT8); bad values, a missing runtime and INT8 without data are refused
with one line before anything is exported.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import cli_in_process as cli

from ultra_sparse.deploy import (
    artifact_runner, check_deploy_settings, compare_artifacts, format_artifacts_md, parse_quantize,
)

ROW_KEYS = {"key", "model", "format", "precision", "path", "file_mb", "kernel_zeros", "accuracy", "latency_ms", "ratio",
            "reference"}


@pytest.fixture(scope="module")
def classify_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """(best.pt, dataset folder) of yolo11n-cls trained one epoch on a tiny synthetic classification set at 64 px."""
    from ultralytics import YOLO

    from ultra_sparse.synthetic_tasks import make_task_dataset

    root = tmp_path_factory.mktemp("cls")
    data = make_task_dataset(root / "data", "classify", n_train=8, n_val=4)
    YOLO("yolo11n-cls.yaml").train(
        data=str(data), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(root), name="train",
        plots=False, verbose=False, seed=0, amp=False,
    )
    return root / "train" / "weights" / "best.pt", data


def _first_output(outputs) -> np.ndarray:
    """The first output of an ONNX Runtime run (a list) or an OpenVINO inference (a mapping), as FP32."""
    first = outputs[0] if isinstance(outputs, list) else next(iter(outputs.values()))
    return np.asarray(first, dtype=np.float32)


def check_rows(result, models, formats, precisions):
    """Every artifact has a row with its file on disk, and each row's ratio is to dense FP32 of its own format."""
    rows = result["rows"]
    assert [(r["format"], r["precision"], r["model"]) for r in rows] == [
        (f, p, m) for f in formats for p in precisions for m in models
    ]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert Path(row["path"]).exists() and row["file_mb"] > 0
        assert row["reference"] == f"{row['format']}/dense-fp32"
        assert row["latency_ms"]["median"] > 0 and row["ratio"]["q1"] <= row["ratio"]["median"] <= row["ratio"]["q3"]
        if row["key"] == row["reference"]:
            assert row["ratio"]["median"] == 1.0


def test_detection_artifacts_are_exported_validated_and_timed_by_compare(
    tmp_path, trained_checkpoint, shrunk_checkpoint, synthetic_data
):
    from ultra_sparse.commands.compare import run

    run({
        "dense": str(trained_checkpoint), "sparse": str(shrunk_checkpoint), "data": str(synthetic_data), "imgsz": 64,
        "batch": 8, "runs": 10, "warmup": 1, "backend": "torch", "format": "onnx,openvino", "project": str(tmp_path),
        "name": "cmp", "also": str(trained_checkpoint),  # a reference model, placed beside the pair
    })
    folder = tmp_path / "cmp"
    result = json.loads((folder / "compare.json").read_text())
    artifacts = result["artifacts"]
    check_rows(artifacts, ["dense", "sparse", "also-best"], ["onnx", "openvino"], ["FP32"])
    assert (folder / "tradeoff.png").stat().st_size > 10_000  # every artifact on accuracy against latency
    for row in artifacts["rows"]:
        assert Path(row["path"]).is_relative_to(folder / "exports")  # kept in the run folder, not beside the weights
        assert set(row["accuracy"]) == {"mAP50", "mAP50-95", "precision", "recall"}
    assert (folder / "exports" / "sparse-fp32-openvino" / "sparse_openvino_model").is_dir()
    md = (folder / "compare.md").read_text()
    assert "## Exported artifacts" in md and "| sparse | openvino | FP32 |" in md


def test_fp16_artifacts_are_exported_validated_and_timed(tmp_path, trained_checkpoint, synthetic_data):
    """quantize=16 on the CPU: ONNX stores FP16 tensors, OpenVINO compresses its constants to FP16; both validate."""
    settings = check_deploy_settings("onnx,openvino", 16, synthetic_data)
    assert settings["precisions"] == (32, 16)
    result = compare_artifacts({"dense": trained_checkpoint}, tmp_path / "run", settings["formats"],
                               settings["precisions"], 64, runs=4, warmup=1, data=synthetic_data)
    check_rows(result, ["dense"], ["onnx", "openvino"], ["FP32", "FP16"])
    size = {(r["format"], r["precision"]): r["file_mb"] for r in result["rows"]}
    for fmt in ("onnx", "openvino"):
        assert size[fmt, "FP16"] < 0.6 * size[fmt, "FP32"]  # half-size weights really are in the artifact
    assert all(set(r["accuracy"]) == {"mAP50", "mAP50-95", "precision", "recall"} for r in result["rows"])
    path = {(r["format"], r["precision"]): r["path"] for r in result["rows"]}
    for fmt in ("onnx", "openvino"):  # the half-precision network computes what the FP32 one does
        full, half = (_first_output(artifact_runner(path[fmt, p], fmt, 64)()) for p in ("FP32", "FP16"))
        assert full.shape == half.shape and np.abs(full - half).max() <= 0.01 * np.abs(full).max()


def test_classification_artifacts_in_fp32_and_int8(tmp_path, classify_checkpoint):
    from ultra_sparse.cli import main

    weights, data = classify_checkpoint
    settings = check_deploy_settings("onnx,openvino", 8, data)
    assert settings["precisions"] == (32, 8)  # FP32 is always there: the reference
    sparse = tmp_path / "sparse.pt"  # 50% unstructured zeros: exported and quantized, the kernels keep them
    assert main(["sparsify", f"model={weights}", "sparsity=0.5", f"out={sparse}"]) == 0
    result = compare_artifacts({"dense": sparse}, tmp_path / "run", settings["formats"], settings["precisions"], 64,
                               runs=10, warmup=1, data=data)  # the sparse model is its own reference here
    check_rows(result, ["dense"], ["onnx", "openvino"], ["FP32", "INT8"])
    size = {(r["format"], r["precision"]): r["file_mb"] for r in result["rows"]}
    for fmt in ("onnx", "openvino"):
        assert size[fmt, "INT8"] < 0.6 * size[fmt, "FP32"]  # INT8 weights really are in the artifact
    kernels = [p for p in torch.load(sparse, weights_only=False)["model"].parameters()
               if p.dim() == 4 and not (p.shape[2:] == (1, 1) and 1 in p.shape[:2])]
    stored = sum(int((p == 0).sum()) for p in kernels) / sum(p.numel() for p in kernels)
    assert stored > 0.3
    for row in result["rows"]:
        zeros = row["kernel_zeros"]
        if row["key"] == "onnx/dense-fp32":  # the same kernels, Conv+BN folded (a zero stays zero)
            assert zeros == pytest.approx(stored, abs=1e-9)
        else:  # INT8 (and OpenVINO's constants) can only add zeros, never lose one
            assert stored - 1e-9 <= zeros < stored + 0.01, row["key"]
    for row in result["rows"]:
        assert set(row["accuracy"]) == {"top-1 accuracy", "top-5 accuracy"}
    assert "top-1 accuracy" in format_artifacts_md(result).splitlines()[2]


@pytest.mark.slow
def test_detection_int8_artifacts_by_benchmark(tmp_path, trained_checkpoint, shrunk_checkpoint, synthetic_data):
    from ultra_sparse.commands.benchmark import run

    run({
        "dense": str(trained_checkpoint), "sparse": str(shrunk_checkpoint), "data": str(synthetic_data), "imgsz": 64,
        "runs": 10, "warmup": 1, "backend": "torch", "format": "onnx", "quantize": 8,
        "project": str(tmp_path), "name": "bench",
    })
    result = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    check_rows(result["artifacts"], ["dense", "sparse"], ["onnx"], ["FP32", "INT8"])
    assert all(row["accuracy"] is None for row in result["artifacts"]["rows"])  # benchmark times, it does not validate
    assert "| sparse | onnx | INT8 |" in (tmp_path / "bench" / "benchmark.md").read_text()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("format=tflite", "format='tflite' is not timed here"),
        ("format=onnx,onnx", "names a format twice"),
        ("quantize=7", "quantize=7 must be 32, 16 or 8"),
        ("quantize=32,32", "names a precision twice"),
    ],
)
def test_bad_format_or_quantize_is_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path, value, message):
    extra = [] if value.startswith("format") else ["format=onnx"]
    for mode in ("compare", "benchmark"):
        status, _, err = cli(monkeypatch, capsys, mode, "dense=a.pt", "sparse=b.pt", "data=d.yaml", value, *extra,
                             f"project={tmp_path}")
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_int8_without_data_and_quantize_without_format_are_refused(monkeypatch, capsys, tmp_path):
    status, _, err = cli(monkeypatch, capsys, "benchmark", "dense=a.pt", "sparse=b.pt", "format=openvino",
                         "quantize=8", f"project={tmp_path}")
    assert status == 2 and "quantize=8 (INT8) needs data=" in err
    status, _, err = cli(monkeypatch, capsys, "compare", "dense=a.pt", "sparse=b.pt", "data=d.yaml", "quantize=8",
                         f"project={tmp_path}")
    assert status == 2 and "needs format=" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("missing", "fmt", "extra"), [("openvino", "openvino", "openvino"), ("nncf", "openvino", "openvino"),
                                                       ("onnxruntime", "onnx", "onnx")])
def test_missing_runtime_names_the_extra_before_any_export(monkeypatch, capsys, tmp_path, missing, fmt, extra,
                                                           trained_checkpoint, synthetic_data):
    monkeypatch.setitem(__import__("sys").modules, missing, None)  # import fails as if not installed
    status, _, err = cli(monkeypatch, capsys, "compare", f"dense={trained_checkpoint}", f"sparse={trained_checkpoint}",
                         f"data={synthetic_data}", f"format={fmt}", "quantize=32,8", f"project={tmp_path}")
    assert status == 2 and f"pip install 'ultra-sparse[{extra}]'" in err and missing in err
    assert len(err.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_quantize_values_follow_ultralytics_spelling():
    assert parse_quantize("fp32,fp16,int8") == (32, 16, 8)
    assert parse_quantize([8, 32]) == (8, 32)
    with pytest.raises(ValueError, match="must be 32, 16 or 8"):
        parse_quantize(True)


def test_also_needs_format_and_distinct_checkpoints(monkeypatch, capsys, tmp_path, trained_checkpoint, synthetic_data):
    keys = [f"dense={trained_checkpoint}", f"sparse={trained_checkpoint}", f"data={synthetic_data}", f"project={tmp_path}"]
    for extra, message in (([f"also={trained_checkpoint}"], "also= places further models among the exported artifacts"),
                           ([f"also=a/x.pt,b/x.pt", "format=onnx"], "names a checkpoint twice")):
        status, _, err = cli(monkeypatch, capsys, "compare", *keys, *extra)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
