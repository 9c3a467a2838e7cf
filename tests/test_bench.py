"""Benchmark scheduling and statistics on fake clocks; the real timing path on tiny inputs (CUDA parts skip)."""

from __future__ import annotations

import sys

import pytest
import torch

from ultra_sparse.bench import (
    HONEST_NOTE,
    benchmark_models,
    format_benchmark_md,
    interleaved_order,
    parse_device,
    ratio_summary,
    summarize,
    time_interleaved,
    verdict,
)


class FakeClock:
    """A clock that advances only when a fake model runs, by a per-model cost, and records the call order."""

    def __init__(self, costs):
        self.now, self.costs, self.calls = 0.0, costs, []

    def __call__(self) -> float:
        return self.now

    def runner(self, name):
        def run():
            self.calls.append(name)
            self.now += self.costs[name].pop(0) if isinstance(self.costs[name], list) else self.costs[name]

        return run


def test_interleaved_order_alternates_direction():
    order = interleaved_order(["a", "b"], 4)
    assert [name for _, name in order] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [r for r, _ in order] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("runs", [0, -1, 1.5, True])
def test_interleaved_order_rejects_bad_runs(runs):
    with pytest.raises(ValueError, match="runs"):
        interleaved_order(["a", "b"], runs)


def test_interleaved_order_rejects_repeated_names():
    with pytest.raises(ValueError, match="distinct"):
        interleaved_order(["a", "a"], 2)


def test_time_interleaved_warms_up_then_times_in_order():
    clock = FakeClock({"dense": 2.0, "sparse": 3.0})
    syncs = []
    fns = {"dense": clock.runner("dense"), "sparse": clock.runner("sparse")}
    times = time_interleaved(fns, runs=3, warmup=2, timer=clock, sync=lambda: syncs.append(1))
    warmup_calls, timed_calls = clock.calls[:4], clock.calls[4:]
    assert warmup_calls == ["dense", "sparse", "sparse", "dense"]
    assert timed_calls == ["dense", "sparse", "sparse", "dense", "dense", "sparse"]
    assert times == {"dense": [2.0, 2.0, 2.0], "sparse": [3.0, 3.0, 3.0]}
    assert len(syncs) == 2 * 6  # before and after every timed run, never during warm-up


def test_time_interleaved_pairs_rounds():
    clock = FakeClock({"dense": [1.0, 5.0, 2.0], "sparse": [1.1, 5.5, 2.2]})
    times = time_interleaved({"dense": clock.runner("dense"), "sparse": clock.runner("sparse")}, runs=3, timer=clock)
    assert ratio_summary(times["dense"], times["sparse"]).median == pytest.approx(1.1)


def test_summarize_quartiles_and_range():
    s = summarize([5, 1, 4, 2, 3, 100])
    assert (s.n, s.median, s.min, s.max) == (6, 3.5, 1, 100)
    assert s.q1 == pytest.approx(2.25) and s.q3 == pytest.approx(4.75)
    assert s.to_dict()["iqr"] == pytest.approx(2.5)
    assert summarize([7.0]).iqr == 0.0


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [float("inf")]])
def test_summarize_rejects_bad_samples(values):
    with pytest.raises(ValueError):
        summarize(values)


def test_ratio_summary_checks_pairs():
    with pytest.raises(ValueError, match="length"):
        ratio_summary([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_summary([0.0], [1.0])


def test_ratio_inside_noise_is_no_speed_up():
    noisy = ratio_summary([10, 10, 10, 10, 10], [9.0, 9.8, 10.1, 10.6, 11.5])
    assert verdict(noisy).startswith("no measurable speed-up")


def test_clear_speed_up_and_slow_down():
    fast = ratio_summary([10, 10, 10, 10], [5.0, 5.2, 4.9, 5.1])
    assert verdict(fast).startswith("speed-up: sparse is 1.98x faster")
    slow = ratio_summary([10, 10, 10, 10], [13.0, 12.5, 12.8, 13.1])
    assert verdict(slow).startswith("slow-down: sparse is 1.29x slower")


def test_parse_device():
    assert parse_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="half=True needs a CUDA"):
        parse_device("cpu", half=True)
    with pytest.raises(ValueError, match="not cpu"):
        parse_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no such CUDA device"):
            parse_device(0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"backend": "tensorrt"}, "backend"),
        ({"imgsz": 65}, "multiple of 32"),
        ({"runs": 9}, "runs"),
        ({"warmup": -1}, "warmup"),
        ({"batch": 0}, "batch"),
    ],
)
def test_bad_settings_fail_before_loading(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark_models("missing-dense.pt", "missing-sparse.pt", **kwargs)


def test_missing_checkpoint():
    with pytest.raises(FileNotFoundError):
        benchmark_models("missing-dense.pt", "missing-sparse.pt", imgsz=64, runs=10, warmup=0)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_benchmark_real_models(trained_checkpoint, backend, tmp_path):
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime")
    result = benchmark_models(
        trained_checkpoint, trained_checkpoint, imgsz=64, runs=10, warmup=1, backend=backend, workdir=tmp_path
    )
    assert set(result["models"]) == {"dense", "sparse"}
    assert all(len(v) == 10 for v in result["samples_ms"].values())
    assert result["note"] == HONEST_NOTE
    text = format_benchmark_md(result)
    assert "sparse/dense ratio" in text and result["verdict"] in text
    if backend == "onnxruntime":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.onnx", "sparse.onnx"]
    assert not list(trained_checkpoint.parent.glob("*.onnx"))  # never beside the weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_benchmark_cuda_half(trained_checkpoint):
    result = benchmark_models(trained_checkpoint, trained_checkpoint, imgsz=64, runs=10, warmup=2, device=0, half=True)
    assert result["settings"]["device"] == "cuda:0" and result["settings"]["half"] is True


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnxruntime_backend_names_every_missing_package(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    with pytest.raises(ValueError, match=f"needs the onnx and onnxruntime packages \\(missing: {missing}\\)"):
        benchmark_models("missing-dense.pt", "missing-sparse.pt", imgsz=64, runs=10, backend="onnxruntime")


def test_time_interleaved_reports_progress_over_every_call():
    seen = []

    def progress(steps):
        seen.append(list(steps))
        return seen[-1]

    ticks = iter(range(100))
    time_interleaved({"a": lambda: None, "b": lambda: None}, runs=3, warmup=2, timer=lambda: next(ticks), progress=progress)
    assert [name for _, name in seen[0]] == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]


def test_benchmark_shows_a_progress_bar(trained_checkpoint, capfd):
    benchmark_models(trained_checkpoint, trained_checkpoint, imgsz=64, runs=10, warmup=1)
    out, err = capfd.readouterr()
    assert "benchmark" in out + err and "22/22" in out + err
