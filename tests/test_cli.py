"""The console script as a drop-in superset of ``yolo``: cfg files, bare booleans, pass-through, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import one_error_line
from ultra_sparse import cli
from ultra_sparse.commands import train

CLI = [sys.executable, "-c", "from ultra_sparse.cli import entrypoint; entrypoint()"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(monkeypatch, capfd, *argv: str) -> tuple[int, str, str]:
    """Run the console entry point in this process; return (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ultra-sparse", *argv])
    with pytest.raises(SystemExit) as info:
        cli.entrypoint()
    out, err = capfd.readouterr()
    return info.value.code, out, err


def cli_process(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run the console script in a new process (what Ultralytics' logger prints is seen there)."""
    return subprocess.run([*CLI, *argv], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=300)


@pytest.fixture
def recorded_train(monkeypatch):
    """Replace the train mode's run() by a recorder: the CLI's parsing is under test, not training."""
    seen = []
    monkeypatch.setattr(train, "run", lambda args: seen.append(dict(args)))
    return seen


@pytest.fixture
def recorded_ultralytics(monkeypatch):
    """Replace Ultralytics' own ``yolo`` entry point by a recorder of the arguments it would have read."""
    import ultralytics.cfg

    seen = []
    monkeypatch.setattr(ultralytics.cfg, "entrypoint", lambda debug="": seen.append(list(ultralytics.cfg.ARGV[1:])))
    return seen


@pytest.fixture
def model(tmp_path, trained_checkpoint) -> Path:
    path = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, path)
    return path


# --- cfg= files ------------------------------------------------------------------------------------------------------


def test_train_reads_every_key_of_a_cfg_file_and_the_command_line_wins(tmp_path, monkeypatch, capfd, recorded_train):
    cfg = tmp_path / "my.yaml"
    cfg.write_text("model: yolo11n.yaml\ndata: d.yaml\nepochs: 7\nsparsity: 0.5\nrules: tokenc3_lsnet\nmode: train\n"
                   "device: null\nname: 3\n")
    status, _, err = run_cli(monkeypatch, capfd, "train", f"cfg={cfg}", "epochs=2", "half")
    assert status == 0, err
    assert recorded_train == [{"model": "yolo11n.yaml", "data": "d.yaml", "epochs": 2, "sparsity": 0.5,
                               "rules": "tokenc3_lsnet", "name": "3", "half": True}]


def test_task_word_before_train_is_the_sparse_train_mode(monkeypatch, capfd, recorded_train, recorded_ultralytics):
    status, _, err = run_cli(monkeypatch, capfd, "segment", "train", "model=yolo11n-seg.yaml", "sparsity=0.5")
    assert status == 0, err
    assert recorded_train == [{"task": "segment", "model": "yolo11n-seg.yaml", "sparsity": 0.5}]
    assert recorded_ultralytics == []


def test_sparsify_reads_model_and_sparsity_keys_from_a_cfg_file(tmp_path, monkeypatch, capfd, model):
    cfg = tmp_path / "sparse.yaml"  # a yolo-style file: Ultralytics and train keys sparsify does not take are ignored
    cfg.write_text(f"model: {model}\nsparsity: 0.9\nrules: tokenc3_lsnet\nepochs: 100\nlr0: 0.01\ndevice: null\nfreeze_bn: true\n")
    out = tmp_path / "out" / "s.pt"
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"cfg={cfg}", "sparsity=0.25", f"out={out}")
    assert status == 0, err
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["ultra_sparse"]["config"]["sparsity"] == 0.25 and ckpt["ultra_sparse"]["config"]["rules"]["name"] == "tokenc3_lsnet"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: m.pt\nsparsiy: 0.3\n", "takes no key 'sparsiy' (did you mean sparsity?)"),
        ("- a\n- b\n", "must be a mapping of keys to values"),
        ("model: [unclosed\n", "does not parse"),
    ],
)
def test_bad_cfg_file_is_one_line(tmp_path, monkeypatch, capfd, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"cfg={cfg}", f"project={tmp_path / 'runs'}")
    line = one_error_line(status, err)
    assert message in line and str(cfg) in line
    assert tree(tmp_path) == before


def test_missing_cfg_file_is_one_line(tmp_path, monkeypatch, capfd):
    status, _, err = run_cli(monkeypatch, capfd, "train", f"cfg={tmp_path / 'nope.yaml'}")
    assert "not found" in one_error_line(status, err)


# --- keys and booleans -----------------------------------------------------------------------------------------------


def test_misspelt_sparsity_key_in_train_suggests_the_sparsity_key(monkeypatch, capfd, recorded_train):
    status, out, err = run_cli(monkeypatch, capfd, "train", "model=yolo11n.yaml", "sparsiy=0.5")
    line = one_error_line(status, err)
    assert "'sparsiy'" in line and "did you mean sparsity?" in line
    assert "yolo TASK MODE" not in out + err  # no page of Ultralytics' help
    assert recorded_train == []


def test_misspelt_ultralytics_key_in_train_suggests_the_ultralytics_key(monkeypatch, capfd, recorded_train):
    status, _, err = run_cli(monkeypatch, capfd, "train", "model=yolo11n.yaml", "epohcs=3")
    assert "did you mean epochs?" in one_error_line(status, err)


def test_every_ultralytics_train_key_passes(monkeypatch, capfd, recorded_train):
    status, _, err = run_cli(monkeypatch, capfd, "train", "model=m.pt", "epochs=3", "optimizer=SGD", "cos_lr",
                             "schedule=oneshot", "prune_freq=2")
    assert status == 0, err
    assert recorded_train == [{"model": "m.pt", "epochs": 3, "optimizer": "SGD", "cos_lr": True,
                               "schedule": "oneshot", "prune_freq": 2}]


@pytest.mark.parametrize("flag", ["save=no", "layers=no", "save=1", "layers=yes"])
def test_report_booleans_are_parsed_like_yolo(tmp_path, monkeypatch, capfd, model, flag):
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "report", f"model={model}", flag, f"project={tmp_path / 'runs'}")
    assert "must be True or False" in one_error_line(status, err)
    assert tree(tmp_path) == before


def test_bare_boolean_sets_true_and_report_warnings_reach_the_console_once(tmp_path, model):
    for flag in ("layers", "layers=False"):
        out = cli_process("report", f"model={model}", flag, "save=False", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert ("model.0.conv.weight" in out.stdout + out.stderr) == (flag == "layers")
        assert (out.stdout + out.stderr).count("rule 'dwconv' matched no weight") == 1, flag


# --- modes that are Ultralytics' own ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "model=yolo11n.pt", "source=img.jpg", "half"],
        ["export", "model=m.pt", "format=onnx"],
        ["track", "model=m.pt"],
        ["settings", "runs_dir=runs"],
        ["checks"],
        ["copy-cfg"],
        ["solutions", "count", "show=False"],
        ["detect", "val", "model=m.pt", "conf=0.5"],
        ["benchmark", "model=yolo11n.pt", "imgsz=640"],
        ["model=m.pt", "predict"],
    ],
)
def test_modes_ultra_sparse_does_not_own_go_to_ultralytics_unchanged(monkeypatch, capfd, recorded_ultralytics, argv):
    status, _, err = run_cli(monkeypatch, capfd, *argv)
    assert status == 0, err
    assert recorded_ultralytics == [argv]


def test_benchmark_with_dense_and_sparse_is_ultra_sparse_own(tmp_path, monkeypatch, capfd, recorded_ultralytics):
    status, _, err = run_cli(monkeypatch, capfd, "benchmark", f"dense={tmp_path / 'a.pt'}", f"sparse={tmp_path / 'b.pt'}")
    assert "not found" in one_error_line(status, err)
    assert recorded_ultralytics == []


def test_version_is_ultralytics_version_as_in_yolo(tmp_path):
    import ultralytics

    from ultra_sparse import __version__

    out = cli_process("version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.split() == [ultralytics.__version__], out.stdout + out.stderr
    out = cli_process("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"ultra-sparse {__version__} (ultralytics {ultralytics.__version__})"


def test_unknown_word_is_one_line_with_a_suggestion(monkeypatch, capfd, recorded_ultralytics):
    status, _, err = run_cli(monkeypatch, capfd, "sparsifyy", "model=m.pt")
    line = one_error_line(status, err)
    assert "unknown mode 'sparsifyy'" in line and "did you mean sparsify?" in line
    assert recorded_ultralytics == []


# --- OS errors, pipes, devices ---------------------------------------------------------------------------------------


def test_project_that_is_a_file_is_refused_before_any_work(tmp_path, monkeypatch, capfd, model):
    (tmp_path / "afile").write_text("keep me")
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", "sparsity=0.1", f"project={tmp_path / 'afile'}")
    assert "not a folder" in one_error_line(status, err)
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", "sparsity=0.1",
                             f"out={tmp_path / 'afile' / 'x.pt'}")
    assert "not a folder" in one_error_line(status, err)
    assert tree(tmp_path) == before


def test_name_too_long_is_refused_before_any_work(tmp_path, monkeypatch, capfd, model):
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", "sparsity=0.1",
                             f"project={tmp_path / 'runs'}", f"name={'n' * 300}")
    assert "too long" in one_error_line(status, err)
    status, _, err = run_cli(monkeypatch, capfd, "report", f"model={'m' * 300}.pt")
    one_error_line(status, err)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "/x/y"), IsADirectoryError(21, "Is a directory")])
def test_os_errors_are_one_line(monkeypatch, capfd, error):
    from ultra_sparse.commands import report

    def fail(args):
        raise error

    monkeypatch.setattr(report, "run", fail)
    status, _, err = run_cli(monkeypatch, capfd, "report", "model=m.pt")
    assert error.strerror in one_error_line(status, err)


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    """``ultra-sparse train help | head -1``: no BrokenPipeError when the reader goes away."""
    proc = subprocess.Popen([*CLI, "train", "help"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first write
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("args, message", [
    (["imgsz=0"], "imgsz=0 must be a positive integer"),
    (["device=bogus"], "device='bogus' is not cpu"),
    (["batch=-1"], "batch=-1 must be a positive integer"),
])
def test_taylor_settings_are_checked_before_any_work(tmp_path, monkeypatch, capfd, model, synthetic_data, args, message):
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", "importance=taylor", f"data={synthetic_data}",
                             f"project={tmp_path / 'runs'}", *args)
    assert message in one_error_line(status, err)
    assert tree(tmp_path) == before


def test_device_index_reaches_torch_as_a_cuda_device(tmp_path, monkeypatch, model, synthetic_data):
    """``device=0`` means cuda:0 (Ultralytics' spelling), never the string '0' that torch refuses."""
    from ultra_sparse.commands import sparsify

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    moved, calibrated = [], []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: (moved.append(a[0] if a else k), self)[1])

    def stop(data, imgsz, batch, n, stride, device, task):
        calibrated.append(device)
        raise KeyboardInterrupt  # stop before any real CUDA work

    monkeypatch.setattr(sparsify, "calibration_batches", stop)
    with pytest.raises(KeyboardInterrupt):
        sparsify.run({"model": str(model), "importance": "taylor", "data": str(synthetic_data), "device": 0,
                      "imgsz": 64, "out": str(tmp_path / "s.pt")})
    assert torch.device(moved[0]) == torch.device("cuda:0") and torch.device(calibrated[0]) == torch.device("cuda:0")


# --- error lines stay short ------------------------------------------------------------------------------------------


def test_echoed_values_are_capped(tmp_path, monkeypatch, capfd, model):
    huge = list(range(100_000))
    cfg = tmp_path / "huge.yaml"
    cfg.write_text(json.dumps({"model": str(model), "sparsity": huge}))
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"cfg={cfg}")
    line = one_error_line(status, err)
    assert "sparsity=[0, 1, 2" in line and len(line) < 400
    rules = tmp_path / "rules.yaml"
    rules.write_text(json.dumps({"rules": [{"family": "a", "ratio": 0.1, "classes": huge}]}))
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", f"rules={rules}")
    line = one_error_line(status, err)
    assert "classes=[0, 1, 2" in line and len(line) < 600
    status, _, err = run_cli(monkeypatch, capfd, "sparsify", f"model={model}", f"rules={'x' * 100_000}")
    assert len(one_error_line(status, err)) < 600


@pytest.mark.integration
def test_passthrough_predict_writes_what_yolo_predict_writes(tmp_path, trained_checkpoint, synthetic_data):
    """Ultralytics saves predictions by default only when started as the 'yolo' command: ultra-sparse is that command."""
    yolo = Path(sys.executable).with_name("yolo")
    if not yolo.is_file():
        pytest.skip("the 'yolo' console script is not installed beside this interpreter")
    image = next((synthetic_data.parent / "images" / "val").iterdir())
    keys = [f"model={trained_checkpoint}", f"source={image}", "imgsz=64", "name=p"]
    ours = cli_process("predict", *keys, f"project={tmp_path / 'ours'}", cwd=tmp_path)
    stock = subprocess.run([str(yolo), "predict", *keys, f"project={tmp_path / 'yolo'}"], cwd=tmp_path,
                           capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert ours.returncode == stock.returncode == 0, ours.stderr[-2000:] + stock.stderr[-2000:]
    written = {name: sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
               for name in ("ours", "yolo")}
    assert written["yolo"] and written["ours"] == written["yolo"]  # the annotated image, as 'yolo predict' saves it


@pytest.mark.parametrize("mode, keys", [
    ("sparsify", ["method=channel", "flops=0.3"]),
    ("val", ["data={data}"]),
    ("train", ["data={data}", "epochs=1"]),
    ("benchmark", ["dense={model}", "sparse={model}"]),
    ("scan", ["data={data}", "sparsity=0.5"]),
])
def test_an_image_size_that_cannot_be_allocated_is_one_line(tmp_path, monkeypatch, capfd, model, synthetic_data, mode,
                                                            keys):
    """imgsz=100000 ended in an allocation RuntimeError or a cv2.error traceback, after the run folder was made."""
    keys = [k.format(data=synthetic_data, model=model) for k in keys]
    keys = keys if mode == "benchmark" else [f"model={model}", *keys]
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, mode, *keys, "imgsz=100000", f"project={tmp_path / 'runs'}")
    assert "imgsz=100000 is larger than 8192" in one_error_line(status, err)
    assert tree(tmp_path) == before


def test_a_classify_model_with_a_dataset_yaml_is_one_line_before_any_folder(tmp_path, monkeypatch, capfd, synthetic_data):
    """Ultralytics raised a RuntimeError traceback for this task/data mismatch after writing the run folder."""
    from ultralytics.nn.tasks import ClassificationModel

    model = tmp_path / "cls.pt"
    torch.save({"model": ClassificationModel("yolo11n-cls.yaml", nc=3, verbose=False).half(), "train_args": {"task": "classify"}},
               model)
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "train", f"model={model}", f"data={synthetic_data}", "sparsity=0.5",
                             "epochs=1", "imgsz=64", f"project={tmp_path / 'runs'}")
    assert "is a dataset YAML and this is a classify run" in one_error_line(status, err)
    assert tree(tmp_path) == before


def test_a_run_that_fails_on_its_data_leaves_no_run_folder(tmp_path, monkeypatch, capfd, synthetic_data):
    """Ultralytics writes the run folder before it reads the labels: a segment model on a detection set left one."""
    from ultralytics.nn.tasks import SegmentationModel

    model = tmp_path / "seg.pt"
    torch.save({"model": SegmentationModel("yolo11n-seg.yaml", nc=3, verbose=False).half(), "train_args": {"task": "segment"}},
               model)
    before = tree(tmp_path)
    status, _, err = run_cli(monkeypatch, capfd, "segment", "train", f"model={model}", f"data={synthetic_data}",
                             "epochs=1", "imgsz=64", "workers=0", f"project={tmp_path / 'runs' / 'seg'}")
    assert "segment dataset" in one_error_line(status, err).lower()
    assert tree(tmp_path) == before and not (tmp_path / "runs").exists()
