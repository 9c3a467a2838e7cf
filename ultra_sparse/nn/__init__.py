"""Clean-room modules of the YOLOv13 / LSNet / TokenC3 model family, buildable from Ultralytics model YAMLs.

Importing this package calls `register()`, so `YOLO("cfg/models/yolov13-tokenc3-lsnet.yaml")` builds and checkpoints
of such models load.

Examples:
    >>> import ultra_sparse.nn
    >>> from ultralytics import YOLO
    >>> model = YOLO("cfg/models/yolov13-tokenc3-lsnet-n.yaml")  # doctest: +SKIP
"""

from .dsc import DSBottleneck, DSC3k, DSC3k2, DSConv
from .fullpad import DownsampleConv, FullPAD_Tunnel
from .hyperace import C3AH, AdaHGComputation, AdaHGConv, AdaHyperedgeGen, FuseModule, HyperACE
from .lsnet import LKP, SKA, LSBlock, LSConv
from .register import LayerSpec, register, register_layer
from .tokenc3 import TokenC3, TokenC3Block

__all__ = [
    "C3AH",
    "LKP",
    "SKA",
    "AdaHGComputation",
    "AdaHGConv",
    "AdaHyperedgeGen",
    "DSBottleneck",
    "DSC3k",
    "DSC3k2",
    "DSConv",
    "DownsampleConv",
    "FullPAD_Tunnel",
    "FuseModule",
    "HyperACE",
    "LSBlock",
    "LSConv",
    "LayerSpec",
    "TokenC3",
    "TokenC3Block",
    "register",
    "register_layer",
]

register()
