"""Teach Ultralytics' YAML model parser to build ultra_sparse layers without changing how it builds its own.

Ultralytics' `parse_model` looks a row's module up by name in `ultralytics.nn.tasks` and knows the channel
arithmetic of its own classes only. Each ultra_sparse layer therefore declares a `LayerSpec`: whether its output
channels are the row's first argument scaled by the model width (like Ultralytics' `Conv`) or those of its first
input, whether the depth-scaled repeat count goes into its constructor, and whether it takes its input channels.

`register()` wraps `ultralytics.nn.tasks.parse_model` once. A YAML that names no registered layer goes straight to
the stock parser. Otherwise the wrapper runs the stock parser once on a rewritten copy of the YAML:

1. each registered row becomes a stock stand-in that leaves the right output channel count behind: `Conv [c2, 1]`
   for width-scaled layers (so width, max_channels and depth gain follow the installed version's own rules) or
   `nn.Identity` for channel-keeping ones; multi-input rows read their first input;
2. one probe row `[j, 1, Conv, [8, 1]]` per input j of a registered row is appended after the last row; a probe's
   input channels are ch[j], and its activation is the YAML's `activation`;
3. the real layers are built from what the stand-ins and probes show, swapped in for the stand-ins, the probes are
   dropped and the save list is recomputed from the final `from` indices.

Layers are pickled by module path (`ultra_sparse.nn.lsnet.LSConv`), so a checkpoint loads wherever ultra_sparse is
importable; `register()` also adds them to torch's safe globals for Ultralytics' opt-in restricted loading.
"""

from __future__ import annotations

import functools
from copy import deepcopy
from dataclasses import dataclass

import torch
import ultralytics.nn
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv
from ultralytics.utils import LOGGER

from . import dsc, fullpad, hyperace, lsnet, tokenc3

__all__ = ["LayerSpec", "register", "register_layer"]


@dataclass(frozen=True)
class LayerSpec:
    """How a YAML row naming `cls` becomes a constructor call.

    Attributes:
        cls (type[nn.Module]): The layer class.
        scaled (bool): True: output channels c2 are the row's first argument scaled by width (like Ultralytics'
            Conv) and the call is cls(c1, c2, [n], *args[1:]). False: c2 are the first input's channels and the call
            is cls(c1, [n], *args), or cls([n], *args) when `takes_c1` is False.
        repeats (bool): Pass the depth-scaled repeat count n after the channels; otherwise n > 1 builds n copies
            in an nn.Sequential, as the stock parser does.
        takes_c1 (bool): Pass the input channels (an int, or a list for multi-input rows).
    """

    cls: type
    scaled: bool
    repeats: bool = False
    takes_c1: bool = True


_LAYERS: dict[str, LayerSpec] = {}


def register_layer(cls: type, *, scaled: bool, repeats: bool = False, takes_c1: bool = True) -> LayerSpec:
    """Make the YAML parser build `cls` for rows that name it (by class name) once `register()` has run.

    Args:
        cls (type[nn.Module]): Layer class.
        scaled (bool): Output channels from the first argument scaled by width (True) or from the first input.
        repeats (bool): The constructor takes the repeat count after the channels.
        takes_c1 (bool): The constructor takes the input channels first.

    Returns:
        (LayerSpec): The stored spec.

    Raises:
        TypeError: If `cls` is not an nn.Module subclass.

    Examples:
        >>> from ultra_sparse.nn import LSBlock
        >>> register_layer(LSBlock, scaled=False).cls is LSBlock
        True
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    spec = LayerSpec(cls, bool(scaled), bool(repeats), bool(takes_c1))
    _LAYERS[cls.__name__] = spec
    _allow_unpickling([cls])
    return spec


def _allow_unpickling(classes: list[type]) -> None:
    """Let torch's weights_only unpickler (Ultralytics' opt-in restricted loading) rebuild these classes."""
    if hasattr(torch.serialization, "add_safe_globals"):  # torch >= 2.4
        torch.serialization.add_safe_globals(list(classes))


def _layer_classes() -> list[type]:
    """Every nn.Module class that ultra_sparse.nn defines (what a checkpoint of these models may pickle)."""
    mods = (dsc, fullpad, hyperace, lsnet, tokenc3)
    return [getattr(m, name) for m in mods for name in m.__all__ if issubclass(getattr(m, name), nn.Module)]


def _builtin_layers() -> None:
    """Declare how the YAML parser builds the ultra_sparse layers that make sense as model rows."""
    for cls in (dsc.DSConv, dsc.DSBottleneck, fullpad.DownsampleConv, hyperace.C3AH, hyperace.FuseModule):
        register_layer(cls, scaled=True)
    for cls in (dsc.DSC3k, dsc.DSC3k2, hyperace.HyperACE, tokenc3.TokenC3):
        register_layer(cls, scaled=True, repeats=True)
    for cls in (lsnet.LSConv, lsnet.LSBlock, tokenc3.TokenC3Block, hyperace.AdaHGComputation):
        register_layer(cls, scaled=False)
    register_layer(fullpad.FullPAD_Tunnel, scaled=False, takes_c1=False)


def _absolute(x: int, i: int) -> int:
    """Absolute layer index of `from` entry x of row i (-1 for the model input at row 0)."""
    return x if x >= 0 else i + x


def _froms(f) -> list[int]:
    """A row's `from` as a list."""
    return [f] if isinstance(f, int) else list(f)


def _build(spec: LayerSpec, row: list, i: int, standin: nn.Module, c_in: dict[int, int]) -> tuple[nn.Module, list]:
    """Build the real layer of registered row i from its stand-in and the probed input channels."""
    f, _, _, args = row
    c1s = [c_in[_absolute(x, i)] for x in _froms(f)]
    c1 = c1s[0] if isinstance(f, int) else c1s
    n = len(standin) if isinstance(standin, nn.Sequential) else 1
    rep = [n] if spec.repeats else []
    if spec.scaled:
        first = standin[0] if isinstance(standin, nn.Sequential) else standin
        cargs = [c1, first.conv.out_channels, *rep, *args[1:]]
    else:
        cargs = [*([c1] if spec.takes_c1 else []), *rep, *args]
    layer = spec.cls(*cargs) if spec.repeats or n == 1 else nn.Sequential(*(spec.cls(*cargs) for _ in range(n)))
    layer.i, layer.f, layer.type = i, f, f"{spec.cls.__module__}.{spec.cls.__qualname__}"
    layer.np = sum(p.numel() for p in layer.parameters())
    return layer, cargs


def _parse_model(stock, d: dict, ch: int, verbose: bool = True):
    """Parse a model YAML dict with `stock` (Ultralytics' parse_model), building registered layers as ours.

    Same signature and return value as `ultralytics.nn.tasks.parse_model`: (nn.Sequential, sorted save list).
    """
    rows = [*d["backbone"], *d["head"]]
    ours = {i: _LAYERS[r[2]] for i, r in enumerate(rows) if isinstance(r[2], str) and r[2] in _LAYERS}
    if not ours:
        return stock(d, ch, verbose)
    plan, nb = deepcopy(d), len(d["backbone"])  # the stock parser rewrites arguments in place
    needed = {0}  # any probe reveals the activation; layer 0 always exists
    for i, spec in ours.items():
        f, n, name, args = rows[i]
        if spec.scaled and not (args and isinstance(args[0], int)):
            raise ValueError(f"model row {i} ({name}) needs its output channels as first argument, got {args!r}")
        head = _froms(f)[0]
        section, k = ("backbone", i) if i < nb else ("head", i - nb)
        plan[section][k] = [head, n, "Conv", [args[0], 1]] if spec.scaled else [head, n, "nn.Identity", []]
        needed.update(j for j in (_absolute(x, i) for x in _froms(f)) if j >= 0)
    needed = sorted(needed)
    plan["head"] = [*plan["head"], *([j, 1, "Conv", [8, 1]] for j in needed)]
    model, _ = stock(plan, ch, False)
    layers, probes = list(model)[: len(rows)], dict(zip(needed, list(model)[len(rows) :]))
    c_in = {-1: ch, **{j: p.conv.in_channels for j, p in probes.items()}}
    built, default_act = {}, Conv.default_act
    Conv.default_act = probes[0].act  # the YAML's activation (8.4 parsers restore the default when they return)
    try:
        for i, spec in ours.items():
            layers[i], built[i] = _build(spec, rows[i], i, layers[i], c_in)
    finally:
        Conv.default_act = default_act
    save = sorted({x % m.i for m in layers for x in _froms(m.f) if x != -1})
    if verbose:
        LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{'arguments':<30}")
        resolved = [*plan["backbone"], *plan["head"]]  # arguments as the stock parser resolved them
        for m, (f, n, _, _), (_, _, _, args) in zip(layers, rows, resolved):
            LOGGER.info(f"{m.i:>3}{f!s:>20}{n:>3}{m.np:10.0f}  {m.type:<45}{built.get(m.i, args)!s:<30}")
    return nn.Sequential(*layers), save


def register() -> None:
    """Let `YOLO("model.yaml")` build ultra_sparse layers and restricted checkpoint loading accept them.

    Idempotent, and called when `ultra_sparse.nn` is imported. Wraps `ultralytics.nn.tasks.parse_model` (and the
    `ultralytics.nn.parse_model` re-export) once; models without registered layers are parsed exactly as before.
    A registered name takes precedence over a same-named class of an Ultralytics fork.

    Examples:
        >>> from ultralytics import YOLO
        >>> register()
        >>> model = YOLO("cfg/models/yolov13-tokenc3-lsnet-n.yaml")  # doctest: +SKIP
    """
    _allow_unpickling(_layer_classes())
    stock = tasks.parse_model
    if getattr(stock, "_ultra_sparse", False):
        return

    @functools.wraps(stock)
    def parse_model(d, ch, verbose=True):
        return _parse_model(stock, d, ch, verbose)

    parse_model._ultra_sparse = True
    tasks.parse_model = parse_model
    if getattr(ultralytics.nn, "parse_model", None) is stock:  # the package re-export
        ultralytics.nn.parse_model = parse_model


_builtin_layers()
