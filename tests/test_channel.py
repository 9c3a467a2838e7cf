"""method=channel: the pruned model computes what the dense model computes with the removed channels zeroed.

The reference (as torch.ao's structured-pruning tests check it): in a copy of the dense model, every removed output
channel gets a zero filter and a zero BatchNorm scale and shift, so it outputs exactly 0 (SiLU(0) = 0, max/avg pools
and residual adds of zeros stay 0) and its consumers see zeros there; the pruned model must give the same output.
BatchNorm statistics and scalar gates are randomised first, so that no removed channel is zero by chance and every
branch counts.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import ultra_sparse  # noqa: F401  (registers the project's YAML layers)
from ultra_sparse.config import SparsityConfig
from ultra_sparse.prune.channel import plan_channels, remove_channels
from ultra_sparse.prune.channel_twins import twin_pieces
from ultra_sparse.prune.head_layers import head_hidden_layers
from ultra_sparse.rules import assign_families, load_rules

MODEL_13 = str(Path(__file__).resolve().parents[1] / "cfg" / "models" / "yolov13-tokenc3-lsnet-n.yaml")
CASES = {  # case -> (model, rules, target, split block classes that must lose hidden channels)
    "yolov8n": ("yolov8n.yaml", "default", {"flops": 0.5}, {"C2f"}),
    "yolo11n": ("yolo11n.yaml", "default", {"flops": 0.5}, {"C3k2"}),
    "yolov9t": ("yolov9t.yaml", "default", {"flops": 0.5}, {"RepNCSPELAN4"}),
    "yolov10n": ("yolov10n.yaml", "default", {"flops": 0.5}, {"C2f", "C2fCIB"}),
    "yolo26n": ("yolo26n.yaml", "default", {"flops": 0.5}, {"C3k2"}),  # end-to-end head: same inputs for both branches
    "yolo12n": ("yolo12n.yaml", "default", {"flops": 0.5}, {"C3k2"}),  # area attention loses whole heads
    "yolov13-tokenc3": (MODEL_13, "tokenc3_lsnet", {"sparsity": 0.3}, {"DSC3k2"}),
    # every family at its default ratio: TokenC3 (LSConv inside) and HyperACE (cv1 in thirds) lose channels too
    "yolov13-default": (MODEL_13, "default", {"flops": 0.2}, {"DSC3k2", "TokenC3", "HyperACE"}),
    # the thin_head preset gives the head a ratio: its branches' hidden layers lose channels (one-to-one branches too)
    "yolo26n-head": ("yolo26n.yaml", "thin_head", {"flops": 0.5}, {"C3k2"}),
}


def randomised(name: str) -> nn.Module:
    """A network built from YAML with random BatchNorm statistics and non-zero scalar gates (seeded)."""
    from ultralytics import YOLO

    torch.manual_seed(0)
    net = YOLO(name).model.eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 0:
                p.fill_(0.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    return net


def zeroed(net: nn.Module, plan) -> nn.Module:
    """A copy of ``net`` whose removed output channels output exactly zero."""
    dense = copy.deepcopy(net)
    modules = dict(dense.named_modules())
    with torch.no_grad():
        for (name, kind), idxs in plan.remove.items():
            if kind == "out":
                layer = modules[name]
                layer.weight[idxs] = 0
                if layer.bias is not None:
                    layer.bias[idxs] = 0
    return dense


def first(y):
    return y[0] if isinstance(y, (list, tuple)) else y


@pytest.fixture(scope="module", params=list(CASES))
def pruned_case(request):
    model, rules, target, _ = CASES[request.param]
    net = randomised(model)
    assignment = assign_families(net, load_rules(rules))
    config = SparsityConfig(method="channel", rules=rules if isinstance(rules, str) else "default", **target)
    plan = plan_channels(net, assignment, config, 64)
    pruned = remove_channels(copy.deepcopy(net), plan.remove)
    return request.param, net, plan, pruned


def test_pruned_output_equals_dense_with_removed_channels_zeroed(pruned_case):
    name, net, plan, pruned = pruned_case
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, got, full = first(zeroed(net, plan)(x)), first(pruned(x)), first(net(x))
    assert got.shape == reference.shape
    torch.testing.assert_close(got, reference, atol=2e-4, rtol=1e-5)
    assert (full - got).abs().max() > 1e-2  # channels that mattered were removed: the check can fail


def test_split_blocks_lose_hidden_channels_and_both_forwards_agree(pruned_case):
    name, net, plan, pruned = pruned_case
    dense_blocks = dict(net.named_modules())
    shrunk = set()
    for block_name, block in pruned.named_modules():
        pieces = twin_pieces(block)
        if pieces and hasattr(block, "c") and hasattr(block, "cv1"):
            assert block.cv1.conv.out_channels == pieces * block.c, block_name  # the chunk cuts equal parts of width c
            if block.c < dense_blocks[block_name].c:
                shrunk.add(type(block).__name__)
    assert CASES[name][3] <= shrunk
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        chunked = first(pruned(x))
        split = copy.deepcopy(pruned)
        for m in split.modules():
            if hasattr(m, "forward_split"):
                m.forward = m.forward_split
        torch.testing.assert_close(first(split(x)), chunked, atol=0, rtol=0)


def test_fewer_params_and_gflops_as_counted(pruned_case):
    from ultralytics.utils.torch_utils import get_flops

    name, net, plan, pruned = pruned_case
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in net.parameters())
    dense, after = get_flops(net, 64), get_flops(pruned, 64)
    assert after < dense
    # counted from channel counts as thop counts layers; get_flops also counts what is not a layer (attention's
    # products, which lose terms with the heads: ~1e-4 on yolo12n), the report gives the measured value
    assert 1 - after / dense == pytest.approx(plan.estimate["flops"], abs=5e-4)


def test_blocks_kept_whole_are_named_with_a_reason(pruned_case):
    name, net, plan, pruned = pruned_case
    whole = {w["class"]: w["reason"] for w in plan.whole}
    if name == "yolo11n":
        assert [a["what"] for a in plan.inside if a["class"] == "Attention"] == ["query/key channels per head 32 -> 24"]
        assert "equal parts" in whole["C2PSA"]  # its cv1 halves stay: one feeds attention
    if name == "yolo12n":
        assert {a["what"] for a in plan.inside if a["class"] == "AAttn"} == {"heads 4 -> 3"}
        assert "none at this target" in whole["AAttn"]  # P4's two-head blocks keep both at this target
    if name.startswith("yolov13"):
        assert "AdaHGComputation" in whole and "AAttn" in {*whole, *(a["class"] for a in plan.inside)}
        assert not {"LSConv", "HyperACE", "TokenC3", "LSBlock"} & set(whole)  # pruned inside, every kernel group alike
    params, modules = dict(pruned.named_parameters()), dict(pruned.named_modules())
    for w in plan.whole:  # a block kept whole keeps every weight of its own; a split block's whole cv1 its outputs
        if w["name"].endswith(".cv1"):
            assert modules[w["name"]].conv.out_channels == dict(net.named_modules())[w["name"]].conv.out_channels
        for pname, p in dict(net.named_parameters()).items():
            if pname.startswith(w["name"] + ".") and not w["name"].endswith(".cv1"):
                assert params[pname].shape == p.shape, pname
    for a in plan.inside:  # attention pruned inside: listed apart, its input and output widths kept
        assert a["class"] in ("Attention", "AAttn") and a["name"] not in {w["name"] for w in plan.whole}
        assert modules[a["name"]].qkv.conv.in_channels == dict(net.named_modules())[a["name"]].qkv.conv.in_channels


def test_attention_loses_query_key_channels_in_every_head(pruned_case):
    """C2PSA's Attention: the same number of key channels per head, its scale kept, its input and output whole."""
    name, net, plan, pruned = pruned_case
    dense = dict(net.named_modules())
    attentions = [(n, m) for n, m in pruned.named_modules() if type(m).__name__ == "Attention"]
    if name not in ("yolo11n", "yolo26n"):
        return
    assert attentions
    for layer_name, attn in attentions:
        before = dense[layer_name]
        assert attn.key_dim < before.key_dim and attn.scale == before.scale, layer_name
        assert attn.qkv.conv.out_channels == attn.num_heads * (2 * attn.key_dim + attn.head_dim)
        assert attn.qkv.conv.in_channels == attn.proj.conv.out_channels == before.proj.conv.out_channels
        removed = plan.remove[(f"{layer_name}.qkv.conv", "out")]
        per_head = 2 * before.key_dim + before.head_dim
        counts = [sum(1 for i in removed if i // per_head == h) for h in range(attn.num_heads)]
        assert counts == [2 * (before.key_dim - attn.key_dim)] * attn.num_heads  # q and k alike, no v channel
        assert all(i % per_head < 2 * before.key_dim for i in removed)


def test_a_head_given_a_ratio_loses_hidden_channels_only(pruned_case):
    name, net, plan, pruned = pruned_case
    modules = dict(net.named_modules())
    hidden = {n for n in head_hidden_layers(net) if modules[n].groups == 1}  # a depthwise one follows its inputs
    shrunk = {key[0] for key in plan.remove if key[0] in hidden and key[1] == "out"}
    if name != "yolo26n-head":
        assert not shrunk  # the presets protect the head
        return
    assert {n.split(".")[2] for n in shrunk} >= {"cv2", "cv3", "one2one_cv2", "one2one_cv3"}
    head = pruned.model[-1]
    dense = net.model[-1]
    for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for new, old in zip(getattr(head, branch), getattr(dense, branch)):
            assert new[-1].out_channels == old[-1].out_channels  # the predictions keep their layout


def test_head_keeps_its_own_channels(pruned_case):
    name, net, plan, pruned = pruned_case
    if name == "yolo26n-head":
        return  # its head is given a ratio (the test above)
    head_index = len(net.model) - 1
    dense = dict(net.model[head_index].named_modules())
    for layer_name, layer in pruned.model[head_index].named_modules():
        if not isinstance(layer, nn.Conv2d):
            continue
        full = f"model.{head_index}.{layer_name}"
        ref = dense[layer_name].weight.detach()
        if dense[layer_name].groups > 1 and dense[layer_name].groups == ref.shape[0]:  # depthwise: one filter per input
            ref = ref[[i for i in range(ref.shape[0]) if i not in set(plan.remove.get((full, "out"), ()))]]
        else:
            assert (full, "out") not in plan.remove, full
            ref = ref[:, [i for i in range(ref.shape[1]) if i not in set(plan.remove.get((full, "in"), ()))]]
        assert torch.equal(layer.weight.detach(), ref), full
    assert any(key[0].startswith(f"model.{head_index}.") for key in plan.remove)  # the head's inputs were pruned too
    dfl = getattr(pruned.model[head_index], "dfl", None)
    if dfl is not None and hasattr(dfl, "conv"):
        assert torch.equal(dfl.conv.weight, dense["dfl.conv"].weight)


def test_lsconv_kernel_groups_lose_the_same_channels(pruned_case):
    """SKA shares one kernel among the channels of each group: every group keeps the same number, in order."""
    name, net, plan, pruned = pruned_case
    dense = dict(net.named_modules())
    lsconvs = [(n, m) for n, m in pruned.named_modules() if type(m).__name__ == "LSConv"]
    if not name.startswith("yolov13"):
        assert not lsconvs
        return
    shrunk = 0
    for layer_name, block in lsconvs:
        groups, width = block.lkp.groups, dense[f"{layer_name}.bn"].num_features
        removed = plan.remove.get((f"{layer_name}.bn", "out"), [])
        per_group = [sum(1 for i in removed if i // (width // groups) == g) for g in range(groups)]
        assert len(set(per_group)) == 1, (layer_name, per_group)
        assert block.bn.num_features == block.lkp.cv1.conv.in_channels == width - len(removed)
        assert block.lkp.cv4.out_channels == dense[f"{layer_name}.lkp.cv4"].out_channels  # the kernels stay whole
        shrunk += bool(removed)
    assert shrunk or name == "yolov13-tokenc3"  # at 6%, the -n model's 8-channel groups lose none


def test_area_attention_loses_whole_heads(pruned_case):
    """YOLO12's AAttn: whole heads go (q, k, v, their pe channels and proj columns); head_dim and the widths stay."""
    name, net, plan, pruned = pruned_case
    if name != "yolo12n":
        return
    dense = dict(net.named_modules())
    lost = 0
    for layer_name, attn in pruned.named_modules():
        if type(attn).__name__ != "AAttn":
            continue
        before = dense[layer_name]
        width = attn.num_heads * attn.head_dim
        assert attn.head_dim == before.head_dim and attn.all_head_dim == width >= attn.head_dim
        assert attn.qkv.conv.out_channels == 3 * width and attn.proj.conv.in_channels == attn.pe.conv.out_channels == width
        assert attn.qkv.conv.in_channels == before.qkv.conv.in_channels  # the block's own input and output stay
        assert attn.proj.conv.out_channels == before.proj.conv.out_channels
        removed = sorted(plan.remove.get((f"{layer_name}.qkv.conv", "out"), []))
        assert len(removed) % (3 * attn.head_dim) == 0
        heads = {i // (3 * attn.head_dim) for i in removed}
        assert removed == [i for h in sorted(heads) for i in range(3 * h * attn.head_dim, 3 * (h + 1) * attn.head_dim)]
        lost += before.num_heads - attn.num_heads
    assert lost


def test_round_to_keeps_widths_multiples_of_8(pruned_case):
    name, net, plan, pruned = pruned_case
    dense = dict(net.named_modules())
    changed = 0
    for layer_name, layer in pruned.named_modules():
        if isinstance(layer, nn.Conv2d) and layer.out_channels != dense[layer_name].out_channels:
            changed += 1
            if dense[layer_name].out_channels >= 16 and (layer_name, "out") in plan.remove:
                assert layer.out_channels % 8 == 0, (layer_name, layer.out_channels)
    assert changed


@pytest.fixture(scope="module")
def yolov8n():
    net = randomised("yolov8n.yaml")
    return net, assign_families(net, load_rules())


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("key, target", [("sparsity", 0.4), ("flops", 0.35)])
def test_target_hit_within_one_channel_group(yolov8n, key, target, scope):
    net, assignment = yolov8n
    plan = plan_channels(net, assignment, SparsityConfig(method="channel", scope=scope, **{key: target}), 64)
    bracket = plan.bracket
    assert bracket["groups"] == 1  # the nearest plans below and above differ in one group
    assert bracket["below"] <= target <= bracket["above"]
    assert plan.estimate[key] == min(bracket["below"], bracket["above"], key=lambda v: abs(v - target))


def test_round_to_16_halves_its_step_on_layers_narrower_than_32(yolov8n):
    net, _ = yolov8n
    rules = {"rules": [{"family": "head", "ratio": 0.0, "classes": ["Detect"], "protect": True},
                       {"family": "conv", "ratio": 0.5, "classes": ["*"]}]}
    plan = plan_channels(net, assign_families(net, load_rules(rules)),
                         SparsityConfig(method="channel", round_to=16), 64)  # no target: every layer at 50%
    pruned = remove_channels(copy.deepcopy(net), plan.remove)
    dense = dict(net.named_modules())
    narrow_pruned = 0
    for name, layer in pruned.named_modules():
        if isinstance(layer, nn.Conv2d) and (name, "out") in plan.remove:
            width = dense[name].out_channels
            assert layer.out_channels % (16 if width >= 32 else 8) == 0, (name, width, layer.out_channels)
            narrow_pruned += 16 <= width < 32
    assert narrow_pruned  # with a step of 16 everywhere a 16..31-channel layer could only keep 16 or stay whole


def test_round_to_1_leaves_widths_unrounded(yolov8n):
    net, assignment = yolov8n
    plan = plan_channels(net, assignment, SparsityConfig(method="channel", sparsity=0.4, round_to=1), 64)
    pruned = remove_channels(copy.deepcopy(net), plan.remove)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert any(w % 8 for w in widths if w >= 16)  # the rounding test above could fail


def test_unreachable_target_is_refused(yolov8n):
    net, assignment = yolov8n
    with pytest.raises(ValueError, match="out of reach"):
        plan_channels(net, assignment, SparsityConfig(method="channel", flops=0.99), 64)


def test_l1l2_is_refused_for_channels():
    with pytest.raises(ValueError, match="ranks whole channels"):
        SparsityConfig(method="channel", importance="l1l2")


def test_sparsify_on_yolo_object_then_unstructured_composes():
    from ultralytics import YOLO

    from ultra_sparse import sparsify

    model = YOLO("yolov8n.yaml")
    dense_params = sum(p.numel() for p in model.model.parameters())
    result = sparsify(model, method="channel", flops=0.4, imgsz=64)
    section = result.report["channel"]
    assert not result.masks and section["params"]["after"] == sum(p.numel() for p in model.model.parameters()) < dense_params
    assert section["achieved"]["flops"] == pytest.approx(0.4, abs=0.02)
    conv = next(f for f in section["families"] if f["family"] == "conv")
    assert conv["channels_after"] < conv["channels_before"]
    assert model.predict(torch.zeros(1, 3, 64, 64), imgsz=64, verbose=False)  # a YOLO object still predicts
    again = sparsify(model.model, sparsity=0.3)  # unstructured zeros on the pruned network
    prunable = again.report["totals"]["prunable"]
    assert prunable["zeros"] == round(0.3 * prunable["params"])


def test_a_channel_pruned_checkpoint_trains_as_a_dense_start():
    """Its channels are gone, not masked: no fine-tune-with-mask of its (few, chance) exact zeros."""
    from ultralytics import YOLO

    from ultra_sparse.metadata import SparseMetadata
    from ultra_sparse.training.start import decide_start

    net = YOLO("yolov8n.yaml").model
    channel, unstructured = (SparseMetadata({"method": m, "rules": "default"}) for m in ("channel", "unstructured"))
    assert decide_start(net, {}, channel, epochs=3) is None
    assert decide_start(net, {}, unstructured, epochs=3).fine_tune


def test_blocks_of_families_kept_at_ratio_0_are_traced_as_twins():
    """A family at ratio 0 loses no channel, but its split blocks must not enter Torch-Pruning's graph with their stock
    ``chunk``: with the neck at ratio 0 and the backbone pruned, planning yolo11n never finished."""
    net = randomised("yolo11n.yaml")
    head = {"family": "head", "ratio": 0.0, "classes": ["Detect", "DFL"], "protect": True}

    def rules(backbone: float, attention: float) -> dict:
        return {"rules": [head, {"family": "attention", "ratio": attention, "classes": ["C2PSA"]},
                          {"family": "backbone", "ratio": backbone, "classes": ["*"], "layers": list(range(9))},
                          {"family": "neck", "ratio": 0.0, "classes": ["*"]}]}

    plan = plan_channels(net, assign_families(net, load_rules(rules(0.0, 0.3))), SparsityConfig(method="channel"), 64)
    assert {"model.13", "model.16", "model.19", "model.22"} <= set(plan.split_blocks)  # the neck's C3k2 blocks
    assert not any(name.startswith(("model.13.", "model.22.")) and kind == "out" for name, kind in plan.remove)

    assignment = assign_families(net, load_rules(rules(0.3, 0.0)))
    plan = plan_channels(net, assignment, SparsityConfig(method="channel"), 64)
    layers = {int(name.split(".")[1]) for name, kind in plan.remove if kind == "out"}
    assert layers and layers <= set(range(9))  # the backbone alone loses output channels
    pruned = remove_channels(copy.deepcopy(net), plan.remove)
    assert pruned(torch.zeros(1, 3, 64, 64))[0].shape[1] == net(torch.zeros(1, 3, 64, 64))[0].shape[1]


@pytest.mark.parametrize("name", ["yolo11n", "yolov13-default"])
def test_taylor_plans_on_images_larger_than_the_trace(name, synthetic_data):
    """The copy is traced at twice the stride; taylor ranks on 96-px images, blocks kept whole included."""
    from ultra_sparse.calibration import calibration_batches, loss_ready

    model, rules, target, _ = CASES[name]
    net = randomised(model)
    batches = list(calibration_batches(str(synthetic_data), imgsz=96, batch=4, n_batches=1))
    assignment = assign_families(net, load_rules(rules))
    with loss_ready(net):
        taylor = plan_channels(
            net, assignment, SparsityConfig(method="channel", rules=rules, importance="taylor", **target), 96, batches
        )
    l1 = plan_channels(net, assignment, SparsityConfig(method="channel", rules=rules, **target), 96)
    key, value = next(iter(target.items()))
    assert abs(taylor.estimate[key] - value) < 0.03
    assert taylor.remove != l1.remove  # the gradients, not the magnitudes, chose the channels


@pytest.mark.parametrize("name", ["yolo11n", "yolov13-default"])
def test_taylor_ranks_by_the_gradients_of_the_real_network(name, synthetic_data, monkeypatch):
    """Blocks kept whole are stand-ins in the traced copy; the gradients a taylor plan ranks by are the real network's."""
    import torch_pruning as tp

    from ultra_sparse.calibration import calibration_batches, loss_ready

    model, rules, target, _ = CASES[name]
    net = randomised(model)
    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=4, n_batches=1))
    reference = copy.deepcopy(net)
    with loss_ready(reference):
        reference.train().loss(batches[0])[0].sum().backward()
    expected = {n: p.grad for n, p in reference.named_parameters()}

    ranked = []  # (weight, gradient) of every convolution where the group Taylor importance reads it
    score = tp.importance.GroupTaylorImportance.__call__

    def spy(importance, group):
        layers = [dep.target.module for dep, _ in group if isinstance(dep.target.module, nn.Conv2d)]
        ranked.extend((m.weight.detach().clone(), m.weight.grad.clone()) for m in layers)
        return score(importance, group)

    monkeypatch.setattr(tp.importance.GroupTaylorImportance, "__call__", spy)
    state = copy.deepcopy(net.state_dict())
    with loss_ready(net):
        plan_channels(net, assign_families(net, load_rules(rules)),
                      SparsityConfig(method="channel", rules=rules, importance="taylor", **target), 64, batches)
    weights = dict(net.named_parameters())
    named = [(next((n for n, p in weights.items() if p.shape == w.shape and torch.equal(p, w)), None), g)
             for w, g in ranked]
    named = [(n, g) for n, g in named if n is not None]  # the twins' half convolutions have no counterpart
    assert len(named) > 10
    for n, g in named:
        assert torch.allclose(g, expected[n], rtol=1e-3, atol=1e-4 * float(expected[n].abs().max())), n
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # the network itself is unchanged
    assert all(p.grad is None for p in net.parameters())
