"""New classes on a trained network: replace only the head's class-dependent output layers, keep everything else.

Ultralytics meets a dataset with another class count by rebuilding the network from its YAML and copying the tensors
whose shapes still match. A channel-pruned network then comes back at full width, mostly re-initialised. Here the
checkpoint's own network is kept and only the layers whose shape depends on the class count are replaced:

- Detect and its subclasses (Segment, Pose, OBB, v10Detect, YOLO26's end-to-end heads): the last convolution of every
  classification branch, ``cv3`` and, where the head has them, the one-to-one branches' ``one2one_cv3``; their biases
  start at Ultralytics' prior (``Detect.bias_init``: 0.01 objects per 640 px image, spread over the classes);
- Classify: its final linear layer, replaced as Ultralytics' ``ClassificationModel.reshape_outputs`` replaces it.

Box, mask, keypoint and angle branches and every hidden layer keep their trained weights (and their zeros).

Examples:
    >>> from ultralytics.nn.tasks import DetectionModel
    >>> net = DetectionModel("yolo11n.yaml", nc=80, verbose=False)
    >>> replace_class_outputs(net, 3)[:2]
    ['model.23.cv3.0.2', 'model.23.cv3.1.2']
    >>> net.model[-1].nc, net.yaml["nc"]
    (3, 3)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["class_output_names", "keeps_yaml_shapes", "replace_class_outputs"]

_CLASS_BRANCHES = ("cv3", "one2one_cv3")  # Detect's classification branches (one-to-many, one-to-one)


def class_output_names(net: nn.Module) -> list[str]:
    """Qualified names of the layers of ``net`` whose output size is the class count.

    Args:
        net (nn.Module): An Ultralytics model (``DetectionModel``, ``SegmentationModel``, ..., ``ClassificationModel``).

    Returns:
        (list[str]): The layers :func:`replace_class_outputs` would replace.

    Raises:
        ValueError: If the head is not one whose class outputs can be located (its class name is given).

    Examples:
        >>> from ultralytics.nn.tasks import ClassificationModel
        >>> class_output_names(ClassificationModel("yolo11n-cls.yaml", nc=5, verbose=False))
        ['model.10.linear']
    """
    head, prefix = _head(net)
    if _is_classify(head):
        return [f"{prefix}.linear"]
    names = []
    for branch in _CLASS_BRANCHES:
        for i, seq in enumerate(getattr(head, branch, None) or []):
            if not isinstance(seq, nn.Sequential) or not _is_class_conv(seq[-1], head.nc):
                raise ValueError(_unknown(head, f"{branch}[{i}] does not end in a {head.nc}-channel convolution"))
            names.append(f"{prefix}.{branch}.{i}.{len(seq) - 1}")
    if not names:
        raise ValueError(_unknown(head, "it has no classification branch (cv3)"))
    return names


def replace_class_outputs(net: nn.Module, nc: int) -> list[str]:
    """Give ``net`` ``nc`` classes by replacing its class output layers, initialised as Ultralytics initialises them.

    Updates the head's ``nc`` and ``no`` and the model's ``yaml["nc"]`` and ``nc``; names are the trainer's to set.
    The new layers are on the device and of the dtype of the layers they replace.

    Args:
        net (nn.Module): An Ultralytics model, changed in place.
        nc (int): The new class count.

    Returns:
        (list[str]): The replaced layers' names (empty when ``net`` already has ``nc`` classes).

    Raises:
        ValueError: If the head's class outputs cannot be located (see :func:`class_output_names`).
    """
    names = class_output_names(net)
    head, _ = _head(net)
    old = head.linear.out_features if _is_classify(head) else head.nc
    if old == nc:
        return []
    if _is_classify(head):
        head.linear = _like(nn.Linear(head.linear.in_features, nc), head.linear)
    else:
        for branch in _CLASS_BRANCHES:
            for i, seq in enumerate(getattr(head, branch, None) or []):
                seq[-1] = _new_class_conv(seq[-1], nc, float(head.stride[i]))
        head.no = head.no - head.nc + nc
        head.nc = nc
    if isinstance(getattr(net, "yaml", None), dict):
        net.yaml["nc"] = nc
    net.nc = nc
    return names


def keeps_yaml_shapes(net: nn.Module) -> bool:
    """Whether every layer of ``net`` before its head has the shapes a fresh build from its YAML gives (False once
    channel-pruned).

    The head is left out: its hidden width follows the class count, and Ultralytics rebuilds it for a new dataset
    anyway.

    Args:
        net (nn.Module): An Ultralytics model with a ``yaml`` dict.

    Returns:
        (bool): True when a rebuild from the YAML (as Ultralytics does for a new dataset) keeps the network's shapes.

    Examples:
        >>> from ultralytics.nn.tasks import DetectionModel
        >>> keeps_yaml_shapes(DetectionModel("yolo11n.yaml", nc=2, verbose=False))
        True
    """
    from copy import deepcopy

    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # the rebuild's layer table is not the user's business
    try:
        fresh = type(net)(deepcopy(net.yaml), verbose=False)
    finally:
        LOGGER.setLevel(level)
    _, head = _head(net)
    mine = {k: v.shape for k, v in net.state_dict().items() if not k.startswith(f"{head}.")}
    return all(mine.get(k, v.shape) == v.shape for k, v in fresh.state_dict().items() if k in mine)


def _head(net: nn.Module) -> tuple[nn.Module, str]:
    """The last layer of an Ultralytics model and its qualified name."""
    layers = getattr(net, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise ValueError(f"{type(net).__name__} is not an Ultralytics model (no model.model layers)")
    return layers[-1], f"model.{len(layers) - 1}"


def _is_classify(head: nn.Module) -> bool:
    """Whether ``head`` is a Classify head (a final linear layer)."""
    return isinstance(getattr(head, "linear", None), nn.Linear) and not hasattr(head, "cv3")


def _is_class_conv(layer: nn.Module, nc: int) -> bool:
    """Whether ``layer`` is a plain convolution producing ``nc`` channels."""
    return type(layer) is nn.Conv2d and layer.out_channels == nc


def _unknown(head: nn.Module, why: str) -> str:
    """The refusal for a head whose class outputs cannot be replaced."""
    return f"the {type(head).__name__} head's class outputs cannot be replaced for a new class count: {why}"


def _new_class_conv(old: nn.Conv2d, nc: int, stride: float) -> nn.Conv2d:
    """A fresh ``nc``-channel version of ``old`` with Ultralytics' class-bias prior for a level of ``stride``."""
    conv = nn.Conv2d(old.in_channels, nc, old.kernel_size, old.stride, old.padding, old.dilation, old.groups, True)
    with torch.no_grad():
        conv.bias.fill_(math.log(5 / nc / (640 / stride) ** 2))
    return _like(conv, old)


def _like(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` on the device and dtype of ``old``, with ``old``'s requires_grad."""
    weight = old.weight
    new = new.to(device=weight.device, dtype=weight.dtype)
    for param in new.parameters():
        param.requires_grad_(weight.requires_grad)
    return new
