"""Sparse training end to end on the synthetic dataset (tiny runs, CPU): exact zeros everywhere, resume, fine-tune.

Marked ``integration`` so CI can run just these against another Ultralytics version.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from ultra_sparse.metadata import METADATA_KEY
from ultra_sparse.config import SPARSITY_KEYS
from ultra_sparse.trainer import SparseDetectionTrainer
from ultra_sparse.methods.state import unpack_mask

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)


def _train(model, data, project, name, trainer=None, **kwargs):
    """Train ``model`` (a YOLO-like object) and return it; outputs go under ``project/name``."""
    model.train(data=str(data), project=str(project), name=name, trainer=trainer, **{**COMMON, **kwargs})
    return model


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _masks(ckpt: dict) -> dict[str, torch.Tensor]:
    return {name: unpack_mask(*packed) for name, packed in ckpt[METADATA_KEY]["masks"].items()}


def _assert_masked(net: torch.nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Assert every masked weight of ``net`` is exactly zero; return the sparsity over the masked weights."""
    params = dict(net.named_parameters())
    zeros = total = 0
    for name, mask in masks.items():
        weight = params[name].detach().float().cpu()
        assert not weight[~mask].any(), name
        zeros, total = zeros + int((weight == 0).sum()), total + weight.numel()
    return zeros / total


def _nets(ckpt: dict) -> list[torch.nn.Module]:
    return [n for n in (ckpt.get("model"), ckpt.get("ema")) if n is not None]


def _csv_column(run: Path, column: str) -> list[float]:
    lines = (run / "results.csv").read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    return [float(line.split(",")[header.index(column)]) for line in lines[1:]]


@pytest.fixture(scope="module")
def start(trained_checkpoint, tmp_path_factory) -> Path:
    """A private copy of the trained checkpoint."""
    path = tmp_path_factory.mktemp("start") / "best.pt"
    shutil.copy(trained_checkpoint, path)
    return path


@pytest.fixture(scope="module")
def gradual(start, synthetic_data, tmp_path_factory):
    """2 epochs, SGD, gradual to 50% (ramp ends at epoch 2), accumulation 2, a checkpoint every epoch."""
    from ultra_sparse import SparseYOLO

    project = tmp_path_factory.mktemp("gradual")
    model = _train(
        SparseYOLO(str(start)), synthetic_data, project, "run", epochs=2, optimizer="SGD", nbs=16,
        sparsity=0.5, schedule="gradual", prune_end=2, save_period=1,
    )
    return model, project / "run"


def test_gradual_csv_and_console_sparsity(gradual):
    model, run = gradual
    assert _csv_column(run, "metrics/sparsity") == pytest.approx([0.4375, 0.5], abs=1e-5)
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert [h.strip() for h in header if "sparsity" in h] == ["metrics/sparsity"]  # one column, plotted as a metric


def test_gradual_every_checkpoint_exact(gradual):
    model, run = gradual
    weights = run / "weights"
    expected = {"epoch0.pt": 0.4375, "epoch1.pt": 0.5, "last.pt": 0.5, "best.pt": 0.5}
    previous = None
    for name, target in expected.items():
        ckpt = _load(weights / name)
        assert not SPARSITY_KEYS & set(ckpt["train_args"]), "sparsity keys must stay out of train_args"
        masks = _masks(ckpt)
        assert sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()) == pytest.approx(target, abs=1e-5)
        for net in _nets(ckpt):
            assert _assert_masked(net, masks) >= target - 1e-5
        if previous is not None:  # zeros never decrease
            assert all(not (masks[n] & ~previous[n]).any() for n in masks)
        previous = masks
    assert _load(weights / "last.pt")["optimizer"] is None  # strip_optimizer ran and kept the key


def test_gradual_in_memory_model_ema_and_optimizer_state(gradual):
    model, _ = gradual
    trainer = model.trainer
    masks = {n: m.cpu() for n, m in trainer.sparse.masks.items()}
    _assert_masked(trainer.model, masks)
    _assert_masked(trainer.ema.ema, masks)
    params = dict(trainer.model.named_parameters())
    for name, mask in masks.items():  # gradients are masked, so momentum never refills pruned positions
        for value in trainer.optimizer.state.get(params[name], {}).values():
            if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                assert not value.cpu()[~mask].any(), name


def test_sparse_checkpoint_loads_in_plain_ultralytics(gradual):
    from ultralytics import YOLO

    _, run = gradual
    model = YOLO(str(run / "weights" / "best.pt"))
    assert model.ckpt[METADATA_KEY]["sparsity"] == pytest.approx(0.5, abs=1e-5)


def _resumable_copy(run: Path, folder: Path) -> Path:
    """epoch0.pt of ``run`` as last.pt of a new run folder (so a resume writes there, not into ``run``)."""
    folder.mkdir(parents=True)
    ckpt = _load(run / "weights" / "epoch0.pt")
    ckpt["train_args"] = {**ckpt["train_args"], "save_dir": str(folder), "project": str(folder.parent), "name": folder.name}
    (folder / "weights").mkdir()
    torch.save(ckpt, folder / "weights" / "last.pt")
    return folder / "weights" / "last.pt"


def test_resume_keeps_masks_and_schedule_position(gradual, tmp_path):
    from ultra_sparse import SparseYOLO

    _, run = gradual
    last = _resumable_copy(run, tmp_path / "resumed")
    seen = {}

    def capture(trainer):
        seen.update(masks={n: m.clone().cpu() for n, m in trainer.sparse.masks.items()}, t=trainer.sparse.schedule.last_epoch)

    model = SparseYOLO(str(last))
    model.add_callback("on_train_start", capture)
    model.train(resume=True)
    start_masks = _masks(_load(run / "weights" / "epoch0.pt"))
    assert seen["t"] == 1 and all(torch.equal(seen["masks"][n], start_masks[n]) for n in start_masks)
    assert _csv_column(tmp_path / "resumed", "metrics/sparsity")[-1] == pytest.approx(0.5, abs=1e-5)
    _assert_masked(_load(tmp_path / "resumed" / "weights" / "last.pt")["model"], model.trainer.sparse.masks)


def test_plain_ultralytics_resumes_a_sparse_run(gradual, tmp_path):
    from ultralytics import YOLO

    _, run = gradual
    last = _resumable_copy(run, tmp_path / "plain")
    YOLO(str(last)).train(resume=True)
    epochs = _csv_column(tmp_path / "plain", "epoch")
    assert epochs == [2.0]  # went on from epoch0.pt to the run's last epoch, no restart
    resumed = _load(tmp_path / "plain" / "weights" / "last.pt")
    assert resumed["epoch"] == -1  # the run finished (Ultralytics marks a stripped final checkpoint so)
    shapes = {n: p.shape for n, p in _load(run / "weights" / "last.pt")["model"].named_parameters()}
    assert {n: p.shape for n, p in resumed["model"].named_parameters()} == shapes


def test_finetune_with_mask_from_sparse_checkpoint_via_cli(gradual, synthetic_data, tmp_path):
    from ultra_sparse.cli import main

    _, run = gradual
    sparse = _load(run / "weights" / "best.pt")
    start_zeros = {n: ~m for n, m in _masks(sparse).items()}
    argv = [f"model={run / 'weights' / 'best.pt'}", f"data={synthetic_data}", "epochs=1", f"project={tmp_path}", "name=ft"]
    assert main(["train", *argv, *[f"{k}={v}" for k, v in COMMON.items()], "optimizer=SGD"]) == 0
    out = _load(tmp_path / "ft" / "weights" / "last.pt")
    assert out[METADATA_KEY]["config"]["schedule"] == "oneshot"
    masks = _masks(out)
    assert all(torch.equal(~masks[n], start_zeros[n]) for n in start_zeros)  # mask == the checkpoint's zeros
    _assert_masked(out["model"], masks)


def test_finetune_with_rules_but_no_sparsity_keeps_the_checkpoint_zeros(start, synthetic_data, tmp_path):
    """rules= alone must not prune a sparse start up to the rule ratios as written (they ask for more than 5%)."""
    from ultra_sparse.cli import main

    sparse = tmp_path / "s5.pt"
    assert main(["sparsify", f"model={start}", "sparsity=0.05", "rules=tokenc3_lsnet", f"out={sparse}"]) == 0
    argv = [f"model={sparse}", f"data={synthetic_data}", "epochs=1", "rules=tokenc3_lsnet", f"project={tmp_path}", "name=ft"]
    assert main(["train", *argv, *[f"{k}={v}" for k, v in COMMON.items()], "optimizer=SGD"]) == 0
    out = _load(tmp_path / "ft" / "weights" / "last.pt")
    assert out[METADATA_KEY]["sparsity"] == pytest.approx(0.05, abs=1e-5)
    assert _csv_column(tmp_path / "ft", "metrics/sparsity") == pytest.approx([0.05], abs=1e-5)


def test_adamw_oneshot_with_yolo_trainer_argument(start, synthetic_data, tmp_path):
    from ultralytics import YOLO

    model = _train(
        YOLO(str(start)), synthetic_data, tmp_path, "adamw", trainer=SparseDetectionTrainer, epochs=1,
        optimizer="AdamW", sparsity=0.3, schedule="oneshot",
    )
    masks = {n: m.cpu() for n, m in model.trainer.sparse.masks.items()}
    ckpt = _load(tmp_path / "adamw" / "weights" / "last.pt")
    assert _csv_column(tmp_path / "adamw", "metrics/sparsity") == pytest.approx([0.3], abs=1e-5)
    _assert_masked(ckpt["model"], masks)
    params = dict(model.trainer.model.named_parameters())
    for name, mask in masks.items():
        state = model.trainer.optimizer.state.get(params[name], {})
        assert not any(v.cpu()[~mask].any() for v in state.values() if v.shape == mask.shape), name


def test_musgd_dense_updates_are_masked(start, synthetic_data, tmp_path):
    pytest.importorskip("ultralytics.optim", reason="MuSGD arrived after ultralytics 8.3")
    from ultra_sparse import SparseYOLO

    model = _train(SparseYOLO(str(start)), synthetic_data, tmp_path, "musgd", epochs=1, optimizer="MuSGD", sparsity=0.3, schedule="oneshot")
    assert type(model.trainer.optimizer).__name__ == "MuSGD"
    _assert_masked(_load(tmp_path / "musgd" / "weights" / "last.pt")["model"], {n: m.cpu() for n, m in model.trainer.sparse.masks.items()})


def test_sparsity_zero_trains_like_plain_ultralytics(start, synthetic_data, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse import SparseYOLO

    _train(YOLO(str(start)), synthetic_data, tmp_path, "plain", epochs=1, optimizer="SGD")
    _train(SparseYOLO(str(start)), synthetic_data, tmp_path, "zero", epochs=1, optimizer="SGD", sparsity=0.0)
    for column in ("train/box_loss", "train/cls_loss", "train/dfl_loss", "val/box_loss"):
        assert _csv_column(tmp_path / "zero", column) == _csv_column(tmp_path / "plain", column)


def test_callbacks_keep_zeros_with_a_plain_trainer(start, synthetic_data, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse.callbacks import add_sparse_callbacks

    model = YOLO(str(start))
    callbacks = add_sparse_callbacks(model, sparsity=0.3, schedule="oneshot")
    _train(model, synthetic_data, tmp_path, "cb", epochs=1, optimizer="AdamW")
    masks = {n: m.cpu() for n, m in callbacks.sparse.masks.items()}
    assert _assert_masked(_load(tmp_path / "cb" / "weights" / "last.pt")["model"], masks) >= 0.3 - 1e-5


def test_ddp_round_trip_of_sparsity_keys(start, synthetic_data, tmp_path, monkeypatch):
    import importlib

    from ultralytics.utils import DEFAULT_CFG_DICT

    overrides = dict(model=str(start), data=str(synthetic_data), epochs=1, project=str(tmp_path), name="ddp", **COMMON)
    trainer = SparseDetectionTrainer(overrides={**overrides, "sparsity": 0.4, "rules": "default", "prune_end": 1})
    assert not SPARSITY_KEYS & set(vars(trainer.args))
    monkeypatch.setattr(SparseDetectionTrainer, "_launches_ddp", lambda self: True)
    with trainer._ddp_args():
        state_args = dict(vars(trainer.args))  # what generate_ddp_file hands to every worker
    assert not SPARSITY_KEYS & set(vars(trainer.args))
    module = importlib.import_module(type(trainer).__module__)  # workers import the class by module path
    worker = getattr(module, type(trainer).__name__)(cfg={**DEFAULT_CFG_DICT, "save_dir": ""}, overrides=state_args)
    assert worker.sparsity_config == trainer.sparsity_config


def test_user_errors(start, synthetic_data):
    from ultra_sparse import SparseYOLO

    with pytest.raises(SyntaxError, match="epochs"):  # Ultralytics' own check and suggestion for other keys
        SparseYOLO(str(start)).train(data=str(synthetic_data), epochz=1, sparsity=0.5, **COMMON)
    with pytest.raises(ValueError, match="sparsity"):
        SparseYOLO(str(start)).train(data=str(synthetic_data), sparsity=1.5, **COMMON)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP training needs CUDA")
def test_amp_keeps_zeros(start, synthetic_data, tmp_path):
    from ultra_sparse import SparseYOLO

    model = _train(SparseYOLO(str(start)), synthetic_data, tmp_path, "amp", epochs=1, sparsity=0.5, schedule="oneshot", **{"amp": True, "device": "0"})
    _assert_masked(_load(tmp_path / "amp" / "weights" / "last.pt")["model"], {n: m.cpu() for n, m in model.trainer.sparse.masks.items()})


def _batchnorm_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().float().clone()
        for name, value in net.state_dict().items()
        if name.endswith(("running_mean", "running_var", "bn.weight", "bn.bias"))
    }


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_freeze_bn_keeps_the_running_statistics_and_trains_the_rest(start, synthetic_data, tmp_path, freeze_bn):
    from ultra_sparse import SparseYOLO

    before = _batchnorm_state(_load(start)["model"])
    _train(SparseYOLO(str(start)), synthetic_data, tmp_path, "run", epochs=1, optimizer="SGD", freeze_bn=freeze_bn)
    ckpt = _load(tmp_path / "run" / "weights" / "last.pt")
    stats = [n for n in before if n.endswith(("running_mean", "running_var"))]
    affine = [n for n in before if n.endswith(("bn.weight", "bn.bias"))]
    for net in _nets(ckpt):
        after = _batchnorm_state(net)
        same_stats = [torch.equal(before[n], after[n]) for n in stats]
        assert all(same_stats) if freeze_bn else not any(same_stats)
        assert not all(torch.equal(before[n], after[n]) for n in affine)  # scale and shift train either way


def test_freeze_bn_given_again_holds_through_a_resume(gradual, tmp_path):
    from ultra_sparse import SparseYOLO

    _, run = gradual
    last = _resumable_copy(run, tmp_path / "resumed")
    start = _batchnorm_state(_load(last)["ema"])
    SparseYOLO(str(last)).train(resume=True, freeze_bn=True)
    after = _batchnorm_state(_load(tmp_path / "resumed" / "weights" / "last.pt")["model"])  # the stripped EMA
    stats = [n for n in start if n.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(start[n], after[n]) for n in stats)


def test_freeze_bn_round_trips_to_ddp_workers(start, synthetic_data, tmp_path, monkeypatch):
    import importlib

    from ultralytics.utils import DEFAULT_CFG_DICT

    overrides = dict(model=str(start), data=str(synthetic_data), epochs=1, project=str(tmp_path), name="ddp", **COMMON)
    trainer = SparseDetectionTrainer(overrides={**overrides, "freeze_bn": True})
    monkeypatch.setattr(SparseDetectionTrainer, "_launches_ddp", lambda self: True)
    with trainer._ddp_args():
        state_args = dict(vars(trainer.args))
    assert "freeze_bn" not in vars(trainer.args)
    module = importlib.import_module(type(trainer).__module__)
    worker = getattr(module, type(trainer).__name__)(cfg={**DEFAULT_CFG_DICT, "save_dir": ""}, overrides=state_args)
    assert worker.freeze_bn is True


def test_freeze_bn_must_be_a_boolean(start, synthetic_data, tmp_path):
    from ultra_sparse import SparseYOLO

    with pytest.raises(TypeError, match="freeze_bn='yes' must be True or False"):
        SparseYOLO(str(start)).train(data=str(synthetic_data), project=str(tmp_path), freeze_bn="yes", **COMMON)
    assert not any(tmp_path.iterdir())


def test_freeze_bn_needs_a_checkpoint(synthetic_data, tmp_path):
    from ultra_sparse import SparseYOLO

    with pytest.raises(ValueError, match="model=yolo11n.yaml has none: start from a .pt"):
        SparseYOLO("yolo11n.yaml").train(data=str(synthetic_data), project=str(tmp_path), freeze_bn=True, **COMMON)
    assert not any(tmp_path.iterdir())
