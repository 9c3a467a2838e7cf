"""``ultra-sparse sparsify`` and ``report`` end to end: outputs, plain-Ultralytics loading, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from cli_helpers import cli, cli_in_process, one_error_line, tree



@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory, trained_checkpoint):
    folder = tmp_path_factory.mktemp("sparsify")
    model = folder / "best.pt"
    shutil.copy(trained_checkpoint, model)
    result = cli(
        "sparsify", f"model={model}", "sparsity=0.25", "rules=tokenc3_lsnet", f"project={folder / 'runs'}", "name=s", cwd=folder
    )
    assert result.returncode == 0, result.stderr
    return folder, model, folder / "runs" / "s"


def test_sparsify_writes_new_checkpoint_and_reports(sparse_run):
    folder, model, run = sparse_run
    weights = run / "weights" / "best-sparse.pt"
    reports = run / "best-sparse-report.json", run / "best-sparse-report.md"
    assert weights.is_file() and reports[0].is_file() and reports[1].is_file()
    report = json.loads(reports[0].read_text())
    prunable = report["totals"]["prunable"]
    assert prunable["zeros"] == round(0.25 * prunable["params"])  # exact to the weight
    assert {"params", "nonzero", "zeros"} <= set(report["totals"]["all"])
    assert report["layers"][0]["chain"] and "ratio_asked" in report["families"][0]
    assert "| family |" in reports[1].read_text()
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    assert ckpt["ultra_sparse"]["config"]["sparsity"] == 0.25
    assert not any(k.startswith("sparsity") or k == "rules" for k in ckpt["train_args"])  # never in train_args


def test_input_checkpoint_is_untouched_and_second_run_gets_a_new_folder(sparse_run, trained_checkpoint):
    folder, model, run = sparse_run
    from ultralytics.utils.files import increment_path

    assert model.read_bytes() == trained_checkpoint.read_bytes()
    numbered = increment_path(folder / "runs" / "s")  # Ultralytics' numbering: s2 on 8.3, s-2 on 8.4
    again = cli("sparsify", f"model={model}", "sparsity=0.25", f"project={folder / 'runs'}", "name=s", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert (numbered / "weights" / "best-sparse.pt").is_file()


def test_plain_ultralytics_loads_the_same_zeros(sparse_run):
    """A process that never imports ultra_sparse loads the checkpoint with YOLO() and sees the same zeros."""
    folder, _, run = sparse_run
    weights = run / "weights" / "best-sparse.pt"
    with zipfile.ZipFile(weights) as archive:  # written compressed by default, and still a plain checkpoint
        assert {e.compress_type for e in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    code = (
        "import sys, json, torch; from ultralytics import YOLO; "
        f"m = YOLO({str(weights)!r}).model; "
        "assert 'ultra_sparse' not in sys.modules; "
        "print(json.dumps({n: int((p == 0).sum()) for n, p in m.named_parameters()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    zeros = json.loads(out.stdout.strip().splitlines()[-1])
    report = json.loads((run / "best-sparse-report.json").read_text())
    for layer in report["layers"]:
        assert zeros[layer["name"]] == layer["zeros"], layer["name"]


def test_report_mode_reads_any_checkpoint(sparse_run):
    folder, model, run = sparse_run
    out = cli("report", f"model={run / 'weights' / 'best-sparse.pt'}", cwd=folder)
    assert out.returncode == 0, out.stderr
    dense = cli("report", f"model={model}", "layers=True", cwd=folder)
    assert dense.returncode == 0 and "model.0.conv.weight" in dense.stdout + dense.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["sparsity=1.0"], "sparsity=1.0 is outside [0, 1)"),
        (["sparsity=-0.2"], "outside [0, 1)"),
        (["sparsity=0.1", "rules=nope"], "neither a preset"),
        (["sparsity=0.1", "importance=l7"], "importance='l7'"),
        (["sparsity=0.1", "sparsty=0.2"], "did you mean sparsity"),
        (["sparsity"], "expected key=value"),
        (["importance=taylor"], "needs data="),
        (["rules=BADRULES"], "unknown key 'ratoi'"),
        (["rules=UNPARSABLE"], "does not parse"),
        (["method=nm", "nm=3:2"], "needs 0 < N < M"),
        (["method=nm", "flops=0.2"], "flops"),  # refused as a key, or (where sparsify takes flops=) by the config
        (["method=nm", "sparsity=0.5"], "does not apply to method=nm"),
        (["method=nm", "nm=2of4"], "must be N:M"),
        (["method=channel", "importance=l1l2"], "ranks whole channels"),
        (["method=channel", "flops=0.99"], "out of reach"),
        (["method=channel", "flops=0.5", "sparsity=0.3"], "not both"),
        (["method=channel", "round_to=0"], "round_to=0"),
    ],
)
def test_bad_input_one_line_nonzero_exit_nothing_written(tmp_path, trained_checkpoint, args, message, monkeypatch, capfd):
    """The console script in this process (capturing file descriptors, so the logger's lines count too)."""
    model = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, model)
    (tmp_path / "bad.yaml").write_text("rules:\n  - family: a\n    ratoi: 0.1\n    classes: [Conv]\n")
    (tmp_path / "unparsable.yaml").write_text("rules: [\n")
    args = [a.replace("BADRULES", str(tmp_path / "bad.yaml")).replace("UNPARSABLE", str(tmp_path / "unparsable.yaml")) for a in args]
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    status, _, err = cli_in_process(monkeypatch, capfd, "sparsify", f"model={model}", *args, f"project={tmp_path / 'runs'}")
    assert message in one_error_line(status, err)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("content", [None, b"", b"not a checkpoint at all", b"PK\x03\x04broken zip"])
def test_missing_or_corrupt_checkpoint(tmp_path, content):
    model = tmp_path / "model.pt"
    if content is not None:
        model.write_bytes(content)
    before = tree(tmp_path)
    out = cli("sparsify", f"model={model}", "sparsity=0.1", f"project={tmp_path / 'runs'}", cwd=tmp_path)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert ("not found" if content is None else "not a readable") in out.stderr
    assert tree(tmp_path) == before


def test_existing_out_is_never_overwritten(tmp_path, trained_checkpoint):
    model = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, model)
    out = cli("sparsify", f"model={model}", "sparsity=0.1", f"out={model}", cwd=tmp_path)
    assert out.returncode == 2 and "already exists" in out.stderr
    assert model.read_bytes() == trained_checkpoint.read_bytes()


def test_help_lists_every_key(tmp_path):
    from ultra_sparse.commands import sparsify

    out = cli("sparsify", "help", cwd=tmp_path)
    assert out.returncode == 0 and all(key in out.stdout for key in sparsify.KEYS)
    top = cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and "sparsify" in top.stdout and "report" in top.stdout
    unknown = cli("sparsifyy", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown mode" in unknown.stderr


def test_taylor_importance_uses_calibration_data(tmp_path, trained_checkpoint, synthetic_data):
    model = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, model)
    args = ["sparsify", f"model={model}", "sparsity=0.3", f"data={synthetic_data}", "imgsz=64"]
    taylor = cli(*args, "importance=taylor", "calib_batches=2", f"out={tmp_path / 'taylor.pt'}", cwd=tmp_path)
    l1 = cli(*args, "importance=l1", f"out={tmp_path / 'l1.pt'}", cwd=tmp_path)  # calib_batches= is taylor's key
    assert taylor.returncode == 0 and l1.returncode == 0, taylor.stderr + l1.stderr
    zeros = {}
    for name in ("taylor", "l1"):
        net = torch.load(tmp_path / f"{name}.pt", map_location="cpu", weights_only=False)["model"]
        zeros[name] = torch.cat([(p == 0).flatten() for n, p in net.named_parameters() if n.endswith("conv.weight")])
    report = json.loads((tmp_path / "taylor-report.json").read_text())
    prunable = report["totals"]["prunable"]
    assert prunable["zeros"] == round(0.3 * prunable["params"])
    assert not torch.equal(zeros["taylor"], zeros["l1"])  # the data changed which weights went
    dense = torch.load(model, map_location="cpu", weights_only=False)["model"].float().state_dict()
    pruned = torch.load(tmp_path / "taylor.pt", map_location="cpu", weights_only=False)["model"].float().state_dict()
    assert list(pruned) == list(dense)
    for name, value in pruned.items():  # only zeros differ: ranking by gradients left BatchNorm statistics as they were
        assert torch.equal(value, torch.where(value == 0, value, dense[name])), name


def test_channel_calibration_data_of_the_wrong_kind_is_one_line(tmp_path, trained_checkpoint):
    """A classify model with data=, or a folder without a YAML, ended in an AssertionError traceback."""
    from ultralytics.nn.tasks import ClassificationModel

    from ultra_sparse.synthetic_tasks import make_task_dataset

    folder = make_task_dataset(tmp_path / "cls-data", "classify", n_train=4, n_val=2)
    classify = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolo11n-cls.yaml", nc=3, verbose=False).half(), "train_args": {"task": "classify"}}, classify)
    before = tree(tmp_path)
    for model, message in ((classify, "a classify model prunes without calibration"), (trained_checkpoint, "No YAML file found")):
        out = cli("sparsify", f"model={model}", "method=channel", "flops=0.3", f"data={folder}", "imgsz=64",
                  f"project={tmp_path / 'runs'}", cwd=tmp_path)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], out.stderr[-2000:]
    assert tree(tmp_path) == before
