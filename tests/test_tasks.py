"""Every task trains sparse with the same guarantees as detection: exact zeros in last.pt/best.pt, metadata, val."""

from __future__ import annotations

import json

import pytest
import torch

from ultra_sparse.metadata import METADATA_KEY
from ultra_sparse.compare import ACCURACY_KEYS
from ultra_sparse.methods.state import unpack_mask
from ultra_sparse.synthetic_tasks import TASKS, make_task_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CFG = {"segment": "yolo11n-seg.yaml", "pose": "yolo11n-pose.yaml", "obb": "yolo11n-obb.yaml", "classify": "yolo11n-cls.yaml"}
BOX = ["mAP50", "mAP50-95", "precision", "recall"]
TASK_ROWS = {
    "segment": [*BOX, "mask mAP50", "mask mAP50-95"],
    "pose": [*BOX, "pose mAP50", "pose mAP50-95"],
    "obb": BOX,
    "classify": ["top-1 accuracy", "top-5 accuracy"],
}
COMMON = dict(imgsz=64, batch=8, workers=0, device="cpu", plots=False, verbose=False, seed=0, deterministic=True, amp=False)


def _argv(**keys) -> list[str]:
    return [f"{k}={v}" for k, v in {**COMMON, **keys}.items()]


@pytest.mark.parametrize("task", TASKS)
def test_task_fine_tune_keeps_exact_zeros_and_validates(task, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse.cli import main

    data = make_task_dataset(tmp_path / "data", task)
    YOLO(CFG[task]).train(data=str(data), epochs=1, project=str(tmp_path), name="base", **COMMON)
    sparse = tmp_path / "sparse.pt"
    assert main(["sparsify", f"model={tmp_path / 'base' / 'weights' / 'last.pt'}", "sparsity=0.3", f"out={sparse}"]) == 0
    start = torch.load(sparse, map_location="cpu", weights_only=False)["model"].float()
    start_zeros = {n: p == 0 for n, p in start.named_parameters() if n.endswith("weight") and p.dim() > 1}

    assert main(["train", f"model={sparse}", f"data={data}", "epochs=1", "optimizer=SGD", *_argv(project=tmp_path, name="ft")]) == 0
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "ft" / "weights" / name, map_location="cpu", weights_only=False)
        assert ckpt[METADATA_KEY]["sparsity"] == pytest.approx(0.3, abs=1e-6)
        masks = {n: unpack_mask(*p) for n, p in ckpt[METADATA_KEY]["masks"].items()}
        params = dict(ckpt["model"].named_parameters())
        for n, zero in start_zeros.items():
            if zero.any() and ".dfl." not in n:  # every zero of the start (DFL's fixed kernel aside) stays masked
                assert torch.equal(~masks[n] & zero, zero), n
                assert not params[n].float()[zero].any(), n

    assert main(["val", f"model={tmp_path / 'ft' / 'weights' / 'best.pt'}", f"data={data}", "imgsz=64", "batch=8",
                 f"project={tmp_path}", "name=val"]) == 0
    result = json.loads((tmp_path / "val" / "val.json").read_text())
    assert result["results"]["sparsity/prunable"] == pytest.approx(0.3, abs=1e-6)

    base = tmp_path / "base" / "weights" / "last.pt"
    assert main(["compare", f"dense={base}", f"sparse={tmp_path / 'ft' / 'weights' / 'best.pt'}", f"data={data}",
                 "imgsz=64", "batch=8", "backend=torch", "runs=10", "warmup=1", f"project={tmp_path}", "name=cmp"]) == 0
    compared = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = {row["metric"]: row for row in compared["rows"]}
    for row in TASK_ROWS[task]:  # the task's own accuracy, read from Ultralytics' validation of each side
        assert rows[row]["sparse"] == compared["sparse"]["metrics"][ACCURACY_KEYS[row]], row
        assert rows[row]["dense"] == compared["dense"]["metrics"][ACCURACY_KEYS[row]], row
    assert set(rows) & set(ACCURACY_KEYS) == set(TASK_ROWS[task])
    assert "rules `default`" in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.parametrize("task", ["segment", "pose", "obb"])
def test_channel_pruning_ranks_by_taylor_refits_and_shrinks_every_detection_style_task(task, tmp_path):
    from ultralytics import YOLO

    from ultra_sparse.cli import main

    data = make_task_dataset(tmp_path / "data", task)
    YOLO(CFG[task]).train(data=str(data), epochs=1, project=str(tmp_path), name="base", **COMMON)
    base = tmp_path / "base" / "weights" / "last.pt"
    one_shot = tmp_path / "one-shot.pt"  # sparsify's taylor reads the task's labels too
    assert main(["sparsify", f"model={base}", f"data={data}", "method=channel", "flops=0.3", "importance=taylor",
                 "imgsz=64", "calib_batches=1", f"out={one_shot}"]) == 0
    assert torch.load(one_shot, map_location="cpu", weights_only=False)[METADATA_KEY]["config"]["importance"] == "taylor"
    assert main(["train", f"model={base}", f"data={data}", "epochs=1", "optimizer=SGD", "method=channel", "flops=0.3",
                 "prune_end=1", "calib_batches=1", "importance=taylor", *_argv(project=tmp_path, name="ch")]) == 0
    dense = torch.load(base, map_location="cpu", weights_only=False)["model"]
    ckpt = torch.load(tmp_path / "ch" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt[METADATA_KEY]["config"]["reconstruct"] is True  # the default refit runs on the task's own images
    assert ckpt[METADATA_KEY]["config"]["importance"] == "taylor"  # ... and taylor ranks on the loss of its labels
    assert ckpt[METADATA_KEY]["channel"]["reconstruction"]["steps"] == 1
    assert sum(p.numel() for p in ckpt["model"].parameters()) < sum(p.numel() for p in dense.parameters())
    assert type(ckpt["model"]) is type(dense)


def test_detection_trainer_on_a_segment_model_is_one_clear_error(tmp_path):
    from ultralytics import YOLO

    from ultra_sparse import SparseDetectionTrainer

    data = make_task_dataset(tmp_path / "data", "segment", n_train=2, n_val=1)
    with pytest.raises(ValueError, match="SparseSegmentationTrainer"):
        YOLO("yolo11n-seg.yaml").train(trainer=SparseDetectionTrainer, data=str(data), epochs=1, project=str(tmp_path), **COMMON)
    assert not any(tmp_path.glob("train*")), "nothing may be written"
