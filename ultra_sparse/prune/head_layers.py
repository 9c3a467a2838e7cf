"""Which layers of a detection head channel pruning may narrow when the rules give the head a ratio.

The preset rules protect the head (``protect: true``): it loses no output channel. A rules file that gives the head
family a ratio instead lets the HIDDEN layers of its branches lose channels: every layer of the box, class, mask
coefficient, keypoint and angle branches (``cv2``, ``cv3``, ``cv4`` and the one-to-one copies of end-to-end heads)
except the last, whose outputs are the predictions. Everything else in the head keeps its outputs: those last layers,
DFL, and the mask prototype network (Proto), whose layout the loss and export read.

Examples:
    >>> from ultralytics import YOLO
    >>> hidden = head_hidden_layers(YOLO("yolov8n.yaml").model)
    >>> sorted(hidden)[:2]
    ['model.22.cv2.0.0.conv', 'model.22.cv2.0.1.conv']
"""

from __future__ import annotations

import torch.nn as nn

__all__ = ["BRANCHES", "head_hidden_layers", "head_kept_layers"]

BRANCHES = ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4")


def head_hidden_layers(net: nn.Module) -> set[str]:
    """Names of the convolutions inside the branches of every Detect-kin head of ``net``, last layers excluded."""
    hidden: set[str] = set()
    for head_name, head in net.named_modules():
        if "Detect" not in {c.__name__ for c in type(head).__mro__}:
            continue
        for branch_name in BRANCHES:
            branches = getattr(head, branch_name, None)
            if not isinstance(branches, nn.ModuleList):
                continue
            for i, branch in enumerate(branches):
                if not isinstance(branch, nn.Sequential) or len(branch) < 2:
                    continue
                for j, layer in enumerate(list(branch)[:-1]):
                    prefix = f"{head_name}.{branch_name}.{i}.{j}"
                    hidden |= {f"{prefix}.{n}".rstrip(".") for n, m in layer.named_modules() if isinstance(m, nn.Conv2d)}
    return hidden


def head_kept_layers(net: nn.Module) -> set[str]:
    """Names of the convolutions and linear layers of every Detect-kin head that keep their outputs in any case."""
    hidden = head_hidden_layers(net)
    return {
        f"{head_name}.{n}"
        for head_name, head in net.named_modules()
        if "Detect" in {c.__name__ for c in type(head).__mro__}
        for n, m in head.named_modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and f"{head_name}.{n}" not in hidden
    }
