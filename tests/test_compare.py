"""compare: files, table columns and rows on an unstructured and a structured pair; bad input for val, compare, benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_helpers import cli_in_process as cli

from ultra_sparse.bench import HONEST_NOTE, gflops
from ultra_sparse.checkpoint import load_checkpoint
from ultra_sparse.compare import ROW_NAMES, row_names

ROW_KEYS = {"metric", "unit", "dense", "sparse", "abs_change", "rel_change"}
REMOVED_PARAMS = 8 * 3 * 3 * 3 + 2 * 8 + 32 * 8 * 3 * 3  # shrunk_checkpoint: model.0 conv + BN, model.1 conv inputs


@pytest.fixture(scope="module")
def sparse_checkpoint(tmp_path_factory, trained_checkpoint) -> Path:
    """The trained checkpoint with 30% of its prunable weights zeroed."""
    from ultra_sparse.commands.sparsify import run

    out = tmp_path_factory.mktemp("sparse") / "sparse.pt"
    run({"model": str(trained_checkpoint), "sparsity": 0.3, "out": str(out)})
    return out


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory, trained_checkpoint, sparse_checkpoint, synthetic_data) -> Path:
    """Run folder of ``ultra-sparse compare`` on the two checkpoints at imgsz 64."""
    from ultra_sparse.commands.compare import run

    project = tmp_path_factory.mktemp("runs")
    run({
        "dense": str(trained_checkpoint), "sparse": str(sparse_checkpoint), "data": str(synthetic_data),
        "imgsz": 64, "batch": 8, "runs": 10, "warmup": 1, "backend": "torch", "project": str(project), "name": "cmp",
    })
    return project / "cmp"


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory, trained_checkpoint, shrunk_checkpoint, synthetic_data) -> Path:
    """Run folder of ``ultra-sparse compare`` of the trained model against its hand-shrunk copy, both backends."""
    from ultra_sparse.commands.compare import run

    project = tmp_path_factory.mktemp("runs")
    run({
        "dense": str(trained_checkpoint), "sparse": str(shrunk_checkpoint), "data": str(synthetic_data),
        "imgsz": 64, "batch": 8, "runs": 10, "warmup": 1, "backend": "torch,onnxruntime", "project": str(project),
        "name": "cmp",
    })
    return project / "cmp"


def test_writes_three_files(compare_run):
    assert {p.name for p in compare_run.iterdir()} >= {"compare.json", "compare.md", "compare.png"}
    assert (compare_run / "compare.png").stat().st_size > 10_000


def test_json_rows_and_values(compare_run, trained_checkpoint, sparse_checkpoint):
    result = json.loads((compare_run / "compare.json").read_text())
    assert [row["metric"] for row in result["rows"]] == [*ROW_NAMES, "latency ms/img (torch)", "FPS (torch)"]
    assert result["kind"] == "unstructured"
    assert all(set(row) == ROW_KEYS for row in result["rows"])
    rows = {row["metric"]: row for row in result["rows"]}
    assert rows["total params"]["abs_change"] == 0
    assert rows["nonzero params"]["abs_change"] < 0
    assert rows["sparsified weights"]["dense"] < 1e-3
    assert rows["sparsified weights"]["rel_change"] is None  # a change of a percentage is shown in points
    assert rows["sparsified weights"]["sparse"] == pytest.approx(0.3, abs=1e-3)
    assert rows["file size (MB)"]["dense"] == pytest.approx(trained_checkpoint.stat().st_size / 1e6)
    assert rows["file size (MB)"]["sparse"] == pytest.approx(sparse_checkpoint.stat().st_size / 1e6)
    for name in ("dense", "sparse"):  # the table's speed is the benchmark's, accuracy is the validator's
        timed = result["benchmark"]["timings"]["torch"]["models"][name]
        assert rows["latency ms/img (torch)"][name] == timed["ms_per_image"]
        assert rows["mAP50"][name] == result[name]["metrics"]["metrics/mAP50(B)"]
    assert rows["GFLOPs"]["dense"] == rows["GFLOPs"]["sparse"] > 0  # zeros inside dense tensors: same compute
    d, s = rows["FPS (torch)"]["dense"], rows["FPS (torch)"]["sparse"]
    assert rows["FPS (torch)"]["rel_change"] == pytest.approx((s - d) / d)
    assert result["settings"]["imgsz"] == 64 and result["settings"]["batch"] == 8


def test_markdown_table(compare_run):
    text = (compare_run / "compare.md").read_text()
    result = json.loads((compare_run / "compare.json").read_text())
    assert "| metric | dense | sparse | change | change % |" in text
    for name in row_names(["torch"]):
        assert f"| {name} |" in text
    assert "sparse/dense ratio" in text
    assert f"Speed (torch): {result['benchmark']['timings']['torch']['verdict']}" in text
    assert text.count("does not speed up dense kernels") == 1  # the fixed note of an unstructured pair, once
    assert "channel pruning" in text and "2:4" in text


def test_structured_pair_rows(channel_run, trained_checkpoint, shrunk_checkpoint):
    result = json.loads((channel_run / "compare.json").read_text())
    assert result["kind"] == "structured"
    assert [row["metric"] for row in result["rows"]] == row_names(["torch", "onnxruntime"])
    assert all(set(row) == ROW_KEYS for row in result["rows"])
    rows = {row["metric"]: row for row in result["rows"]}
    assert rows["total params"]["abs_change"] == -REMOVED_PARAMS
    assert rows["total params"]["sparse"] == sum(p.numel() for p in load_checkpoint(shrunk_checkpoint)[0].parameters())
    for name, path in (("dense", trained_checkpoint), ("sparse", shrunk_checkpoint)):  # Ultralytics' count at imgsz
        assert rows["GFLOPs"][name] == pytest.approx(gflops(load_checkpoint(path)[0], 64))
        assert rows["file size (MB)"][name] == pytest.approx(path.stat().st_size / 1e6)
    assert rows["GFLOPs"]["sparse"] < rows["GFLOPs"]["dense"]
    assert result["benchmark"]["gflops_ratio"] == pytest.approx(rows["GFLOPs"]["sparse"] / rows["GFLOPs"]["dense"])
    for backend in ("torch", "onnxruntime"):
        timing = result["benchmark"]["timings"][backend]
        assert len(timing["samples_ms"]["dense"]) == len(timing["samples_ms"]["sparse"]) == 10
        assert rows[f"latency ms/img ({backend})"]["sparse"] == timing["models"]["sparse"]["ms_per_image"]
    assert sorted(p.name for p in (channel_run / "onnx").iterdir()) == ["dense.onnx", "sparse.onnx"]


def test_structured_pair_verdicts_and_note(channel_run):
    text = (channel_run / "compare.md").read_text()
    result = json.loads((channel_run / "compare.json").read_text())
    assert "does not speed up dense kernels" not in text and result["benchmark"]["note"] != HONEST_NOTE
    assert f"GFLOPs ratio {result['benchmark']['gflops_ratio']:.2f}" in text
    for backend, timing in result["benchmark"]["timings"].items():
        r = timing["ratio"]
        expected = "none" if r["q1"] <= 1.0 <= r["q3"] else "speed-up" if r["q3"] < 1.0 else "slow-down"
        assert timing["outcome"] == expected
        assert f"Speed ({backend}): {timing['verdict']}" in text
    assert (channel_run / "compare.png").stat().st_size > 10_000


def _assert_one_line_exit_2(code, out, err, tmp_path, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ultra-sparse: error:"), err
    for word in words:
        assert word in lines[0]
    assert not any(tmp_path.iterdir()), "nothing may be written on bad input"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["benchmark", "sparse=x.pt"], ["dense="]),
        (["benchmark", "dense=missing.pt", "sparse=missing2.pt"], ["dense=", "not found"]),
        (["benchmark", "dense={ckpt}", "sparse={ckpt}", "backend=tensorrt"], ["backend"]),
        (["benchmark", "dense={ckpt}", "sparse={ckpt}", "half=True"], ["half"]),
        (["benchmark", "dense={ckpt}", "sparse={ckpt}", "half=maybe"], ["half"]),
        (["benchmark", "dense={ckpt}", "sparse={corrupt}"], ["sparse=", "not a readable"]),
        (["compare", "dense={ckpt}", "sparse={ckpt}"], ["data="]),
        (["compare", "dense={ckpt}", "sparse={ckpt}", "data=missing.yaml"], ["data=", "not found"]),
        (["compare", "dense={ckpt}", "sparse={ckpt}", "data={data}", "runs=1"], ["runs"]),
        (["compare", "dense={ckpt}", "sparse={ckpt}", "data={data}", "bogus=1"], ["bogus"]),
        (["val", "model={corrupt}", "data={data}"], ["model=", "not a readable"]),
        (["val", "model={ckpt}"], ["data="]),
        (["val", "model={ckpt}", "data={data}", "device=cpu", "half=True"], ["half"]),
    ],
)
def test_cli_bad_input(monkeypatch, capsys, tmp_path, trained_checkpoint, synthetic_data, argv, words):
    corrupt = tmp_path.parent / f"{tmp_path.name}-corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    fill = {"ckpt": trained_checkpoint, "corrupt": corrupt, "data": synthetic_data}
    argv = [a.format(**fill) for a in argv] + [f"project={tmp_path}"]
    code, out, err = cli(monkeypatch, capsys, *argv)
    _assert_one_line_exit_2(code, out, err, tmp_path, *words)


@pytest.fixture(scope="module")
def one_class_checkpoint(tmp_path_factory) -> Path:
    """A yolo11n checkpoint of 1 class (the synthetic data has 3), saved in Ultralytics' checkpoint layout."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("one-class") / "one-class.pt"
    model = DetectionModel("yolo11n.yaml", nc=1, verbose=False)
    model.names = {0: "ball"}
    torch.save({"model": model.half(), "ema": None, "train_args": {}}, path)
    return path


@pytest.mark.parametrize("mode", ["compare", "benchmark"])
def test_cli_refuses_different_class_sets(monkeypatch, capsys, tmp_path, trained_checkpoint, one_class_checkpoint,
                                           synthetic_data, mode):
    argv = [mode, f"dense={trained_checkpoint}", f"sparse={one_class_checkpoint}", "imgsz=64", "runs=10",
            f"project={tmp_path}"] + ([f"data={synthetic_data}"] if mode == "compare" else [])
    code, out, err = cli(monkeypatch, capsys, *argv)
    _assert_one_line_exit_2(code, out, err, tmp_path, "not comparable", "3 classes", "1 class", "'ball'")
    assert "Class" not in out + err  # refused before any validation


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_cli_compare_checks_the_backend_before_validating(monkeypatch, capsys, tmp_path, trained_checkpoint,
                                                          synthetic_data, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    code, out, err = cli(
        monkeypatch, capsys, "compare", f"dense={trained_checkpoint}", f"sparse={trained_checkpoint}",
        f"data={synthetic_data}", "imgsz=64", "backend=onnxruntime", f"project={tmp_path}",
    )
    _assert_one_line_exit_2(code, out, err, tmp_path, "backend=onnxruntime", f"missing: {missing}")
    assert "Class" not in out + err  # no validation ran


def test_cli_val(monkeypatch, capsys, tmp_path, sparse_checkpoint, synthetic_data):
    code, _, err = cli(
        monkeypatch, capsys, "val", f"model={sparse_checkpoint}", f"data={synthetic_data}", "imgsz=64", "batch=8",
        f"project={tmp_path}", "name=v",
    )
    assert code == 0, err
    result = json.loads((tmp_path / "v" / "val.json").read_text())
    assert result["results"]["sparsity/prunable"] == pytest.approx(0.3, abs=1e-3)
    assert {"metrics/mAP50(B)", "metrics/mAP50-95(B)"} <= set(result["results"])
    assert {"preprocess", "inference", "postprocess"} <= set(result["speed_ms"])


@pytest.mark.parametrize(
    "argv, words",
    [
        (["compare", "dense={ckpt}", "sparse={ckpt}", "data={data}", "runs=0", "imgsz=64"], ["runs=0"]),
        (["compare", "dense={ckpt}", "sparse={ckpt}", "data={bad}", "imgsz=64"], ["train"]),
        (["val", "model={ckpt}", "data={bad}", "imgsz=64"], ["train"]),
    ],
)
def test_cli_refusal_leaves_no_new_project_folder(monkeypatch, capsys, tmp_path, trained_checkpoint, synthetic_data,
                                                  argv, words):
    """A refusal found after the run folder is claimed removes it and the project= folders the claim made."""
    bad = tmp_path.parent / f"{tmp_path.name}-bad.yaml"
    bad.write_text("names: {0: a}\n")  # a data YAML without train:/val:
    fill = {"ckpt": trained_checkpoint, "data": synthetic_data, "bad": bad}
    argv = [a.format(**fill) for a in argv] + [f"project={tmp_path / 'new' / 'runs'}", "name=x"]
    code, out, err = cli(monkeypatch, capsys, *argv)
    _assert_one_line_exit_2(code, out, err, tmp_path, *words)
