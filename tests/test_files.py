"""Files written and read by the modes: run folders as Ultralytics resolves them, safe writes, damaged inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from cli_helpers import cli_in_process, one_error_line
from ultra_sparse.checkpoint import atomic_write_bytes

CLI = [sys.executable, "-c", "from ultra_sparse.cli import entrypoint; entrypoint()"]
# Ultralytics sends runs to its own tests folder while it thinks tests run: a user's shell has none of these
TEST_MARKERS = ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "GITHUB_ACTIONS", "GITHUB_WORKFLOW", "RUNNER_OS")


def cli(*args: str, cwd: Path, env: dict | None = None, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*(prefix or CLI), *args], cwd=cwd, capture_output=True, text=True, env=env or os.environ.copy(), timeout=300
    )


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def process_error_line(out: subprocess.CompletedProcess) -> str:
    """The one error line of a refused run in a subprocess."""
    return one_error_line(out.returncode, out.stderr)


def refused_in_process(monkeypatch, capfd, *argv: str) -> str:
    """The one error line of the console script run in this process (no new interpreter for each refusal); ``capfd``
    captures the file descriptors, so what the logger writes counts too."""
    status, _, err = cli_in_process(monkeypatch, capfd, *argv)
    return one_error_line(status, err)


@pytest.fixture
def user_env(tmp_path) -> dict:
    """A user's environment: its own Ultralytics settings with the pip-install default ``runs_dir=runs``."""
    env = {k: v for k, v in os.environ.items() if k not in TEST_MARKERS}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "config")
    setup = "from ultralytics.utils import SETTINGS; SETTINGS.update(runs_dir='runs')"
    subprocess.run([sys.executable, "-c", setup], env=env, check=True, capture_output=True, timeout=120)
    return env


def ultralytics_save_dir(env: dict, cwd: Path, project: str | None, name: str, task: str) -> Path:
    """Where Ultralytics itself puts a run (project, name, task) in this environment."""
    code = (
        "from types import SimpleNamespace as N; import os; from ultralytics.cfg import get_save_dir; "
        f"print(os.path.abspath(get_save_dir(N(project={project!r}, name={name!r}, task={task!r}, mode='x', "
        "exist_ok=True))))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_get_the_permissions_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_bytes(tmp_path / "a.bin", b"y")  # replacing keeps to the umask too
        atomic_write_bytes(tmp_path / "b" / "b.bin", b"z")
    finally:
        os.umask(old)
    assert [(p.stat().st_mode & 0o777) for p in (tmp_path / "a.bin", tmp_path / "b" / "b.bin")] == [mode, mode]


def test_exclusive_write_never_replaces_a_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(tmp_path / "a.bin", b"theirs", exclusive=True)
    assert (tmp_path / "a.bin").read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_relative_runs_dir_and_project_put_every_output_where_ultralytics_does(tmp_path, user_env, trained_checkpoint, synthetic_data):
    """With runs_dir=runs and project=rel, sparsify/val write where Ultralytics would, into ONE folder each."""
    work = tmp_path / "work"
    work.mkdir()
    out = cli("sparsify", f"model={trained_checkpoint}", "sparsity=0.1", "project=rel", "name=s", cwd=work, env=user_env)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = ultralytics_save_dir(user_env, work, "rel", "s", "sparse")
    weights = expected / "weights" / "best-sparse.pt"
    assert weights.is_file() and str(weights) in out.stdout + out.stderr  # printed where it really is
    before = {p for p in work.rglob("*") if p.is_dir()}
    val = cli("val", f"model={weights}", f"data={synthetic_data}", "imgsz=64", "batch=4", "project=rel", "name=v", cwd=work, env=user_env)
    assert val.returncode == 0, val.stderr[-2000:]
    folder = ultralytics_save_dir(user_env, work, "rel", "v", "sparse")
    assert (folder / "val.json").is_file()
    new = {p for p in work.rglob("*") if p.is_dir()} - before
    assert all(p == folder or p in folder.parents or folder in p.parents for p in new), new  # one folder, not two


@pytest.mark.slow
def test_demo_with_relative_runs_dir_runs_every_step(tmp_path, user_env):
    """The README's demo with the pip-install default runs_dir=runs and no project= (it used to fail after training):
    every step runs and leaves its outputs where it says; fine-tuning never brings a pruned weight back, and the
    channel leg's fine-tune keeps the pruned shapes."""
    from ultra_sparse.rules import assign_families, load_rules

    out = cli("demo", "epochs=1", "finetune_epochs=1", "n_train=16", "n_val=8", "imgsz=64", "sparsity=0.4",
              cwd=tmp_path, env=user_env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = ultralytics_save_dir(user_env, tmp_path, None, "demo", "sparse")
    assert (run / "data" / "data.yaml").is_file() and (run / "baseline" / "weights" / "best.pt").is_file()
    zeros = {}
    for path in (run / "sparsify" / "weights" / "best-sparse.pt", run / "finetune" / "weights" / "best.pt"):
        net = torch.load(path, map_location="cpu", weights_only=False)["model"]
        zeros[path.name] = {w.name: w.weight == 0 for w in assign_families(net, load_rules("tokenc3_lsnet")).prunable}
    assert zeros["best-sparse.pt"].keys() == zeros["best.pt"].keys()
    for name, zero in zeros["best-sparse.pt"].items():
        assert bool((zeros["best.pt"][name] | ~zero).all()), name
    for name in ("compare-oneshot", "compare-finetuned"):
        assert json.loads((run / name / "compare.json").read_text())["kind"] == "unstructured"
        assert (run / name / "compare.md").is_file() and (run / name / "compare.png").is_file()
    params = {}
    for name in ("compare-pruned", "compare-pruned-finetuned"):
        result = json.loads((run / name / "compare.json").read_text())
        rows = {row["metric"]: row for row in result["rows"]}
        assert result["kind"] == "structured" and "does not speed up" not in result["benchmark"]["note"]
        assert rows["total params"]["sparse"] < rows["total params"]["dense"]
        assert rows["GFLOPs"]["sparse"] < rows["GFLOPs"]["dense"]
        params[name] = rows["total params"]["sparse"]
    assert params["compare-pruned"] == params["compare-pruned-finetuned"]  # fine-tuning kept the pruned shapes


def test_concurrent_runs_claim_separate_folders(tmp_path, trained_checkpoint):
    """Two sparsify runs into one project/name, with slow writes so both are busy at once: neither loses its file."""
    slow = (
        "import time, ultra_sparse.checkpoint as c, ultra_sparse.commands.common as m; w = c.atomic_write_bytes; "
        "s = lambda *a, **k: (time.sleep(3), w(*a, **k))[1]; c.atomic_write_bytes = m.atomic_write_bytes = s; "
        "from ultra_sparse.cli import entrypoint; entrypoint()"
    )
    args = ["sparsify", f"model={trained_checkpoint}", "sparsity=0.1", f"project={tmp_path}", "name=s"]
    procs = [subprocess.Popen([sys.executable, "-c", slow, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    written = sorted(tmp_path.glob("*/weights/best-sparse.pt"))
    assert len(written) == 2, written
    for path in written:
        assert torch.load(path, map_location="cpu", weights_only=False)["ultra_sparse"]["config"]["sparsity"] == 0.1


def test_reports_are_named_after_the_checkpoint(tmp_path, trained_checkpoint):
    for stem, sparsity in (("a", "0.1"), ("b", "0.2")):
        out = cli("sparsify", f"model={trained_checkpoint}", f"sparsity={sparsity}", f"out={tmp_path / stem}.pt", cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
    for stem, sparsity in (("a", 0.1), ("b", 0.2)):
        report = json.loads((tmp_path / f"{stem}-report.json").read_text())
        assert report["config"]["sparsity"] == sparsity and (tmp_path / f"{stem}-report.md").is_file()


def test_sparse_checkpoint_is_compressed_and_report_shows_its_size(tmp_path, trained_checkpoint):
    packed, plain = tmp_path / "packed.pt", tmp_path / "plain.pt"
    base = ["sparsify", f"model={trained_checkpoint}", "sparsity=0.5"]
    assert cli(*base, f"out={packed}", cwd=tmp_path).returncode == 0
    assert cli(*base, f"out={plain}", "compress=False", cwd=tmp_path).returncode == 0
    with zipfile.ZipFile(packed) as a, zipfile.ZipFile(plain) as b:
        assert {e.compress_type for e in a.infolist()} == {zipfile.ZIP_DEFLATED}
        assert {e.compress_type for e in b.infolist()} == {zipfile.ZIP_STORED}
    assert packed.stat().st_size < 0.8 * plain.stat().st_size
    one, two = (torch.load(p, map_location="cpu", weights_only=False)["model"].state_dict() for p in (packed, plain))
    assert all(torch.equal(one[k], two[k]) for k in one)  # compression changes the file, not a single value
    out = cli("report", f"model={packed}", cwd=tmp_path)
    assert out.returncode == 0 and f"File: {packed.stat().st_size / 1e6:.2f} MB (zip entries DEFLATE" in out.stdout + out.stderr


def _rules_file(folder: Path, text: str) -> Path:
    path = folder / "rules.yaml"
    path.write_text(text)
    return path


NO_PRUNABLE = {
    "protect-all": "rules:\n  - {family: all, ratio: 0, classes: ['*'], protect: true}\n",
    "no-class": "rules:\n  - {family: x, ratio: 0.3, classes: [NoSuchBlock]}\n",
    "ratio-0": "rules:\n  - {family: x, ratio: 0.0, classes: [Conv]}\n  - {family: y, ratio: 0, classes: ['*']}\n",
    "no-layer": "rules:\n  - {family: x, ratio: 0.3, classes: ['*'], layers: [999]}\n",
}


@pytest.mark.parametrize("case", NO_PRUNABLE)
def test_rules_that_leave_nothing_to_prune_are_refused(tmp_path, trained_checkpoint, case, monkeypatch, capfd):
    rules = _rules_file(tmp_path, NO_PRUNABLE[case])
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    line = refused_in_process(monkeypatch, capfd, "sparsify", f"model={trained_checkpoint}", "sparsity=0.3",
                              f"rules={rules}", f"project={tmp_path / 'runs'}")
    assert "leave no prunable weight" in line
    assert tree(tmp_path) == before and not (tmp_path / "runs").exists()


def _edited_checkpoint(source: Path, target: Path, edit) -> Path:
    ckpt = torch.load(source, map_location="cpu", weights_only=False)
    edit(ckpt)
    torch.save(ckpt, target)
    return target


@pytest.mark.parametrize("where", ["model.23.cv2.0.0.conv.weight", "model.0.bn.running_var"])
def test_nan_anywhere_in_the_model_is_refused(tmp_path, trained_checkpoint, where, monkeypatch, capfd):
    """A NaN in a protected head weight or a BatchNorm buffer is refused with its name (not only in prunable weights)."""

    def poison(ckpt):
        for net in (ckpt["model"], ckpt.get("ema")):
            if net is not None:
                {**dict(net.named_parameters()), **dict(net.named_buffers())}[where].data.view(-1)[0] = float("nan")

    model = _edited_checkpoint(trained_checkpoint, tmp_path / "nan.pt", poison)
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    line = refused_in_process(monkeypatch, capfd, "sparsify", f"model={model}", "sparsity=0.3",
                              f"project={tmp_path / 'runs'}")
    assert where in line and "NaN" in line
    assert tree(tmp_path) == before


def test_damaged_and_foreign_checkpoints_are_refused(tmp_path, trained_checkpoint, monkeypatch, capfd):
    flipped = tmp_path / "flipped.pt"
    raw = bytearray(trained_checkpoint.read_bytes())
    with zipfile.ZipFile(trained_checkpoint) as archive:
        entry = max(archive.infolist(), key=lambda e: e.file_size)
    raw[entry.header_offset + 200] ^= 0xFF  # inside the largest tensor's data: the zip still opens
    flipped.write_bytes(bytes(raw))
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(trained_checkpoint, map_location="cpu", weights_only=False)["model"], bare)
    before = tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    for model, message in ((flipped, "CRC"), (bare, "not an Ultralytics checkpoint")):
        assert message in refused_in_process(monkeypatch, capfd, "sparsify", f"model={model}", "sparsity=0.1",
                                             f"project={tmp_path / 'runs'}")
    assert tree(tmp_path) == before


def test_bad_output_locations_are_refused_before_anything_is_written(tmp_path, trained_checkpoint, monkeypatch, capfd):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    (tmp_path / "x-report.json").mkdir()  # a report path that is a folder: the checkpoint must not be written first
    long_model = tmp_path / f"{'m' * 250}.pt"  # fits, but its output name <stem>-sparse.pt does not
    shutil.copy(trained_checkpoint, long_model)
    before = tree(tmp_path)
    cases = [
        ([f"model={trained_checkpoint}", f"project={a_file}"], "is a file, not a folder"),
        ([f"model={trained_checkpoint}", f"out={tmp_path / 'x.pt'}"], "already exists"),
        ([f"model={long_model}", f"project={tmp_path / 'runs'}"], "longer than this file system allows"),
        ([f"model={tmp_path / ('n' * 300)}.pt", f"project={tmp_path / 'runs'}"], "cannot be read"),
        ([f"model={trained_checkpoint}", f"rules={tmp_path / ('r' * 300)}.yaml", f"project={tmp_path / 'runs'}"], "cannot be read"),
    ]
    monkeypatch.chdir(tmp_path)
    for args, message in cases:
        assert message in refused_in_process(monkeypatch, capfd, "sparsify", *args, "sparsity=0.1"), args
    assert tree(tmp_path) == before and not (tmp_path / "runs").exists() and not (tmp_path / "x.pt").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permission bits do not bind root")
def test_unreadable_rules_and_read_only_folders_are_refused(tmp_path, trained_checkpoint):
    rules = _rules_file(tmp_path, "rules:\n  - {family: x, ratio: 0.3, classes: [Conv]}\n")
    rules.chmod(0)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        for args, message in (([f"rules={rules}", f"project={tmp_path / 'runs'}"], "cannot be read"),
                              ([f"out={locked / 'a.pt'}"], "cannot write"), ([f"project={locked}"], "cannot write")):
            out = cli("sparsify", f"model={trained_checkpoint}", "sparsity=0.1", *args, cwd=tmp_path)
            assert message in process_error_line(out), args
        assert not any(locked.iterdir()) and not (tmp_path / "runs").exists()
    finally:
        locked.chmod(0o755)
        rules.chmod(0o644)


def test_a_failed_write_leaves_nothing_behind(tmp_path, trained_checkpoint):
    """An OS error while the outputs are written (a full disk, say) is one line, and the run's files are removed."""
    fail = (
        "import ultra_sparse.checkpoint as c, ultra_sparse.commands.common as m; w = c.atomic_write_bytes\n"
        "def f(path, *a, **k):\n    if str(path).endswith('.md'): raise OSError(28, 'No space left on device')\n"
        "    return w(path, *a, **k)\n"
        "c.atomic_write_bytes = m.atomic_write_bytes = f\nfrom ultra_sparse.cli import entrypoint; entrypoint()"
    )
    out = cli("sparsify", f"model={trained_checkpoint}", "sparsity=0.1", f"project={tmp_path / 'runs'}", cwd=tmp_path,
              prefix=[sys.executable, "-c", fail])
    assert "No space left on device" in process_error_line(out)
    assert not [p for p in (tmp_path / "runs").rglob("*")]


def test_rules_are_recorded_as_parsed_rules(tmp_path, trained_checkpoint):
    """A rules file given by a relative path is recorded as its content: report works from any folder."""
    sub = tmp_path / "here"
    sub.mkdir()
    _rules_file(sub, "rules:\n  - {family: head, ratio: 0, classes: [Detect], protect: true}\n"
                     "  - {family: everything, ratio: 0.3, classes: ['*']}\n")
    out = cli("sparsify", f"model={trained_checkpoint}", "rules=rules.yaml", f"out={tmp_path / 's.pt'}", cwd=sub)
    assert out.returncode == 0, out.stderr[-2000:]
    elsewhere = cli("report", f"model={tmp_path / 's.pt'}", cwd=tmp_path)
    assert elsewhere.returncode == 0, elsewhere.stderr[-2000:]
    assert "| everything | " in elsewhere.stdout + elsewhere.stderr
    from ultra_sparse.rules import load_rules, rules_as_dict

    recorded = torch.load(tmp_path / "s.pt", map_location="cpu", weights_only=False)["ultra_sparse"]["config"]["rules"]
    assert recorded == rules_as_dict(sub / "rules.yaml") | {"name": "rules.yaml"}
    assert load_rules(recorded).ratios == {"head": 0.0, "everything": 0.3}


def test_recorded_rules_reads_old_forms():
    from ultra_sparse.metadata import SparseMetadata, recorded_rules
    from ultra_sparse.rules import rules_as_dict

    def recorded(ckpt):
        return recorded_rules(SparseMetadata.from_ckpt(ckpt))

    assert recorded({"ultra_sparse": {"config": {"rules": "tokenc3_lsnet"}}}) == "tokenc3_lsnet"
    assert recorded({"ultra_sparse": {"config": {"rules": "gone/rules.yaml"}}}) == "default"
    parsed = rules_as_dict("tokenc3_lsnet")
    assert recorded({"ultra_sparse": {"config": {"rules": parsed}}}) == parsed
