"""Write a two-class copy of the volleyball split: the ball class split by box size, for a new-classes fine-tune.

``yolov9t-volleyball.pt`` has one class; this copy has two (``ball-small`` and ``ball-large``, split at the median
box area of the train labels), so fine-tuning the checkpoint on it changes the class count. The images are linked,
not copied; labels are rewritten; the data YAML lists the same 400 train / 148 val images as ``split.yaml``.

Usage:
    python benchmarks/two_class_volleyball.py OUT_FOLDER
    ultra-sparse sparsify model=../shared/realdata/volleyball/yolov9t-volleyball.pt method=channel flops=0.5 \\
        data=OUT_FOLDER/data.yaml imgsz=640
    ultra-sparse train model=<pruned>.pt data=OUT_FOLDER/data.yaml epochs=3 imgsz=640 optimizer=SGD lr0=0.002 \\
        warmup_epochs=0 close_mosaic=0 workers=0 device=cpu freeze_bn=True
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "volleyball"
LISTS = {"train": "train400.txt", "val": "val148.txt"}


def read_labels(path: Path) -> list[list[float]]:
    """The rows of one YOLO label file (class, x, y, w, h)."""
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    """Write the two-class copy into a new folder and print its class balance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create (must not exist)")
    args = parser.parse_args()
    if not SOURCE.is_dir():
        sys.exit(f"error: {SOURCE} not found")
    if args.out.exists():
        sys.exit(f"error: {args.out} exists; pass a new folder")
    images = {split: [SOURCE / p for p in (SOURCE / name).read_text().split()] for split, name in LISTS.items()}

    def label_of(image: Path) -> Path:
        return SOURCE / "labels" / image.parent.name / (image.stem + ".txt")

    areas = [r[3] * r[4] for img in images["train"] if label_of(img).exists() for r in read_labels(label_of(img))]
    threshold = statistics.median(areas)
    counts = {"train": [0, 0], "val": [0, 0]}
    for split, paths in images.items():
        (args.out / "images" / split).mkdir(parents=True)
        (args.out / "labels" / split).mkdir(parents=True)
        for image in paths:
            (args.out / "images" / split / image.name).symlink_to(image.resolve())
            rows = read_labels(label_of(image)) if label_of(image).exists() else []
            lines = []
            for _, x, y, w, h in rows:
                cls = int(w * h > threshold)
                counts[split][cls] += 1
                lines.append(f"{cls} {x:.6f} {y:.6f} {w:.6f} {h:.6f}")
            (args.out / "labels" / split / (image.stem + ".txt")).write_text("\n".join(lines) + "\n" if lines else "")
    (args.out / "data.yaml").write_text(
        f"path: {args.out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: ball-small\n  1: ball-large\n"
    )
    print(f"split at box area {threshold:.6f} (normalised); boxes small/large: train {counts['train']}, val {counts['val']}")
    print(f"data: {(args.out / 'data.yaml').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
