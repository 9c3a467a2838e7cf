"""Where the time goes: latency of every top-level layer of a dense and a pruned checkpoint, side by side.

The latency ratio of a channel-pruned model trails its GFLOPs ratio where parts of the network keep their width (the
head is never pruned) or cost memory traffic more than compute. This script times each entry of ``model.model``
(Ultralytics' layer list: backbone, neck, head) with forward hooks, in fused eval models, batch 1, rounds alternating
the two models after warm-up, and prints the median milliseconds per layer and their ratio.

Usage:
    python benchmarks/layer_times.py dense.pt pruned.pt [--imgsz 640] [--runs 30] [--warmup 5] [--threads N]

Example (the volleyball YOLOv9t and its flops=0.5 pruning, 2 CPU cores): the head takes 11.8 ms of 80.6 ms dense and
12.2 ms of 59.2 ms pruned; the other layers fall to 0.68 of their time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn


def layer_timer(net: nn.Module) -> dict[int, list[float]]:
    """Hook every top-level layer of ``net``; return the dict its per-call seconds are appended to, by layer index."""
    times: dict[int, list[float]] = {i: [] for i in range(len(net.model))}
    starts: dict[int, float] = {}
    for index, layer in enumerate(net.model):
        layer.register_forward_pre_hook(lambda m, args, i=index: starts.__setitem__(i, time.perf_counter()))
        layer.register_forward_hook(lambda m, args, out, i=index: times[i].append(time.perf_counter() - starts[i]))
    return times


def main() -> None:
    """Time both checkpoints layer by layer and print the table."""
    from ultralytics import YOLO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dense")
    parser.add_argument("pruned")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    nets = {name: YOLO(path).model.float().fuse(verbose=False).eval() for name, path in (("dense", args.dense), ("pruned", args.pruned))}
    timers = {name: layer_timer(net) for name, net in nets.items()}
    image = torch.zeros(1, 3, args.imgsz, args.imgsz)
    with torch.inference_mode():
        for round_index in range(args.warmup + args.runs):
            if round_index == args.warmup:
                for times in timers.values():
                    for samples in times.values():
                        samples.clear()
            for net in nets.values():
                net(image)

    medians = {name: {i: 1000 * statistics.median(s) for i, s in times.items()} for name, times in timers.items()}
    print(f"median ms per layer, batch 1, imgsz {args.imgsz}, {args.threads} threads, {args.runs} interleaved rounds")
    print(f"{'layer':>5} {'type':<16} {'dense':>8} {'pruned':>8} {'ratio':>6}")
    for i, layer in enumerate(nets["dense"].model):
        d, p = medians["dense"][i], medians["pruned"][i]
        print(f"{i:>5} {type(layer).__name__:<16} {d:>8.2f} {p:>8.2f} {p / d if d else float('nan'):>6.2f}")
    total = {name: sum(m.values()) for name, m in medians.items()}
    print(f"{'sum':>5} {'':<16} {total['dense']:>8.2f} {total['pruned']:>8.2f} {total['pruned'] / total['dense']:>6.2f}")


if __name__ == "__main__":
    main()
