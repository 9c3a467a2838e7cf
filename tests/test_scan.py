"""``ultra-sparse scan``: the ratio choice (pure), the group plan, the scan loop, the outputs and bad input."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ultra_sparse.checkpoint import load_checkpoint
from ultra_sparse.config import SparsityConfig
from ultra_sparse.oneshot import sparsify
from ultra_sparse.rules import assign_families, load_rules
from ultra_sparse.scan import (
    MIN_RATIO,
    PruneCopy,
    RestoreWeights,
    check_budget,
    choose_ratios,
    base_ratios,
    context_ladder,
    default_ladder,
    flops_sizes,
    layout_rules,
    loss_curve,
    plan_groups,
    predicted_loss,
    protect_move,
    refine,
    scan,
    sensitivity_scores,
    weight_flops,
)

CLI = [sys.executable, "-c", "from ultra_sparse.cli import entrypoint; entrypoint()"]


def random_curves(rng: np.random.Generator, n: int, top: float = 0.9) -> tuple[dict, dict]:
    """Random non-decreasing loss curves on a shared ladder, and random group sizes."""
    ladder = [0.3, 0.6, top]
    curves, sizes = {}, {}
    for g in range(n):
        losses = np.cumsum(rng.uniform(0, 0.2, size=len(ladder)) * (rng.uniform() < 0.8))
        curves[f"g{g}"] = [(0.0, 0.0), *zip(ladder, losses.tolist())]
        sizes[f"g{g}"] = int(rng.integers(10, 100_000))
    return curves, sizes


@pytest.mark.parametrize("seed", range(5))
def test_choose_ratios_reaches_the_target_exactly_within_bounds(seed):
    rng = np.random.default_rng(seed)
    curves, sizes = random_curves(rng, n=int(rng.integers(1, 12)))
    total = sum(sizes.values())
    for sparsity in (0.005, 0.2, 0.5, 0.7, 0.9):
        ratios = choose_ratios(curves, sizes, sparsity)
        assert list(ratios) == list(curves)
        assert sum(ratios[g] * sizes[g] for g in ratios) == pytest.approx(sparsity * total, rel=1e-12)
        assert all(min(MIN_RATIO, sparsity) - 1e-15 <= r <= 0.9 + 1e-15 for r in ratios.values())


def test_choose_ratios_prunes_insensitive_groups_first():
    flat, gentle, steep = [(0, 0), (0.5, 0.0), (0.9, 0.01)], [(0, 0), (0.5, 0.02), (0.9, 0.05)], [(0, 0), (0.9, 0.5)]
    ratios = choose_ratios({"steep": steep, "gentle": gentle, "flat": flat}, dict.fromkeys(("steep", "gentle", "flat"), 1000), 0.5)
    assert ratios["flat"] == pytest.approx(0.9)
    assert ratios["steep"] == pytest.approx(MIN_RATIO)
    assert ratios["gentle"] == pytest.approx(1.5 - 0.9 - MIN_RATIO)


def test_choose_ratios_weighs_loss_by_parameter_count():
    """The same loss for a ratio costs less per zero in a large group: the large group is pruned first."""
    curve = [(0.0, 0.0), (0.9, 0.1)]
    ratios = choose_ratios({"small": curve, "large": curve}, {"small": 100, "large": 1000}, 0.5)
    assert ratios["small"] == pytest.approx(MIN_RATIO)
    assert ratios["large"] == pytest.approx((550 - MIN_RATIO * 100) / 1000)


def test_equally_cheap_groups_share_in_proportion():
    flat = [(0.0, 0.0), (0.8, 0.0)]
    ratios = choose_ratios({"a": flat, "b": flat, "c": flat}, {"a": 10, "b": 300, "c": 5000}, 0.4)
    assert all(r == pytest.approx(0.4) for r in ratios.values())


@pytest.mark.parametrize("seed", range(3))
def test_choose_ratios_grow_with_the_target(seed):
    curves, sizes = random_curves(np.random.default_rng(100 + seed), n=8)
    previous = None
    for sparsity in np.linspace(0.01, 0.9, 60):
        ratios = choose_ratios(curves, sizes, float(sparsity))
        if previous is not None:
            assert all(ratios[g] >= previous[g] - 1e-12 for g in ratios)
        previous = ratios


def test_choose_ratios_is_optimal_for_convex_curves_against_a_grid():
    """Two convex curves: no split of the same zeros on a fine grid has a lower predicted loss."""
    a = [(0.0, 0.0), (0.3, 0.01), (0.6, 0.05), (0.9, 0.2)]
    b = [(0.0, 0.0), (0.3, 0.03), (0.6, 0.07), (0.9, 0.12)]
    sizes = {"a": 700, "b": 300}
    for sparsity in (0.2, 0.45, 0.7):
        ratios = choose_ratios({"a": a, "b": b}, sizes, sparsity)
        chosen = predicted_loss(a, ratios["a"]) + predicted_loss(b, ratios["b"])
        target = sparsity * 1000
        best = min(
            predicted_loss(a, ra) + predicted_loss(b, (target - 700 * ra) / 300)
            for ra in np.linspace(MIN_RATIO, 0.9, 4001)
            if MIN_RATIO <= (target - 700 * ra) / 300 <= 0.9
        )
        assert chosen <= best + 1e-9


def test_groups_without_information_stay_at_their_anchors():
    """Flat curves around a base allocation: equally cheap segments fill up to the anchors first, so nothing moves."""
    flat = {g: [(0.1, 0.0), (0.9, 0.0)] for g in "abc"}
    sizes, anchors = {"a": 100, "b": 200, "c": 700}, {"a": 0.2, "b": 0.5, "c": 0.8}
    target = sum(anchors[g] * sizes[g] for g in sizes) / 1000
    ratios = choose_ratios(flat, sizes, target, anchors=anchors)
    assert ratios == pytest.approx(anchors)
    curves = {**flat, "c": [(0.1, -0.05), (0.8, 0.0), (0.9, 0.2)]}  # c measured better below its anchor
    moved = choose_ratios(curves, sizes, target, anchors=anchors)
    assert moved["a"] == moved["b"] == pytest.approx(0.9)  # the free groups take zeros from c
    assert moved["c"] == pytest.approx((680 - 90 - 180) / 700)


def test_choose_ratios_refuses_a_target_beyond_the_measured_ratios():
    with pytest.raises(ValueError, match="out of reach"):
        choose_ratios({"a": [(0.0, 0.0), (0.5, 0.0)]}, {"a": 10}, 0.6)
    with pytest.raises(ValueError, match="below the lowest"):
        choose_ratios({"a": [(0.4, 0.0), (0.5, 0.0)]}, {"a": 10}, 0.3)
    with pytest.raises(ValueError, match="same"):
        choose_ratios({"a": [(0.0, 0.0), (0.5, 0.0)]}, {"b": 10}, 0.3)


def test_loss_curve_is_non_negative_and_never_falls():
    curve = loss_curve([(0.9, 0.5), (0.3, 0.85), (0.6, 0.79), (0.75, 0.81)], reference=0.8)
    assert curve == [(0.0, 0.0), (0.3, 0.0), (0.6, pytest.approx(0.01)), (0.75, pytest.approx(0.01)), (0.9, pytest.approx(0.3))]
    around_base = loss_curve([(0.6, 0.8), (0.3, 0.81), (0.8, 0.7)], reference=0.8, origin=False)
    assert around_base == [(0.3, pytest.approx(-0.01)), (0.6, 0.0), (0.8, pytest.approx(0.1))]


def test_default_ladders_bracket_the_target_or_the_base():
    assert default_ladder(0.7) == (0.42, 0.7, 0.85)
    assert default_ladder(0.9) == (0.54, 0.9, 0.95)
    assert context_ladder(0.5) == (0.25, 0.725)
    assert context_ladder(0.99) == (0.495,)  # nothing above the base to test
    assert context_ladder(0.0) == (0.475,)


def test_sensitivity_scores_rank_by_loss_per_weight():
    points = {
        "steep": [(0.2, 0.80), (0.5, 0.74), (0.8, 0.68)],  # loses 0.2 per unit of ratio over 100 weights
        "large": [(0.2, 0.80), (0.5, 0.74), (0.8, 0.68)],  # the same curve over 1000 weights: 10x cheaper per zero
        "gain": [(0.3, 0.70), (0.6, 0.72)],
        "single": [(0.5, 0.9)],
    }
    scores = sensitivity_scores(points, {"steep": 100, "large": 1000, "gain": 50, "single": 10})
    assert scores["steep"] == pytest.approx(0.2 / 100) and scores["large"] == pytest.approx(0.2 / 1000)
    assert scores["gain"] < 0 and scores["single"] == 0.0
    noisy = sensitivity_scores({"g": [(0.2, 0.8), (0.5, 0.6), (0.8, 0.7)]}, {"g": 1})  # least squares, not ends
    assert noisy["g"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("seed", range(5))
def test_protect_move_keeps_the_zeros_and_fills_receivers_in_order(seed):
    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(6)]
    sizes = {g: int(rng.integers(10, 10_000)) for g in names}
    ratios = {g: float(rng.uniform(0.1, 0.9)) for g in names}
    caps = {g: min(0.99, ratios[g] + float(rng.uniform(0, 0.3))) for g in names}
    donor, receivers = names[0], names[3:0:-1]
    low = float(rng.uniform(0, ratios[donor]))
    moved = protect_move(ratios, sizes, donor, low, receivers, caps)
    assert sum(moved[g] * sizes[g] for g in names) == pytest.approx(sum(ratios[g] * sizes[g] for g in names), abs=1e-6)
    assert low - 1e-12 <= moved[donor] <= ratios[donor]
    assert all(ratios[g] - 1e-12 <= moved[g] <= max(caps[g], ratios[g]) + 1e-12 for g in receivers)
    assert all(moved[g] == pytest.approx(ratios[g]) for g in names[4:])  # not a receiver: untouched
    full = [moved[g] >= caps[g] - 1e-9 for g in receivers]
    assert full == sorted(full, reverse=True)  # a receiver takes zeros only when those before it are full
    if moved[donor] > low + 1e-9:  # the donor stops short of low only when every receiver is full
        assert all(full)
    with pytest.raises(ValueError, match="itself"):
        protect_move(ratios, sizes, donor, low, [donor], caps)


def interacting_loss(sizes, sensitivity, pair, strength):
    """mAP50 of an allocation: a linear loss per group, and a penalty when both groups of ``pair`` go above 0.5."""
    a, b = pair

    def measure(ratios):
        loss = sum(sensitivity[g] * ratios[g] for g in ratios)
        loss += strength * max(0.0, ratios[a] - 0.5) * max(0.0, ratios[b] - 0.5)
        return {"mAP50": 0.9 - loss, "mAP50-95": 0.5 - loss}

    return measure


def test_refine_finds_a_better_measured_allocation_within_budget_and_keeps_the_target():
    sizes = dict.fromkeys("abcd", 1000)
    sensitivity = {"a": 0.3, "b": 0.1, "c": -0.05, "d": -0.06}
    measure = interacting_loss(sizes, sensitivity, ("c", "d"), strength=4.0)
    start = dict.fromkeys("abcd", 0.5)
    scores = {g: v / 1000 for g, v in sensitivity.items()}  # what one-group moves would measure
    calls = []

    def counted(ratios):
        calls.append(dict(ratios))
        return measure(ratios)

    best, metrics, trail = refine(counted, start, measure(start), scores, sizes, dict.fromkeys("abcd", 0.1),
                                  dict.fromkeys("abcd", 0.9), budget=5, margin=0.001)
    assert len(calls) == len(trail) <= 5
    assert all(sum(c.values()) == pytest.approx(2.0) for c in calls)  # every candidate keeps the target
    assert metrics == measure(best) and metrics["mAP50"] > measure(start)["mAP50"] + 0.001
    assert trail[0]["donor"] == "a" and trail[0]["accepted"]
    assert best["a"] == pytest.approx(0.1)
    for record in trail:  # kept exactly when it beat the best before it by the margin
        assert record["accepted"] == (record["mAP50"] > max([measure(start)["mAP50"]] + [
            t["mAP50"] for t in trail[: trail.index(record)] if t["accepted"]]) + 0.001)


def test_refine_keeps_the_start_when_every_move_measures_worse():
    sizes = dict.fromkeys("abc", 100)
    start = {"a": 0.5, "b": 0.5, "c": 0.5}

    def measure(ratios):  # any move away from the start loses, whatever the scores say
        return {"mAP50": 0.8 - sum(abs(ratios[g] - 0.5) for g in ratios), "mAP50-95": 0.4}

    best, metrics, trail = refine(measure, start, measure(start), {"a": 1e-3, "b": 0.0, "c": -1e-3}, sizes,
                                  dict.fromkeys("abc", 0.1), dict.fromkeys("abc", 0.9), budget=10)
    assert best == start and metrics == measure(start)
    assert trail and not any(t["accepted"] for t in trail)
    assert {t["donor"] for t in trail} == {"a"}  # only a group that loses when pruned gives zeros away
    assert [t["fraction"] for t in trail] == [1.0, 0.5, 0.25]


def test_check_budget_counts_the_curves_and_refuses_fewer():
    ladders = {"a": (0.3, 0.8), "b": (0.4,)}
    assert check_budget(None, ladders, with_base=False) == 5
    assert check_budget(9, ladders, with_base=True) == 9
    with pytest.raises(ValueError, match="budget=5 is below the 6 validations"):
        check_budget(5, ladders, with_base=True)


@pytest.fixture(scope="module")
def yolo11n():
    from ultralytics import YOLO

    return YOLO("yolo11n.yaml").model


def test_plan_groups_covers_every_prunable_weight_once(yolo11n):
    assignment = assign_families(yolo11n, load_rules("default"))
    for max_groups in (1, 3, 8, 100):
        groups = plan_groups(assignment, max_groups)
        families = {w.family for w in assignment.prunable}
        assert len({g.name for g in groups}) == len(groups)
        assert len(groups) == (max(max_groups, len(families)) if max_groups < 20 else len(groups))
        assert {g.family for g in groups} == families
        assert sum(g.params for g in groups) == sum(w.weight.numel() for w in assignment.prunable)
        for family in families:
            split = [g for g in groups if g.family == family]
            if len(split) > 1:
                layers = [i for g in split for i in g.layers]
                assert layers == sorted(set(layers))  # runs of consecutive layers, no layer in two groups
    groups = plan_groups(assignment, 100)  # one group per layer: the largest conv layer stands alone
    sizes = {}
    for w in assignment.prunable:
        if w.family == "conv":
            sizes[w.layer] = sizes.get(w.layer, 0) + w.weight.numel()
    assert sorted(len(g.layers) for g in groups if g.family == "conv") == [1] * len(sizes)


def test_weight_flops_counts_output_positions_and_groups_follow_them(yolo11n):
    """Each weight costs its elements times its output positions (a stride-2 conv at 64 px: 32x32), and planned by
    those costs the groups even out compute: the shallow layers, cheap in weights, get groups of their own."""
    assignment = assign_families(yolo11n, load_rules("default"))
    macs = weight_flops(yolo11n, assignment, 64)
    assert set(macs) == {w.name for w in assignment.prunable}
    by_name = {w.name: w for w in assignment.prunable}
    assert macs["model.0.conv.weight"] == by_name["model.0.conv.weight"].weight.numel() * 32 * 32
    assert macs["model.1.conv.weight"] == by_name["model.1.conv.weight"].weight.numel() * 16 * 16
    assert weight_flops(yolo11n, assignment, 128)["model.1.conv.weight"] == 4 * macs["model.1.conv.weight"]
    by_weights, by_flops = plan_groups(assignment, 6), plan_groups(assignment, 6, macs)
    assert sum(g.params for g in by_flops) == sum(g.params for g in by_weights)  # params stay weight counts

    def spread(groups):  # the largest group's share of the conv family's compute
        costs = [sum(macs[w.name] for w in assignment.prunable if w.family == "conv" and w.layer in g.layers)
                 for g in groups if g.family == "conv"]
        return max(costs) / sum(costs)

    assert spread(by_flops) < spread(by_weights)
    first = lambda groups: next(g for g in groups if g.family == "conv").layers
    assert len(first(by_flops)) < len(first(by_weights))


def test_layout_rules_assign_each_weight_to_its_group(yolo11n):
    rules = load_rules("default")
    base = assign_families(yolo11n, rules)
    groups = plan_groups(base, 6)
    content = layout_rules(rules, groups, {g.name: 0.5 for g in groups}, description="test")
    scanned = assign_families(yolo11n, load_rules(content))
    group_of = {}
    for g in groups:
        for w in base.prunable:
            if w.family == g.family and (g.layers is None or w.layer in g.layers):
                group_of[w.name] = g.name
    assert {w.name: w.family for w in scanned.prunable} == group_of
    assert [w.name for w in scanned.weights if w.protected] == [w.name for w in base.weights if w.protected]


@pytest.fixture()
def sparse_model(trained_checkpoint):
    model, _ = load_checkpoint(trained_checkpoint)
    return model


class FakeValidator:
    """Scores a network by the zeros each group gained over the dense model: loss = sum of s_g * new zero fraction_g,
    plus ``extra(fractions)`` (an interaction, for example one that one-group moves cannot see); mAP50-95 uses
    ``sensitivity95`` for s_g where given."""

    def __init__(self, model, rules, groups, sensitivity, extra=lambda fractions: 0.0, sensitivity95=None):
        scanned = assign_families(model, load_rules(layout_rules(rules, groups, {})))
        self.model, self.groups, self.sensitivity, self.extra = model, groups, sensitivity, extra
        self.sensitivity95 = sensitivity if sensitivity95 is None else sensitivity95
        self.members = {g.name: [w for w in scanned.weights if w.family == g.name] for g in groups}
        self.dense = self.zeros()
        self.calls = []

    def zeros(self):
        return {g: sum(int((w.weight == 0).sum()) for w in ws) for g, ws in self.members.items()}

    def __call__(self, network):
        assert network is self.model
        fractions = {g.name: (z - self.dense[g.name]) / g.params for g, z in zip(self.groups, self.zeros().values())}
        self.calls.append(fractions)
        loss = sum(self.sensitivity[g] * f for g, f in fractions.items()) + self.extra(fractions)
        loss95 = sum(self.sensitivity95[g] * f for g, f in fractions.items()) + self.extra(fractions)
        return {"mAP50": 0.8 - loss, "mAP50-95": 0.5 - loss95}


def test_scan_chooses_by_the_metric_it_is_given(sparse_model, monkeypatch):
    """mAP50 and mAP50-95 disagree on which group is sensitive: each metric= prunes the other group more, and the
    refinement is handed the same metric."""
    import ultra_sparse.scan.loop as scan_module  # where the loop looks refine up

    handed = []
    real_refine = scan_module.refine
    monkeypatch.setattr(scan_module, "refine", lambda *a, **k: handed.append(k.get("metric")) or real_refine(*a, **k))
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    first, second, third = (g.name for g in groups)
    written = {}
    for metric in ("mAP50", "mAP50-95"):
        evaluate = FakeValidator(sparse_model, rules, groups, {first: 0.5, second: 0.0, third: 0.2},
                                 sensitivity95={first: 0.0, second: 0.5, third: 0.2})
        result = scan(RestoreWeights(sparse_model, SparsityConfig()), evaluate, rules, groups,
                      {g.name: (0.3, 0.6) for g in groups}, 0.5, metric=metric)
        assert result["metric"] == metric and set(result["predicted"]) == {metric}
        assert result["measured"][metric] == pytest.approx(result["predicted"][metric], abs=1e-5)
        assert handed[-1] == metric
        assert all({"mAP50", "mAP50-95"} <= set(p) for g in result["groups"] for p in g["points"])  # both recorded
        written[metric] = {g["name"]: g["written_ratio"] for g in result["groups"]}
    assert written["mAP50"][second] > written["mAP50"][first]
    assert written["mAP50-95"][first] > written["mAP50-95"][second]
    with pytest.raises(ValueError, match="metric='fitness' is not one of mAP50, mAP50-95"):
        scan(RestoreWeights(sparse_model, SparsityConfig()), evaluate, rules, groups,
             {g.name: (0.3, 0.6) for g in groups}, 0.5, metric="fitness")


def test_refine_keeps_a_move_only_if_its_metric_gains():
    """Moving zeros from group a to group b raises mAP50 and lowers mAP50-95: each metric decides for itself."""
    measure = lambda ratios: {"mAP50": 0.8 - 0.2 * ratios["a"], "mAP50-95": 0.5 - 0.2 * ratios["b"]}  # noqa: E731
    start = {"a": 0.5, "b": 0.5}
    scores, sizes, floors, caps = {"a": 2e-3, "b": 0.0}, {"a": 100, "b": 100}, {"a": 0.1, "b": 0.1}, {"a": 0.9, "b": 0.9}
    best, _, trail = refine(measure, start, measure(start), scores, sizes, floors, caps, budget=3)
    assert best == {"a": 0.1, "b": 0.9} and trail[0]["accepted"]
    best, metrics, trail = refine(measure, start, measure(start), scores, sizes, floors, caps, budget=3,
                                  metric="mAP50-95")
    assert best == start and metrics == measure(start) and not any(t["accepted"] for t in trail)
    with pytest.raises(ValueError, match="metric='AP' is not one of"):
        refine(measure, start, measure(start), scores, sizes, floors, caps, budget=3, metric="AP")


def test_scan_prunes_one_group_at_a_time_restores_and_lands_where_predicted(sparse_model):
    """With the others dense and a loss linear in each group's zeros, the additive prediction is exact."""
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    before = {k: v.clone() for k, v in sparse_model.state_dict().items()}
    params = dict(sparse_model.named_parameters())
    evaluate = FakeValidator(sparse_model, rules, groups, dict(zip((g.name for g in groups), (0.5, 0.0, 0.2))))
    ladders = {g.name: (0.3, 0.6) for g in groups}
    result = scan(RestoreWeights(sparse_model, SparsityConfig()), evaluate, rules, groups, ladders, 0.5)
    assert len(evaluate.calls) == result["validations"] == 2 + 3 * 2
    assert all(sum(f > 0 for f in fractions.values()) == 1 for fractions in evaluate.calls[1:-1])  # others dense
    chosen = {g["name"]: g["chosen_ratio"] for g in result["groups"]}
    assert chosen[groups[1].name] == 0.6  # the insensitive group is pruned the most the ladder allows
    total = sum(g.params for g in groups)
    assert sum(chosen[g.name] * g.params for g in groups) == pytest.approx(0.5 * total, abs=1e-6 * total)
    assert result["measured"]["mAP50"] == pytest.approx(result["predicted"]["mAP50"], abs=1e-5)
    assert result["base"] is None and not result["kept_base"]
    assert all(p is params[n] for n, p in sparse_model.named_parameters())  # same parameter objects
    after = sparse_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical


def test_scan_around_the_base_keeps_the_others_there(sparse_model):
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    before = {k: v.clone() for k, v in sparse_model.state_dict().items()}
    pruner = RestoreWeights(sparse_model, SparsityConfig())
    base = base_ratios(pruner, rules, groups, 0.5)
    assert sum(base[g.name] * g.params for g in groups) == round(0.5 * sum(g.params for g in groups))
    layers = sparsify(copy.deepcopy(sparse_model), rules="default", sparsity=0.5).report["layers"]
    for g in groups:  # the base is the input rules at the target (one ranking across a family), as sparsify gives
        members = [x for x in layers if x["family"] == g.family and (g.layers is None or int(x["name"].split(".")[1]) in g.layers)]
        assert base[g.name] == sum(x["zeros"] for x in members) / g.params
    evaluate = FakeValidator(sparse_model, rules, groups, dict(zip((g.name for g in groups), (0.5, 0.0, 0.2))))
    ladders = {g.name: context_ladder(base[g.name]) for g in groups}
    result = scan(pruner, evaluate, rules, groups, ladders, 0.5, base=base)
    assert len(evaluate.calls) == result["validations"] == 3 + sum(map(len, ladders.values()))
    for fractions in evaluate.calls[2:-1]:  # each point moves one group; the others sit at their base ratios
        assert sum(f != pytest.approx(base[g], abs=1e-5) for g, f in fractions.items()) == 1
    written = {g["name"]: g["written_ratio"] for g in result["groups"]}
    assert written[groups[1].name] > base[groups[1].name] and written[groups[0].name] < base[groups[0].name]
    assert result["measured"]["mAP50"] == pytest.approx(result["predicted"]["mAP50"], abs=1e-5)
    assert result["measured"]["mAP50"] > result["base"]["mAP50"] and not result["kept_base"]
    after = sparse_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_scan_keeps_the_base_when_the_choice_validates_worse(sparse_model):
    """An interaction the one-group moves cannot see makes the choice worse than the base: the base is written."""
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    pruner = RestoreWeights(sparse_model, SparsityConfig())
    base = base_ratios(pruner, rules, groups, 0.5)
    a, b, c = (g.name for g in groups)

    def both_above_base(fractions):  # zero while at most one group moves up from the base: invisible to the scan
        return 5.0 * max(0.0, fractions[a] - base[a]) * max(0.0, fractions[b] - base[b])

    evaluate = FakeValidator(sparse_model, rules, groups, {a: -0.1, b: -0.1, c: 0.5}, extra=both_above_base)
    ladders = {g.name: context_ladder(base[g.name]) for g in groups}
    result = scan(pruner, evaluate, rules, groups, ladders, 0.5, base=base)
    assert result["kept_base"] and result["measured"]["mAP50"] < result["base"]["mAP50"]
    written = load_rules(result["rules"]).ratios
    assert all(written[g.name] == pytest.approx(base[g.name], abs=1e-6) for g in groups)


def test_refinement_beats_the_one_at_a_time_choice_and_writes_what_it_measured(sparse_model):
    """Two groups that are cheap alone but costly together: the choice raises both and validates below the base;
    the refinement moves the sensitive group's zeros into one of them, and the written rules measure what it says."""
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    pruner = RestoreWeights(sparse_model, SparsityConfig())
    base = base_ratios(pruner, rules, groups, 0.5)
    a, b, c = (g.name for g in groups)

    def both_above_base(fractions):
        return 5.0 * max(0.0, fractions[a] - base[a]) * max(0.0, fractions[b] - base[b])

    evaluate = FakeValidator(sparse_model, rules, groups, {a: -0.1, b: -0.1, c: 0.5}, extra=both_above_base)
    ladders = {g.name: context_ladder(base[g.name]) for g in groups}
    result = scan(pruner, evaluate, rules, groups, ladders, 0.5, base=base, budget=12, margin=0.001)
    assert result["measured"]["mAP50"] < result["base"]["mAP50"] and result["refined_from"] == "base"
    assert result["written_from"] == "refined" and not result["kept_base"]
    assert result["written"]["mAP50"] > result["base"]["mAP50"] > result["measured"]["mAP50"]
    assert len(evaluate.calls) == result["validations"] <= 12
    assert result["validations"] == check_budget(None, ladders, True) + len(result["refinement"])
    written = {g["name"]: g["written_ratio"] for g in result["groups"]}
    assert written[c] < base[c]
    sparsify(sparse_model, rules=result["rules"], sparsity=0.5)  # the file as sparsify prunes it: what was measured
    assert evaluate(sparse_model) == pytest.approx(result["written"], abs=1e-9)
    pruner.restore()


def test_refinement_never_writes_below_the_base(sparse_model):
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    pruner = RestoreWeights(sparse_model, SparsityConfig())
    base = base_ratios(pruner, rules, groups, 0.5)

    def away_from_base(fractions):  # every allocation but the base loses, whatever one-group moves measure
        return 10.0 * sum(abs(fractions[g] - base[g]) for g in fractions)

    sensitivity = dict(zip((g.name for g in groups), (0.3, -0.2, 0.1)))
    evaluate = FakeValidator(sparse_model, rules, groups, sensitivity, extra=away_from_base)
    ladders = {g.name: context_ladder(base[g.name]) for g in groups}
    result = scan(pruner, evaluate, rules, groups, ladders, 0.5, base=base, budget=20)
    assert result["refinement"] and not any(t["accepted"] for t in result["refinement"])
    assert result["kept_base"] and result["written"] == result["base"]
    written = load_rules(result["rules"]).ratios
    assert all(written[g] == pytest.approx(base[g], abs=1e-6) for g in base)


def test_flops_sizes_are_least_squares_rates_scaled_to_the_joint_removal():
    removed = {"a": [(0.2, 30.0), (0.4, 70.0), (0.8, 170.0)], "b": [(0.5, 10.0)]}
    tops = {"a": 0.8, "b": 0.5}
    rate_a = (0.2 * 30 + 0.4 * 70 + 0.8 * 170) / (0.2**2 + 0.4**2 + 0.8**2)
    sizes = flops_sizes(removed, tops, joint=200.0)
    scale = 200.0 / (rate_a * 0.8 + 20.0 * 0.5)
    assert sizes == pytest.approx({"a": rate_a * scale, "b": 20.0 * scale}, rel=1e-12)
    assert sum(sizes[g] * tops[g] for g in tops) == pytest.approx(200.0, rel=1e-12)  # exact where it was measured
    with pytest.raises(ValueError, match="'b' removes no FLOPs"):
        flops_sizes({"a": [(0.5, 10.0)], "b": [(0.5, 0.0)]}, {"a": 0.5, "b": 0.5}, joint=10.0)


def test_capped_groups_are_those_written_at_their_highest_tested_ratio():
    from ultra_sparse.scan import capped_groups

    points = [{"ratio": 0.3}, {"ratio": 0.6}, {"ratio": 0.9}]
    result = {"groups": [{"name": "top", "written_ratio": 0.9, "points": points},
                         {"name": "mid", "written_ratio": 0.6, "points": points},
                         {"name": "near", "written_ratio": 0.8999999999, "points": points}]}
    assert capped_groups(result) == ["top", "near"]


class ChannelFakeValidator:
    """Scores a channel-pruned copy by the parameters each group lost: loss = sum of s_g * lost fraction_g."""

    def __init__(self, model, rules, groups, sensitivity):
        self.scanned, self.sensitivity, self.calls = load_rules(layout_rules(rules, groups, {})), sensitivity, []
        self.dense = self.sizes(model)

    def sizes(self, network):
        counts = {}
        for w in assign_families(network, self.scanned).weights:
            counts[w.family] = counts.get(w.family, 0) + w.weight.numel()
        return {g: counts[g] for g in self.sensitivity}

    def __call__(self, network):
        lost = {g: 1 - n / self.dense[g] for g, n in self.sizes(network).items()}
        self.calls.append(lost)
        loss = sum(self.sensitivity[g] * f for g, f in lost.items())
        return {"mAP50": 0.8 - loss, "mAP50-95": 0.5 - loss}


def test_flops_scan_prices_groups_per_flop_and_its_choice_reaches_the_flops_target(sparse_model):
    """method=channel flops=F: each ladder point records the FLOPs it removed, the groups' sizes are FLOPs per
    ratio, and the choice, pruned as sparsify flops=F prunes it, removes F of the GFLOPs; the insensitive group
    is pruned the most."""
    rules = load_rules("default")
    groups = plan_groups(assign_families(sparse_model, rules), 3)
    before = {k: v.clone() for k, v in sparse_model.state_dict().items()}
    config = SparsityConfig(method="channel", flops=0.3)
    pruner = PruneCopy(sparse_model, config)
    sensitive, cheap, other = (g.name for g in groups)
    evaluate = ChannelFakeValidator(sparse_model, rules, groups, {sensitive: 0.5, cheap: 0.0, other: 0.2})
    ladders = {g.name: (0.3, 0.6, 0.9) for g in groups}
    result = scan(pruner, evaluate, rules, groups, ladders, 0.3)
    assert result["size_unit"] == "FLOPs" and len(evaluate.calls) == result["validations"] == 2 + 3 * 3
    for group in result["groups"]:
        removed = [p["flops_removed"] for p in group["points"]]
        assert 0 < removed[0] < removed[1] < removed[2] < pruner.flops
    joint = sum(g["size"] * 0.9 for g in result["groups"])
    written = {g["name"]: g["written_ratio"] for g in result["groups"]}
    assert written[cheap] > written[sensitive]
    pruned = copy.deepcopy(sparse_model)
    section = sparsify(pruned, rules=result["rules"], method="channel", flops=0.3).report["channel"]
    assert section["bracket"]["below"] <= 0.3 <= section["bracket"]["above"]
    assert evaluate(pruned) == pytest.approx(result["written"], abs=1e-9)  # the written rules measure as recorded
    assert joint <= pruner.flops
    after = sparse_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the dense model is never changed


@pytest.mark.integration
def test_evaluator_reuses_one_dataloader_and_never_changes_the_model(sparse_model, synthetic_data, tmp_path):
    from ultra_sparse.scan import Evaluator

    before = {k: v.clone() for k, v in sparse_model.state_dict().items()}
    evaluate = Evaluator(synthetic_data, imgsz=64, batch=8, device="cpu", workdir=tmp_path)
    first = evaluate(sparse_model)
    loader = evaluate.validator.dataloader
    assert evaluate(sparse_model) == first and evaluate.validator.dataloader is loader
    after = sparse_model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)  # no fusing
    assert set(first) == {"mAP50", "mAP50-95"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_evaluator_validates_each_task_with_its_own_validator_by_box_map(task, tmp_path):
    """A segment, pose or OBB model is validated by its task's validator (detection's cannot read a segment head's
    output) and scanned by the box mAP that validation reports."""
    from ultralytics.nn.tasks import OBBModel, PoseModel, SegmentationModel

    from ultra_sparse.scan import Evaluator
    from ultra_sparse.synthetic import CLASS_NAMES
    from ultra_sparse.synthetic_tasks import make_task_dataset

    build = {
        "segment": lambda: SegmentationModel("yolo11n-seg.yaml", nc=len(CLASS_NAMES), verbose=False),
        "pose": lambda: PoseModel("yolo11n-pose.yaml", nc=1, data_kpt_shape=(3, 3), verbose=False),
        "obb": lambda: OBBModel("yolo11n-obb.yaml", nc=len(CLASS_NAMES), verbose=False),
    }
    validators = {"segment": "SegmentationValidator", "pose": "PoseValidator", "obb": "OBBValidator"}
    data = make_task_dataset(tmp_path / "data", task, n_train=1, n_val=4)
    evaluate = Evaluator(data, imgsz=64, batch=4, device="cpu", workdir=tmp_path / "val", task=task)
    metrics = evaluate(build[task]().eval())
    assert type(evaluate.validator).__name__ == validators[task]
    assert set(metrics) == {"mAP50", "mAP50-95"} and all(0 <= v <= 1 for v in metrics.values())


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory, trained_checkpoint, synthetic_data):
    folder = tmp_path_factory.mktemp("scan")
    model = folder / "best.pt"
    shutil.copy(trained_checkpoint, model)
    out = subprocess.run(
        [*CLI, "scan", f"model={model}", f"data={synthetic_data}", "sparsity=0.5", "imgsz=64", "batch=8", "groups=3", "budget=14",
         f"project={folder / 'runs'}"],
        cwd=folder, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return folder, model, folder / "runs" / "scan", out


@pytest.mark.integration
def test_scan_writes_rules_curves_and_plot(scan_run, trained_checkpoint):
    folder, model, run, out = scan_run
    assert sorted(p.name for p in run.iterdir()) == ["rules.yaml", "sensitivity.csv", "sensitivity.json", "sensitivity.png"]
    result = json.loads((run / "sensitivity.json").read_text())
    points = sum(len(g["points"]) for g in result["groups"])
    assert result["context"] == "target" and result["validations"] <= result["budget"] == 14
    assert {"dense", "base", "groups", "rules", "predicted", "measured", "wall_s"} <= set(result)
    rows = list(csv.DictReader((run / "sensitivity.csv").open()))
    refined = len(result["refinement"])
    assert [r["group"] for r in rows[:2]] == ["dense", "base"]
    assert len(rows) == result["validations"] == 3 + points + refined
    assert {r["group"] for r in rows[2:2 + points]} == {g["name"] for g in result["groups"]}
    assert rows[2 + points]["group"] == "choice" and all(r["group"].startswith("refine: ") for r in rows[3 + points:])
    written = result["written"]["mAP50"]
    assert written >= result["base"]["mAP50"] and written in {float(r["mAP50"]) for r in rows[1:2] + rows[2 + points:]}
    assert (run / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ratios = load_rules(run / "rules.yaml").ratios
    assert all(ratios[g["name"]] == g["written_ratio"] for g in result["groups"])
    assert model.read_bytes() == trained_checkpoint.read_bytes()  # the input is never changed
    assert "scan:" in out.stdout + out.stderr and "validations" in out.stdout + out.stderr


@pytest.mark.integration
@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_sparsify_with_scanned_rules_hits_the_target_exactly(scan_run, sparsity):
    folder, model, run, _ = scan_run
    net, _ = load_checkpoint(model)
    result = json.loads((run / "sensitivity.json").read_text())
    report = sparsify(net, rules=str(run / "rules.yaml"), sparsity=sparsity).report
    prunable = report["totals"]["prunable"]
    assert prunable["zeros"] == round(sparsity * prunable["params"])
    assert prunable["params"] == sum(g["params"] for g in result["groups"])
    families = {f["family"]: f for f in report["families"]}
    for group in result["groups"]:  # each group lands on its scanned ratio, scaled by sparsity / scanned sparsity
        achieved = families[group["name"]]["ratio_achieved"]
        assert achieved == pytest.approx(group["written_ratio"] * sparsity / 0.5, abs=2 / group["params"] + 1e-5)


def run_inline(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the console entry point in this process; return its exit status and stderr."""
    from ultra_sparse.cli import entrypoint

    monkeypatch.setattr(sys, "argv", ["ultra-sparse", *args])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "sparsity= is required"),
        (["sparsity=1.5"], "outside [0, 1)"),
        (["sparsity=0"], "needs no scan"),
        (["sparsity=0.5", "method=nm"], "does not apply to method=nm"),
        (["sparsity=0.5", "context=dense", "ladder=[0.2,0.4]"], "must reach sparsity=0.5"),
        (["sparsity=0.5", "context=dense", "ladder=[0.6,0.5]"], "increase strictly"),
        (["sparsity=0.5", "context=dense", "ladder=[0.5,0.99]"], "(0, 0.95]"),
        (["sparsity=0.5", "ladder=[0.5,0.9]"], "ladder= needs context=dense"),
        (["sparsity=0.5", "context=around"], "context='around'"),
        (["sparsity=0.5", "groups=0"], "groups=0 must be a positive integer"),
        (["sparsity=0.5", "budget=0"], "budget=0 must be a positive integer"),
        (["sparsity=0.5", "budget=4"], "budget=4 is below the"),
        (["sparsity=0.5", "margin=-0.1"], "margin=-0.1 must be a number"),
        (["sparsity=0.5", "metric=map75"], "metric='map75' is not one of mAP50, mAP50-95"),
        (["sparsity=0.5", "imgsz=big"], "imgsz='big'"),
        (["sparsity=0.5", "rules=nope"], "neither a preset"),
        (["sparsity=0.5", "data=MISSING"], "not found"),
        (["sparsity=0.5", "data=NOTDATA"], "'train:' key missing"),  # a rules file passed as data=
        (["sparsity=0.5", "model=MISSING"], "not found"),
        (["sparsity=0.5", "device=cuda:7"], "no such CUDA device"),
        (["flops=0.5"], "flops=0.5 needs method=channel"),
        (["method=channel"], "(or flops=, the fraction of GFLOPs removed)"),
        (["method=channel", "flops=0.5", "sparsity=0.5"], "not both"),
        (["method=channel", "flops=0.5", "context=target"], "context=target counts zeros"),
        (["method=channel", "flops=0.6", "ladder=[0.05,0.1]", "reconstruct=False", "groups=2"], "flops=0.6 is out of reach"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(monkeypatch, capsys, tmp_path, trained_checkpoint, synthetic_data, args, message):
    keys = {"model": str(trained_checkpoint), "data": str(synthetic_data)}
    not_data = tmp_path.parent / f"{tmp_path.name}-rules.yaml"
    not_data.write_text("conv:\n  ratio: 0.2\n")
    for arg in args:
        key, _, value = arg.partition("=")
        keys[key] = value.replace("MISSING", str(tmp_path / "missing.yaml")).replace("NOTDATA", str(not_data))
    status, err = run_inline(monkeypatch, capsys, "scan", *(f"{k}={v}" for k, v in keys.items()), f"project={tmp_path}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("ultra-sparse: error:"), err
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_classify_model_is_refused_up_front(monkeypatch, capsys, tmp_path, synthetic_data):
    """Classify models report no box mAP: the scan says so in one line before it plans, prunes or writes anything."""
    from ultralytics import YOLO

    from ultra_sparse.scan import Evaluator

    with pytest.raises(ValueError, match="task='classify' cannot be scanned"):
        Evaluator(synthetic_data, imgsz=64, batch=8, device="cpu", workdir=tmp_path, task="classify")
    model = tmp_path / "classify.pt"
    YOLO("yolo11n-cls.yaml").save(model)
    runs = tmp_path / "runs"
    status, err = run_inline(monkeypatch, capsys, "scan", f"model={model}", f"data={synthetic_data}", "sparsity=0.5",
                             f"project={runs}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "task='classify' cannot be scanned" in lines[0], err
    assert not runs.exists()


@pytest.mark.integration
def test_channel_scan_writes_rules_that_channel_sparsify_takes(tmp_path, trained_checkpoint, synthetic_data):
    """method=channel scans with the other groups dense, which leaves families at ratio 0 while one is pruned."""
    out = subprocess.run(
        [*CLI, "scan", f"model={trained_checkpoint}", f"data={synthetic_data}", "method=channel", "context=dense",
         "sparsity=0.3", "imgsz=64", "batch=8", "groups=2", f"project={tmp_path}", "name=scan"],
        cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "scan"
    assert sorted(p.name for p in run.iterdir()) == ["rules.yaml", "sensitivity.csv", "sensitivity.json", "sensitivity.png"]
    result = json.loads((run / "sensitivity.json").read_text())
    assert result["context"] == "dense" and len(result["groups"]) == 2
    assert f"rules={run / 'rules.yaml'} sparsity=0.3 method=channel" in out.stdout + out.stderr
    net, _ = load_checkpoint(trained_checkpoint)
    section = sparsify(net, method="channel", rules=str(run / "rules.yaml"), sparsity=0.3, imgsz=64).report["channel"]
    assert section["bracket"]["groups"] <= 1
    assert section["bracket"]["below"] <= 0.3 <= section["bracket"]["above"]


@pytest.mark.integration
def test_taylor_element_scan_runs_from_a_trained_checkpoint(tmp_path, trained_checkpoint, synthetic_data):
    """importance=taylor with the default context=target: the base allocation is pruned with the model's own loss too
    (a checkpoint keeps its training args as a plain dict, which Ultralytics' loss cannot read)."""
    out = subprocess.run(
        [*CLI, "scan", f"model={trained_checkpoint}", f"data={synthetic_data}", "sparsity=0.5", "importance=taylor",
         "calib_batches=1", "imgsz=64", "batch=8", "groups=3", "budget=9", f"project={tmp_path}", "name=scan"],
        cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "scan" / "sensitivity.json").read_text())
    assert result["context"] == "target" and result["importance"] == "taylor"
    assert result["base"] is not None


def test_flops_channel_scan_refits_every_point_and_writes_rules_for_sparsify_flops(tmp_path, trained_checkpoint, synthetic_data):
    """method=channel flops=F: context=dense by default, each pruned copy refitted on the train split's images
    (data= is given), the groups priced per FLOP and by metric=, channels ranked by importance=; the rules file says
    flops= and sparsify flops=F takes it."""
    out = subprocess.run(
        [*CLI, "scan", f"model={trained_checkpoint}", f"data={synthetic_data}", "method=channel", "flops=0.3",
         "calib_batches=1", "round_to=16", "imgsz=64", "batch=8", "groups=3", "budget=12", f"project={tmp_path}",
         "name=scan", "metric=map50-95", "importance=taylor"],
        cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )
    assert out.returncode == 0, out.stderr
    run = tmp_path / "scan"
    result = json.loads((run / "sensitivity.json").read_text())
    assert result["context"] == "dense" and result["flops"] == 0.3 and result["sparsity"] is None
    assert result["reconstruct"] is True and result["calib_batches"] == 1 and result["size_unit"] == "FLOPs"
    assert "refitted on 8 calibration images" in result["description"]
    assert result["metric"] == "mAP50-95" and "flops=0.3 by mAP50-95" in result["description"]
    assert result["importance"] == "taylor" and "importance=taylor" in result["description"]
    assert f"dense mAP50-95 {result['dense']['mAP50-95']:.4f}" in out.stdout + out.stderr
    assert all(p["flops_removed"] > 0 for g in result["groups"] for p in g["points"])
    assert (run / "rules.yaml").read_text().startswith("# Written by ultra-sparse scan. The ratios reach flops=0.3")
    rows = list(csv.DictReader((run / "sensitivity.csv").open()))
    assert rows[-1 - len(result["refinement"])]["group"] == "choice"
    assert rows[-1 - len(result["refinement"])]["ratio"] == "0.3"
    assert result["round_to"] == 16
    assert (f"rules={run / 'rules.yaml'} flops=0.3 method=channel round_to=16 data={synthetic_data} importance=taylor"
            in out.stdout + out.stderr)
    net, _ = load_checkpoint(trained_checkpoint)
    section = sparsify(net, method="channel", rules=str(run / "rules.yaml"), flops=0.3, round_to=16).report["channel"]
    assert section["bracket"]["below"] <= 0.3 <= section["bracket"]["above"]


def test_prune_copy_refits_each_copy_when_given_calibration_batches(sparse_model, synthetic_data):
    from ultra_sparse.calibration import calibration_batches

    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=8, n_batches=1))
    rules = layout_rules(load_rules("default"), [], {})
    config = SparsityConfig(method="channel", reconstruct=True)
    refitted = PruneCopy(sparse_model, config, batches).prune(rules, 0.3)
    plain = PruneCopy(sparse_model, config.replace(reconstruct=False)).prune(rules, 0.3)
    a, b = refitted.state_dict(), plain.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)  # the same plan
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("conv.weight"))  # other values: refitted


@pytest.mark.parametrize("method", ["channel", "unstructured"])
def test_taylor_points_rank_by_the_loss_on_the_calibration_batches(sparse_model, synthetic_data, method):
    """importance=taylor in a scan: each point removes what the loss gradients rank lowest, not what l1 does, and the
    dense network is the same after the point as before."""
    from ultra_sparse.calibration import calibration_batches, loss_ready
    from ultra_sparse.scan import make_pruner

    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=8, n_batches=1))
    rules = layout_rules(load_rules("default"), [], {})
    before = copy.deepcopy(sparse_model.state_dict())
    config = SparsityConfig(method=method, reconstruct=False if method == "channel" else None)
    with loss_ready(sparse_model):
        pruned = {}
        for importance in ("l1", "taylor"):
            pruner = make_pruner(sparse_model, config.replace(importance=importance), batches)
            pruned[importance] = copy.deepcopy(pruner.prune(rules, 0.3).state_dict())
            pruner.restore()
    a, b = pruned["l1"], pruned["taylor"]
    assert list(a) == list(b)
    assert any(a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a if k.endswith("conv.weight"))
    assert all(torch.equal(v, before[k]) for k, v in sparse_model.state_dict().items())


@pytest.mark.parametrize(
    "settings, pruner_class",
    [({"method": "channel", "importance": "taylor"}, PruneCopy), ({"importance": "taylor"}, RestoreWeights)],
    ids=["channel", "unstructured"],
)
def test_a_taylor_scan_runs_the_loss_once_and_each_point_is_what_sparsify_gives(
    sparse_model, synthetic_data, monkeypatch, settings, pruner_class
):
    """Every point ranks the same dense weights: the channel gradients (or element scores) are computed at the first
    point and reused, and each point is what ``sparsify`` gives alone."""
    from ultra_sparse.calibration import calibration_batches, loss_ready

    batches = list(calibration_batches(str(synthetic_data), imgsz=64, batch=8, n_batches=2))
    config = SparsityConfig(**settings)
    rules = layout_rules(load_rules("default"), [], {})
    passes = []
    loss = type(sparse_model).loss
    monkeypatch.setattr(type(sparse_model), "loss", lambda self, *a, **k: passes.append(1) or loss(self, *a, **k))
    with loss_ready(sparse_model):
        pruner = pruner_class(sparse_model, config, batches)
        points = {}
        for target in (0.2, 0.4):
            points[target] = copy.deepcopy(pruner.prune(rules, target).state_dict())
            pruner.restore()
        assert len(passes) == len(batches)  # one loss pass per batch, for both points
        for target, point in points.items():
            alone = copy.deepcopy(sparse_model)
            sparsify(alone, config.replace(rules=rules, sparsity=target), batches=batches)
            expected = alone.state_dict()
            assert list(point) == list(expected)
            assert all(torch.equal(v, expected[k]) for k, v in point.items())  # the same channels or weights removed
    assert len(passes) == 3 * len(batches)


@pytest.mark.parametrize(
    "settings, scores, message",
    [
        ({"method": "channel", "importance": "taylor"}, {}, "scores= ranks single weights"),
        ({"importance": "l1"}, {}, "need importance=taylor"),
        ({"importance": "taylor"}, {}, "is missing or of another shape"),
        ({"importance": "taylor"}, {"model.0.conv.weight": torch.ones(1)}, "model.0.conv.weight is missing or of anoth"),
    ],
)
def test_scores_out_of_place_are_refused_before_anything_changes(sparse_model, settings, scores, message):
    """scores= are taylor scores of single weights, one per element of every prunable weight."""
    before = copy.deepcopy(sparse_model.state_dict())
    with pytest.raises(ValueError, match=message):
        sparsify(sparse_model, SparsityConfig(sparsity=0.3, **settings), scores=scores)
    assert all(torch.equal(v, before[k]) for k, v in sparse_model.state_dict().items())


def test_gradients_are_refused_for_element_pruning(sparse_model):
    """gradients= ranks channels; unstructured pruning refuses it before anything changes."""
    before = copy.deepcopy(sparse_model.state_dict())
    with pytest.raises(ValueError, match="gradients= ranks channels"):
        sparsify(sparse_model, SparsityConfig(sparsity=0.3), gradients={})
    assert all(torch.equal(v, before[k]) for k, v in sparse_model.state_dict().items())


def test_ctrl_c_before_the_first_validation_exits_130_with_its_own_line(monkeypatch, capsys, tmp_path, trained_checkpoint,
                                                                       synthetic_data):
    """The progress bar closed on no validation divided by zero and hid the interrupt (exit 1, ZeroDivisionError)."""
    from ultra_sparse.scan.evaluate import Evaluator

    def interrupted(self, network):
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluator, "__call__", interrupted)
    status, err = run_inline(monkeypatch, capsys, "scan", f"model={trained_checkpoint}", f"data={synthetic_data}",
                             "sparsity=0.5", "imgsz=64", f"project={tmp_path}")
    assert status == 130 and "ultra-sparse: interrupted" in err and "ZeroDivisionError" not in err
    assert list(tmp_path.iterdir()) == []
