"""Channel pruning: whole output channels removed, so dense layers get smaller (real speed and size).

One small adapter over Torch-Pruning's dependency graph. Torch-Pruning traces the network and groups every set of
coupled channels (a conv's outputs, the BatchNorm after it, the inputs of every consumer, residual adds, concats);
this module decides how many channels each group loses and which ones:

- the rules (``ultra_sparse.rules``) give each group a family, hence a CHANNEL ratio; all ratios are scaled by one
  factor, found by bisection so that the removed fraction of prunable parameters (``sparsity=``) or of GFLOPs
  (``flops=``, Ultralytics' ``get_flops`` at the model's imgsz) reaches the target within one channel group;
- protected families (the head, DFL) lose no output channel: a group that would remove one is left whole (their
  first layers only lose the inputs the layers before them no longer produce);
- Ultralytics blocks that split their channels (C2f/C3k2/ELAN/C2PSA ``cv1`` chunk or split, ADown's input chunk)
  keep their STOCK classes: they are traced as one node and pruned at their inputs and outputs only (ADown's two
  input halves lose the same channels); their hidden width ``c`` is not pruned yet;
- blocks whose channel layout lives in attributes (attention heads: ``num_heads``, ``key_dim``, ``head_dim``; LSConv's
  kernel-sharing groups) and blocks this module does not know are left whole: their inputs and outputs keep every
  channel, and the report says which and why.

The plan is computed once on the unpruned model (importance of every group, the mapping of its channels onto every
coupled layer), so trying a scale factor costs no tracing; only the chosen plan is applied.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..config import SparsityConfig
from ..rules import Assignment

__all__ = ["MAX_CHANNEL_RATIO", "ChannelPlan", "apply_plan", "plan_channels"]

MAX_CHANNEL_RATIO = 0.9  # no group loses more than this fraction of its channels, whatever the scale factor
# blocks that split their channels (chunk/split of cv1's output, or of the input for ADown): pruned at their inputs and
# outputs only, through the layers that read the input and write the output; the hidden width `c` stays
_SPLIT_BLOCKS = {  # class -> (layers reading the input, layers writing the output)
    "C2f": (("cv1",), ("cv2",)),
    "RepNCSPELAN4": (("cv1",), ("cv4",)),
    "C2PSA": (("cv1",), ("cv2",)),
    "PSA": (("cv1",), ("cv2",)),
    "ADown": (("cv1", "cv2"), ("cv1", "cv2")),
}
_WHOLE = {
    "Attention": "attention heads: qkv is reshaped by num_heads/key_dim/head_dim",
    "AAttn": "area attention heads: qkv is reshaped by num_heads/head_dim",
    "LSConv": "kernels shared by channel groups (views by `groups`)",
    "LKP": "kernels shared by channel groups (views by `groups`)",
    "SKA": "kernels shared by channel groups (views by `groups`)",
}
_KNOWN = frozenset(
    {
        # Ultralytics blocks whose forward holds no channel count (or only `c`, updated here)
        "Conv", "Conv2", "LightConv", "DWConv", "ConvTranspose", "DWConvTranspose2d", "RepConv", "GhostConv",
        "Focus", "Bottleneck", "BottleneckCSP", "C1", "C2", "C3", "C3x", "C3k", "C3Ghost", "GhostBottleneck", "RepC3",
        "RepBottleneck", "RepCSP", "SPP", "SPPF", "SPPELAN", "AConv", "ADown", "SCDown", "CIB", "Concat", "PSABlock",
        "ABlock", "A2C2f", "BaseModel",
        # this project's blocks whose forward holds no channel count
        "DSConv", "DSBottleneck", "TokenC3Block",
    }
)
_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.Sequential, nn.ModuleList, nn.Identity,
    nn.MaxPool2d, nn.AvgPool2d, nn.Upsample, nn.Dropout,
)


@dataclass
class _Group:
    """One set of coupled channels: its family, ratio, slot scores and where each slot lands in every layer."""

    root: str
    family: str
    ratio: float
    slots: int  # channels per part (all channels when the group is not split in parts)
    parts: int  # equal parts that must lose the same channels (2 for an ADown input, else 1)
    scores: torch.Tensor  # one importance per slot, averaged over parts
    targets: dict[tuple[str, str], list[list[int]]]  # (module name, "out"|"in") -> per slot, its indices there


@dataclass
class ChannelPlan:
    """Which channels each layer loses, and what it costs and saves.

    Attributes:
        remove (dict[tuple[str, str], list[int]]): ``(module name, "out" | "in")`` -> channel indices to remove, in the
            unpruned model's numbering.
        scale (float): Factor every family's channel ratio was multiplied by.
        family_ratios (dict[str, float]): Channel ratio each family was asked for (after scaling).
        whole (list[dict]): Blocks left whole: ``name``, ``class``, ``reason``.
        chunked (list[str]): Split blocks pruned at their inputs and outputs only (hidden width kept).
        estimate (dict[str, float]): Prunable params removed (``sparsity``) and GFLOPs removed (``flops``), estimated
            from the channel counts; the measured values are in the report.
    """

    remove: dict[tuple[str, str], list[int]]
    scale: float
    family_ratios: dict[str, float]
    whole: list[dict[str, str]]
    chunked: list[str]
    estimate: dict[str, float] = field(default_factory=dict)


def plan_channels(
    net: nn.Module, assignment: Assignment, config: SparsityConfig, imgsz: int, batches: Iterable[dict] | None = None
) -> ChannelPlan:
    """Plan which channels of ``net`` to remove so that the target of ``config`` is reached; ``net`` is unchanged.

    Args:
        net (nn.Module): An Ultralytics network (not a ``YOLO`` object).
        assignment (Assignment): Families of its weights (``ultra_sparse.rules.assign_families``).
        config (SparsityConfig): ``method="channel"`` settings: ``sparsity`` or ``flops`` (or neither: the family
            ratios as written), ``importance``, ``scope``, ``round_to``.
        imgsz (int): Image size GFLOPs are counted at.
        batches (Iterable[dict], optional): Calibration batches, required by ``importance=taylor``.

    Returns:
        (ChannelPlan): The plan; apply it with :func:`apply_plan`.

    Examples:
        >>> from ultralytics import YOLO
        >>> from ultra_sparse.rules import assign_families, load_rules
        >>> net = YOLO("yolov8n.yaml").model
        >>> plan = plan_channels(net, assign_families(net, load_rules()), SparsityConfig(method="channel"), 64)
        >>> plan.scale
        1.0
    """
    import torch_pruning as tp

    whole, interfaces = _classify_blocks(net, assignment)
    protected = {w.name.removesuffix(".weight") for w in assignment.weights if w.protected}
    family = {w.name.removesuffix(".weight"): w.family for w in assignment.weights if not w.protected}
    ratios = assignment.ruleset.ratios
    stride = max(int(net.stride.max()), 32) if hasattr(net, "stride") else 32
    traced = _tracing_copy(net, [*whole, *interfaces], stride)
    modules = dict(traced.named_modules())
    nodes = {modules[n]: _BlockNode(modules[n], None) for n in whole}
    nodes.update({modules[n]: _BlockNode(modules[n], n) for n in interfaces})
    with _traceable(traced):
        graph = tp.DependencyGraph().build_dependency(
            traced,
            torch.zeros(1, 3, 2 * stride, 2 * stride),
            customized_pruners={cls: _BlockPruner(nodes) for cls in {type(m) for m in nodes}},
            verbose=False,
        )
        importance = _importance(config.importance)
        if config.importance == "taylor":
            if batches is None:
                raise ValueError("importance=taylor needs calibration data: pass data= (a dataset YAML)")
            _accumulate_gradients(traced, batches)
        roots = tuple({nn.Conv2d, nn.Linear, *(type(modules[n]) for n in interfaces)})
        groups = []
        for group in graph.get_all_groups(ignored_layers=[modules[n] for n in protected], root_module_types=roots):
            planned = _plan_group(group, graph, importance, family, ratios, protected, nodes)
            if planned is not None:
                groups.append(planned)
    del traced, graph
    costs = _Costs(net, imgsz, [n.removesuffix(".weight") for n in (w.name for w in assignment.prunable)])
    target_key = "flops" if config.flops is not None else "sparsity"
    target = config.flops if config.flops is not None else config.sparsity
    step = config.round_to

    def plan_for(scale: float) -> dict[tuple[str, str], list[int]]:
        return _removal(groups, scale, config.scope, step)

    if target is None:
        scale = 1.0
        remove = plan_for(scale)
    else:
        scale, remove = _search(plan_for, lambda r: costs.saved(r)[target_key], target, groups)
    family_ratios = {f: min(r * scale, MAX_CHANNEL_RATIO) for f, r in ratios.items()}
    blocks = dict(net.named_modules())
    whole_list = [{"name": n, "class": type(blocks[n]).__name__, "reason": why} for n, why in whole.items()]
    return ChannelPlan(remove, scale, family_ratios, whole_list, sorted(interfaces), costs.saved(remove))


def apply_plan(net: nn.Module, plan: ChannelPlan) -> nn.Module:
    """Remove the planned channels from ``net`` in place and update the blocks' channel attributes.

    Parameters keep their ``requires_grad`` flags. Returns ``net``.
    """
    from torch_pruning.pruner import function

    modules = dict(net.named_modules())
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    for (name, kind), idxs in plan.remove.items():
        module = modules[name]
        pruner = _pruner_of(module, function)
        getattr(pruner, f"prune_{kind}_channels")(module, sorted(idxs))
    for name, param in net.named_parameters():
        param.requires_grad_(flags.get(name, param.requires_grad))
        param.grad = None
    _update_attributes(net)
    return net


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
    """Keep the stock blocks' channel attributes true to their layers after pruning."""
    for m in net.modules():
        if "RepConv" in _class_names(type(m)):
            m.c1, m.c2 = m.conv1.conv.in_channels, m.conv1.conv.out_channels


def _classify_blocks(net: nn.Module, assignment: Assignment) -> tuple[dict[str, str], list[str]]:
    """Blocks kept whole (name -> reason) and split blocks pruned at their inputs and outputs only (names).

    Blocks whose every weight is protected (the head) are traced as they are and never pruned inside.
    """
    protected = {id(w.module) for w in assignment.weights if w.protected}
    whole: dict[str, str] = {}
    interfaces: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            name = f"{prefix}{child_name}"
            convs = [m for m in child.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            if not any(True for _ in child.parameters()) or (convs and all(id(m) in protected for m in convs)):
                continue
            names = _class_names(type(child))
            special = next((n for n in _WHOLE if n in names), None)
            if special:
                whole[name] = _WHOLE[special]
            elif names & set(_SPLIT_BLOCKS):
                interfaces.append(name)
            elif isinstance(child, _LEAVES) or names & _KNOWN:
                visit(child, f"{name}.")
            else:
                whole[name] = f"{type(child).__name__}: unknown block, its channel layout may live in attributes"

    visit(net, "")
    return whole, interfaces


def _tracing_copy(net: nn.Module, blocks: list[str], stride: int) -> nn.Module:
    """A copy of ``net`` for tracing only, where each block node is one 1x1 convolution of the block's shape.

    Torch-Pruning walks autograd through a customized layer's insides (C2f's chunk and cat would come back); a
    stand-in with the block's input and output widths and stride makes it one node. The copy is thrown away after
    tracing; the model keeps its stock classes and methods.
    """
    traced = copy.deepcopy(net)
    modules = dict(traced.named_modules())
    shapes: dict[str, tuple] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, (i[0].shape, o.shape)))
             for n in blocks]
    try:
        with torch.no_grad():
            traced.eval()(torch.zeros(1, 3, 2 * stride, 2 * stride))
    finally:
        for h in hooks:
            h.remove()
    for name in blocks:
        if name not in shapes:
            continue
        (_, cin, hin, _), (_, cout, hout, _) = shapes[name]
        weight = torch.zeros(cout, cin, 1, 1, requires_grad=True)
        step = max(1, hin // hout)
        modules[name].forward = types.MethodType(lambda self, x, w=weight, s=step: nn.functional.conv2d(x, w, stride=s), modules[name])
    return traced


def _plan_group(group, graph, importance, family, ratios, protected, nodes) -> _Group | None:
    """Turn one Torch-Pruning group into a :class:`_Group`, or None where it must stay whole."""
    from torch_pruning import ops

    names = graph._module2name
    targets: dict[tuple[str, str], dict[int, set[int]]] = {}
    families, parts = set(), 1
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
        module = dep.target.module
        if dep.target.type == ops.OPTYPE.PARAMETER:
            return None  # a bare parameter
        if dep.target.type == ops.OPTYPE.CUSTOMIZED:
            node = nodes.get(module)
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
        name = names[module]
        if kind == "out" and name in protected:
            return None
        if kind == "out" and name in family:
            families.add(family[name])
        per_root = targets.setdefault((name, kind), {})
        for idx, root in zip(idxs, root_idxs):
            per_root.setdefault(int(root), set()).add(int(idx))
    if not families:
        return None
    ratio = min(ratios.get(f, 0.0) for f in families)
    root = group[0].dep.target.module
    channels = nodes[root].out_channels if root in nodes else graph.get_out_channels(root)
    if ratio <= 0 or channels % parts:
        return None
    imp = importance(group)
    if imp is None or len(imp) != channels:
        return None
    slots = channels // parts
    scores = imp.detach().float().cpu().view(parts, slots).mean(0)
    full = {key: [sorted(set().union(*(per_root.get(s + p * slots, set()) for p in range(parts)))) for s in range(slots)]
            for key, per_root in targets.items()}
    return _Group(names[root], min(families, key=lambda f: ratios.get(f, 0.0)), ratio, slots, parts, scores, full)


def _removal(groups: list[_Group], scale: float, scope: str, round_to: int) -> dict[tuple[str, str], list[int]]:
    """The channels every layer loses at one scale factor (``scope=global``: one ranking per family)."""
    counts = {}
    if scope == "global":
        by_family: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            by_family.setdefault(g.family, []).append(i)
        for fam, members in by_family.items():
            ratio = min(groups[members[0]].ratio * scale, MAX_CHANNEL_RATIO)
            pooled = sorted((float(s), i) for i in members for s in groups[i].scores)
            k = math.floor(ratio * len(pooled) + 1e-9)
            for i in members:
                counts[i] = 0
            for _, i in pooled[:k]:
                counts[i] += 1
    else:
        for i, g in enumerate(groups):
            counts[i] = math.floor(min(g.ratio * scale, MAX_CHANNEL_RATIO) * g.slots + 1e-9)
    remove: dict[tuple[str, str], set[int]] = {}
    for i, g in enumerate(groups):
        n = min(counts[i], math.floor(MAX_CHANNEL_RATIO * g.slots))
        keep = _rounded_keep(g.slots - n, g.slots, g.parts, round_to)
        if keep >= g.slots:
            continue
        order = torch.argsort(g.scores, stable=True)[: g.slots - keep].tolist()
        for key, per_slot in g.targets.items():
            bucket = remove.setdefault(key, set())
            for s in order:
                bucket.update(per_slot[s])
    return {key: sorted(idxs) for key, idxs in remove.items() if idxs}


def _rounded_keep(keep: int, slots: int, parts: int, round_to: int) -> int:
    """Channels a group keeps per part, rounded so that the layer's width stays a multiple of ``round_to``.

    Layers narrower than 16 channels are not rounded; at least one channel (or one rounding step) is kept.

    Examples:
        >>> _rounded_keep(21, 32, 1, 8)
        24
        >>> _rounded_keep(13, 16, 2, 8)
        12
        >>> _rounded_keep(5, 6, 1, 8)
        5
    """
    if slots * parts < 16 or round_to <= 1:
        return max(keep, 1)
    step = round_to // math.gcd(round_to, parts)
    rounded = max(step, int(math.floor(keep / step + 0.5)) * step)
    return min(rounded, slots)


def _search(plan_for, saved, target: float, groups: list[_Group]):
    """Find the scale factor whose plan removes ``target`` (within one channel group): bisection, then one group at a time."""
    top = MAX_CHANNEL_RATIO / max(min(g.ratio for g in groups), 1e-9) if groups else 1.0
    low, high = 0.0, top
    best_low, best_high = plan_for(low), plan_for(high)
    if saved(best_high) < target:
        got = saved(best_high)
        raise ValueError(
            f"the target {target:.2%} is out of reach: at most {got:.2%} can be removed with these rules "
            f"(no group loses more than {MAX_CHANNEL_RATIO:.0%} of its channels; protected and whole blocks lose none)"
        )
    for _ in range(40):
        mid = (low + high) / 2
        remove = plan_for(mid)
        if saved(remove) < target:
            low, best_low = mid, remove
        else:
            high, best_high = mid, remove
        if high - low < 1e-6:
            break
    below, above = saved(best_low), saved(best_high)
    return (low, best_low) if target - below < above - target else (high, best_high)


class _Costs:
    """Parameters and GFLOPs of a network after a removal plan, counted from channel counts as thop counts them."""

    def __init__(self, net: nn.Module, imgsz: int, prunable: Iterable[str]):
        """Record every conv/linear/BatchNorm's shape and output size at ``imgsz``; measure dense GFLOPs.

        ``prunable`` names the layers whose weights count as prunable (the ``sparsity=`` denominator).
        """
        from ultralytics.utils.torch_utils import get_flops

        self.layers: dict[str, dict[str, Any]] = {}
        modules = {m: n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
        sizes = {}
        hooks = [m.register_forward_hook(lambda m, i, o: sizes.__setitem__(m, o[0, 0].numel())) for m in modules]
        stride = max(int(net.stride.max()), 32) if hasattr(net, "stride") else 32
        side = max(stride, math.ceil(imgsz / stride) * stride)
        try:
            with torch.no_grad():
                net(torch.zeros(1, 3, side, side, dtype=next(net.parameters()).dtype))
        finally:
            for h in hooks:
                h.remove()
        for m, name in modules.items():
            if m not in sizes:
                continue
            if isinstance(m, nn.Conv2d):
                entry = {"out": m.out_channels, "in": m.in_channels, "k": m.weight[0, 0].numel(), "groups": m.groups,
                         "bias": m.bias is not None, "type": "conv"}
            elif isinstance(m, nn.Linear):
                entry = {"out": m.out_features, "in": m.in_features, "k": 1, "groups": 1, "bias": m.bias is not None,
                         "type": "linear"}
            else:
                entry = {"out": m.num_features, "in": m.num_features, "k": 1, "groups": 1, "bias": m.affine,
                         "type": "bn"}
            self.layers[name] = {**entry, "hw": sizes[m]}
        self.prunable_weights = set(prunable) & set(self.layers)
        self.dense_gflops = get_flops(net, imgsz)
        self._dense = self._count({})

    def _count(self, remove: dict[tuple[str, str], list[int]]) -> dict[str, float]:
        """Params of prunable weights, all conv/linear/bn params and ops, after ``remove``."""
        prunable = params = ops = 0
        for name, layer in self.layers.items():
            out = layer["out"] - len(remove.get((name, "out"), ()))
            cin = layer["in"] - len(remove.get((name, "in"), ()))
            groups = layer["groups"]
            if layer["type"] == "conv" and groups == layer["out"] and groups > 1:
                cin, groups = out, out  # depthwise
            if layer["type"] == "bn":
                params += 2 * out if layer["bias"] else 0
                ops += (2 if layer["bias"] else 1) * out * layer["hw"]
                continue
            weight = out * (cin // groups) * layer["k"]
            params += weight + (out if layer["bias"] else 0)
            ops += out * layer["hw"] * (cin // groups) * layer["k"]
            if name in self.prunable_weights:
                prunable += weight
        return {"prunable": prunable, "params": params, "ops": ops}

    def saved(self, remove: dict[tuple[str, str], list[int]]) -> dict[str, float]:
        """Fractions removed by ``remove``: ``sparsity`` (of prunable weights) and ``flops`` (of dense GFLOPs)."""
        now = self._count(remove)
        dense_ops = self.dense_gflops * 1e9 / 2 if self.dense_gflops else self._dense["ops"]
        return {
            "sparsity": 1 - now["prunable"] / max(1, self._dense["prunable"]),
            "flops": (self._dense["ops"] - now["ops"]) / max(1.0, dense_ops),
        }


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


def _accumulate_gradients(net: nn.Module, batches: Iterable[dict]) -> None:
    """Sum the loss gradients of calibration batches into ``.grad`` (BatchNorm statistics are restored)."""
    buffers = copy.deepcopy({n: b for n, b in net.named_buffers()})
    seen = 0
    try:
        net.train()
        for batch in batches:
            net.loss(batch)[0].sum().backward()
            seen += 1
    finally:
        net.eval()
        with torch.no_grad():
            for n, b in net.named_buffers():
                b.copy_(buffers[n])
    if not seen:
        raise ValueError("importance=taylor needs at least one calibration batch, got none")


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


class _BlockNode:
    """A block traced as one node: kept whole (``name`` None) or a split block pruned at its inputs and outputs.

    The channels a group asks of it are translated onto the block's own layers by :meth:`layers`, so the block's
    classes and ``forward`` never change.
    """

    def __init__(self, block: nn.Module, name: str | None):
        """Remember the block, its name (None: kept whole) and the names of its input/output layers."""
        self.block, self.name = block, name
        self.inputs, self.outputs = next((v for k, v in _SPLIT_BLOCKS.items() if k in _class_names(type(block))), ((), ()))

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
                yield f"{self.name}.{children[part]}.bn", "out", local, root


class _BlockPruner:
    """Torch-Pruning's pruning function for the classes of block nodes (it keys them by class): asks each block."""

    def __init__(self, nodes: dict[nn.Module, _BlockNode]):
        """Remember the block nodes by block."""
        self.nodes = nodes

    def _node(self, layer: nn.Module) -> _BlockNode:
        """The node of ``layer`` (a block of the class that is not a node stays whole)."""
        return self.nodes.get(layer) or _BlockNode(layer, None)

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        """Never called: groups are applied through :meth:`_BlockNode.layers`."""
        raise RuntimeError("block nodes are pruned through their layers")

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        """Never called: groups are applied through :meth:`_BlockNode.layers`."""
        raise RuntimeError("block nodes are pruned through their layers")

    def get_out_channels(self, layer: nn.Module) -> int | None:
        """Output channels of the block."""
        return self._node(layer).out_channels

    def get_in_channels(self, layer: nn.Module) -> int | None:
        """Input channels of the block."""
        return self._node(layer).in_channels

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        """No channel grouping."""
        return 1

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        """No channel grouping."""
        return 1


def _class_names(cls: type) -> set[str]:
    """Names of ``cls`` and its bases below nn.Module."""
    return {c.__name__ for c in cls.__mro__ if c not in (nn.Module, object)}
