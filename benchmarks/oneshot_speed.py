"""Time ultra_sparse's one-shot pass against torch.nn.utils.prune.global_unstructured at the same sparsity.

Both run in this process on fresh copies of the same model, interleaved, after one warm-up each; the script prints
medians and min-max of wall time and the ratio. The model defaults to the volleyball YOLOv9t of ../shared/realdata,
or ``yolo11n.yaml`` where that folder is absent.

Usage:
    python benchmarks/oneshot_speed.py [--model PATH_OR_YAML] [--sparsity 0.1] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn.utils.prune as prune

from ultra_sparse import SparsityConfig, sparsify
from ultra_sparse.rules import assign_families, load_rules

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "volleyball" / "yolov9t-volleyball.pt"


def load(spec: str) -> torch.nn.Module:
    """Load a checkpoint or build a model from YAML; return the network in FP32."""
    from ultralytics import YOLO

    return YOLO(spec).model.float().eval()


def ours(model: torch.nn.Module, sparsity: float, rules: str, scope: str) -> None:
    """ultra_sparse's one-shot pass (family rules, exact target, masks applied in place)."""
    sparsify(model, SparsityConfig(sparsity=sparsity, rules=rules, scope=scope))


def peer_params(model: torch.nn.Module, rules: str) -> list[tuple[torch.nn.Module, str]]:
    """The prunable weights of ``model`` as (module, name) pairs: found before the peer's timer starts."""
    return [(w.module, "weight") for w in assign_families(model, load_rules(rules)).prunable]


def peer(params: list[tuple[torch.nn.Module, str]], sparsity: float) -> None:
    """torch.nn.utils.prune.global_unstructured over the given weights, made permanent."""
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    for module, name in params:
        prune.remove(module, name)


def main() -> None:
    """Parse arguments, time both passes interleaved and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REALDATA) if REALDATA.is_file() else "yolo11n.yaml")
    parser.add_argument("--sparsity", type=float, default=0.10)
    parser.add_argument("--rules", default="tokenc3_lsnet")
    parser.add_argument("--scope", default="layer", choices=["layer", "global"])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    base = load(args.model)
    jobs = {  # each job: (untimed preparation on a fresh copy, timed pass)
        f"ultra_sparse (scope={args.scope})": (lambda m: m, lambda m: ours(m, args.sparsity, args.rules, args.scope)),
        "torch global_unstructured": (lambda m: peer_params(m, args.rules), lambda p: peer(p, args.sparsity)),
    }
    times = {name: [] for name in jobs}
    for run in range(args.runs + 1):  # run 0 is the warm-up
        for name, (prepare, job) in jobs.items():
            subject = prepare(deepcopy(base))
            start = time.perf_counter()
            job(subject)
            if run:
                times[name].append(time.perf_counter() - start)
    print(f"model={args.model} sparsity={args.sparsity} runs={args.runs} threads={torch.get_num_threads()}")
    for name, t in times.items():
        print(f"{name:32s} median {statistics.median(t) * 1e3:8.1f} ms  (min {min(t) * 1e3:.1f}, max {max(t) * 1e3:.1f})")
    ratios = [a / b for a, b in zip(*times.values())]
    print(f"ratio ours/peer: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
