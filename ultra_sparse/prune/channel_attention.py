"""Attention under channel pruning: which channels of Ultralytics' attention blocks can go, and their attributes.

Both attention blocks keep their input and output widths (the residual stream around them is pruned as usual, or
not at all when the block reads its width from the input). Inside:

- ``Attention`` (C2PSA, PSA; one qkv conv holding ``[q k v]`` per head, reshaped by ``num_heads``, ``key_dim``,
  ``head_dim``) loses QUERY/KEY channels: slot d is key channel d of q and k in every head. Removing q_d and k_d of a
  head removes one term of its dot products, and the softmax ``scale`` is an attribute that stays, so the pruned
  block computes what the dense one computes with those channels zeroed. ``v`` must keep ``num_heads * head_dim``
  channels: the forward reshapes it to the input's width.
- ``AAttn`` (A2C2f: YOLO12, the reference model) loses WHOLE HEADS where its forward reads the heads' width from
  ``all_head_dim`` (ultralytics 8.4): slot h is head h's q, k and v channels, its channels of the depthwise ``pe``
  and the columns of ``proj`` that read them; ``head_dim`` (hence the scale) stays. Older forwards reshape by the
  input's width: those blocks are kept whole.

Examples:
    >>> from ultralytics.nn.modules.block import Attention
    >>> attention_slots(Attention(64, num_heads=2), "attn").kind
    'keys'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch.nn as nn

__all__ = ["AttentionSlots", "attention_inside", "attention_slots", "update_attention_attributes"]


@dataclass
class AttentionSlots:
    """The prunable slots of one attention block.

    Attributes:
        kind (str): ``"keys"`` (query/key channels of every head) or ``"heads"`` (whole heads).
        qkv (str): Name of the block's qkv Conv2d, whose output channels rank the slots.
        width (int): Its output channels.
        qkv_channels (list[list[int]]): Per slot, its output channels of the qkv conv.
        targets (dict[tuple[str, str], list[list[int]]]): ``(layer name, "out" | "in")`` -> per slot, its indices.
    """

    kind: str
    qkv: str
    width: int
    qkv_channels: list[list[int]]
    targets: dict[tuple[str, str], list[list[int]]]


def _conv_bn(block: nn.Module, child: str, name: str) -> tuple[nn.Conv2d | None, list[str]]:
    """The Conv2d of an Ultralytics Conv child and the names of its conv and BatchNorm."""
    layer = getattr(block, child, None)
    conv = getattr(layer, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        return None, []
    names = [f"{name}.{child}.conv"]
    if isinstance(getattr(layer, "bn", None), nn.BatchNorm2d):
        names.append(f"{name}.{child}.bn")
    return conv, names


def attention_slots(block: nn.Module, name: str) -> AttentionSlots | None:
    """The prunable slots of ``block`` (named ``name``), or None if it is not an attention this module can prune."""
    classes = {c.__name__ for c in type(block).__mro__}
    heads, head_dim = getattr(block, "num_heads", None), getattr(block, "head_dim", None)
    qkv, qkv_names = _conv_bn(block, "qkv", name)
    if not isinstance(heads, int) or not isinstance(head_dim, int) or qkv is None or qkv.groups != 1:
        return None
    if "Attention" in classes and isinstance(getattr(block, "key_dim", None), int):
        key_dim = block.key_dim
        per_head = 2 * key_dim + head_dim
        if qkv.out_channels != heads * per_head:
            return None
        slots = [sorted(h * per_head + offset + d for h in range(heads) for offset in (0, key_dim)) for d in range(key_dim)]
        return AttentionSlots("keys", qkv_names[0], qkv.out_channels, slots, {(n, "out"): slots for n in qkv_names})
    if "AAttn" in classes and isinstance(getattr(block, "all_head_dim", None), int):
        pe, pe_names = _conv_bn(block, "pe", name)
        proj, _ = _conv_bn(block, "proj", name)
        width = heads * head_dim
        if (
            block.all_head_dim != width or qkv.out_channels != 3 * width or pe is None or proj is None
            or not pe.groups == pe.in_channels == pe.out_channels == width or proj.in_channels != width
        ):
            return None
        qkv_slots = [list(range(h * 3 * head_dim, (h + 1) * 3 * head_dim)) for h in range(heads)]
        head_slots = [list(range(h * head_dim, (h + 1) * head_dim)) for h in range(heads)]
        targets = {(n, "out"): qkv_slots for n in qkv_names}
        targets |= {(n, "out"): head_slots for n in pe_names}
        targets[(f"{name}.proj.conv", "in")] = head_slots
        return AttentionSlots("heads", qkv_names[0], qkv.out_channels, qkv_slots, targets)
    return None


def update_attention_attributes(block: nn.Module) -> None:
    """Set an attention block's ``key_dim`` or ``num_heads``/``all_head_dim`` from its pruned qkv conv."""
    classes = {c.__name__ for c in type(block).__mro__}
    conv = getattr(getattr(block, "qkv", None), "conv", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(block, "head_dim", None), int):
        return
    if "Attention" in classes and isinstance(getattr(block, "key_dim", None), int):
        block.key_dim = (conv.out_channels // block.num_heads - block.head_dim) // 2
    elif "AAttn" in classes and isinstance(getattr(block, "all_head_dim", None), int):
        block.num_heads = conv.out_channels // (3 * block.head_dim)
        block.all_head_dim = block.num_heads * block.head_dim


def attention_inside(
    attention: Iterable[AttentionSlots], removal: dict[tuple[str, str], list[int]], modules: dict[str, nn.Module]
) -> list[dict[str, str]]:
    """The attention blocks a channel removal prunes inside, with what each loses (for the plan and the report).

    Examples:
        >>> from ultralytics.nn.modules.block import Attention
        >>> attn = Attention(64, num_heads=2)
        >>> slots = attention_slots(attn, "attn")
        >>> attention_inside([slots], {("attn.qkv.conv", "out"): slots.qkv_channels[0]}, {"attn": attn})
        [{'name': 'attn', 'class': 'Attention', 'what': 'query/key channels per head 16 -> 15'}]
    """
    inside = []
    for slots in attention:
        gone = set(removal.get((slots.qkv, "out"), ()))
        lost = sum(1 for channels in slots.qkv_channels if channels[0] in gone)
        if lost:
            name = slots.qkv.rsplit(".", 2)[0]
            unit = "query/key channels per head" if slots.kind == "keys" else "heads"
            total = len(slots.qkv_channels)
            inside.append({"name": name, "class": type(modules[name]).__name__, "what": f"{unit} {total} -> {total - lost}"})
    return inside
