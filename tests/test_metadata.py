"""The ``ultra_sparse`` record: one type reads and writes what one-shot results and training runs store."""

from __future__ import annotations

import io

import torch

from ultra_sparse.config import SparsityConfig
from ultra_sparse.metadata import METADATA_KEY, SparseMetadata
from ultra_sparse.training.saving import with_metadata


def test_a_result_round_trips_in_the_flat_layout_older_files_have():
    flat = {"version": "0.9", "source": "a.pt", "config": {"method": "channel", "rules": "default"}, "scale": 1.5,
            "family_ratios": {"conv": 0.3}, "totals": {"all": {}}, "channel": {"whole": []}}
    meta = SparseMetadata.from_ckpt({METADATA_KEY: flat})
    assert meta.method == "channel" and meta.source == "a.pt" and meta.state is None
    assert set(meta.result) == {"scale", "family_ratios", "totals", "channel"} and meta.training == {}
    assert meta.to_dict() == flat


def test_a_training_state_round_trips_and_gives_the_state_to_resume_from():
    state = {"config": SparsityConfig(sparsity=0.5).to_dict(), "schedule": {"last_epoch": 2}, "masks": {"w": [1]}}
    meta = SparseMetadata.of_training(state, sparsity=0.25, target=0.5)
    data = meta.to_dict()
    assert data["sparsity"] == 0.25 and data["target"] == 0.5 and data["masks"] == {"w": [1]}
    again = SparseMetadata.from_ckpt({METADATA_KEY: data})
    assert again.state == state | {"sparsity": 0.25, "target": 0.5}
    assert again.result == {} and again.method == "unstructured"


def test_no_record_reads_as_none():
    assert SparseMetadata.from_ckpt({}) is None
    assert SparseMetadata.from_ckpt({METADATA_KEY: {}}) is None  # written by probes that record nothing
    assert SparseMetadata.from_ckpt({METADATA_KEY: "not a record"}) is None


def test_a_record_written_into_a_serialised_checkpoint_replaces_the_old_one():
    buffer = io.BytesIO()
    torch.save({"model": None, METADATA_KEY: {"version": "old", "config": {"method": "nm"}, "scale": 2.0}}, buffer)
    written = with_metadata(buffer.getvalue(), SparseMetadata({"method": "unstructured"}, version="1"))
    ckpt = torch.load(io.BytesIO(written), weights_only=False)
    assert ckpt[METADATA_KEY] == {"version": "1", "config": {"method": "unstructured"}}
