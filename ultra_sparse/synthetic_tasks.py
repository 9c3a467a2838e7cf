"""Tiny synthetic datasets for the other Ultralytics tasks, derived from the shapes of :mod:`ultra_sparse.synthetic`.

Each drawn shape gives its task's label: its outline polygon (segment), three keypoints on its outline (pose: the
top-most, left-most and right-most pixels), its minimal rotated rectangle (OBB), or, for classification, the class of
an image's largest shape (one folder per class). Datasets are deterministic and meant for fast CPU tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import yaml

from .synthetic import CLASS_NAMES, _check_int, _render_shapes

__all__ = ["TASKS", "make_task_dataset"]

TASKS = ("segment", "pose", "obb", "classify")
_SPLITS = ("train", "val")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The largest outer contour of a mask as an (N, 2) float array of pixel coordinates."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)


def _label(task: str, cls: int, mask: np.ndarray, box: tuple, imgsz: int) -> str:
    """One label line of ``task`` for one shape, coordinates normalised to [0, 1]."""
    if task == "segment":
        points = _outline(mask) / imgsz
        return " ".join([str(cls), *(f"{v:.6f}" for v in points.reshape(-1))])
    if task == "obb":
        corners = cv2.boxPoints(cv2.minAreaRect(_outline(mask).astype(np.float32))) / imgsz
        return " ".join([str(cls), *(f"{v:.6f}" for v in np.clip(corners, 0, 1).reshape(-1))])
    x1, y1, x2, y2 = box  # pose: box plus three visible keypoints on the outline
    outline = _outline(mask)
    points = [outline[outline[:, 1].argmin()], outline[outline[:, 0].argmin()], outline[outline[:, 0].argmax()]]
    kpts = " ".join(f"{x / imgsz:.6f} {y / imgsz:.6f} 2" for x, y in points)
    box_text = f"{(x1 + x2) / 2 / imgsz:.6f} {(y1 + y2) / 2 / imgsz:.6f} {(x2 - x1) / imgsz:.6f} {(y2 - y1) / imgsz:.6f}"
    return f"0 {box_text} {kpts}"


def make_task_dataset(root, task: str, n_train: int = 16, n_val: int = 8, imgsz: int = 64, seed: int = 0) -> Path:
    """Write a small dataset for ``task`` into the new folder ``root``.

    Args:
        root (str | os.PathLike): Folder to create (must not exist).
        task (str): ``segment``, ``pose`` (one class, three keypoints), ``obb`` or ``classify``.
        n_train (int): Training images.
        n_val (int): Validation images.
        imgsz (int): Image side in pixels, >= 32.
        seed (int): Random seed.

    Returns:
        (Path): The data.yaml to pass as ``data=``, or for ``classify`` the dataset folder.

    Raises:
        ValueError: If ``task`` is unknown or a count is invalid.
        FileExistsError: If ``root`` exists.

    Examples:
        >>> import tempfile
        >>> make_task_dataset(Path(tempfile.mkdtemp()) / "seg", "segment", n_train=2, n_val=1).name
        'data.yaml'
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
    counts = {"train": _check_int("n_train", n_train, 1), "val": _check_int("n_val", n_val, 1)}
    imgsz, seed = _check_int("imgsz", imgsz, 32), _check_int("seed", seed, 0)
    root = Path(os.path.abspath(Path(os.fspath(root)).expanduser()))
    root.mkdir(parents=True, exist_ok=False)
    for split_id, split in enumerate(_SPLITS):
        for i in range(counts[split]):
            image, shapes = _render_shapes(np.random.default_rng([seed, split_id, i, TASKS.index(task)]), imgsz)
            if task == "classify":
                cls = max(shapes, key=lambda s: int(s[1].sum()))[0] if shapes else 0
                path = root / split / CLASS_NAMES[cls] / f"{i:06d}.png"
            else:
                path = root / "images" / split / f"{i:06d}.png"
                label = root / "labels" / split / f"{i:06d}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("".join(_label(task, c, m, b, imgsz) + "\n" for c, m, b in shapes))
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), image)
    if task == "classify":
        for split in _SPLITS:  # every class folder exists in both splits, even where no image fell into it
            for name in CLASS_NAMES:
                (root / split / name).mkdir(parents=True, exist_ok=True)
        return root
    names = {0: "shape"} if task == "pose" else dict(enumerate(CLASS_NAMES))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": names}
    if task == "pose":
        data.update(kpt_shape=[3, 3], flip_idx=[0, 2, 1])
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"
