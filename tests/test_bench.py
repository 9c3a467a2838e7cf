"""Benchmark scheduling, statistics and verdicts on fake clocks; the real timing path on tiny inputs (CUDA parts skip)."""

from __future__ import annotations

import sys

import pytest
import torch

from ultra_sparse.bench.stats import (
    HONEST_NOTE,
    NM_NOTE,
    outcome,
    pair_kind,
    ratio_summary,
    speed_note,
    summarize,
    verdict,
)
from ultra_sparse.bench.timing import (
    benchmark_models,
    format_benchmark_md,
    interleaved_order,
    parse_device,
    resolve_backends,
    time_interleaved,
)
from ultra_sparse.plots import speed_words


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


def fake_ratio(dense_costs, sparse_costs):
    """The per-round ratio of two fake models timed interleaved on a FakeClock."""
    clock = FakeClock({"dense": list(dense_costs), "sparse": list(sparse_costs)})
    fns = {"dense": clock.runner("dense"), "sparse": clock.runner("sparse")}
    times = time_interleaved(fns, runs=len(dense_costs), timer=clock)
    return ratio_summary(times["dense"], times["sparse"])


@pytest.mark.parametrize(
    "sparse_costs, expected, words",
    [
        ([6.0, 6.2, 5.9, 6.1, 6.0, 6.3], "speed-up", "1.65x faster"),  # spread wholly below 1.0
        ([12.0, 12.5, 11.8, 12.2, 12.1, 12.4], "slow-down", "1.21x slower"),  # wholly above
        ([9.0, 11.0, 9.5, 10.5, 9.8, 10.4], "none", "no measurable speed-up"),  # spread includes 1.0
        ([5.0, 5.0, 9.0, 15.0, 15.0, 15.0], "none", "no measurable speed-up"),  # median 1.2, but IQR 0.6-1.5 holds 1.0
    ],
)
def test_outcome_and_verdict_follow_the_spread(sparse_costs, expected, words):
    ratio = fake_ratio([10.0] * 6, sparse_costs)
    assert outcome(ratio) == expected
    said = verdict(ratio)
    assert said.startswith({"speed-up": "speed-up:", "slow-down": "slow-down:", "none": "no measurable"}[expected])
    assert speed_words({"outcome": outcome(ratio), "ratio": {"median": ratio.median}}) == words


def test_a_spread_that_excludes_one_never_reads_as_touching_it():
    ratio = summarize([1.004, 1.004, 1.1, 1.27, 1.27])
    assert outcome(ratio) == "slow-down"
    assert "IQR 1.004-1.27" in verdict(ratio)  # not "IQR 1.00-1.27"


def test_a_spread_touching_one_is_no_speed_up():
    ratio = summarize([0.5, 0.6, 1.0, 1.0])  # q3 is exactly 1.0
    assert ratio.q3 == 1.0 and outcome(ratio) == "none"


def test_pair_kind_and_note():
    assert pair_kind(True, None) == pair_kind(True, "unstructured") == "unstructured"
    assert pair_kind(True, "nm") == "nm"
    assert pair_kind(False, None) == pair_kind(False, "unstructured") == pair_kind(True, "channel") == "structured"
    assert speed_note("unstructured") == HONEST_NOTE
    assert speed_note("nm") == NM_NOTE
    for note in (speed_note("structured", 0.48), speed_note("structured")):
        assert "does not speed up" not in note and "measured" in note
    assert "GFLOPs ratio 0.48" in speed_note("structured", 0.48)
    with pytest.raises(ValueError, match="pair kind"):
        speed_note("sparse")


def test_resolve_backends(monkeypatch):
    assert resolve_backends("torch") == ("torch",)
    assert resolve_backends("torch, onnxruntime") == resolve_backends(["torch", "onnxruntime"]) == ("torch", "onnxruntime")
    assert resolve_backends("auto") == ("torch", "onnxruntime")  # both packages are installed in the test setup
    for bad, match in (("tensorrt", "unknown"), ("torch,torch", "twice"), ([], "auto, one of"), (3, "auto, one of")):
        with pytest.raises(ValueError, match=match):
            resolve_backends(bad)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert resolve_backends("auto") == ("torch",)  # auto falls back; a backend asked by name is refused
    with pytest.raises(ValueError, match="missing: onnxruntime"):
        resolve_backends("torch,onnxruntime")


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
    assert set(result["models"]) == {"dense", "sparse"} and list(result["timings"]) == [backend]
    assert all(len(v) == 10 for v in result["timings"][backend]["samples_ms"].values())
    assert result["kind"] == "unstructured" and result["note"] == HONEST_NOTE
    assert result["models"]["dense"]["gflops"] == result["models"]["sparse"]["gflops"] > 0
    text = format_benchmark_md(result)
    assert "sparse/dense ratio" in text and result["timings"][backend]["verdict"] in text
    if backend == "onnxruntime":
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.onnx", "sparse.onnx"]
    assert not list(trained_checkpoint.parent.glob("*.onnx"))  # never beside the weights


def test_benchmark_structured_pair_both_backends_in_one_run(trained_checkpoint, shrunk_checkpoint, tmp_path, capfd):
    pytest.importorskip("onnxruntime")
    result = benchmark_models(
        trained_checkpoint, shrunk_checkpoint, imgsz=64, runs=10, warmup=1, backend="torch,onnxruntime", workdir=tmp_path
    )
    assert result["kind"] == "structured" and "does not speed up" not in result["note"]
    models = result["models"]
    assert models["dense"]["params"] - models["sparse"]["params"] == 8 * 27 + 2 * 8 + 32 * 8 * 9
    assert models["sparse"]["gflops"] < models["dense"]["gflops"]
    assert result["gflops_ratio"] == pytest.approx(models["sparse"]["gflops"] / models["dense"]["gflops"])
    assert list(result["timings"]) == ["torch", "onnxruntime"]
    for timing in result["timings"].values():
        assert timing["outcome"] == outcome(ratio_summary(timing["samples_ms"]["dense"], timing["samples_ms"]["sparse"]))
    assert "44/44" in "".join(capfd.readouterr())  # one interleaved run: 2 models x 2 backends x (1 + 10) calls


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


def test_onnxruntime_sessions_do_not_spin_between_their_turns(monkeypatch, tmp_path):
    """Interleaved sessions: an idle session's spinning threads would steal the cores the timed one runs on."""
    import onnxruntime as ort

    from ultra_sparse.bench.timing import _onnxruntime_runners

    seen = []
    real = ort.InferenceSession

    def recording(path, sess_options=None, **kwargs):
        seen.append(sess_options.get_session_config_entry("session.intra_op.allow_spinning"))
        return real(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    models = {name: {"model": torch.nn.Conv2d(3, 4, 3).eval()} for name in ("dense", "sparse")}
    runners = _onnxruntime_runners(models, torch.zeros(1, 3, 16, 16), "cpu", False, tmp_path)
    runners["dense"]()
    assert seen == ["0", "0"]
