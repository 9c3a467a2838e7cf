"""The throwaway copy of a network that Torch-Pruning traces for channel pruning, and what each block becomes in it.

Torch-Pruning follows autograd from the output back to the input. Three kinds of Ultralytics blocks need help:

- split blocks (C2f and its kin C3k2/C2fCIB/C2fPSA/DSC3k2/TokenC3, C2, RepNCSPELAN4/ELAN1, C2PSA, PSA) chunk the
  output of ``cv1`` in two halves, which Torch-Pruning 1.6.1 maps wrongly (C2f sends both halves into one concat).
  In the copy each becomes a TWIN: ``cv1`` is replaced by two convolutions holding its first and second half
  (``cv1a``, ``cv1b``) and the forward concatenates them as the block does, with no chunk. Everything inside
  (bottlenecks, residual adds, RepConv branches) is traced as it is; the halves map back onto ``cv1``'s channels
  (``cv1b`` channel j is ``cv1`` channel c + j);
- blocks kept whole (attention heads, LSConv's kernel-sharing groups, blocks this project does not know) become one
  SINK per input: a 1x1 convolution of the block's input and output widths, a node Torch-Pruning cannot prune
  through, so every channel group that reaches one stays whole;
- ADown chunks its INPUT: it becomes one node of its own (:class:`BlockNode`) whose two input halves lose the same
  channels and whose outputs are its two convolutions' outputs.

The real model is never changed here: it keeps its stock classes and forwards.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BlockNode", "BlockPruner", "Sink", "TWIN_CLASSES", "Traced", "class_names", "classify_blocks", "tracing_copy"]

WHOLE_REASONS = {
    "Attention": "attention heads: qkv is reshaped by num_heads/key_dim/head_dim (not pruned head-wise)",
    "AAttn": "area attention heads: qkv is reshaped by num_heads/head_dim (not pruned head-wise)",
    "LSConv": "kernels shared by channel groups (views by `groups`)",
    "LKP": "kernels shared by channel groups (views by `groups`)",
    "SKA": "kernels shared by channel groups (views by `groups`)",
    "RepVGGDW": "RepVGGDW re-parameterises with its own channel count `dim`",
}
# blocks whose forward chunks/splits cv1's output in two equal halves: class -> forward of the twin
TWIN_CLASSES = ("C2f", "C2", "RepNCSPELAN4", "C2PSA", "PSA")
# blocks that chunk their input: pruned at their inputs and outputs (layers reading the input, layers writing the output)
_INPUT_SPLIT = {"ADown": (("cv1", "cv2"), ("cv1", "cv2"))}
_KNOWN = frozenset(
    {
        # Ultralytics blocks whose forward holds no channel count
        "Conv", "Conv2", "LightConv", "DWConv", "ConvTranspose", "DWConvTranspose2d", "RepConv", "GhostConv",
        "Focus", "Bottleneck", "BottleneckCSP", "C1", "C3", "C3x", "C3k", "C3Ghost", "GhostBottleneck", "RepC3",
        "RepBottleneck", "RepCSP", "SPP", "SPPF", "SPPELAN", "AConv", "SCDown", "CIB", "Concat", "PSABlock",
        "ABlock", "A2C2f", "BaseModel",
        # this project's blocks whose forward holds no channel count
        "DSConv", "DSBottleneck", "DSC3k", "TokenC3Block", "LSBlock", "FullPAD_Tunnel", "DownsampleConv",
    }
)
_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.Sequential, nn.ModuleList, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d, nn.Upsample, nn.Dropout,
)


@dataclass
class Traced:
    """The tracing copy and what each special block became in it.

    Attributes:
        net (nn.Module): The copy (thrown away after planning).
        nodes (dict[nn.Module, BlockNode]): Sinks (blocks kept whole) and input-split blocks, by module of the copy.
        aliases (dict[str, tuple[str, int, str]]): Twin layer name of the copy -> (real layer name, offset of its
            output channels in the real layer, twin block name + half ``":0"``/``":1"``).
    """

    net: nn.Module
    nodes: dict[nn.Module, BlockNode] = field(default_factory=dict)
    aliases: dict[str, tuple[str, int, str]] = field(default_factory=dict)

    def take_gradients(self, gradients: dict[str, torch.Tensor]) -> None:
        """Set every parameter's ``.grad`` in the copy to the gradient of its counterpart in the real network.

        Twin halves take their rows of the real ``cv1``'s gradient. Parameters the real network has no gradient for
        (the stand-ins' weights, which are zeros) take zeros: they add nothing to a channel's Taylor score.

        Args:
            gradients (dict[str, torch.Tensor]): Parameter name -> gradient, in the real network's names
                (:func:`ultra_sparse.importance.loss_gradients`).
        """
        for name, param in self.net.named_parameters():
            module, _, key = name.rpartition(".")
            real, offset, _ = self.aliases.get(module, (module, 0, None))
            grad = gradients.get(f"{real}.{key}")
            if grad is not None and real != module:
                grad = grad[offset : offset + len(param)]
            param.grad = torch.zeros_like(param) if grad is None else grad.to(param.dtype).clone()


def class_names(cls: type) -> set[str]:
    """Names of ``cls`` and its bases below nn.Module."""
    return {c.__name__ for c in cls.__mro__ if c not in (nn.Module, object)}


def classify_blocks(net: nn.Module, protected: set[int]) -> tuple[dict[str, str], list[str], list[str]]:
    """Sort the blocks of ``net``: kept whole (name -> reason), twins (names) and input-split blocks (names).

    Blocks whose every conv/linear is protected (the head; ``protected`` holds their ids) are traced as they are.
    """
    whole: dict[str, str] = {}
    twins: list[str] = []
    input_split: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            convs = [m for m in child.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            if not any(True for _ in child.parameters()) or (convs and all(id(m) in protected for m in convs)):
                continue
            names = class_names(type(child))
            special = next((n for n in WHOLE_REASONS if n in names), None)
            if special:
                whole[name] = WHOLE_REASONS[special]
            elif names & set(_INPUT_SPLIT):
                input_split.append(name)
            elif names & set(TWIN_CLASSES) and _twin_ready(child):
                twins.append(name)
                visit(child, f"{name}.")
            elif names & set(TWIN_CLASSES):
                whole[name] = f"{type(child).__name__}: its cv1 is not one ungrouped Conv of two equal halves"
            elif isinstance(child, _LEAVES) or names & _KNOWN:
                visit(child, f"{name}.")
            else:
                whole[name] = f"{type(child).__name__}: unknown block, its channel layout may live in attributes"

    visit(net, "")
    return whole, twins, input_split


def tracing_copy(net: nn.Module, whole: list[str], twins: list[str], input_split: list[str], stride: int) -> Traced:
    """A deep copy of ``net`` where twins, sinks and input-split nodes replace the special blocks (see the module doc)."""
    traced = Traced(copy.deepcopy(net))
    modules = dict(traced.net.named_modules())
    shapes: dict[str, tuple[list[torch.Size], torch.Size]] = {}

    def record(name):
        def hook(module, args, output):
            inputs = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
            if not isinstance(output, torch.Tensor) or not all(isinstance(t, torch.Tensor) for t in inputs):
                raise ValueError(
                    f"method=channel cannot keep {name} ({type(module).__name__}) whole: it does not map tensors to "
                    "one tensor; protect its family in the rules or prune another way"
                )
            shapes[name] = ([t.shape for t in inputs], output.shape)

        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for n in [*whole, *input_split]]
    try:
        with torch.no_grad():
            traced.net.eval()(torch.zeros(1, 3, 2 * stride, 2 * stride))
    finally:
        for h in hooks:
            h.remove()
    for module in modules.values():  # a scalar gate scales every channel alike: no coupling for the graph to record
        for key, param in list(module.named_parameters(recurse=False)):
            if param.dim() == 0:
                delattr(module, key)
                module.register_buffer(key, param.detach().clone())
    for name in twins:
        _make_twin(modules[name], name, traced.aliases)
    for name in whole:
        if name in shapes:
            _make_sinks(modules[name], *shapes[name], traced.nodes)
    for name in input_split:
        if name in shapes:
            block = modules[name]
            (_, cin, hin, _), (_, cout, hout, _) = shapes[name][0][0], shapes[name][1]
            block.add_module("_stand_in", Sink(cin, cout, max(1, hin // hout)))
            block.forward = types.MethodType(lambda self, x: self._stand_in(x), block)
            traced.nodes[block._stand_in] = BlockNode(block, name)
    return traced


class Sink(nn.Module):
    """A stand-in 1x1 convolution (zeros): one node that Torch-Pruning sees instead of a block's insides."""

    def __init__(self, cin: int, cout: int, stride: int = 1, scale: tuple[float, float] | None = None):
        """Map ``cin`` channels to ``cout`` at ``stride``, or resized by ``scale`` (output over input height, width)."""
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, 1, 1))
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool to the block's output size where asked, then convolve.

        The size follows the input's (a ratio, not the size traced), so that the copy runs at any input size.
        """
        if self.scale is not None:
            size = tuple(max(1, math.ceil(n * s - 1e-6)) for n, s in zip(x.shape[-2:], self.scale))
            if size != tuple(x.shape[-2:]):
                x = F.adaptive_avg_pool2d(x, size)
        return F.conv2d(x, self.weight, stride=self.stride)


def _make_sinks(block: nn.Module, inputs: list[torch.Size], output: torch.Size, nodes: dict) -> None:
    """Replace a whole block's forward by one sink per input, summed (multi-input blocks such as HyperACE)."""
    for i, shape in enumerate(inputs):
        sink = Sink(shape[1], output[1], scale=(output[-2] / shape[-2], output[-1] / shape[-1]))
        block.add_module(f"_sink{i}", sink)
        nodes[sink] = BlockNode(block, None)
    count = len(inputs)

    def forward(self, x, *args, **kwargs):  # extra inputs (a text guide, ...) pass no channels the graph must see
        xs = x if isinstance(x, (list, tuple)) else [x]
        return sum(getattr(self, f"_sink{i}")(xs[i]) for i in range(count))

    block.forward = types.MethodType(forward, block)


def _twin_ready(block: nn.Module) -> bool:
    """True if the block's ``cv1`` is an Ultralytics Conv (conv, optional bn) of an even number of outputs."""
    conv = getattr(getattr(block, "cv1", None), "conv", None)
    return isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.out_channels % 2 == 0


def _half(cv1: nn.Module, lo: int, hi: int) -> nn.Module:
    """A copy of the Conv ``cv1`` that computes only its output channels ``lo:hi``."""
    half = copy.deepcopy(cv1)
    conv = half.conv
    conv.weight = nn.Parameter(conv.weight.detach()[lo:hi].clone())
    conv.out_channels = hi - lo
    if conv.bias is not None:
        conv.bias = nn.Parameter(conv.bias.detach()[lo:hi].clone())
    bn = getattr(half, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        bn.num_features = hi - lo
        for key in ("weight", "bias"):
            if getattr(bn, key) is not None:
                setattr(bn, key, nn.Parameter(getattr(bn, key).detach()[lo:hi].clone()))
        for key in ("running_mean", "running_var"):
            if getattr(bn, key) is not None:
                setattr(bn, key, getattr(bn, key)[lo:hi].clone())
    return half


def _make_twin(block: nn.Module, name: str, aliases: dict) -> None:
    """Give a split block two half convolutions and a forward that concatenates them as the block does."""
    c = block.cv1.conv.out_channels // 2
    block.cv1a, block.cv1b = _half(block.cv1, 0, c), _half(block.cv1, c, 2 * c)
    for half, offset, tag in (("cv1a", 0, ":0"), ("cv1b", c, ":1")):
        for layer in ("conv", "bn"):
            aliases[f"{name}.{half}.{layer}"] = (f"{name}.cv1.{layer}", offset, name + tag)
    names = class_names(type(block))
    kind = next(k for k in TWIN_CLASSES if k in names)
    block.forward = types.MethodType(_TWIN_FORWARDS[kind], block)


def _c2f_twin(self, x):
    """C2f: both halves, then every inner block's output, concatenated."""
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in self.m)
    return self.cv2(torch.cat(y, 1))


def _c2_twin(self, x):
    """C2: the inner blocks on the first half, concatenated with the second."""
    return self.cv2(torch.cat((self.m(self.cv1a(x)), self.cv1b(x)), 1))


def _elan_twin(self, x):
    """RepNCSPELAN4/ELAN1: both halves, cv2 on the second, cv3 on cv2's output, concatenated."""
    y = [self.cv1a(x), self.cv1b(x)]
    y.extend(m(y[-1]) for m in (self.cv2, self.cv3))
    return self.cv4(torch.cat(y, 1))


def _c2psa_twin(self, x):
    """C2PSA: the PSA blocks on the second half, concatenated with the first."""
    return self.cv2(torch.cat((self.cv1a(x), self.m(self.cv1b(x))), 1))


def _psa_twin(self, x):
    """PSA: attention and FFN residuals on the second half, concatenated with the first."""
    b = self.cv1b(x)
    b = b + self.attn(b)
    b = b + self.ffn(b)
    return self.cv2(torch.cat((self.cv1a(x), b), 1))


_TWIN_FORWARDS = {"C2f": _c2f_twin, "C2": _c2_twin, "RepNCSPELAN4": _elan_twin, "C2PSA": _c2psa_twin, "PSA": _psa_twin}


class BlockNode:
    """A node Torch-Pruning sees in place of a block: a sink of a whole block (``name`` None) or an input-split block.

    For an input-split block (ADown) the channels a group asks of it are translated onto the block's own layers by
    :meth:`layers`, so its classes and ``forward`` never change.
    """

    def __init__(self, block: nn.Module, name: str | None):
        """Remember the block, its name (None: kept whole) and the names of its input/output layers."""
        self.block, self.name = block, name
        names = class_names(type(block))
        self.inputs, self.outputs = next((v for k, v in _INPUT_SPLIT.items() if k in names), ((), ()))

    def _conv(self, child: str) -> nn.Conv2d:
        """The Conv2d of one of the block's Conv layers."""
        return getattr(self.block, child).conv

    @property
    def out_channels(self) -> int | None:
        """Output channels (None for a whole block)."""
        return sum(self._conv(c).out_channels for c in self.outputs) if self.outputs else None

    @property
    def in_channels(self) -> int | None:
        """Input channels (ADown's two convs each read one half; None for a whole block)."""
        return sum(self._conv(c).in_channels for c in self.inputs) if self.inputs else None

    def parts(self, kind: str) -> int:
        """Equal parts a group must keep: ADown splits its input in two halves."""
        return len(self.inputs) if kind == "in" else 1

    def layers(self, kind: str, idxs, roots):
        """Yield ``(layer name, kind, index, root index)`` for the block's channels ``idxs`` on side ``kind``."""
        children = self.inputs if kind == "in" else self.outputs
        widths = [self._conv(c).in_channels if kind == "in" else self._conv(c).out_channels for c in children]
        offsets = [sum(widths[:i]) for i in range(len(widths) + 1)]
        for idx, root in zip(idxs, roots):
            part = next((i for i in range(len(children)) if idx < offsets[i + 1]), None)
            if part is None:
                raise ValueError(f"{self.name}: channel {idx} of its {kind}puts is out of range ({offsets[-1]})")
            local = int(idx) - offsets[part]
            if kind == "in":
                yield f"{self.name}.{children[part]}.conv", "in", local, root
            else:
                yield f"{self.name}.{children[part]}.conv", "out", local, root
                if isinstance(getattr(getattr(self.block, children[part]), "bn", None), nn.BatchNorm2d):
                    yield f"{self.name}.{children[part]}.bn", "out", local, root


class BlockPruner:
    """Torch-Pruning's pruning function for :class:`Sink` nodes (it keys them by class): asks each node."""

    def __init__(self, nodes: dict[nn.Module, BlockNode]):
        """Remember the nodes by sink."""
        self.nodes = nodes

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        """Never called: groups are applied through :meth:`BlockNode.layers`."""
        raise RuntimeError("block nodes are pruned through their layers")

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        """Never called: groups are applied through :meth:`BlockNode.layers`."""
        raise RuntimeError("block nodes are pruned through their layers")

    def get_out_channels(self, layer: nn.Module) -> int | None:
        """Output channels of the node."""
        node = self.nodes.get(layer)
        return node.out_channels if node is not None and node.name else layer.weight.shape[0]

    def get_in_channels(self, layer: nn.Module) -> int | None:
        """Input channels of the node."""
        node = self.nodes.get(layer)
        return node.in_channels if node is not None and node.name else layer.weight.shape[1]

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        """No channel grouping."""
        return 1

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        """No channel grouping."""
        return 1
