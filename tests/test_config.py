"""SparsityConfig accepts any real or integral number type (numpy included), refuses booleans, and keeps JSON types."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ultra_sparse import SparsityConfig


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    cfg = SparsityConfig(method="channel", sparsity=np.float32(0.5), prune_start=np.int64(1), prune_end=np.int32(4),
                         prune_freq=np.int64(2), calib_batches=np.uint8(3), round_to=np.int16(16))
    assert cfg.sparsity == 0.5 and (cfg.prune_start, cfg.prune_end, cfg.prune_freq) == (1, 4, 2)
    assert (cfg.calib_batches, cfg.round_to) == (3, 16)
    assert type(cfg.sparsity) is float and all(type(getattr(cfg, k)) is int for k in ("prune_start", "prune_freq"))
    assert json.loads(json.dumps(cfg.to_dict()))["prune_freq"] == 2
    assert SparsityConfig(sparsity=np.int64(0)).sparsity == 0.0


@pytest.mark.parametrize("kwargs", [{"sparsity": True}, {"sparsity": np.bool_(False)}, {"prune_freq": True},
                                    {"prune_freq": np.bool_(True)}, {"prune_freq": np.float32(2.0)}])
def test_booleans_and_fractional_counts_are_refused(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        SparsityConfig(**kwargs)


def test_error_messages_cap_echoed_values():
    with pytest.raises(TypeError) as info:
        SparsityConfig(sparsity=list(range(100_000)))
    assert str(info.value).startswith("sparsity=[0, 1, 2") and len(str(info.value)) < 200


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"nm": "1:4"}, "nm=1:4 applies to method=nm only"),
        ({"sparsity": 0.3, "round_to": 16}, "round_to=16 applies to method=channel only"),
        ({"method": "channel", "nm": "1:4"}, "nm=1:4 applies to method=nm only"),
        ({"method": "nm", "round_to": 16}, "round_to=16 applies to method=channel only"),
        ({"sparsity": 0.3, "calib_batches": 4}, "calib_batches=4 applies to method=channel only"),
    ],
)
def test_a_key_of_another_method_is_refused_not_ignored(kwargs, message):
    """sparsify nm=1:4 wrote an ordinary unstructured checkpoint with no N:M pattern and no word (exit 0)."""
    with pytest.raises(ValueError, match=message):
        SparsityConfig(**kwargs)


def test_method_keys_at_their_defaults_and_where_they_apply_are_taken():
    assert SparsityConfig(sparsity=0.3, round_to=8, nm="2:4").round_to == 8  # the defaults change nothing
    assert SparsityConfig(method="channel", round_to=16).round_to == 16
    assert SparsityConfig(method="nm", nm="1:4").nm == "1:4"
    assert SparsityConfig(sparsity=0.3, importance="taylor", calib_batches=4).calib_batches == 4  # taylor ranks on them
