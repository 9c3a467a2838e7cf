"""What one point of a scan costs before its validation, ranked by ``l1`` and by ``taylor``, side by side.

Each point of ``ultra-sparse scan method=channel`` prunes a fresh copy of the dense model (plan, removal, refit on the
calibration images); each point of ``method=unstructured`` zeroes weights of the model in place and restores them
after. ``importance=taylor`` ranks by the loss gradients of the dense weights, which are the same at every point: the
first point computes what it needs (one forward and backward pass over the calibration images: the gradients for
channels, the scores |w * dL/dw| for single weights) and the others reuse it. This script prunes the same targets with
both rankings, alternating, and prints the seconds of each point, so that the taylor points after the first can be
compared with the l1 ones of the same run.

Usage:
    python benchmarks/scan_points.py model.pt data.yaml [--method channel] [--imgsz 640] [--calib-batches 4]
        [--points 3]

Example (the volleyball YOLOv9t, imgsz 640, 4 batches of 8 images, 2 CPU cores): channel: l1 25.9, 21.7, 21.4 s;
taylor 37.8 (with the gradients), 23.4, 21.9 s. Unstructured (``--method unstructured``): l1 0.0, 0.0, 0.0 s;
taylor 15.7 (with the scores), 0.1, 0.0 s.
"""

from __future__ import annotations

import argparse
import time

from ultralytics import YOLO

from ultra_sparse.calibration import calibration_batches, loss_ready, model_stride
from ultra_sparse.config import SparsityConfig
from ultra_sparse.rules import load_rules
from ultra_sparse.scan import layout_rules, make_pruner


def main() -> None:
    """Parse the arguments, prune the points with both rankings and print their times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--method", choices=("channel", "unstructured"), default="channel")
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
        target_key = {"flops": 0.3} if args.method == "channel" else {}
        pruners = {
            name: make_pruner(net, SparsityConfig(method=args.method, importance=name, **target_key), batches)
            for name in times
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
