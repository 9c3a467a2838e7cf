"""The demo refuses bad keys before writing; the whole demo runs end to end in
``test_files.py::test_demo_with_relative_runs_dir_runs_every_step`` (as a user runs it, with runs_dir=runs)."""

from __future__ import annotations

import pytest

SMALL = ["epochs=1", "finetune_epochs=1", "n_train=2", "n_val=2", "imgsz=64"]


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
