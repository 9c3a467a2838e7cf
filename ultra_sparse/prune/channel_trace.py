"""The throwaway copy of a network that Torch-Pruning traces for channel pruning, and what each block becomes in it.

Torch-Pruning follows autograd from the output back to the input. Four kinds of Ultralytics blocks need help:

- split blocks (C2f and its kin, C2PSA, PSA, HyperACE) chunk the output of ``cv1`` in equal parts: in the copy they
  become TWINS with one convolution per part (:mod:`ultra_sparse.prune.channel_twins`);
- LSConv (LSNet's token mixer, also inside TokenC3 and LSBlock) shares one predicted kernel among the channels of each
  of its ``groups``: in the copy its forward is ``x + bn(x)`` next to the kernel branch (LKP's convolutions, ending in
  a sink), so its channels are pruned with the layers around it, every kernel group losing the same count
  (``Traced.parts``), and LKP's hidden widths are pruned as groups of their own;
- blocks kept whole (attention heads, the hypergraph computation, blocks this project does not know) become one
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

from .channel_attention import AttentionSlots, attention_slots
from .channel_twins import make_twin, twin_pieces, twin_ready

__all__ = [
    "BlockNode", "BlockPruner", "Blocks", "Sink", "Traced", "WHOLE_REASONS", "class_names", "classify_blocks",
    "tracing_copy",
]

WHOLE_REASONS = {
    "Attention": "attention heads: qkv is reshaped by num_heads/key_dim/head_dim (not pruned head-wise)",
    "keys": "attention: its input and output widths must stay (num_heads * head_dim); its query/key channels can go, "
    "none at this target",
    "heads": "area attention: its input and output widths stay; it can lose whole heads, none at this target",
    "AAttn": "area attention heads: this version's forward reshapes the heads to the input's width",
    "AdaHGComputation": "hypergraph convolution: prototypes and context_net are laid out by num_hyperedges/num_heads",
    "LKP": "kernels shared by channel groups (views by `groups`)",
    "SKA": "kernels shared by channel groups (views by `groups`)",
    "RepVGGDW": "RepVGGDW re-parameterises with its own channel count `dim`",
}
# blocks traced through a forward of their own in the copy (see the module doc)
_STAND_INS = ("LSConv",)
# blocks that chunk their input: pruned at their inputs and outputs (layers reading the input, layers writing the output)
_INPUT_SPLIT = {"ADown": (("cv1", "cv2"), ("cv1", "cv2"))}
_KNOWN = frozenset(
    {
        # Ultralytics blocks whose forward holds no channel count
        "Conv", "Conv2", "LightConv", "DWConv", "ConvTranspose", "DWConvTranspose2d", "RepConv", "GhostConv",
        "Focus", "Bottleneck", "BottleneckCSP", "C1", "C3", "C3x", "C3k", "C3Ghost", "GhostBottleneck", "RepC3",
        "RepBottleneck", "RepCSP", "SPP", "SPPF", "SPPELAN", "AConv", "SCDown", "CIB", "Concat", "PSABlock",
        "ABlock", "A2C2f", "BaseModel", "Detect", "DFL", "Proto",
        # this project's blocks whose forward holds no channel count
        "DSConv", "DSBottleneck", "DSC3k", "TokenC3Block", "LSBlock", "FullPAD_Tunnel", "DownsampleConv", "C3AH",
        "FuseModule",
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
            output channels in the real layer, twin block name + part ``":0"``, ``":1"``, ...).
        pieces (dict[str, int]): Twin block name -> parts its ``cv1`` is cut in.
        parts (dict[str, int]): Real layer name -> equal parts its channels come in, each of which must lose the same
            count (an LSConv's BatchNorm: its kernel groups).
        side (list[torch.Tensor]): Outputs of the stand-ins' side branches, filled by a forward of the copy; traced
            with the network's output so that their layers are in the graph.
        attention (dict[str, AttentionSlots]): An attention's qkv conv name -> its prunable slots (query/key
            channels or whole heads, :mod:`ultra_sparse.prune.channel_attention`).
    """

    net: nn.Module
    nodes: dict[nn.Module, BlockNode] = field(default_factory=dict)
    aliases: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    pieces: dict[str, int] = field(default_factory=dict)
    parts: dict[str, int] = field(default_factory=dict)
    side: list[torch.Tensor] = field(default_factory=list)
    attention: dict[str, AttentionSlots] = field(default_factory=dict)

    def forward(self, net: nn.Module, x: torch.Tensor):
        """Torch-Pruning's ``forward_fn``: run the copy, its side branches collected afresh."""
        self.side.clear()
        return net(x)

    def outputs(self, output) -> list:
        """Torch-Pruning's ``output_transform``: the network's output and the side branches' outputs."""
        return [output, *self.side]

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


@dataclass
class Blocks:
    """The special blocks of a network, by name: kept whole (name -> reason), twins, input-split and stand-ins."""

    whole: dict[str, str] = field(default_factory=dict)
    twins: list[str] = field(default_factory=list)
    input_split: list[str] = field(default_factory=list)
    stand_ins: list[str] = field(default_factory=list)


def classify_blocks(net: nn.Module, protected: set[int]) -> Blocks:
    """Sort the blocks of ``net`` into the kinds of the module doc.

    Blocks whose every conv/linear is protected (the head; ``protected`` holds their ids) are traced as they are.
    """
    blocks = Blocks()
    whole, twins, input_split = blocks.whole, blocks.twins, blocks.input_split

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
            elif names & set(_STAND_INS):
                blocks.stand_ins.append(name)
            elif twin_ready(child):
                twins.append(name)
                visit(child, f"{name}.")
            elif twin_pieces(child):
                whole[name] = f"{type(child).__name__}: its cv1 is not one ungrouped Conv of equal parts"
            elif isinstance(child, _LEAVES) or names & _KNOWN:
                visit(child, f"{name}.")
            else:
                whole[name] = f"{type(child).__name__}: unknown block, its channel layout may live in attributes"

    visit(net, "")
    return blocks


def tracing_copy(net: nn.Module, blocks: Blocks, stride: int) -> Traced:
    """A deep copy of ``net`` where twins, stand-ins, sinks and input-split nodes replace the special blocks."""
    whole, twins, input_split = list(blocks.whole), blocks.twins, blocks.input_split
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
        make_twin(modules[name], name, traced.aliases)
        traced.pieces[name] = twin_pieces(modules[name])
    for name in blocks.stand_ins:
        _make_lsconv_stand_in(modules[name], name, traced)
    for name in whole:
        if name in shapes:
            _make_sinks(modules[name], *shapes[name], traced.nodes)
            slots = attention_slots(modules[name], name)
            if slots is not None:
                _add_slot_branch(modules[name], slots, traced)
    for name in input_split:
        if name in shapes:
            block = modules[name]
            (_, cin, hin, _), (_, cout, hout, _) = shapes[name][0][0], shapes[name][1]
            block.add_module("_stand_in", Sink(cin, cout, max(1, hin // hout)))
            block.forward = types.MethodType(lambda self, x: self._stand_in(x), block)
            traced.nodes[block._stand_in] = BlockNode(block, name)
    return traced


def _add_slot_branch(block: nn.Module, slots: AttentionSlots, traced: Traced) -> None:
    """An attention kept whole also runs its qkv conv into a sink, so that the qkv channels can be ranked."""
    block.add_module("_slots", Sink(block.qkv.conv.out_channels, 1))
    traced.nodes[block._slots] = BlockNode(block, None)
    traced.attention[slots.qkv] = slots
    whole_forward, side = block.forward, traced.side

    def forward(self, x, *args, **kwargs):
        side.append(self._slots(self.qkv(x)))
        return whole_forward(x, *args, **kwargs)

    block.forward = types.MethodType(forward, block)


def _make_lsconv_stand_in(block: nn.Module, name: str, traced: Traced) -> None:
    """LSConv in the copy: ``x + bn(x)``, with LKP's convolutions on ``x`` ending in a sink as a side branch.

    Its output channels are its input channels (the residual) and SKA applies one kernel to all channels of a group,
    so the channels come in ``lkp.groups`` equal parts; the kernels (LKP's last conv) stay whole.
    """
    lkp = block.lkp
    block.add_module("_kernels", Sink(lkp.cv4.out_channels, 1))
    traced.nodes[block._kernels] = BlockNode(block, None)
    traced.parts[f"{name}.bn"] = lkp.groups
    side = traced.side

    def forward(self, x):
        side.append(self._kernels(lkp.cv4(lkp.cv3(lkp.cv2(lkp.cv1(x))))))
        return x + self.bn(x)

    block.forward = types.MethodType(forward, block)


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
