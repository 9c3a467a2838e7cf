"""Latency targets: the flops= search finds the plan a known latency curve implies; sparsify latency= runs it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ultra_sparse.config import SparsityConfig
from ultra_sparse.latency import check_latency_settings, search_flops


@pytest.mark.parametrize("target", [0.45, 0.6, 0.75, 0.9])
@pytest.mark.parametrize("curve", [lambda f: 1.0 - 0.8 * f, lambda f: 1.0 - 0.6 * f ** 0.5, lambda f: 0.35 + 0.65 * (1 - f) ** 2])
def test_search_finds_the_plan_a_known_latency_curve_implies(curve, target):
    calls = []

    def measure(flops):
        calls.append(flops)
        return curve(flops), 0.01

    best, probes = search_flops(measure, target, max_probes=7, tolerance=0.02)
    assert best is not None and target - 0.02 <= best.ratio <= target  # at most the target, and close to it
    assert len(probes) == len(calls) <= 7 and [p.flops for p in probes] == calls
    assert best == max((p for p in probes if p.ratio <= target), key=lambda p: p.ratio)
    assert search_flops(measure, target)[0] == best  # given the measurements, reproducible


def test_search_keeps_the_best_probe_of_a_noisy_curve_and_says_when_none_reaches():
    noisy = {0.45: 0.62, 0.675: 0.58, 0.5625: 0.61, 0.6188: 0.57, 0.5906: 0.585}
    best, probes = search_flops(lambda f: (noisy.get(f, 0.59), 0.02), 0.6, max_probes=5, tolerance=0.001)
    assert best.ratio == max(p.ratio for p in probes if p.ratio <= 0.6) and len(probes) == 5
    best, probes = search_flops(lambda f: (0.95, 0.0), 0.5, max_probes=4)
    assert best is None and len(probes) == 4 and probes[-1].flops > 0.8  # pushed to the upper bound


@pytest.mark.parametrize("kwargs, message", [
    (dict(latency=1.2), "in (0, 1)"),
    (dict(latency=0.6, method="unstructured"), "add method=channel"),
    (dict(latency=0.6, flops=0.5), "not both"),
    (dict(latency=0.6, backend="tensorrt"), "needs backend="),
    (dict(latency=0.6, quantize="32,8"), "one precision"),
    (dict(latency=0.6, quantize=8), "needs data="),
    (dict(latency=0.6, probes=0), "probes=0 must be a positive integer"),
])
def test_latency_settings_are_refused_before_any_work(kwargs, message):
    method = kwargs.pop("method", "channel")
    flops = kwargs.pop("flops", None)
    settings = {"backend": "torchscript", "quantize": 32, "data": None, "probes": 7, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        check_latency_settings(settings["latency"], settings["backend"], settings["quantize"],
                               SparsityConfig(method=method, flops=flops), settings["data"], settings.get("probes", 7))


@pytest.mark.slow
def test_sparsify_latency_target_measures_probes_and_reports_them(tmp_path, trained_checkpoint):
    from ultra_sparse.cli import main

    out = tmp_path / "pruned.pt"
    assert main(["sparsify", f"model={trained_checkpoint}", "method=channel", "latency=0.9", "backend=torchscript",
                 "probes=3", "imgsz=64", f"out={out}"]) == 0
    report = json.loads((tmp_path / "pruned-report.json").read_text())
    search = report["latency_search"]
    assert search["backend"] == "torchscript" and 1 <= len(search["probes"]) <= 3 and "this machine" in search["note"]
    chosen = search["chosen"]  # the first probe removes 45% of GFLOPs: well below 0.9 of dense latency on any CPU
    assert chosen["ratio"] <= 0.9 and chosen in search["probes"]
    stored = torch.load(out, map_location="cpu", weights_only=False)["ultra_sparse"]["config"]
    assert stored["flops"] == chosen["flops"]  # the plan kept is the measured one
    assert report["channel"]["gflops"]["after"] < report["channel"]["gflops"]["before"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pruned-report.json", "pruned-report.md", "pruned.pt"]


class _LinearLatency:
    """A stand-in for the artifact probe: latency falls linearly with the GFLOPs removed (deterministic)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, flops: float) -> tuple[float, float]:
        return 1.0 - 0.8 * flops, 0.01


@pytest.mark.slow
def test_train_latency_target_trains_to_the_measured_flops(tmp_path, trained_checkpoint, synthetic_data, monkeypatch):
    """train latency=: the flops= the probes imply is found before the run and is what the run prunes to."""
    from ultra_sparse import latency
    from ultra_sparse.cli import main

    monkeypatch.setattr(latency, "ArtifactProbe", _LinearLatency)
    keys = ["imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=False", "epochs=1", "optimizer=SGD"]
    assert main(["train", f"model={trained_checkpoint}", f"data={synthetic_data}", "method=channel", "latency=0.7",
                 "backend=torchscript", "probes=4", f"project={tmp_path}", "name=run", *keys]) == 0
    record = torch.load(tmp_path / "run" / "weights" / "last.pt", map_location="cpu", weights_only=False)["ultra_sparse"]
    flops = record["config"]["flops"]
    assert 1.0 - 0.8 * flops <= 0.7 and 1.0 - 0.8 * flops == pytest.approx(0.7, abs=0.05)  # the curve's answer, 0.375
    assert record["channel"]["achieved"]["flops"] == pytest.approx(flops, abs=0.03)  # the run pruned to it


def test_train_latency_target_is_refused_before_any_work(tmp_path, trained_checkpoint, synthetic_data):
    from ultra_sparse.cli import main

    with pytest.raises(ValueError, match="add method=channel"):
        main(["train", f"model={trained_checkpoint}", f"data={synthetic_data}", "latency=0.7", "backend=openvino",
              f"project={tmp_path / 'runs'}"])
    with pytest.raises(ValueError, match="must be a .pt"):
        main(["train", "model=yolo11n.yaml", f"data={synthetic_data}", "method=channel", "latency=0.7",
              "backend=torchscript", f"project={tmp_path / 'runs'}"])
    assert not (tmp_path / "runs").exists()


def test_probes_are_timed_against_the_dense_fp32_artifact(tmp_path, monkeypatch):
    """quantize=8: the candidates are INT8, the reference is the dense model's FP32 artifact (as compare reports)."""
    from ultralytics import YOLO

    from ultra_sparse import latency

    exported = []
    monkeypatch.setattr(latency, "export_artifact", lambda weights, fmt, quantize, *a: exported.append((fmt, quantize)))
    monkeypatch.setattr(latency, "artifact_runner", lambda *a: (lambda: None))
    probe = latency.ArtifactProbe(YOLO("yolov8n.yaml").model, SparsityConfig(method="channel"), "openvino", 8, 64,
                                  tmp_path, data="data.yaml", runs=2, warmup=0)
    probe(0.3)
    assert exported == [("openvino", 32), ("openvino", 8)]


class _PlanningLatency:
    """A stand-in probe that makes the real plan of each candidate (so a plan out of reach fails as it would) and
    returns a latency ratio that falls linearly with the GFLOPs removed."""

    def __init__(self, net, config, backend, quantize, imgsz, folder, data=None):
        self.net, self.config, self.imgsz, self.asked = net, config, imgsz, []

    def __call__(self, flops: float) -> tuple[float, float]:
        import copy

        from ultra_sparse.oneshot import sparsify

        self.asked.append(flops)
        sparsify(copy.deepcopy(self.net), self.config.replace(flops=flops, reconstruct=False), imgsz=self.imgsz)
        return 1.0 - 0.8 * flops, 0.0


def test_search_stays_within_what_the_rules_can_remove(monkeypatch):
    """A latency below the reach of the rules ends in the 'not reached' line naming the reach, not in a plan error."""
    from ultralytics import YOLO

    from ultra_sparse import latency

    net, config = YOLO("yolov8n.yaml").model, SparsityConfig(method="channel")
    reach = latency.reachable_flops(net, config, 64)
    assert 0.3 < reach < 0.9  # the protected head holds GFLOPs no rule removes
    probes = []
    monkeypatch.setattr(latency, "ArtifactProbe",
                        lambda *a, **k: probes.append(_PlanningLatency(*a, **k)) or probes[-1])
    settings = check_latency_settings(0.1, "torchscript", 32, config, None, probes=4)
    with pytest.raises(ValueError, match=rf"was not reached on torchscript.*remove at most flops={reach}"):
        latency.find_flops(net, config, settings, 64)
    assert len(probes[0].asked) == 4 and max(probes[0].asked) <= reach
