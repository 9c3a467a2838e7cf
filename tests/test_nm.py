"""method=nm: the N:M pattern in every group, determinism, rules and protection, eligibility, config and reports.

The oracle groups weights with ``Tensor.unfold`` along the input channels (dimension 1), independently of
``nm_groups``: a group is M consecutive input channels of one output channel at one kernel position.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from ultra_sparse import SparsityConfig, sparsify
from ultra_sparse.compare import format_comparison_md
from ultra_sparse.importance import Criterion, get_criterion
from ultra_sparse.prune import element_masks
from ultra_sparse.prune.nm import nm_eligibility, nm_groups, nm_masks, nm_violations
from ultra_sparse.report import format_report_md, sparsity_report
from ultra_sparse.rules import assign_families, load_rules

from test_masks import yolo  # trained-like yolo11n: no exact zeros or ties from initialisation


@pytest.fixture(scope="module")
def base():
    return yolo()


def groups_of(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Oracle: (output channel, group, kernel position..., m) through unfold along the input channels."""
    return weight.detach().unfold(1, m, m)


def eligible_layers(model, m, rules="default"):
    return [w for w in assign_families(model, load_rules(rules)).prunable if nm_eligibility(w.module, m) is None]


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "4:8"])
def test_pattern_holds_in_every_group_of_every_eligible_layer(base, pattern):
    n, m = (int(x) for x in pattern.split(":"))
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = copy.deepcopy(base)
    result = sparsify(model, method="nm", nm=pattern)
    layers = eligible_layers(model, m)
    assert len(layers) > 50
    for w in layers:
        after, original = groups_of(w.weight, m), groups_of(before[w.name], m)
        assert bool(((after != 0).sum(-1) == n).all()), w.name  # exactly N kept where every weight was non-zero
        kept = torch.where(after != 0, original.abs(), torch.inf).amin(-1)
        pruned = torch.where(after == 0, original.abs(), -torch.inf).amax(-1)
        assert bool((kept >= pruned).all()), w.name  # the N largest of each group are the ones kept
        assert torch.equal(after[after != 0], original[after != 0])  # kept weights are unchanged
    report = result.report
    assert report["nm"]["holds"] and report["nm"]["eligible_layers"] == len(layers)
    eligible_params = sum(w.weight.numel() for w in layers)
    assert report["totals"]["prunable"]["zeros"] == eligible_params * (m - n) // m


def test_deterministic_bit_for_bit(base):
    first, second = copy.deepcopy(base), copy.deepcopy(base)
    masks_a = sparsify(first, method="nm").masks
    masks_b = sparsify(second, method="nm").masks
    assert masks_a.keys() == masks_b.keys() and all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)
    sa, sb = first.state_dict(), second.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ties_are_broken_by_position():
    net = nn.Sequential(nn.Linear(8, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0, 3.0, 3.0, 3.0, 3.0]]))
    result = nm_masks(assign_families(net, load_rules("default")), get_criterion("l1"), (2, 4))
    expected = [[False, False, True, True, True, False, False, True], [False, True, False, True, False, False, True, True]]
    assert result.masks["0.weight"].tolist() == expected  # among equal scores the earlier weight is pruned first


def test_head_and_dfl_untouched_and_protected_families_respected(base):
    rules = {
        "rules": [
            {"family": "head", "ratio": 0.0, "protect": True, "classes": ["Detect"]},
            {"family": "attention", "ratio": 0.0, "classes": ["C2PSA"]},  # ratio 0: protected
            {"family": "conv", "ratio": 0.3, "classes": ["*"]},
        ]
    }
    model = copy.deepcopy(base)
    result = sparsify(model, method="nm", rules=rules)
    protected = [w for w in assign_families(model, load_rules(rules)).weights if w.protected]
    assert {w.family for w in protected} == {"head", "attention", "fixed"}
    params = dict(base.named_parameters())
    for w in protected:
        assert torch.equal(w.weight, params[w.name]), w.name
        assert w.name not in result.masks
    head = dict(base.model[-1].named_parameters())
    assert all(torch.equal(head[n], p) for n, p in model.model[-1].named_parameters())
    layers = {x["name"]: x for x in result.report["layers"]}
    assert all(layers[w.name]["nm"] is None for w in protected if w.family != "fixed")  # DFL is not listed
    assert result.report["nm"]["holds"]


def test_ineligible_layers_are_listed_with_the_reason_and_untouched(base):
    model = copy.deepcopy(base)
    result = sparsify(model, method="nm")
    ineligible = {x["name"]: x["reason"] for x in result.report["nm"]["ineligible_layers"]}
    assert ineligible["model.0.conv.weight"] == "3 input channels, not a multiple of 4"
    assert "depthwise (1 input channel per group)" in ineligible.values()
    params, original = dict(model.named_parameters()), dict(base.named_parameters())
    for name in ineligible:
        assert torch.equal(params[name], original[name]), name
        assert bool(result.masks[name].all())
    layers = {x["name"]: x for x in result.report["layers"]}
    assert layers["model.0.conv.weight"]["ratio_asked"] == 0.0 and layers["model.1.conv.weight"]["ratio_asked"] == 0.5
    md = format_report_md(result.report)
    assert "N:M pattern 2:4: holds in every group of all" in md
    assert "| `model.0.conv.weight` | 432 | 3 input channels, not a multiple of 4 |" in md
    assert "| not eligible |" in md and "| holds |" in md


@pytest.mark.parametrize(
    "module, reason",
    [
        (nn.Conv2d(16, 32, 3), None),
        (nn.Conv2d(32, 32, 1, groups=4), None),  # 8 input channels per group
        (nn.Conv2d(24, 24, 1, groups=4), "6 input channels per group, not a multiple of 4"),
        (nn.Conv2d(32, 32, 3, groups=32), "depthwise (1 input channel per group)"),
        (nn.ConvTranspose2d(16, 16, 2), "transposed convolution (no N:M layout)"),
        (nn.Linear(64, 10), None),
        (nn.Linear(10, 64), "10 input channels, not a multiple of 4"),
    ],
)
def test_eligibility(module, reason):
    assert nm_eligibility(module, 4) == reason


def test_grouped_conv_groups_stay_inside_their_convolution_group():
    net = nn.Sequential(nn.Conv2d(32, 16, 3, groups=4))
    result = nm_masks(assign_families(net, load_rules("default")), get_criterion("l1"), (2, 4))
    mask = result.masks["0.weight"]
    assert mask.shape == (16, 8, 3, 3) and bool(((groups_of(mask, 4)).sum(-1) == 2).all())


def test_criteria_decide_which_weights_stay(base):
    assignment = assign_families(copy.deepcopy(base), load_rules("default"))
    config = SparsityConfig(method="nm")
    l1 = element_masks(assignment, get_criterion("l1"), None, config).masks
    for name in ("l2", "l1l2", "lamp"):  # all increasing in |w| within a layer: the same masks
        other = element_masks(assignment, get_criterion(name), None, config).masks
        assert all(torch.equal(l1[k], other[k]) for k in l1), name
    smallest = element_masks(assignment, Criterion(lambda n, w: -w.abs(), elementwise=True), None, config).masks
    eligible = [w.name for w in assignment.prunable if nm_eligibility(w.module, 4) is None]
    assert all(torch.equal(l1[k], ~smallest[k]) for k in eligible)  # 2:4: keeping the other half
    scores = {w.name: torch.rand(w.weight.shape, generator=torch.Generator().manual_seed(1)) for w in assignment.prunable}
    taylor = element_masks(assignment, get_criterion("taylor", scores), None, config).masks
    for k in eligible[:5]:
        top = groups_of(scores[k], 4).argsort(-1, descending=True)[..., :2]
        assert bool(groups_of(taylor[k], 4).gather(-1, top).all()), k


def test_existing_zeros_are_pruned_first_and_nm_again_changes_nothing(base):
    model = copy.deepcopy(base)
    target = dict(model.named_parameters())["model.2.cv1.conv.weight"]
    with torch.no_grad():
        target[:, :3] = 0  # three zeros in many groups: more than 2:4 asks
    sparsify(model, method="nm")
    assert nm_violations(target, 2, 4) == 0 and not target[:, :3].any()
    once = copy.deepcopy(model.state_dict())
    result = sparsify(model, method="nm")
    assert all(torch.equal(once[k], v) for k, v in model.state_dict().items())
    assert result.report["nm"]["holds"]


def test_sparse_training_state_draws_the_pattern_through_element_masks(base):
    from ultra_sparse.methods.state import SparseTraining

    model = copy.deepcopy(base)
    state = SparseTraining(model, SparsityConfig(method="nm"), epochs=3)
    assert state.config.schedule == "oneshot" and state.prune(model)
    state.apply(model)
    eligible = eligible_layers(model, 4)
    assert all(nm_violations(w.weight, 2, 4) == 0 for w in eligible)
    assert state.sparsity(model) == pytest.approx(state.schedule.final) and not state.prune(model)
    restart = SparseTraining(model, SparsityConfig(method="nm"), epochs=3, sparse_start=True)  # from an nm checkpoint
    assert not restart.prune(model)  # the pattern is already there: the mask stays the checkpoint's zeros
    assert all(torch.equal(restart.masks[k], model.get_parameter(k) != 0) for k in restart.masks)


def test_target_above_the_pattern_is_out_of_reach(base):
    assignment = assign_families(copy.deepcopy(base), load_rules("default"))
    with pytest.raises(ValueError, match="out of reach for nm=2:4"):
        nm_masks(assignment, get_criterion("l1"), (2, 4), sparsity=0.6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="nm", sparsity=0.5), "does not apply to method=nm"),
        (dict(method="nm", flops=0.2), "needs method=channel"),
        (dict(method="nm", nm="3:2"), "0 < N < M"),
        (dict(method="nm", nm="2-4"), "must be N:M"),
        (dict(method="nm", schedule="gradual"), "schedule=gradual does not apply to method=nm"),
    ],
)
def test_config_refuses_what_nm_cannot_honour(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SparsityConfig(**kwargs)


def test_pattern_helpers():
    w = torch.zeros(2, 8, 1, 1)
    w[0, :4] = 1.0  # four non-zeros in one group
    w[1, 4:6] = 1.0
    assert nm_violations(w, 2, 4) == 1 and nm_violations(w, 4, 4) == 0
    assert nm_groups(w, 4).shape == (4, 4)
    with pytest.raises(ValueError, match="no groups of 4"):
        nm_groups(torch.zeros(2, 6), 4)


def test_report_says_when_the_pattern_does_not_hold(base):
    model = copy.deepcopy(base)
    sparsify(model, sparsity=0.3)  # unstructured: groups with 3 or 4 non-zeros remain
    report = sparsity_report(model, pattern=(2, 4))
    assert not report["nm"]["holds"] and report["nm"]["violating_layers"]
    assert "does NOT hold" in format_report_md(report)


def test_compare_markdown_names_the_pattern():
    nm = {"pattern": "2:4", "holds": True, "eligible_layers": 61, "violating_layers": [], "ineligible_layers": [{}, {}]}
    md = format_comparison_md({"rows": [], "settings": {}, "benchmark": None, "sparse": {"nm": nm}})
    assert "N:M pattern 2:4 of the sparse model: holds in every group of its 61 eligible layers (2 prunable" in md
