"""What one point of a channel scan costs before its validation, ranked by ``l1`` and by ``taylor``, side by side.

Each point of ``ultra-sparse scan method=channel`` prunes a fresh copy of the dense model (plan, removal, refit on the
calibration images). ``importance=taylor`` ranks channels by the loss gradients of the dense weights, which are the
same at every point: the first point computes them (one forward and backward pass over the calibration images) and
the others reuse them. This script prunes the same targets with both rankings, alternating, and prints the seconds of
each point, so that the taylor points after the first can be compared with the l1 ones of the same run.

Usage:
    python benchmarks/scan_points.py model.pt data.yaml [--imgsz 640] [--calib-batches 4] [--points 3]

Example (the volleyball YOLOv9t, imgsz 640, 4 batches of 8 images, 2 CPU cores): l1 25.9, 21.7, 21.4 s; taylor
37.8 (with the gradients), 23.4, 21.9 s.
"""

from __future__ import annotations

import argparse
import time

from ultralytics import YOLO

from ultra_sparse.calibration import calibration_batches, loss_ready, model_stride
from ultra_sparse.config import SparsityConfig
from ultra_sparse.rules import load_rules
from ultra_sparse.scan import PruneCopy, layout_rules


def main() -> None:
    """Parse the arguments, prune the points with both rankings and print their times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--points", type=int, default=3)
    args = parser.parse_args()

    net = YOLO(args.model).model.float()
    batches = list(calibration_batches(args.data, args.imgsz, 8, args.calib_batches, model_stride(net)))
    rules = layout_rules(load_rules("default"), [], {})
    targets = [0.1 + 0.3 * i / max(1, args.points - 1) for i in range(args.points)]
    times: dict[str, list[float]] = {"l1": [], "taylor": []}
    with loss_ready(net):
        pruners = {
            name: PruneCopy(net, SparsityConfig(method="channel", importance=name, flops=0.3), batches) for name in times
        }
        for target in targets:
            for name, pruner in pruners.items():
                start = time.perf_counter()
                pruner.prune(rules, target)
                times[name].append(time.perf_counter() - start)
                pruner.restore()
    for name, seconds in times.items():
        print(f"{name:>6}: " + ", ".join(f"{s:.1f}" for s in seconds) + " s per point")


if __name__ == "__main__":
    main()
