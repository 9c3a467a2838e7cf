"""Least-squares reconstruction after channel removal (``reconstruct``): exact where the removed channel is redundant,
never worse layer by layer, closer to the dense network end to end, wired into sparsify and refused where it cannot run."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
import torch.nn as nn

from cli_helpers import cli, tree
from ultra_sparse import SparsityConfig, sparsify
from ultra_sparse.prune.channel import plan_channels, remove_channels
from ultra_sparse.prune.channel_masks import channel_masks
from ultra_sparse.prune.reconstruct import reconstruct_layers, reconstruct_masked
from ultra_sparse.prune.unstructured import apply_masks
from ultra_sparse.rules import assign_families, load_rules


def _eval_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(bn.num_features, generator=g))


def test_a_duplicate_channel_is_folded_exactly():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 5, 3, padding=1))
    _eval_bn(dense[1], 1)
    with torch.no_grad():  # channel 3 computes exactly what channel 1 computes
        for p in (dense[0].weight, dense[0].bias, dense[1].weight, dense[1].bias, dense[1].running_mean,
                  dense[1].running_var):
            p[3] = p[1]
    dense.eval()
    removal = {("0", "out"): [3], ("1", "out"): [3], ("3", "in"): [3]}
    images = torch.rand(4, 3, 12, 12)
    pruned = remove_channels(copy.deepcopy(dense), removal).eval()
    with torch.no_grad():
        assert (pruned(images) - dense(images)).abs().max() > 0.1  # its contribution is lost without the refit
    done = reconstruct_layers(dense, pruned, removal, images, damping=0.0)
    with torch.no_grad():
        held_out = torch.rand(2, 3, 12, 12)
        torch.testing.assert_close(pruned(held_out), dense(held_out), atol=1e-4, rtol=1e-4)
    assert done.layers == 1 and done.images == 4 and done.error_after < 1e-5 < done.error_before


def test_a_mask_of_nothing_removed_changes_nothing():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
    pruned = copy.deepcopy(dense)
    done = reconstruct_layers(dense, pruned, {}, torch.rand(2, 3, 8, 8))
    assert done.layers == 0
    for a, b in zip(dense.parameters(), pruned.parameters()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def yolov8n_pair():
    from ultralytics import YOLO

    torch.manual_seed(0)
    dense = YOLO("yolov8n.yaml").model.eval()
    for i, bn in enumerate(m for m in dense.modules() if isinstance(m, nn.BatchNorm2d)):
        _eval_bn(bn, i)
    plan = plan_channels(dense, assign_families(dense, load_rules()), SparsityConfig(method="channel", flops=0.4), 64)
    return dense, plan.remove


def test_every_conv_that_lost_inputs_is_refitted_and_its_error_falls(yolov8n_pair):
    dense, removal = yolov8n_pair
    pruned = remove_channels(copy.deepcopy(dense), removal)
    modules = dict(pruned.named_modules())
    expected = [n for n, kind in removal if kind == "in" and isinstance(modules[n], nn.Conv2d) and modules[n].groups == 1]
    shapes = {n: p.shape for n, p in pruned.named_parameters()}
    done = reconstruct_layers(dense, pruned, removal, torch.rand(4, 3, 64, 64))
    assert done.layers == len(expected) > 10
    assert done.error_after < done.error_before
    assert {n: p.shape for n, p in pruned.named_parameters()} == shapes
    assert not pruned.training


def test_the_refitted_network_is_closer_to_the_dense_one_on_other_images(yolov8n_pair):
    dense, removal = yolov8n_pair
    plain = remove_channels(copy.deepcopy(dense), removal).eval()
    refitted = remove_channels(copy.deepcopy(dense), removal)
    reconstruct_layers(dense, refitted, removal, torch.rand(8, 3, 64, 64))
    held_out = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        target = dense(held_out)[0]
        assert (refitted(held_out)[0] - target).norm() < 0.7 * (plain(held_out)[0] - target).norm()


def test_a_masked_refit_computes_what_the_refitted_smaller_network_computes(yolov8n_pair):
    dense, removal = yolov8n_pair
    images = torch.rand(4, 3, 64, 64)
    smaller = remove_channels(copy.deepcopy(dense), removal)
    reconstruct_layers(dense, smaller, removal, images)
    masked = copy.deepcopy(dense)
    done = reconstruct_masked(masked, removal, images)
    assert done.layers > 10 and done.error_after < done.error_before
    masks = channel_masks(masked, removal)
    apply_masks(masked, masks)
    unrefitted = copy.deepcopy(dense)
    apply_masks(unrefitted, masks)
    held_out = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(masked(held_out)[0], smaller(held_out)[0], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(masked(held_out)[0], unrefitted(held_out)[0], atol=1e-3)
    refitted = {n for n, kind in removal if kind == "in"}
    for name, param in masked.named_parameters():  # layers that lose no inputs keep their weights
        if name.rsplit(".", 1)[0] not in refitted:
            assert torch.equal(param, dict(unrefitted.named_parameters())[name]), name


def test_a_masked_refit_writes_biases_too():
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(), nn.Conv2d(6, 4, 3, padding=1), nn.SiLU(),
                          nn.Conv2d(4, 2, 1))
    removal = {("0", "out"): [1, 4], ("2", "in"): [1, 4], ("2", "out"): [2], ("4", "in"): [2]}
    images = torch.rand(4, 3, 10, 10)
    smaller = remove_channels(copy.deepcopy(dense), removal)
    reconstruct_layers(dense, smaller, removal, images)
    masked = copy.deepcopy(dense)
    assert reconstruct_masked(masked, removal, images).layers == 2
    apply_masks(masked, channel_masks(masked, removal))
    assert not torch.equal(masked[2].bias[[0, 1, 3]], dense[2].bias[[0, 1, 3]])  # the kept biases are refitted
    held_out = torch.rand(2, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(masked(held_out), smaller(held_out), atol=1e-5, rtol=1e-5)


def test_a_masked_refit_of_nothing_changes_nothing(yolov8n_pair):
    dense, _ = yolov8n_pair
    net = copy.deepcopy(dense)
    assert reconstruct_masked(net, {}, torch.rand(2, 3, 64, 64)).layers == 0
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), dense.state_dict().values()))


def test_sparsify_refits_when_given_calibration_batches():
    from ultralytics import YOLO

    def build():  # the same random weights every time, so both runs rank channels alike and make the same plan
        torch.manual_seed(0)
        return YOLO("yolov8n.yaml")

    batches = [{"img": torch.rand(4, 3, 64, 64)}]
    with_data = sparsify(build(), method="channel", flops=0.3, imgsz=64, batches=batches).report
    without = sparsify(build(), method="channel", flops=0.3, imgsz=64).report
    done = with_data["channel"]["reconstruction"]
    assert done["layers"] > 0 and done["images"] == 4 and done["error_after"] < done["error_before"]
    assert with_data["config"]["reconstruct"] is True
    assert without["channel"]["reconstruction"] is None and without["config"]["reconstruct"] is False
    assert with_data["channel"]["params"] == without["channel"]["params"]  # the same plan, only the values differ
    off = sparsify(build(), method="channel", flops=0.3, imgsz=64, batches=batches, reconstruct=False)
    assert off.report["channel"]["reconstruction"] is None


@pytest.mark.parametrize(
    "keys, error, match",
    [
        ({"method": "channel", "flops": 0.3, "reconstruct": True}, ValueError, "needs calibration images"),
        ({"sparsity": 0.3, "reconstruct": True}, ValueError, "needs method=channel"),
        ({"method": "channel", "reconstruct": "yes"}, TypeError, "True or False"),
    ],
)
def test_sparsify_refuses_a_reconstruction_it_cannot_do(keys, error, match):
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    before = copy.deepcopy(model.model.state_dict())
    with pytest.raises(error, match=match):
        sparsify(model, imgsz=64, **keys)
    after = model.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_cli_refits_with_data_and_reports_it(trained_checkpoint, synthetic_data, tmp_path):
    model = tmp_path / "best.pt"
    shutil.copy(trained_checkpoint, model)
    out = cli("sparsify", f"model={model}", "method=channel", "flops=0.3", f"data={synthetic_data}", "imgsz=64",
              "calib_batches=2", "out=pruned.pt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "pruned-report.json").read_text())
    done = report["channel"]["reconstruction"]
    assert done["images"] == 16 and done["layers"] > 0 and done["error_after"] < done["error_before"]
    assert "Refitted" in (tmp_path / "pruned-report.md").read_text()
    ckpt = torch.load(tmp_path / "pruned.pt", map_location="cpu", weights_only=False)
    assert ckpt["ultra_sparse"]["config"]["reconstruct"] is True


def test_cli_refuses_reconstruct_without_data(trained_checkpoint, tmp_path):
    before = tree(tmp_path)
    out = cli("sparsify", f"model={trained_checkpoint}", "method=channel", "flops=0.3", "reconstruct=True",
              f"project={tmp_path / 'runs'}", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "reconstruct=True" in out.stderr.strip().splitlines()[-1]
    assert tree(tmp_path) == before
