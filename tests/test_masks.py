"""Mask maths: exact targets, determinism, ties, already-zero weights, the peer oracle and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from ultra_sparse import SparsityConfig, sparsify
from ultra_sparse.importance import Criterion, get_criterion, lamp
from ultra_sparse.prune.unstructured import MAX_RATIO, allocate_zeros, apply_masks, compute_masks, lowest_k
from ultra_sparse.rules import assign_families, load_rules


def yolo(seed: int = 0) -> nn.Module:
    from ultralytics import YOLO

    torch.manual_seed(seed)
    model = YOLO("yolo11n.yaml").model
    with torch.no_grad():  # trained-like weights: no exact ties from initialisation
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    return model


@pytest.fixture(scope="module")
def base():
    return yolo()


def clone(model):
    import copy

    return copy.deepcopy(model)


def prunable_zeros(model, rules="default"):
    """(zeros, weights) over the prunable weights of ``model``."""
    weights = assign_families(model, load_rules(rules)).prunable
    return sum(int((w.weight == 0).sum()) for w in weights), sum(w.weight.numel() for w in weights)


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("target", [0.1, 0.37, 0.5, 0.9])
def test_achieved_sparsity_equals_target(base, scope, target):
    model = clone(base)
    result = sparsify(model, sparsity=target, rules="tokenc3_lsnet", scope=scope)
    zeros, n = prunable_zeros(model, "tokenc3_lsnet")
    assert zeros == round(target * n)  # exact to the weight
    assert result.report["totals"]["prunable"]["zeros"] == zeros


def test_family_proportions_follow_the_rules(base):
    model = clone(base)
    result = sparsify(model, sparsity=0.2, rules="tokenc3_lsnet", scope="layer")
    fams = {f["family"]: f for f in result.report["families"]}
    # every family is scaled by the same factor: attention (12%) and conv (22%) keep their proportion
    assert fams["attention"]["ratio_achieved"] / fams["conv"]["ratio_achieved"] == pytest.approx(12 / 22, rel=0.01)
    head_before = {n: p for n, p in clone(base).model[-1].named_parameters()}
    assert all(torch.equal(head_before[n], p) for n, p in model.model[-1].named_parameters())  # head untouched


def test_no_target_applies_ratios_as_written(base):
    model = clone(base)
    result = sparsify(model, rules="tokenc3_lsnet", scope="layer")
    assert result.scale == 1.0
    for layer in result.report["layers"]:
        if not layer["protected"]:
            ratio = load_rules("tokenc3_lsnet").ratios[layer["family"]]
            assert layer["zeros"] == round(ratio * layer["params"])


def test_zero_ratio_and_mask_of_ones_change_nothing(base):
    model = clone(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsify(model, sparsity=0.0)
    apply_masks(model, {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()})
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_parameter_identity_is_kept(base):
    model = clone(base)
    ids = {n: id(p) for n, p in model.named_parameters()}
    sparsify(model, sparsity=0.5)
    assert ids == {n: id(p) for n, p in model.named_parameters()}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_deterministic_bit_for_bit(base, scope):
    a = sparsify(clone(base), sparsity=0.3, scope=scope).masks
    b = sparsify(clone(base), sparsity=0.3, scope=scope).masks
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_l1_l2_and_l1l2_give_identical_masks(base, scope):
    masks = [sparsify(clone(base), sparsity=0.4, importance=i, scope=scope).masks for i in ("l1", "l2", "l1l2")]
    for other in masks[1:]:
        assert all(torch.equal(masks[0][k], other[k]) for k in masks[0])


def test_resparsifying_only_adds_zeros(base):
    model = clone(base)
    first = sparsify(model, sparsity=0.3, scope="global").masks
    second = sparsify(model, sparsity=0.5, scope="layer").masks
    assert all(not (second[k] & ~first[k]).any() for k in first)  # nothing pruned before is kept now
    zeros, n = prunable_zeros(model)
    assert zeros == round(0.5 * n)
    # asking for less than what is there keeps every zero
    sparsify(model, sparsity=0.1)
    assert prunable_zeros(model) == (zeros, n)


def test_oracle_matches_torch_l1_unstructured():
    """scope=layer with one ratio for every layer = torch.nn.utils.prune.l1_unstructured per layer."""
    model = yolo(seed=1)
    rules = load_rules({"rules": [{"family": "all", "ratio": 0.3, "classes": ["*"]}]})
    assignment = assign_families(model, rules)
    result = compute_masks(assignment, get_criterion("l1"), sparsity=None, scope="layer")
    for w in assignment.prunable:
        peer = prune.L1Unstructured(amount=0.3).compute_mask(w.weight.detach(), torch.ones_like(w.weight))
        assert torch.equal(result.masks[w.name], peer.bool()), w.name


def test_global_scope_caps_layers_and_keeps_family_budgets(base):
    model = clone(base)
    result = sparsify(model, sparsity=0.6, rules="tokenc3_lsnet", scope="global")
    assert all(l["ratio_achieved"] <= MAX_RATIO + 1e-9 for l in result.report["layers"])
    fams = {f["family"]: f for f in result.report["families"] if not f["protected"]}
    assert fams["attention"]["ratio_achieved"] / fams["conv"]["ratio_achieved"] == pytest.approx(12 / 22, rel=0.01)


def test_lowest_k_breaks_ties_by_position():
    scores = torch.tensor([1.0, 0.5, 0.5, 0.5, 2.0])
    assert lowest_k(scores, 2).tolist() == [False, True, True, False, False]
    assert lowest_k(scores, 0).sum() == 0 and lowest_k(scores, 5).all()


def test_lamp_scores_largest_weight_one():
    scores = lamp("w", torch.tensor([0.1, -3.0, 2.0]))
    assert scores.max() == 1.0 and scores.argmax() == 1
    assert math.isclose(scores[2].item(), 4 / 13, rel_tol=1e-6)


def test_unreachable_target_is_refused(base):
    with pytest.raises(ValueError, match="out of reach"):
        allocate_zeros([10, 10], [0, 0], [0.0, 0.0], [9, 9], target=5)  # zero ratios cannot be scaled up
    rules = {"rules": [{"family": "conv", "ratio": 0.2, "classes": ["Conv"], "layers": [0]},
                       {"family": "keep", "ratio": 0.0, "classes": ["*"]}]}
    model = clone(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="out of reach"):
        sparsify(model, sparsity=0.995, rules=rules)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was changed


@pytest.mark.parametrize("where", ["first", "head"])
@pytest.mark.parametrize("settings", [{"sparsity": 0.1}, {"method": "channel", "flops": 0.3, "imgsz": 64},
                                      {"method": "nm", "nm": "2:4"}], ids=["unstructured", "channel", "nm"])
def test_nan_weight_is_named_by_every_method(base, where, settings):
    """method=channel, and a NaN in the protected head, returned a model without a word through the Python API."""
    model = clone(base)
    convs = [(n, p) for n, p in model.named_parameters() if n.endswith("conv.weight")]
    name, param = convs[0] if where == "first" else next((n, p) for n, p in convs if n.startswith("model.23."))
    with torch.no_grad():
        param[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        sparsify(model, **settings)


def test_mask_that_does_not_fit_is_refused(base):
    model = clone(base)
    with pytest.raises(ValueError, match="does not fit"):
        apply_masks(model, {"model.0.conv.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="does not fit"):
        apply_masks(model, {"no.such.weight": torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"sparsity": 1.0}, ValueError), ({"sparsity": -0.1}, ValueError), ({"sparsity": "half"}, TypeError),
        ({"importance": "l3"}, ValueError), ({"scope": "net"}, ValueError), ({"prune_freq": 0}, ValueError),
        ({"schedule": "cosine"}, ValueError), ({"prune_start": 5, "prune_end": 2}, ValueError),
    ],
)
def test_config_rejects_bad_values(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        SparsityConfig(**kwargs)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_reported_zeros_are_the_zeros_in_the_weights(base, scope):
    model = clone(base)
    with torch.no_grad():  # some zeros before sparsifying, as in a checkpoint that is sparse already
        model.model[2].cv1.conv.weight[:3] = 0
    predicted = compute_masks(assign_families(model, load_rules("tokenc3_lsnet")), get_criterion("l1"), 0.45, scope)
    result = sparsify(model, sparsity=0.45, rules="tokenc3_lsnet", scope=scope)
    params = dict(model.named_parameters())
    assert predicted.zeros == {n: int((params[n] == 0).sum()) for n in result.masks}
    counted = {x["name"]: x["zeros"] for x in result.report["layers"]}
    assert all(counted[n] == int((params[n] == 0).sum()) for n in counted)
    total = sum(int((p == 0).sum()) for p in model.parameters())
    assert result.report["totals"]["all"]["zeros"] == total
    assert result.report["totals"]["all"]["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_elementwise_scoring_at_once_equals_scoring_weight_by_weight(base, scope):
    assignment = assign_families(base, load_rules("tokenc3_lsnet"))
    at_once = get_criterion("l1l2")
    one_by_one = Criterion(at_once.score, elementwise=False)
    a = compute_masks(assignment, at_once, 0.3, scope).masks
    b = compute_masks(assignment, one_by_one, 0.3, scope).masks
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_masks_fit_their_weights_in_module_order(base):
    assignment = assign_families(base, load_rules("tokenc3_lsnet"))
    masks = compute_masks(assignment, get_criterion("l1"), 0.2, "global").masks
    assert list(masks) == [w.name for w in assignment.prunable]
    assert all(masks[w.name].shape == w.weight.shape and masks[w.name].dtype == torch.bool for w in assignment.prunable)
