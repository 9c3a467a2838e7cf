"""Latency targets: the flops= search finds the plan a known latency curve implies; sparsify latency= runs it."""

from __future__ import annotations

import copy
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
    (dict(latency=0.6, importance="taylor", scope="global"), "needs scope=layer"),
])
def test_latency_settings_are_refused_before_any_work(kwargs, message):
    method, flops = kwargs.pop("method", "channel"), kwargs.pop("flops", None)
    ranking = {"importance": kwargs.pop("importance", "l1"), "scope": kwargs.pop("scope", None)}
    settings = {"backend": "torchscript", "quantize": 32, "data": None, "probes": 7, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        check_latency_settings(settings["latency"], settings["backend"], settings["quantize"],
                               SparsityConfig(method=method, flops=flops, **ranking), settings["data"],
                               settings.get("probes", 7))


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

    def time_by_block(self, flops: float, rules: str) -> None:
        return None  # as for a runtime without a per-operation profile


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
    search = json.loads((tmp_path / "run" / "latency-search.json").read_text())  # the search's report, in the run
    assert search["chosen"]["flops"] == flops and search["chosen"] in search["probes"] and len(search["probes"]) <= 4
    md = (tmp_path / "run" / "latency-search.md").read_text()
    assert f"flops={flops} chosen" in md and md.count("\n| ") == len(search["probes"]) + 1  # header + one row a probe


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
    monkeypatch.setattr(latency, "export_artifact",
                        lambda weights, fmt, quantize, folder, *a: exported.append((fmt, quantize)) or folder)
    monkeypatch.setattr(latency, "artifact_runner", lambda *a: (lambda: None))
    probe = latency.ArtifactProbe(YOLO("yolov8n.yaml").model, SparsityConfig(method="channel"), "openvino", 8, 64,
                                  tmp_path, data="data.yaml", runs=2, warmup=0)
    probe(0.3)
    assert exported == [("openvino", 32), ("openvino", 8)]


def test_probes_of_a_taylor_run_plan_the_widths_taylor_would(tmp_path, monkeypatch, synthetic_data):
    """importance=taylor (train's best measured setting): the probes have no data for gradients and rank by l1, which
    per layer gives the same widths but for the one group that crosses at the target; this stopped with
    'importance=taylor needs data=' before."""
    from ultralytics import YOLO

    from ultra_sparse import latency
    from ultra_sparse.calibration import calibration_batches, loss_ready
    from ultra_sparse.oneshot import sparsify

    monkeypatch.setattr(latency, "export_artifact", lambda weights, fmt, quantize, folder, *a: folder)
    monkeypatch.setattr(latency, "artifact_runner", lambda *a: (lambda: None))
    net, taylor = YOLO("yolov8n.yaml").model, SparsityConfig(method="channel", importance="taylor")
    probe = latency.ArtifactProbe(net, taylor, "onnxruntime", 32, 64, tmp_path, runs=2, warmup=0)
    probe(0.3)
    pruned = torch.load(tmp_path / "flops-0.3000.pt", map_location="cpu", weights_only=False)["model"]
    reference = copy.deepcopy(net)
    with loss_ready(reference):
        sparsify(reference, taylor.replace(flops=0.3, reconstruct=False), imgsz=64,
                 batches=list(calibration_batches(str(synthetic_data), imgsz=64, batch=4, n_batches=1)))
    shapes = [(a.shape, b.shape) for a, b in zip(pruned.parameters(), reference.parameters())]
    assert sum(a != b for a, b in shapes) <= 4  # at most the group that crosses at the target: conv, BN, the next conv
    count = [sum(p.numel() for p in m.parameters()) for m in (pruned, reference)]
    assert count[0] == pytest.approx(count[1], rel=0.01)


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

    def time_by_block(self, flops: float, rules: str) -> dict:
        return {"blocks": [{"block": "model.22", "class": "Detect", "protected": True}], "protected_share": 0.4}


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
    with pytest.raises(ValueError, match=rf"was not reached on torchscript.*remove at most flops={reach}; model.22 "
                                         rf"\(Detect\), which no rule prunes, takes 40% of the time.*rules=thin_head"):
        latency.find_flops(net, config, settings, 64)
    assert len(probes[0].asked) == 4 and max(probes[0].asked) <= reach


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_time_by_block_names_the_protected_head_and_covers_every_block(tmp_path, backend):
    """The runtime's per-operation profile, summed per block: every block of the network with weights has a time in
    the dense and the pruned artifact; the never-pruned Detect head is the one protected block, and none is with rules
    that give the head a ratio."""
    from ultralytics import YOLO

    from ultra_sparse.latency import ArtifactProbe

    net = YOLO("yolov8n.yaml").model
    probe = ArtifactProbe(net, SparsityConfig(method="channel"), backend, 32, 64, tmp_path, runs=2, warmup=0)
    ratio, _ = probe(0.4)
    assert ratio > 0
    profile = probe.time_by_block(0.4, "default")
    rows = {r["block"]: r for r in profile["blocks"]}
    with_weights = {f"model.{i}" for i, layer in enumerate(net.model) if any(True for _ in layer.parameters())}
    assert with_weights <= set(rows) <= {f"model.{i}" for i in range(len(net.model))} | {"other"}
    assert all(rows[b]["dense_ms"] > 0 and rows[b]["pruned_ms"] > 0 for b in with_weights)
    assert [b for b, r in rows.items() if r["protected"]] == ["model.22"] and rows["model.22"]["class"] == "Detect"
    assert 0 < profile["protected_share"] < 1
    assert probe.time_by_block(0.4, "thin_head")["protected_share"] == 0.0


def test_the_latency_report_lists_every_probe_and_the_time_by_block():
    from ultra_sparse.report import latency_lines

    probes = [{"flops": 0.45, "ratio": 0.62, "iqr": 0.03}, {"flops": 0.675, "ratio": 0.534, "iqr": 0.02}]
    blocks = [{"block": "model.0", "class": "Conv", "protected": False, "dense_ms": 1.0, "pruned_ms": 0.5},
              {"block": "model.22", "class": "Detect", "protected": True, "dense_ms": 3.0, "pruned_ms": 1.5}]
    search = {"latency": 0.55, "backend": "openvino", "quantize": 8, "max_probes": 7, "reachable_flops": 0.784,
              "probes": probes, "chosen": probes[1], "wall_s": 98.0, "note": "measured on this machine",
              "time_by_block": {"blocks": blocks, "protected_share": 0.75}}
    text = "\n".join(latency_lines(search))
    assert "flops=0.675 chosen, 0.534 of the dense FP32 artifact" in text and "after 2 probes (at most 7" in text
    assert "| 1 | 0.4500 | 0.620 | 0.030 |" in text and "| 2 | 0.6750 | 0.534 | 0.020 |" in text
    assert "| model.22 (protected) | Detect | 3.00 | 1.50 | 75.0% |" in text and "take 75% of the chosen" in text
