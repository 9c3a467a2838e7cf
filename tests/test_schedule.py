"""Unit tests of the sparsity schedule and the mask state (no training)."""

from __future__ import annotations

import pytest
import torch

from ultra_sparse.config import SparsityConfig
from ultra_sparse.schedule import SparsitySchedule, cubic_sparsity, default_window
from ultra_sparse.methods.state import SparseTraining, pack_mask, unpack_mask


def test_cubic_endpoints_and_monotone():
    values = [cubic_sparsity(t, 0.1, 0.6, 2, 8) for t in range(12)]
    assert values[:3] == [0.1, 0.1, 0.1] and values[8:] == [0.6] * 4
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert cubic_sparsity(5, 0.0, 0.8, 2, 8) == pytest.approx(0.8 - 0.8 * 0.5**3)


def test_schedule_freq_holds_between_steps_and_always_ends_on_target():
    sched = SparsitySchedule(0.5, kind="gradual", start=0, end=5, freq=2)
    targets = [sched.step() for _ in range(6)]
    ramp = [cubic_sparsity(t, 0.0, 0.5, 0, 5) for t in (0, 2, 4)]
    assert targets == [ramp[0], ramp[1], ramp[1], ramp[2], 0.5, 0.5]


def test_oneshot_and_state_round_trip():
    assert SparsitySchedule(0.3, kind="oneshot").target() == 0.3
    sched = SparsitySchedule(0.5, 0.1, "gradual", 1, 4)
    sched.step(), sched.step()
    other = SparsitySchedule(0.9)
    other.load_state_dict(sched.state_dict())
    assert other.state_dict() == sched.state_dict() and other.target() == sched.target()


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"kind": "linear"}, ValueError),
        ({"start": 3, "end": 2}, ValueError),
        ({"freq": 0}, ValueError),
        ({"end": 1.5}, TypeError),
    ],
)
def test_schedule_rejects_bad_input(kwargs, error):
    with pytest.raises(error):
        SparsitySchedule(0.5, **kwargs)


def test_default_window_leaves_recovery_epochs():
    assert default_window(1) == (0, 1) and default_window(3) == (0, 2) and default_window(100) == (0, 66)


def test_pack_round_trip_odd_sizes():
    for n in (1, 7, 8, 9, 1000):
        mask = torch.rand(n) > 0.5
        assert torch.equal(unpack_mask(*pack_mask(mask.reshape(1, n))), mask.reshape(1, n))


@pytest.fixture
def net():
    from ultralytics import YOLO

    return YOLO("yolo11n.yaml").model


def test_masks_are_deterministic_and_zeros_never_decrease(net):
    config = SparsityConfig(sparsity=0.5, schedule="gradual", prune_end=2)
    a, b = (SparseTraining(net, config, epochs=3) for _ in range(2))
    assert a.prune(net, 0.3) and b.prune(net, 0.3)
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    first = {n: m.clone() for n, m in a.masks.items()}
    assert not a.prune(net, 0.2)  # lower targets never give weights back
    assert a.prune(net, 0.5)
    a.apply(net)
    assert all(not (a.masks[n] & ~first[n]).any() for n in first)
    assert a.sparsity(net) == pytest.approx(0.5, abs=1e-6)


def test_optimizer_state_cleared_at_masked_positions(net):
    state = SparseTraining(net, SparsityConfig(sparsity=0.4, schedule="oneshot"), epochs=1)
    params = dict(net.named_parameters())
    some = [params[name] for name in list(state.masks)[:6]]
    optimizers = [torch.optim.SGD(some, lr=0.01, momentum=0.9), torch.optim.AdamW(some)]
    for opt in optimizers:
        for p in some:
            p.grad = torch.ones_like(p)
        opt.step()
    state.prune(net)
    for opt in optimizers:
        state.clear_optimizer_state(opt, net)
        for name, mask in list(state.masks.items())[:6]:
            for value in opt.state[params[name]].values():
                if value.shape == mask.shape:
                    assert not value[~mask].any()


def test_taylor_rejected_in_training(net):
    with pytest.raises(ValueError, match="taylor"):
        SparseTraining(net, SparsityConfig(sparsity=0.5, importance="taylor"), epochs=1)


def test_an_empty_ramp_prunes_at_its_end_not_before():
    """prune_start=3 prune_end=3 epochs=3: nothing is pruned after epochs 1 and 2, all of it after epoch 3."""
    sched = SparsitySchedule(0.5, kind="gradual", start=3, end=3)
    assert [sched.step() for _ in range(3)] == [0.0, 0.0, 0.5]
