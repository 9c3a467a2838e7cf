"""Channel pruning: whole output channels removed, so dense layers get smaller (real speed and size).

One small adapter over Torch-Pruning's dependency graph. Torch-Pruning traces the network and groups every set of
coupled channels (a conv's outputs, the BatchNorm after it, the inputs of every consumer, residual adds, concats);
this module decides how many channels each group loses and which ones:

- the rules (``ultra_sparse.rules``) give each group a family, hence a CHANNEL ratio; all ratios are scaled by one
  factor, found by bisection so that the removed fraction of prunable parameters (``sparsity=``) or of GFLOPs
  (``flops=``, Ultralytics' ``get_flops`` at the model's imgsz) reaches the target within one channel group;
- protected families (the head, DFL) lose no output channel: a group that would remove one is left whole (their
  first layers only lose the inputs the layers before them no longer produce; a depthwise layer among them, such
  as the first of Detect's class branch, loses the filters of those inputs, its channels being its inputs); a head
  the rules give a ratio loses channels in the hidden layers of its branches only
  (:mod:`ultra_sparse.prune.head_layers`);
- Ultralytics blocks that split ``cv1``'s output in equal parts (C2f/C3k2/C2fCIB/DSC3k2/TokenC3, C2, ELAN, C2PSA,
  PSA: halves; HyperACE: thirds) are pruned inside: they are traced as twins
  (:mod:`ultra_sparse.prune.channel_twins`), the parts lose the SAME number of channels (each its own least
  important ones) and ``c`` is updated, so the stock ``forward`` (chunk) and ``forward_split`` both work; ADown's two
  input halves lose the same channels;
- LSConv (TokenC3, LSBlock) loses channels with the layers around it, each of its kernel-sharing groups the same
  count, and its kernel branch (LKP) loses hidden channels (:mod:`ultra_sparse.prune.channel_trace`);
- blocks whose channel layout lives in attributes (attention heads: ``num_heads``, ``key_dim``, ``head_dim``; the
  hypergraph computation of HyperACE) and blocks this module does not know are left whole: their inputs and outputs
  keep every channel, and the plan says which and why.

The importance of every channel is computed once on the unpruned model and sorted once; trying a scale factor only
counts channels (params and FLOPs per layer from its shape), so the search costs milliseconds. Only the chosen plan
is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import math

import numpy as np
import torch
import torch.nn as nn

from ..calibration import model_stride
from ..config import SparsityConfig
from ..importance import TAYLOR_NEEDS_DATA, loss_gradients
from ..rules import Assignment
from .channel_count import MAX_CHANNEL_RATIO, LayerCosts, SlotCounter, output_positions, search_scale
from .channel_trace import (
    WHOLE_REASONS, BlockPruner, Sink, Traced, class_names, classify_blocks, tracing_copy,
)
from .channel_attention import AttentionSlots, attention_inside, update_attention_attributes
from .channel_twins import twin_pieces
from .head_layers import head_kept_layers

__all__ = ["MAX_CHANNEL_RATIO", "ChannelPlan", "output_positions", "plan_channels", "remove_channels"]



@dataclass
class _Group:
    """One set of coupled channels: its family, ratio, slot order and where each slot lands in every layer."""

    family: str
    ratio: float
    slots: int  # channels per part (all channels when the group is not split in parts)
    parts: int  # equal parts that must lose the same channels (2 for an ADown input, else 1)
    scores: torch.Tensor  # one importance per slot, averaged over parts
    targets: dict[tuple[str, str], list[list[int]]]  # (module name, "out"|"in") -> per slot, its indices there
    half: str | None = None  # "<twin block>:<part>" where the group holds one part of a split block's cv1
    pieces: int = 0  # parts of that split block's cv1 (all of which must lose the same count)
    order: np.ndarray = field(init=False)  # slots from least to most important
    cumulative: dict[tuple[str, str], np.ndarray] = field(init=False)  # key -> indices removed after n slots

    def __post_init__(self):
        """Sort the slots once and count, per layer, the indices the first n of them remove."""
        self.order = torch.argsort(self.scores, stable=True).numpy()
        self.cumulative = {
            key: np.concatenate(([0], np.cumsum([len(per_slot[s]) for s in self.order])))
            for key, per_slot in self.targets.items()
        }


@dataclass
class ChannelPlan:
    """Which channels each layer loses, and what it costs and saves.

    Attributes:
        remove (dict[tuple[str, str], list[int]]): ``(module name, "out" | "in")`` -> channel indices to remove, in the
            unpruned model's numbering.
        scale (float): Factor every family's channel ratio was multiplied by.
        family_ratios (dict[str, float]): Channel ratio each family was asked for (after scaling).
        whole (list[dict]): Blocks left whole: ``name``, ``class``, ``reason`` (``<block>.cv1`` for a split block
            whose halves keep every channel while the rest of it is pruned).
        split_blocks (list[str]): Blocks that split their channels and are pruned inside (halves kept equal).
        estimate (dict[str, float]): Prunable params removed (``sparsity``) and GFLOPs removed (``flops``), counted
            from the channel counts; the measured values are in the report.
        bracket (dict[str, Any]): With a target: the removed fractions of the nearest plans ``below`` and ``above`` it
            and ``groups``, how many channel groups (a split block's two halves count as one) differ between them.
        inside (list[dict]): Attention blocks pruned inside while their input and output widths stay: ``name``,
            ``class``, ``what`` (query/key channels per head, or heads, before and after).
    """

    remove: dict[tuple[str, str], list[int]]
    scale: float
    family_ratios: dict[str, float]
    whole: list[dict[str, str]]
    split_blocks: list[str]
    estimate: dict[str, float] = field(default_factory=dict)
    bracket: dict[str, Any] = field(default_factory=dict)
    inside: list[dict[str, str]] = field(default_factory=list)


def plan_channels(
    net: nn.Module,
    assignment: Assignment,
    config: SparsityConfig,
    imgsz: int,
    batches: Iterable[dict] | None = None,
    gradients: dict[str, torch.Tensor] | None = None,
) -> ChannelPlan:
    """Plan which channels of ``net`` to remove so that the target of ``config`` is reached; ``net`` is unchanged.

    Args:
        net (nn.Module): An Ultralytics network (not a ``YOLO`` object).
        assignment (Assignment): Families of its weights (``ultra_sparse.rules.assign_families``).
        config (SparsityConfig): ``method="channel"`` settings: ``sparsity`` or ``flops`` (or neither: the family
            ratios as written), ``importance``, ``scope``, ``round_to``.
        imgsz (int): Image size GFLOPs are counted at.
        batches (Iterable[dict], optional): Calibration batches, required by ``importance=taylor`` unless
            ``gradients`` are given.
        gradients (dict[str, torch.Tensor], optional): ``importance=taylor``: the loss gradients of ``net`` on the
            calibration batches (:func:`ultra_sparse.importance.loss_gradients`), when already computed for these
            weights (a scan plans the same dense network at every point); the batches are then not run.

    Returns:
        (ChannelPlan): The plan; apply it with :func:`remove_channels` (``plan.remove``).

    Raises:
        ValueError: If the target is out of reach, or ``importance`` has no channel-level form.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> net = YOLO("yolov8n.yaml").model
        >>> plan = plan_channels(net, assign_families(net, load_rules()), SparsityConfig(method="channel"), 64)
        >>> plan.scale
        1.0
    """
    if config.importance == "taylor" and gradients is None:
        if batches is None:
            raise ValueError(TAYLOR_NEEDS_DATA)
        gradients = loss_gradients(net, batches)  # the real network's: in the traced copy whole blocks are stand-ins
    with _one_thread():  # a few passes on stride-sized inputs: starting threads costs more than the work
        return _plan(net, assignment, config, imgsz, gradients)


def _plan(net, assignment, config, imgsz, gradients) -> ChannelPlan:
    """:func:`plan_channels` itself, with the loss gradients of ``importance=taylor`` computed."""
    import torch_pruning as tp

    importance = _importance(config.importance)
    kept = head_kept_layers(net)  # a head given a ratio by the rules loses hidden channels only
    protected = {w.name.removesuffix(".weight") for w in assignment.weights
                 if (w.protected or w.name.removesuffix(".weight") in kept) and not _depthwise(w.module)}
    family = {w.name.removesuffix(".weight"): w.family for w in assignment.weights
              if not w.protected and w.name.removesuffix(".weight") not in kept}
    ratios = assignment.ruleset.ratios
    # blocks of families kept at ratio 0 are still traced as twins: a stock chunk in the graph derails Torch-Pruning
    unpruned = {r.family for r in assignment.ruleset.rules if not r.protect and r.ratio == 0}
    head = {id(w.module) for w in assignment.weights
            if (w.protected or w.name.removesuffix(".weight") in kept) and w.family not in unpruned}
    blocks = classify_blocks(net, head)
    stride = model_stride(net)
    traced = tracing_copy(net, blocks, stride)
    modules = dict(traced.net.named_modules())
    with _traceable(traced.net):
        with _KeepGraph():
            graph = tp.DependencyGraph().build_dependency(
                traced.net,
                torch.zeros(1, 3, 2 * stride, 2 * stride),
                forward_fn=traced.forward,
                output_transform=traced.outputs,
                customized_pruners={Sink: BlockPruner(traced.nodes)},
                verbose=False,
            )
        if config.importance == "taylor":
            traced.take_gradients(gradients)
        ignored = [modules[n] for n in protected if n in modules]
        groups = []
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear, Sink)):
            planned = _plan_group(group, graph, importance, family, ratios, protected, traced)
            if planned is not None:
                groups.append(planned)
    traced_attention = traced.attention
    del traced, graph
    groups = _paired(groups)
    counter = SlotCounter(groups, config.scope, config.round_to)
    costs = LayerCosts(net, imgsz, [w.name.removesuffix(".weight") for w in assignment.prunable])
    target_key = "flops" if config.flops is not None else "sparsity"
    target = config.flops if config.flops is not None else config.sparsity

    def saved(counts: np.ndarray) -> float:
        return costs.saved(counter.removed(counts))[target_key]

    bracket: dict[str, Any] = {}
    if target is None:
        scale, counts = 1.0, counter.counts(1.0)
    else:
        scale, counts, bracket = search_scale(counter, saved, target)
    family_ratios = {f: min(r * scale, MAX_CHANNEL_RATIO) for f, r in ratios.items()}
    modules = dict(net.named_modules())
    removal = counter.removal(counts)
    inside = attention_inside(traced_attention.values(), removal, modules)
    kinds = {s.qkv.rsplit(".", 2)[0]: s.kind for s in traced_attention.values()}
    whole_list = [
        {"name": n, "class": type(modules[n]).__name__, "reason": WHOLE_REASONS.get(kinds.get(n), why)}
        for n, why in blocks.whole.items() if n not in {i["name"] for i in inside}
    ]
    cut = {g.half.rsplit(":", 1)[0] for g in groups if g.half}
    whole_list += [
        {"name": f"{n}.cv1", "class": type(modules[n]).__name__, "reason": "its cv1 keeps every channel: the stock "
         "forward cuts it in equal parts and one part feeds a block kept whole or a family that is not pruned"}
        for n in blocks.twins if n not in cut
    ]
    return ChannelPlan(
        removal, scale, family_ratios, whole_list, sorted([*blocks.twins, *blocks.input_split]),
        costs.saved(counter.removed(counts)), bracket, inside,
    )


def remove_channels(net: nn.Module, remove: dict[tuple[str, str], list[int]]) -> nn.Module:
    """Remove channels from ``net`` in place: ``(module name, "out" | "in")`` -> indices, as :class:`ChannelPlan` has them.

    The removal must come from a plan of this network (or a union of its plans along one training run), so that every
    coupled layer loses the same channels. Parameters keep their ``requires_grad`` flags. Returns ``net``.
    """
    from torch_pruning.pruner import function

    modules = dict(net.named_modules())
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    for (name, kind), idxs in remove.items():
        module = modules[name]
        pruner = _pruner_of(module, function)
        getattr(pruner, f"prune_{kind}_channels")(module, sorted(idxs))
    for name, param in net.named_parameters():
        param.requires_grad_(flags.get(name, param.requires_grad))
        param.grad = None
    _update_attributes(net)
    return net


def _depthwise(module: nn.Module) -> bool:
    """True for a depthwise convolution: its filters follow the channels it receives (a protected one too)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels == module.out_channels


def _pruner_of(module: nn.Module, function: Any) -> Any:
    """Torch-Pruning's pruning function for one layer type."""
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.out_channels:
        return function.DepthwiseConvPruner()
    if isinstance(module, nn.Conv2d):
        return function.ConvPruner()
    if isinstance(module, nn.Linear):
        return function.LinearPruner()
    if isinstance(module, nn.BatchNorm2d):
        return function.BatchnormPruner()
    raise ValueError(f"no channel pruning function for {type(module).__name__}")


def _update_attributes(net: nn.Module) -> None:
    """Keep the stock blocks' channel attributes true to their layers after pruning (``c`` of split blocks, an
    attention's ``key_dim``)."""
    for m in net.modules():
        names = class_names(type(m))
        if "RepConv" in names:
            m.c1, m.c2 = m.conv1.conv.in_channels, m.conv1.conv.out_channels
        update_attention_attributes(m)
        if twin_pieces(m) and hasattr(m, "cv1") and hasattr(m, "c"):
            m.c = m.cv1.conv.out_channels // twin_pieces(m)


def _plan_group(group, graph, importance, family, ratios, protected, traced: Traced) -> _Group | None:
    """Turn one Torch-Pruning group into a :class:`_Group` in the real model's names, or None where it must stay whole."""
    from torch_pruning import ops

    names = graph._module2name
    slots = traced.attention.get(names.get(group[0].dep.target.module, ""))
    if slots is not None:
        return _attention_group(group, slots, importance, family, ratios)
    targets: dict[tuple[str, str], dict[int, set[int]]] = {}
    families, halves, parts = set(), set(), 1
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
        module = dep.target.module
        if dep.target.type == ops.OPTYPE.PARAMETER:
            return None  # a bare parameter
        if dep.target.type == ops.OPTYPE.CUSTOMIZED:
            node = traced.nodes.get(module)
            if node is None or node.name is None:
                return None  # touches a block kept whole
            kind = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
            parts = max(parts, node.parts(kind))
            for layer, layer_kind, idx, root in node.layers(kind, idxs, item.root_idxs):
                if layer_kind == "out" and layer in protected:
                    return None
                if layer_kind == "out" and layer in family:
                    families.add(family[layer])
                targets.setdefault((layer, layer_kind), {}).setdefault(int(root), set()).add(idx)
            continue
        if module not in names:
            continue  # concat/split/elementwise bookkeeping nodes of the graph
        kind = "out" if graph.is_out_channel_pruning_fn(dep.handler) else "in"
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            if module.groups != module.out_channels:
                return None  # grouped (not depthwise) convolution: channel groups must stay equal
            kind = "out"  # depthwise: inputs and outputs are the same channels
        elif not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            return None
        name, offset, half = traced.aliases.get(names[module], (names[module], 0, None))
        if kind == "out" and name in protected:
            return None
        if kind == "out" and name in family:
            families.add(family[name])
        if kind == "out" and half:
            halves.add(half)
        if name in traced.parts:  # channels in equal parts (an LSConv's kernel groups): each loses the same count
            if any(int(i) != int(r) for i, r in zip(idxs, root_idxs)):
                return None  # not the root's numbering: the parts cannot be told apart
            parts = math.lcm(parts, traced.parts[name])
        per_root = targets.setdefault((name, kind), {})
        for idx, root in zip(idxs, root_idxs):
            per_root.setdefault(int(root), set()).add(int(idx) + (offset if kind == "out" else 0))
    if not families:
        return None
    ratio = min(ratios.get(f, 0.0) for f in families)
    root = group[0].dep.target.module
    node = traced.nodes.get(root)
    channels = node.out_channels if node is not None else graph.get_out_channels(root)
    if ratio <= 0 or not channels or channels % parts:
        return None
    imp = importance(group)
    if imp is None or len(imp) != channels:
        return None
    slots = channels // parts
    scores = imp.detach().float().cpu().view(parts, slots).mean(0)
    full = {key: [sorted(set().union(*(per_root.get(s + p * slots, set()) for p in range(parts)))) for s in range(slots)]
            for key, per_root in targets.items()}
    half = halves.pop() if len(halves) == 1 else None
    pieces = traced.pieces[half.rsplit(":", 1)[0]] if half else 0
    return _Group(min(families, key=lambda f: ratios.get(f, 0.0)), ratio, slots, parts, scores, full, half, pieces)


def _attention_group(group, slots: AttentionSlots, importance, family, ratios) -> _Group | None:
    """The slots of an attention block (query/key channels, or whole heads), ranked by their qkv channels' scores."""
    fam = family.get(slots.qkv)
    ratio = ratios.get(fam, 0.0) if fam else 0.0
    imp = importance(group) if ratio > 0 else None
    if imp is None or len(imp) != slots.width:
        return None
    scores = torch.stack([imp[s].float().mean() for s in slots.qkv_channels]).detach().cpu()
    return _Group(fam, ratio, len(slots.qkv_channels), 1, scores, slots.targets)


def _paired(groups: list[_Group]) -> list[_Group]:
    """Drop the parts of a split block one of whose parts stays whole: the stock forward cuts ``cv1`` in equal parts.

    Also refuses parts of unequal widths (never seen: ``cv1`` makes ``pieces * c`` channels).
    """
    by_half = {g.half: g for g in groups if g.half}
    kept = []
    for g in groups:
        if g.half:
            block = g.half.rsplit(":", 1)[0]
            others = [by_half.get(f"{block}:{i}") for i in range(g.pieces)]
            if any(o is None or o.slots * o.parts != g.slots * g.parts for o in others):
                continue
        kept.append(g)
    return kept


def _importance(name: str):
    """Torch-Pruning's channel-group importance for an ``importance=`` name."""
    import torch_pruning as tp

    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"importance={name!r} has no channel-level form; use l1, l2, lamp or taylor")


class _KeepGraph(torch.overrides.TorchFunctionMode):
    """Context: ``Tensor.detach`` returns its input, so that the graph keeps branches a head detaches.

    YOLOv10's one-to-one head (ultralytics 8.3) reads ``x.detach()``; traced as it is, its input channels would be
    missing from the groups of the layers that feed it.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        """Pass every call through, except ``detach``."""
        if func is torch.Tensor.detach:
            return args[0]
        return func(*args, **(kwargs or {}))


class _one_thread:
    """Context: torch runs on one CPU thread (restored after)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


class _traceable:
    """Context: eval mode with gradients on every parameter (Ultralytics checkpoints load with them off)."""

    def __init__(self, net: nn.Module):
        self.net = net

    def __enter__(self):
        self.flags = {p: p.requires_grad for p in self.net.parameters()}
        self.training = self.net.training
        self.grad_mode = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        self.net.eval()
        for p in self.flags:
            p.requires_grad_(True)
        return self.net

    def __exit__(self, *exc):
        for p, flag in self.flags.items():
            p.requires_grad_(flag)
        self.net.train(self.training)
        torch.set_grad_enabled(self.grad_mode)
        return False
