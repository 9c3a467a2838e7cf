"""The demo end to end at toy size: every step runs and leaves its outputs where it says."""

from __future__ import annotations

import json

import pytest
import torch

from ultra_sparse.rules import assign_families, load_rules

SMALL = ["epochs=1", "finetune_epochs=1", "n_train=2", "n_val=2", "imgsz=64"]


TOY = ["epochs=1", "finetune_epochs=1", "n_train=16", "n_val=8", "imgsz=64", "name=d"]


@pytest.mark.slow
def test_demo_runs_all_five_steps(tmp_path):
    from ultra_sparse.cli import main

    assert main(["demo", *TOY, f"project={tmp_path}", "sparsity=0.4", "channel=False"]) == 0
    run = tmp_path / "d"
    assert (run / "data" / "data.yaml").is_file()
    assert (run / "baseline" / "weights" / "best.pt").is_file()
    sparse = run / "sparsify" / "weights" / "best-sparse.pt"
    recovered = run / "finetune" / "weights" / "best.pt"
    zeros = {}
    for path in (sparse, recovered):
        net = torch.load(path, map_location="cpu", weights_only=False)["model"]
        zeros[path.name] = {w.name: w.weight == 0 for w in assign_families(net, load_rules("tokenc3_lsnet")).prunable}
    assert zeros["best-sparse.pt"].keys() == zeros["best.pt"].keys()
    for name, zero in zeros["best-sparse.pt"].items():  # fine-tuning never brought a pruned weight back
        assert bool((zeros["best.pt"][name] | ~zero).all()), name
    for name in ("compare-oneshot", "compare-finetuned"):
        result = json.loads((run / name / "compare.json").read_text())
        assert result["kind"] == "unstructured"
        assert (run / name / "compare.md").is_file() and (run / name / "compare.png").is_file()
    assert not (run / "prune").exists() and not (run / "compare-pruned").exists()  # channel=False: no channel leg


@pytest.mark.slow
def test_demo_channel_leg(tmp_path):
    from ultra_sparse.cli import main

    assert main(["demo", *TOY, f"project={tmp_path}", "sparsity=0.4"]) == 0
    run = tmp_path / "d"
    params = {}
    for name in ("compare-pruned", "compare-pruned-finetuned"):
        result = json.loads((run / name / "compare.json").read_text())
        rows = {row["metric"]: row for row in result["rows"]}
        assert result["kind"] == "structured" and "does not speed up" not in result["benchmark"]["note"]
        assert rows["total params"]["sparse"] < rows["total params"]["dense"]
        assert rows["GFLOPs"]["sparse"] < rows["GFLOPs"]["dense"]
        params[name] = rows["total params"]["sparse"]
    assert params["compare-pruned"] == params["compare-pruned-finetuned"]  # fine-tuning kept the pruned shapes


@pytest.mark.parametrize(
    "args, message",
    [
        (["sparsity=1.5"], "sparsity"),
        (["model=best.pt"], "model YAML"),
        (["imgsz=80"], "imgsz=80 must be a multiple of 32"),  # compare's rule, checked before training
        (["epochs=0"], "epochs=0 must be a positive integer"),
        (["n_val=-1"], "n_val=-1"),
        (["device=bogus"], "device='bogus'"),
        (["rules=NORULES"], "leave no prunable weight"),
        (["flops=1.5"], "flops"),
        (["channel=maybe"], "channel"),
    ],
)
def test_demo_rejects_bad_keys_before_writing(tmp_path, args, message):
    from ultra_sparse.cli import main

    (tmp_path / "rules.yaml").write_text("rules:\n  - {family: x, ratio: 0.3, classes: [NoSuchBlock]}\n")
    project = tmp_path / "runs"
    args = [a.replace("NORULES", str(tmp_path / "rules.yaml")) for a in args]
    given = {a.split("=")[0] for a in args}
    small = [a for a in SMALL if a.split("=")[0] not in given]  # were a check missing, the run would end quickly
    with pytest.raises(ValueError, match=message):
        main(["demo", *args, *small, f"project={project}"])
    assert not project.exists()
