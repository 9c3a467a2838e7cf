"""Time one training step with and without mask re-application, in one process, interleaved.

A step is what SparseDetectionTrainer does per optimizer step: forward + loss, backward, (mask gradients), clip,
SGD step, zero_grad, (re-zero masked weights), EMA update. The masked and the plain step alternate (their order swaps
every round) on the same model after warm-up; the script prints medians, min-max and the added fraction.

Usage:
    python benchmarks/mask_overhead.py [--model yolo11n.yaml] [--imgsz 320] [--batch 8] [--runs 15] [--sparsity 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ultra_sparse.calibration import loss_ready
from ultra_sparse.config import SparsityConfig
from ultra_sparse.methods.state import SparseTraining


def fake_batch(batch: int, imgsz: int) -> dict[str, torch.Tensor]:
    """Random images with two boxes each, in the layout of Ultralytics' detection batches."""
    g = torch.Generator().manual_seed(0)
    n = 2 * batch
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
        "cls": torch.zeros(n, 1),
        "bboxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.25]]).repeat(batch, 1),
        "batch_idx": torch.arange(batch).repeat_interleave(2).float(),
    }


def main() -> None:
    """Parse arguments, time both steps, print the table."""
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import ModelEMA

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--sparsity", type=float, default=0.5)
    opt = parser.parse_args()

    net = YOLO(opt.model).model.float().train()
    for p in net.parameters():
        p.requires_grad_(True)
    state = SparseTraining(net, SparsityConfig(sparsity=opt.sparsity, schedule="oneshot"), epochs=1)
    state.prune(net)
    state.apply(net)
    pairs = state.bind(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    ema = ModelEMA(net)
    batch = fake_batch(opt.batch, opt.imgsz)

    def step(masked: bool) -> tuple[float, float]:
        """One training step; returns (total seconds, seconds spent masking)."""
        t0 = time.perf_counter()
        loss = net.loss(batch)[0].sum()
        loss.backward()
        t1 = time.perf_counter()
        if masked:
            for param, mask in pairs:
                param.grad.mul_(mask)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_norm=10.0)
        optimizer.step()
        optimizer.zero_grad()
        t3 = time.perf_counter()
        if masked:
            with torch.no_grad():
                for param, mask in pairs:
                    param.mul_(mask)
        t4 = time.perf_counter()
        ema.update(net)
        t5 = time.perf_counter()
        return t5 - t0, (t2 - t1) + (t4 - t3)

    times: dict[bool, list[float]] = {False: [], True: []}
    mask_only: list[float] = []
    with loss_ready(net):
        for _ in range(2):  # warm-up
            step(False), step(True)
        for r in range(opt.runs):
            for masked in (False, True) if r % 2 else (True, False):
                total, masking = step(masked)
                times[masked].append(total)
                if masked:
                    mask_only.append(masking)

    plain, sparse = statistics.median(times[False]), statistics.median(times[True])
    print(f"model={opt.model} imgsz={opt.imgsz} batch={opt.batch} runs={opt.runs} sparsity={opt.sparsity} "
          f"masked weights={len(pairs)} threads={torch.get_num_threads()}")
    for label, values in (("plain step", times[False]), ("masked step", times[True])):
        print(f"  {label:12s} median {statistics.median(values) * 1e3:8.1f} ms  "
              f"(min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})")
    print(f"  masking alone median {statistics.median(mask_only) * 1e3:.2f} ms "
          f"= {statistics.median(mask_only) / plain:.2%} of a plain step")
    print(f"  ratio masked/plain {sparse / plain:.3f} (the step-to-step spread is larger than this difference "
          f"when min-max ranges overlap)")


if __name__ == "__main__":
    main()
