"""A pruned model fine-tuned on another class set keeps its pruned network: only the class outputs are replaced."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from cli_helpers import cli, tree
from ultra_sparse.training.new_classes import class_output_names, keeps_yaml_shapes, replace_class_outputs
from ultra_sparse.synthetic import make_synthetic_dataset
from ultra_sparse.synthetic_tasks import make_task_dataset

COMMON = ["imgsz=64", "batch=8", "workers=0", "device=cpu", "plots=False", "seed=0", "deterministic=True", "amp=False",
          "val=False"]


def _network(task: str, nc: int) -> nn.Module:
    """A small network of ``task`` built from YAML with ``nc`` classes (pose: the synthetic set's 3 keypoints)."""
    from ultralytics.nn.tasks import ClassificationModel, DetectionModel, OBBModel, PoseModel, SegmentationModel

    torch.manual_seed(0)
    if task == "pose":
        return PoseModel("yolo11n-pose.yaml", nc=nc, data_kpt_shape=(3, 3), verbose=False)
    build = {"detect": DetectionModel, "segment": SegmentationModel, "obb": OBBModel, "classify": ClassificationModel}
    cfg = {"detect": "yolo11n.yaml", "segment": "yolo11n-seg.yaml", "obb": "yolo11n-obb.yaml", "classify": "yolo11n-cls.yaml"}
    return build[task](cfg[task], nc=nc, verbose=False)


def _checkpoint(net: nn.Module, path, task: str) -> None:
    """Save ``net`` as a minimal Ultralytics checkpoint of ``task`` (FP16, as Ultralytics saves)."""
    torch.save({"model": copy.deepcopy(net).half(), "train_args": {"task": task}}, path)


def _family(name: str):
    """``YOLO(name)`` built from YAML, or a skip where the installed Ultralytics predates the family (8.3.63: YOLO26)."""
    from ultralytics import YOLO

    try:
        return YOLO(name)
    except FileNotFoundError:
        import ultralytics

        pytest.skip(f"{name} is not in ultralytics {ultralytics.__version__}")


def _load(path) -> nn.Module:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float()


def _class_output_params(net: nn.Module) -> int:
    modules = dict(net.named_modules())
    return sum(p.numel() for name in class_output_names(net) for p in modules[name].parameters())


def _prunable_zeros(net: nn.Module, outputs: list[str]) -> dict[str, torch.Tensor]:
    """Zero masks of every conv/linear weight outside the class outputs."""
    skip = {f"{name}.weight" for name in outputs}
    return {n: p == 0 for n, p in net.named_parameters() if p.dim() > 1 and n not in skip}


@pytest.mark.parametrize("name", ["yolo11n.yaml", "yolo26n.yaml", "yolo26n-seg.yaml", "yolo26n-pose.yaml", "yolo26n-obb.yaml"])
def test_replacing_class_outputs_keeps_every_other_output(name):
    """Box, mask, keypoint and angle outputs of the adapted network equal the original's; only scores change."""
    from ultralytics import YOLO

    torch.manual_seed(0)
    net = YOLO(name).model.float().eval()
    adapted = copy.deepcopy(net)
    replaced = replace_class_outputs(adapted, 3)
    head = adapted.model[-1]
    assert head.nc == 3 and adapted.yaml["nc"] == 3 and head.no == net.model[-1].no - net.model[-1].nc + 3
    end2end = getattr(head, "one2one_cv3", None) is not None
    assert len(replaced) == 3 * (2 if end2end else 1)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = net(x), adapted(x)
    before, after = (y[1] if isinstance(y, tuple) else y for y in (before, after))  # the raw branch outputs
    branches = before["one2one"] if end2end else before
    for key, value in branches.items():
        got = (after["one2one"] if end2end else after)[key]
        if key == "scores":
            assert got.shape[1] == 3 and value.shape[1] == 80
        elif isinstance(value, torch.Tensor):
            torch.testing.assert_close(got, value, atol=0, rtol=0)
    assert keeps_yaml_shapes(adapted)


def test_classify_head_is_replaced_as_ultralytics_reshapes_it():
    net = _network("classify", 10)
    assert replace_class_outputs(net, 3) == ["model.10.linear"]
    assert net.model[-1].linear.out_features == 3 and net.yaml["nc"] == 3
    assert replace_class_outputs(net, 3) == []  # already 3 classes: nothing to replace


def test_a_head_without_class_branches_is_refused_by_name():
    from ultralytics.nn.tasks import DetectionModel

    net = DetectionModel("yolo11n.yaml", nc=4, verbose=False)
    net.model[-1].cv3 = None
    with pytest.raises(ValueError, match="Detect head's class outputs cannot be replaced"):
        class_output_names(net)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb", "classify"])
def test_pruned_checkpoint_fine_tuned_on_new_classes_keeps_its_network_and_zeros(task, tmp_path):
    """Channel-pruned, then 50% unstructured zeros: the 3-class fine-tune keeps both (it rebuilt dense before)."""
    from ultra_sparse.cli import main

    if task == "detect":
        data = make_synthetic_dataset(tmp_path / "data", n_train=8, n_val=4, imgsz=64)
    else:
        data = make_task_dataset(tmp_path / "data", task, n_train=8, n_val=4)
    start_nc = 5 if task == "pose" else 10  # the synthetic sets have 1 (pose) and 3 classes
    dense = tmp_path / "dense.pt"
    _checkpoint(_network(task, start_nc), dense, task)
    channel = tmp_path / "channel.pt"
    assert main(["sparsify", f"model={dense}", "method=channel", "sparsity=0.3", "imgsz=64", f"out={channel}"]) == 0
    sparse = tmp_path / "sparse.pt"
    assert main(["sparsify", f"model={channel}", "sparsity=0.5", f"out={sparse}"]) == 0
    start = _load(sparse)
    outputs = class_output_names(start)
    start_params = sum(p.numel() for p in start.parameters())
    assert start_params < sum(p.numel() for p in _load(dense).parameters())
    zeros = _prunable_zeros(start, outputs)

    assert main(["train", f"model={sparse}", f"data={data}", "epochs=1", f"project={tmp_path}", "name=ft", *COMMON]) == 0
    new_nc = 1 if task == "pose" else 3
    for kind in ("last.pt", "best.pt"):
        net = _load(tmp_path / "ft" / "weights" / kind)
        assert net.yaml["nc"] == new_nc and len(net.names) == new_nc
        expected = start_params - _class_output_params(start) + _class_output_params(net)
        assert sum(p.numel() for p in net.parameters()) == expected, kind
        params = dict(net.named_parameters())
        for name, zero in zeros.items():  # every zero of the start stays exactly zero, in the new-class network too
            if zero.any() and ".dfl." not in name:
                assert not params[name][zero].any(), (kind, name)


@pytest.mark.integration
def test_channel_pruned_pose_model_for_another_keypoint_shape_is_refused_before_writing(tmp_path):
    """A keypoint shape change needs Ultralytics' rebuild, which would bring the pruned network back dense."""
    from ultra_sparse.cli import main

    from ultralytics.nn.tasks import PoseModel

    data = make_task_dataset(tmp_path / "data", "pose", n_train=4, n_val=2)
    dense = tmp_path / "dense.pt"
    _checkpoint(PoseModel("yolo11n-pose.yaml", nc=1, data_kpt_shape=(17, 3), verbose=False), dense, "pose")
    channel = tmp_path / "channel.pt"
    assert main(["sparsify", f"model={dense}", "method=channel", "sparsity=0.3", "imgsz=64", f"out={channel}"]) == 0
    assert not keeps_yaml_shapes(_load(channel))
    before = tree(tmp_path)
    out = cli("train", f"model={channel}", f"data={data}", "epochs=1", f"project={tmp_path}", "name=ft", *COMMON, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and "keypoint shape [17, 3]" in out.stderr and "channel-pruned" in out.stderr
    assert tree(tmp_path) == before  # no run folder, nothing changed


def test_callbacks_refuse_a_channel_pruned_model_that_the_stock_trainer_would_rebuild(tmp_path):
    from ultralytics import YOLO

    from ultra_sparse import add_sparse_callbacks
    from ultra_sparse.cli import main

    dense = tmp_path / "dense.pt"
    _checkpoint(_network("detect", 3), dense, "detect")
    add_sparse_callbacks(YOLO(str(dense)), sparsity=0.3)  # a dense model: the stock trainer keeps its shapes
    channel = tmp_path / "channel.pt"
    assert main(["sparsify", f"model={dense}", "method=channel", "sparsity=0.3", "imgsz=64", f"out={channel}"]) == 0
    with pytest.raises(ValueError, match="channel-pruned .* 'ultra-sparse train'"):
        add_sparse_callbacks(YOLO(str(channel)), sparsity=0.3)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolo26n.yaml", "yolo12n.yaml", "yolov10n.yaml"])
def test_current_families_channel_prune_train_on_new_classes_and_export(name, tmp_path, synthetic_data):
    """YOLO26 (end-to-end head), YOLO12 (area attention), YOLOv10: prune, fine-tune on 3 classes, ONNX in onnxruntime."""
    import numpy as np
    import onnxruntime as ort
    from ultralytics import YOLO

    from ultra_sparse.cli import main

    dense = tmp_path / "dense.pt"
    _checkpoint(_family(name).model, dense, "detect")  # 80 classes
    pruned = tmp_path / "pruned.pt"
    assert main(["sparsify", f"model={dense}", "method=channel", "flops=0.5", "imgsz=64", f"out={pruned}"]) == 0
    start = _load(pruned)
    count = sum(p.numel() for p in start.parameters())
    assert count < sum(p.numel() for p in _load(dense).parameters())
    assert main(["train", f"model={pruned}", f"data={synthetic_data}", "epochs=1", f"project={tmp_path}", "name=ft", *COMMON]) == 0
    last = tmp_path / "ft" / "weights" / "last.pt"
    net = _load(last)
    assert net.model[-1].nc == 3
    assert sum(p.numel() for p in net.parameters()) == count - _class_output_params(start) + _class_output_params(net)

    onnx = YOLO(str(last)).export(format="onnx", imgsz=64, device="cpu", simplify=False)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = YOLO(str(last)).model.float().eval()(x)
    expected = (expected[0] if isinstance(expected, (list, tuple)) else expected).numpy()
    assert got.shape == expected.shape
    if got.shape[-1] == 6:  # end-to-end head: its top-k picks among near-tied scores may differ between runtimes
        got, expected = np.sort(got[..., 4]), np.sort(expected[..., 4])  # the ranked scores agree all the same
    np.testing.assert_allclose(got, expected, atol=5e-2, rtol=1e-2)  # FP16 checkpoint, exported in FP32


@pytest.mark.parametrize("name", ["yolo26n.yaml", "yolo12n.yaml", "yolov10n.yaml"])
def test_current_families_take_exact_unstructured_and_nm_zeros(name):
    """The element methods on YOLO26, YOLO12 and YOLOv10: the exact target, an N:M pattern in every eligible weight."""
    from ultralytics import YOLO

    from ultra_sparse import sparsify
    from ultra_sparse.prune.nm import nm_eligibility, nm_violations

    model = _family(name)
    result = sparsify(model, sparsity=0.5)
    assert result.report["totals"]["prunable"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
    model = YOLO(name)
    result = sparsify(model, method="nm", nm="2:4")
    params, modules = dict(model.model.named_parameters()), dict(model.model.named_modules())
    eligible = [n for n in result.masks if nm_eligibility(modules[n.rsplit(".", 1)[0]], 4) is None]
    assert eligible and all(nm_violations(params[n], 2, 4) == 0 for n in eligible)
    with torch.no_grad():
        model.model.eval()(torch.rand(1, 3, 64, 64))  # the forward of the sparse network still runs

