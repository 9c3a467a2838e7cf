"""How a sparse run starts (one decision for trainer and callbacks), what it refuses before writing anything,
distillation with a teacher, atomic checkpoint writes and the end-of-run warning."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from ultralytics.cfg import DEFAULT_CFG_DICT

from ultra_sparse.metadata import METADATA_KEY
from ultra_sparse.methods.state import unpack_mask

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)
PROTECT_ALL = {"rules": [{"family": "head", "ratio": 0.0, "protect": True, "classes": ["*"]}]}
HEAD_PRUNED = {"rules": [{"family": "all", "ratio": 0.3, "classes": ["*"]}]}  # custom rules that prune the head too


def _argv(**keys) -> list[str]:
    return [f"{k}={v}" for k, v in {**COMMON, **keys}.items()]


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _zeros(path: Path) -> dict[str, torch.Tensor]:
    """Exact zeros of every Conv/Linear weight of a checkpoint (DFL's fixed kernel left out)."""
    net = (_load(path).get("ema") or _load(path)["model"]).float()
    return {n: p == 0 for n, p in net.named_parameters() if p.dim() > 1 and ".dfl." not in n and bool((p == 0).any())}


def _sparsify(source: Path, out: Path, *keys: str) -> Path:
    from ultra_sparse.cli import main

    assert main(["sparsify", f"model={source}", f"out={out}", *keys]) == 0
    return out


NEEDS_QAT = pytest.mark.skipif("quantize" not in DEFAULT_CFG_DICT, reason="this ultralytics has no quantize= key")


def _write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def _train(model: Path, data: Path, project: Path, name: str, *keys: str) -> Path:
    from ultra_sparse.cli import main

    assert main(["train", f"model={model}", f"data={data}", "epochs=1", "optimizer=SGD", *_argv(project=project, name=name), *keys]) == 0
    return project / name / "weights"


def _kept_zeros(before: dict[str, torch.Tensor], path: Path) -> None:
    after = _zeros(path)
    for name, zero in before.items():
        assert name in after and torch.equal(after[name] & zero, zero), f"zeros of {name} regrew"


@pytest.fixture(scope="module")
def sparse30(trained_checkpoint, tmp_path_factory) -> Path:
    return _sparsify(trained_checkpoint, tmp_path_factory.mktemp("s30") / "s30.pt", "sparsity=0.3")


@pytest.mark.parametrize(
    "keys, error, match",
    [
        ({"data": None}, ValueError, "data= is required"),
        ({"data": "missing.yaml"}, FileNotFoundError, "missing.yaml"),
        ({"rules": "BROKEN"}, ValueError, "rules file"),
        ({"rules": "PROTECT_ALL", "sparsity": 0.3}, ValueError, "no prunable weight"),
        ({"sparsity": 0.5, "prune_end": 5}, ValueError, "prune_end=5"),
        ({"sparsity": 0.995}, ValueError, "out of reach"),
        ({"method": "channel", "flops": 0.95}, ValueError, "out of reach"),
        ({"resume": True}, ValueError, "nothing to resume"),
        pytest.param({"sparsity": 0.3, "quantize": 8}, ValueError, "quantize=8 .quantization-aware", marks=NEEDS_QAT),
    ],
)
def test_bad_runs_are_refused_before_anything_is_written(trained_checkpoint, synthetic_data, tmp_path, keys, error, match):
    from ultra_sparse.cli import main

    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{family: x, ratio: 2}]")
    files = {"BROKEN": broken, "PROTECT_ALL": _write_yaml(tmp_path / "all.yaml", PROTECT_ALL)}
    keys = {"data": synthetic_data, "epochs": 2, **keys}
    argv = [f"{k}={files.get(v, v)}" for k, v in keys.items() if v is not None]
    project = tmp_path / "runs"
    with pytest.raises(error, match=match):
        main(["train", f"model={trained_checkpoint}", *argv, f"project={project}", *_argv()])
    assert not project.exists()


@NEEDS_QAT
def test_quantization_aware_training_from_a_sparse_checkpoint_is_refused(sparse30, synthetic_data, tmp_path):
    from ultra_sparse.cli import main

    with pytest.raises(ValueError, match="fine-tune without it, then quantize the exported artifact"):
        main(["train", f"model={sparse30}", f"data={synthetic_data}", "quantize=int8", f"project={tmp_path / 'runs'}", *_argv()])
    assert not (tmp_path / "runs").exists()


def test_nan_weight_is_refused_naming_the_parameter(trained_checkpoint, synthetic_data, tmp_path):
    from ultra_sparse.cli import main

    ckpt = _load(trained_checkpoint)
    bad = "model.23.cv2.0.0.conv.weight"  # a protected head weight
    dict(ckpt["model"].named_parameters())[bad].data[0, 0, 0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
        main(["train", f"model={tmp_path / 'nan.pt'}", f"data={synthetic_data}", "sparsity=0.5", f"project={tmp_path / 'runs'}", *_argv()])
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damaged, message", [(False, "do not fit"), (True, "damaged: a stored mask of 24 bits")])
def test_resume_whose_masks_do_not_fit_is_refused_before_writing(trained_checkpoint, tmp_path, damaged, message):
    """A stored shape that its packed bits cannot fill raised a RuntimeError traceback from reshape."""
    from ultra_sparse import SparseYOLO
    from ultra_sparse.methods.state import pack_mask

    ckpt = _load(trained_checkpoint)
    run = tmp_path / "run"
    ckpt.update(epoch=0, optimizer={"state": {}, "param_groups": []})
    ckpt["train_args"] = {**ckpt["train_args"], "epochs": 2, "save_dir": str(run), "project": str(tmp_path), "name": "run"}
    config = {"sparsity": 0.3, "schedule": "oneshot"}
    shape, packed = pack_mask(torch.ones(1, 2, 3, 3, dtype=torch.bool))
    if damaged:
        shape = (16, 3, 3, 3)  # the layer's real shape, with the bits of a smaller mask
    ckpt[METADATA_KEY] = {"config": config, "schedule": {}, "masks": {"model.0.conv.weight": (shape, packed)}}
    (run / "weights").mkdir(parents=True)
    torch.save(ckpt, run / "weights" / "last.pt")
    with pytest.raises(ValueError, match=message):
        SparseYOLO(str(run / "weights" / "last.pt")).train(resume=True)
    assert sorted(p.name for p in run.rglob("*")) == ["last.pt", "weights"]


def test_metadata_marks_a_sparse_start_below_one_percent(trained_checkpoint, synthetic_data, tmp_path):
    sparse = _sparsify(trained_checkpoint, tmp_path / "s05.pt", "sparsity=0.005")
    weights = _train(sparse, synthetic_data, tmp_path, "ft")
    _kept_zeros(_zeros(sparse), weights / "last.pt")
    assert _load(weights / "last.pt")[METADATA_KEY]["sparsity"] == pytest.approx(0.005, abs=1e-6)


def test_zeros_of_a_family_the_rules_protect_do_not_regrow(sparse30, synthetic_data, tmp_path):
    rules = yaml.safe_load((Path(__file__).resolve().parents[1] / "cfg" / "sparsity" / "default.yaml").read_text())
    for rule in rules["rules"]:
        if rule["family"] == "attention":
            rule.update(ratio=0.0, protect=True)
    weights = _train(sparse30, synthetic_data, tmp_path, "ft", f"rules={_write_yaml(tmp_path / 'noattn.yaml', rules)}")
    _kept_zeros(_zeros(sparse30), weights / "last.pt")


def test_rules_recorded_in_the_checkpoint_apply_without_rules(trained_checkpoint, synthetic_data, tmp_path):
    custom = _write_yaml(tmp_path / "custom.yaml", HEAD_PRUNED)
    sparse = _sparsify(trained_checkpoint, tmp_path / "head.pt", "sparsity=0.3", f"rules={custom}")
    before = _zeros(sparse)
    assert any(n.startswith("model.23.") for n in before), "the custom rules prune the head"
    weights = _train(sparse, synthetic_data, tmp_path, "ft")
    _kept_zeros(before, weights / "last.pt")
    meta = _load(weights / "last.pt")[METADATA_KEY]
    assert meta["sparsity"] == pytest.approx(0.3, abs=1e-6)  # counted with the recorded rules, head included


def test_callbacks_start_like_the_trainer(trained_checkpoint, synthetic_data, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse.callbacks import add_sparse_callbacks

    sparse = _sparsify(trained_checkpoint, tmp_path / "s5.pt", "sparsity=0.05", "rules=tokenc3_lsnet")
    model = YOLO(str(sparse))
    callbacks = add_sparse_callbacks(model, rules="tokenc3_lsnet")
    model.train(data=str(synthetic_data), epochs=1, project=str(tmp_path), name="cb", **COMMON)
    assert callbacks.sparse.sparsity(model.trainer.model) == pytest.approx(0.05, abs=1e-6)


def test_a_run_that_stops_below_its_target_warns(trained_checkpoint, synthetic_data, tmp_path, caplog):
    from ultra_sparse import SparseYOLO

    with caplog.at_level(logging.WARNING):
        SparseYOLO(str(trained_checkpoint)).train(
            data=str(synthetic_data), epochs=3, prune_end=3, sparsity=0.5, time=1e-7, project=str(tmp_path), name="t", **COMMON
        )
    assert "below its target" in caplog.text


def test_distillation_masks_the_student_only(sparse30, trained_checkpoint, synthetic_data, tmp_path):
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ultra_sparse import SparseYOLO

    if "distill_model" not in DEFAULT_CFG_DICT:
        with pytest.raises(ValueError, match="distill_model= needs ultralytics"):
            SparseYOLO(str(sparse30)).train(data=str(synthetic_data), distill_model=str(trained_checkpoint), **COMMON)
        return
    teacher = tmp_path / "teacher.pt"
    shutil.copy(trained_checkpoint, teacher)
    teacher_bytes = teacher.read_bytes()
    model = SparseYOLO(str(sparse30))
    model.train(data=str(synthetic_data), epochs=1, distill_model=str(teacher), project=str(tmp_path), name="kd", **COMMON)
    trainer = model.trainer
    assert teacher.read_bytes() == teacher_bytes
    teacher_net = trainer.model.teacher_model
    source = _load(trained_checkpoint)["model"].float().state_dict()
    assert all(torch.equal(v.float().cpu(), source[k].float()) for k, v in teacher_net.state_dict().items() if k in source)
    assert not any(n.startswith(("teacher_model", "student_model")) for n in trainer.sparse.masks)
    for name in ("last.pt", "best.pt"):
        ckpt = _load(tmp_path / "kd" / "weights" / name)
        assert type(ckpt["model"]).__name__ == "DetectionModel"  # the plain student, no teacher
        masks = {n: unpack_mask(*p) for n, p in ckpt[METADATA_KEY]["masks"].items()}
        params = dict(ckpt["model"].named_parameters())
        assert all(not params[n].float()[~m].any() for n, m in masks.items())
        assert ckpt[METADATA_KEY]["sparsity"] == pytest.approx(0.3, abs=1e-6)


def test_a_crash_while_writing_a_checkpoint_leaves_last_pt_whole(sparse30, synthetic_data, tmp_path, monkeypatch):
    from ultra_sparse import SparseYOLO

    class Killed(BaseException):
        pass

    def crash_on_second_epoch(trainer):
        if trainer.epoch == 1:
            def partial_write(self, data):
                with open(self, "wb") as f:
                    f.write(data[: len(data) // 2])
                raise Killed
            monkeypatch.setattr(Path, "write_bytes", partial_write)

    model = SparseYOLO(str(sparse30))
    model.add_callback("on_train_epoch_start", crash_on_second_epoch)
    try:
        model.train(data=str(synthetic_data), epochs=2, project=str(tmp_path), name="k", **COMMON)
    except Killed:
        pass
    monkeypatch.undo()
    last = _load(tmp_path / "k" / "weights" / "last.pt")  # loads: never half written
    assert METADATA_KEY in last


def test_a_crash_while_stripping_at_the_end_leaves_last_and_best_whole(sparse30, synthetic_data, tmp_path, monkeypatch):
    """Ultralytics rewrites last.pt and best.pt in place when it strips them at the end of a run."""
    from ultra_sparse import SparseYOLO

    class Killed(BaseException):
        pass

    save = torch.save

    def killed_while_writing_a_checkpoint(obj, f, *args, **kwargs):
        if isinstance(f, (str, Path)) and Path(f).name in {"last.pt", "best.pt"}:
            Path(f).write_bytes(b"PK\x03\x04 cut short")
            raise Killed
        return save(obj, f, *args, **kwargs)

    model = SparseYOLO(str(sparse30))
    model.add_callback("on_model_save", lambda trainer: monkeypatch.setattr(torch, "save", killed_while_writing_a_checkpoint))
    with pytest.raises(Killed):
        model.train(data=str(synthetic_data), epochs=1, project=str(tmp_path), name="k", **COMMON)
    monkeypatch.undo()
    weights = tmp_path / "k" / "weights"
    for name in ("last.pt", "best.pt"):
        assert METADATA_KEY in _load(weights / name)  # the copy saved after the epoch, whole
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # no staging file left behind


def test_the_end_of_run_files_are_stripped_compressed_and_keep_the_state(sparse30, synthetic_data, tmp_path):
    import zipfile

    weights = _train(sparse30, synthetic_data, tmp_path, "s")
    before = _zeros(sparse30)
    for name in ("last.pt", "best.pt"):
        ckpt = _load(weights / name)
        assert ckpt["optimizer"] is None and ckpt["ema"] is None and ckpt[METADATA_KEY]["sparsity"] == pytest.approx(0.3, abs=1e-6)
        with zipfile.ZipFile(weights / name) as archive:
            assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        _kept_zeros(before, weights / name)
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]


def test_no_epoch_before_the_target_becomes_best():
    """best.pt is the best model AT the target: a denser epoch of the ramp scores higher but must not be kept."""
    from types import SimpleNamespace

    import torch.nn as nn

    from ultra_sparse.trainer import SparseTrainerMixin

    class Stock:  # Ultralytics' validate: keep the highest fitness
        def validate(self):
            if self.best_fitness is None or self.best_fitness < self.score:
                self.best_fitness = self.score
            return {}, self.score

    class Trainer(SparseTrainerMixin, Stock):
        pass

    trainer = Trainer.__new__(Trainer)
    trainer.model, trainer.ema, trainer.best_fitness = nn.Linear(1, 1), None, None
    trainer.sparse = SimpleNamespace(reached=lambda net: False)
    trainer.score = 0.9  # a ramp epoch, below the target
    assert trainer.validate() == ({}, 0.9) and trainer.best_fitness is None
    trainer.sparse = SimpleNamespace(reached=lambda net: True)
    trainer.score = 0.5  # first epoch at the target
    trainer.validate()
    assert trainer.best_fitness == 0.5


def test_callbacks_refuse_keys_the_method_never_trains_with_at_once():
    """add_sparse_callbacks(importance='taylor') was refused only once train() started, after the run folder."""
    from ultralytics import YOLO

    from ultra_sparse import add_sparse_callbacks

    with pytest.raises(ValueError, match="importance=taylor ranks whole channels in training"):
        add_sparse_callbacks(YOLO("yolo11n.yaml"), sparsity=0.3, importance="taylor")
