"""compare: files, table columns and rows on two checkpoints; CLI bad input for val, compare and benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ultra_sparse.compare import ROW_NAMES

ROW_KEYS = {"metric", "unit", "dense", "sparse", "abs_change", "rel_change"}


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
        "imgsz": 64, "batch": 8, "runs": 10, "warmup": 1, "project": str(project), "name": "cmp",
    })
    return project / "cmp"


def cli(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """Run the console script in-process; return (exit status, stdout, stderr)."""
    from ultra_sparse.cli import entrypoint

    monkeypatch.setattr(sys, "argv", ["ultra-sparse", *argv])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_writes_three_files(compare_run):
    assert {p.name for p in compare_run.iterdir()} >= {"compare.json", "compare.md", "compare.png"}
    assert (compare_run / "compare.png").stat().st_size > 10_000


def test_json_rows_and_values(compare_run, trained_checkpoint, sparse_checkpoint):
    result = json.loads((compare_run / "compare.json").read_text())
    assert [row["metric"] for row in result["rows"]] == list(ROW_NAMES)
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
        assert rows["inference ms/img"][name] == result["benchmark"]["models"][name]["ms_per_image"]
        assert rows["mAP50"][name] == result[name]["metrics"]["metrics/mAP50(B)"]
    d, s = rows["FPS"]["dense"], rows["FPS"]["sparse"]
    assert rows["FPS"]["rel_change"] == pytest.approx((s - d) / d)
    assert result["settings"]["imgsz"] == 64 and result["settings"]["batch"] == 8


def test_markdown_table(compare_run):
    text = (compare_run / "compare.md").read_text()
    assert "| metric | dense | sparse | change | change % |" in text
    for name in ROW_NAMES:
        assert f"| {name} |" in text
    assert "sparse/dense ratio" in text
    assert text.count("does not speed up dense kernels") == 1
    assert "channel pruning" in text and "2:4" in text


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
