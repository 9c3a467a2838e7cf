"""Channel pruning while training (``method=channel`` in ``ultra-sparse train``): masks that equal removal, a ramp
that only grows, and a run whose last.pt and best.pt come out smaller, in stock classes."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ultralytics import YOLO

from ultra_sparse import SparsityConfig
from ultra_sparse.methods.channel import ChannelTraining
from ultra_sparse.metadata import METADATA_KEY
from ultra_sparse.training.start import decide_start
from ultra_sparse.prune.channel import plan_channels, remove_channels
from ultra_sparse.prune.channel_masks import channel_masks
from ultra_sparse.prune.unstructured import apply_masks
from ultra_sparse.rules import assign_families, load_rules

COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)


def _net(cfg: str = "yolov8n.yaml") -> torch.nn.Module:
    torch.manual_seed(0)
    net = YOLO(cfg).model.eval()
    for m in net.modules():  # non-trivial BatchNorm statistics, so that zeroing a channel is a visible change
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolov9t.yaml", "yolo11n.yaml"])
def test_masked_network_computes_what_the_pruned_network_computes(cfg):
    net = _net(cfg)
    plan = plan_channels(net, assign_families(net, load_rules()), SparsityConfig(method="channel", flops=0.4), 64)
    masked = copy.deepcopy(net)
    apply_masks(masked, channel_masks(masked, plan.remove))
    pruned = remove_channels(copy.deepcopy(net), plan.remove)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        dense_out, masked_out, pruned_out = net(x)[0], masked(x)[0], pruned(x)[0]
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    assert not torch.allclose(masked_out, dense_out, atol=1e-3)  # the masks change the network ...
    torch.testing.assert_close(pruned_out, masked_out, atol=1e-4, rtol=1e-4)  # ... exactly as removal does


def test_masks_of_an_empty_removal_change_nothing():
    net = _net()
    assert channel_masks(net, {}) == {}
    with pytest.raises(ValueError, match="model.99"):
        channel_masks(net, {("model.99.conv", "out"): [0]})


def test_ramp_only_grows_and_reaches_the_target():
    net = _net().train()
    state = ChannelTraining(net, SparsityConfig(method="channel", flops=0.4), epochs=3, imgsz=64)
    assert state.schedule.final == pytest.approx(0.4) and state.masks == {} and not state.reached(net)
    seen = []
    for t in (0.5, 1.0, 1.5, 2.0):
        state.prune(net, state.schedule.at(t))
        state.apply(net)
        seen.append({k: set(v) for k, v in state.removal.items()})
    for earlier, later in zip(seen, seen[1:]):
        assert all(idx <= later.get(k, set()) for k, idx in earlier.items())  # zeroed channels stay zeroed
    assert state.reached(net) and state.estimate["flops"] == pytest.approx(0.4, abs=0.03)
    params = dict(net.named_parameters())
    assert all(not params[n].detach()[~m].any() for n, m in state.masks.items())
    assert not state.prune(net, 0.4)  # planned already: nothing new

    restored = ChannelTraining(_net().train(), SparsityConfig(method="channel", flops=0.4), epochs=3, imgsz=64)
    restored.load_state_dict(state.state_dict())
    assert restored.removal == state.removal and restored.planned == state.planned
    assert all(torch.equal(restored.masks[n], m) for n, m in state.masks.items())


def test_channel_training_refuses_what_it_cannot_do(trained_checkpoint):
    from ultra_sparse.callbacks import add_sparse_callbacks

    net = _net()
    with pytest.raises(ValueError, match="'ultra-sparse train'"):
        add_sparse_callbacks(YOLO("yolov8n.yaml"), method="channel", flops=0.3)
    with pytest.raises(ValueError, match="out of reach"):
        decide_start(net, {"method": "channel", "flops": 0.95}, None, epochs=3, imgsz=64)
    with pytest.raises(ValueError, match="taylor ranks whole channels"):  # element masks have no taylor in training
        decide_start(net, {"importance": "taylor", "sparsity": 0.3}, None, epochs=3, imgsz=64)
    without = ChannelTraining(net, SparsityConfig(method="channel", flops=0.3, importance="taylor"), epochs=3, imgsz=64)
    without.check_reachable(net)  # counting needs no ranking ...
    with pytest.raises(ValueError, match="pass batches="):
        without.prune(net, 0.3)  # ... a step does
    sparse = copy.deepcopy(net)
    with torch.no_grad():
        for module in sparse.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight[module.weight.abs() < module.weight.abs().median()] = 0  # half of every weight
    with pytest.raises(ValueError, match="starts from a dense model"):
        decide_start(sparse, {"method": "channel", "flops": 0.3}, None, epochs=3, imgsz=64)


def test_taylor_ranks_channels_by_the_loss_on_the_calibration_batches(synthetic_data):
    from ultra_sparse.calibration import calibration_batches

    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=4, n_batches=1))
    asked = []

    def provide():
        asked.append(len(batches))
        return batches

    net, twin = _net().train(), _net().train()
    taylor = ChannelTraining(net, SparsityConfig(method="channel", flops=0.3, importance="taylor"), 3, 64, None, provide)
    l1 = ChannelTraining(twin, SparsityConfig(method="channel", flops=0.3), 3, 64)
    asked.clear()
    assert taylor.prune(net, 0.3) and l1.prune(twin, 0.3)
    assert asked == [1]  # the plan of the step ranked on the batches ...
    assert taylor.removal != l1.removal  # ... and they, not the magnitudes, chose the channels
    assert taylor.estimate["flops"] == pytest.approx(0.3, abs=0.03)
    assert all(not p.grad.any() for p in net.parameters() if p.grad is not None)  # the network itself kept no gradient


@pytest.fixture(scope="module")
def channel_run(trained_checkpoint, synthetic_data, tmp_path_factory):
    """3 epochs from the trained yolo11n, 40% of GFLOPs removed on a ramp over epochs 0->2, a checkpoint every epoch."""
    from ultra_sparse import SparseYOLO

    project = tmp_path_factory.mktemp("channel_run")
    start = project / "start.pt"
    shutil.copy(trained_checkpoint, start)
    model = SparseYOLO(str(start))
    model.train(data=str(synthetic_data), project=str(project), name="run", epochs=3, optimizer="SGD", nbs=16,
                method="channel", flops=0.4, save_period=1, **COMMON)
    return start, project / "run", model


@pytest.mark.integration
@pytest.mark.slow
def test_channel_run_ends_with_smaller_stock_checkpoints(channel_run):
    start, run, _ = channel_run
    dense = torch.load(start, map_location="cpu", weights_only=False)["model"]
    dense_params = sum(p.numel() for p in dense.parameters())
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "weights" / name, map_location="cpu", weights_only=False)
        section = ckpt[METADATA_KEY]["channel"]
        assert ckpt[METADATA_KEY]["config"]["method"] == "channel"
        assert sum(p.numel() for p in ckpt["model"].parameters()) == section["params"]["after"] < dense_params
        assert section["gflops"]["after"] / section["gflops"]["before"] == pytest.approx(0.6, abs=0.04)
        assert section["achieved"]["flops"] == pytest.approx(0.4, abs=0.04)
    # the zeros were there while training: the epoch checkpoints hold the masked dense network and the state
    mid = torch.load(run / "weights" / "epoch2.pt", map_location="cpu", weights_only=False)
    state = mid[METADATA_KEY]
    from ultra_sparse.methods.state import unpack_mask

    for net in [n for n in (mid.get("model"), mid.get("ema")) if n is not None]:
        params = dict(net.named_parameters())
        for name, packed in state["masks"].items():
            assert not params[name].detach()[~unpack_mask(*packed)].any(), name
    assert sum(p.numel() for p in mid["ema"].parameters()) == dense_params


@pytest.mark.integration
@pytest.mark.slow
def test_channel_pruned_run_output_loads_and_exports_without_ultra_sparse(channel_run, tmp_path):
    _, run, _ = channel_run
    best = tmp_path / "best.pt"
    shutil.copy(run / "weights" / "best.pt", best)
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ultra_sparse', 'torch_pruning'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from ultralytics import YOLO\n"
        f"model = YOLO(r'{best}')\n"
        "model.predict(__import__('numpy').zeros((64, 64, 3), dtype='uint8'), imgsz=64, verbose=False)\n"
        "print(model.export(format='onnx', imgsz=64))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip().splitlines()[-1]).is_file()


@pytest.mark.integration
@pytest.mark.slow
def test_channel_run_csv_and_best_at_the_target(channel_run):
    _, run, _ = channel_run
    lines = (run / "results.csv").read_text().splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    sparsity = [float(line.split(",")[header.index("metrics/sparsity")]) for line in lines[1:]]
    assert sparsity[0] < sparsity[-1] and sparsity == sorted(sparsity)
    last = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=False)["model"]
    best = torch.load(run / "weights" / "best.pt", map_location="cpu", weights_only=False)["model"]
    shapes = lambda net: [tuple(p.shape) for p in net.parameters()]  # noqa: E731
    assert shapes(best) == shapes(last)  # best.pt comes from an epoch at the target, not from the ramp


def _run_to_the_pruning_step(start: Path, data: Path, project: Path, name: str, **keys) -> dict:
    """Train 2 epochs from ``start`` pruning once at the end of the first; what the trainer holds just before the step
    (at the first epoch's last batch end) and right after it (at its epoch end)."""
    from ultra_sparse import SparseYOLO

    seen = {}

    def before(trainer):
        if trainer.epoch == 0:
            seen["before"] = copy.deepcopy(trainer.model.state_dict())
            seen["removed"] = seen.get("removed", []) + [len(trainer.sparse.removal)]

    def after(trainer):
        if trainer.epoch == 0:
            seen["model"] = copy.deepcopy(trainer.model.state_dict())
            seen["ema"] = copy.deepcopy(trainer.ema.ema.state_dict())
            seen["optimizer"] = len(trainer.optimizer.state)
            seen["masks"] = dict(trainer.sparse.masks)

    model = SparseYOLO(str(start))
    model.add_callback("on_train_batch_end", before)
    model.add_callback("on_train_epoch_end", after)
    model.train(data=str(data), project=str(project), name=name, epochs=2, optimizer="SGD", nbs=16, method="channel",
                flops=0.3, **keys, **COMMON)
    return seen


@pytest.mark.integration
def test_a_refitting_run_refits_at_its_pruning_step(trained_checkpoint, synthetic_data, tmp_path):
    from ultra_sparse.calibration import calibration_batches

    start = tmp_path / "start.pt"
    shutil.copy(trained_checkpoint, start)
    plain = _run_to_the_pruning_step(start, synthetic_data, tmp_path, "plain", prune_start=1, prune_end=1,
                                     reconstruct=False)
    refit = _run_to_the_pruning_step(start, synthetic_data, tmp_path, "refit", prune_start=1, prune_end=1,
                                     calib_batches=2)  # the refit is the default of a detection run
    assert plain["masks"].keys() == refit["masks"].keys()  # the same channels were planned on the same weights
    net = torch.load(start, map_location="cpu", weights_only=False)["model"].float()
    refitted = {f"{n}.weight" for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1}
    refitted &= {n for n, mask in refit["masks"].items() if mask.ndim == 4 and not mask.any(dim=0).all()}
    assert len(refitted) > 10  # convolutions that lose input channels
    for name, value in refit["model"].items():
        if name in refitted:
            assert not torch.equal(value, plain["model"][name]), name  # refitted ...
        elif value.is_floating_point():
            assert torch.equal(value, plain["model"][name]), name  # ... and nothing else changed
    for name, mask in refit["masks"].items():
        assert not refit["model"][name][~mask].any()  # the new channels are zeroed after the refit
    assert all(torch.equal(refit["ema"][k], v) for k, v in refit["model"].items())  # the EMA restarts from it
    assert refit["optimizer"] == 0 < plain["optimizer"]  # and so does the momentum

    images = torch.cat([b["img"] for b in calibration_batches(str(synthetic_data), 64, 8, 2)])
    outputs = {}
    for key, state in (("before", refit["before"]), ("refit", refit["model"]), ("plain", plain["model"])):
        net.load_state_dict(state)
        with torch.no_grad():
            outputs[key] = net.eval()(images)[0]
    # the refit was made before the masks: the pruned network stays closer to what the network computed before
    assert (outputs["refit"] - outputs["before"]).norm() < 0.8 * (outputs["plain"] - outputs["before"]).norm()

    ckpt = torch.load(tmp_path / "refit" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt[METADATA_KEY]["config"]["reconstruct"] is True
    assert sum(p.numel() for p in ckpt["model"].parameters()) < sum(p.numel() for p in net.parameters())
    done = ckpt[METADATA_KEY]["channel"]["reconstruction"]  # the report says the run refitted, and how
    assert done["steps"] == 1 and done["images"] == 16 and done["layers"] > 10


@pytest.mark.integration
def test_a_refitting_ramp_steps_at_epoch_ends(trained_checkpoint, synthetic_data, tmp_path):
    start = tmp_path / "start.pt"
    shutil.copy(trained_checkpoint, start)
    batch = _run_to_the_pruning_step(start, synthetic_data, tmp_path, "batch", reconstruct=False)  # ramp over epoch 0
    epoch = _run_to_the_pruning_step(start, synthetic_data, tmp_path, "epoch", calib_batches=1)
    assert batch["removed"][-1] > 0  # without a refit the ramp zeroes channels batch by batch ...
    assert set(epoch["removed"]) == {0} and epoch["masks"]  # ... with one, at the epoch end


@pytest.mark.integration
@pytest.mark.parametrize("reconstruct", [False, True])
def test_channel_pruning_while_distilling(reconstruct, trained_checkpoint, synthetic_data, tmp_path):
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from ultra_sparse import SparseYOLO

    if "distill_model" not in DEFAULT_CFG_DICT:
        pytest.skip("distillation needs ultralytics 8.4.77+")
    start = tmp_path / "start.pt"
    shutil.copy(trained_checkpoint, start)
    SparseYOLO(str(start)).train(
        data=str(synthetic_data), project=str(tmp_path), name="kd", epochs=2, optimizer="SGD", nbs=16, method="channel",
        flops=0.3, prune_start=1, prune_end=1, reconstruct=reconstruct, calib_batches=1, distill_model=str(start),
        **COMMON,
    )
    ckpt = torch.load(tmp_path / "kd" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    dense = torch.load(start, map_location="cpu", weights_only=False)["model"]
    assert sum(p.numel() for p in ckpt["model"].parameters()) < sum(p.numel() for p in dense.parameters())
    assert bool(ckpt[METADATA_KEY]["channel"]["reconstruction"]) is reconstruct


@pytest.mark.parametrize("key, message", [
    ({"reconstruct": True}, "a classify run prunes without it"),
    ({"importance": "taylor"}, "a classify run ranks them by l1, l2 or lamp"),
])
def test_a_classify_run_refuses_what_needs_detection_images(key, message, tmp_path):
    from ultra_sparse.trainer import SparseClassificationTrainer

    overrides = dict(model="yolo11n-cls.yaml", task="classify", data=str(tmp_path / "none"), method="channel",
                     flops=0.3, project=str(tmp_path / "runs"), **key)
    with pytest.raises(ValueError, match=message):
        SparseClassificationTrainer(overrides=overrides)
    assert not (tmp_path / "runs").exists()


def test_the_refit_is_on_by_default_where_the_task_allows_it(trained_checkpoint, synthetic_data, tmp_path):
    from ultra_sparse.synthetic_tasks import make_task_dataset
    from ultra_sparse.trainer import SparseClassificationTrainer, SparseDetectionTrainer

    keys = dict(method="channel", flops=0.3, imgsz=64, project=str(tmp_path / "runs"))
    detect = SparseDetectionTrainer(overrides=dict(model=str(trained_checkpoint), data=str(synthetic_data), **keys))
    folders = make_task_dataset(tmp_path / "cls", "classify", n_train=2, n_val=1)
    classify = SparseClassificationTrainer(overrides=dict(model="yolo11n-cls.yaml", task="classify", data=str(folders),
                                                             **keys))
    assert detect._plan.config.reconstruct is True  # a detection-style run refits at its pruning steps ...
    assert classify._plan.config.reconstruct is False  # ... a classify run has no images to fit on and prunes without
    off = SparseDetectionTrainer(overrides=dict(model=str(trained_checkpoint), data=str(synthetic_data),
                                                reconstruct=False, **keys))
    assert off._plan.config.reconstruct is False


def _broadcast_worker(rank: int, init: str, out: str) -> None:
    """One DDP rank: a network whose weights depend on the rank, then ``broadcast_state``; save what it holds."""
    import torch.distributed as dist

    from ultra_sparse.methods.state import broadcast_state

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        net[1].running_mean.fill_(rank + 1.0)
        broadcast_state(net)
        torch.save(net.state_dict(), f"{out}{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_broadcast_state_gives_every_rank_rank_0s_weights(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_broadcast_worker, args=(f"file://{tmp_path / 'init'}", str(tmp_path / "rank")), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    expected = torch.nn.Conv2d(3, 4, 3).weight
    assert torch.equal(rank0["0.weight"], expected) and torch.equal(rank1["0.weight"], expected)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert torch.equal(rank1["1.running_mean"], torch.ones(4))
