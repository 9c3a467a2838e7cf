"""Latency targets for channel pruning: the GFLOPs to remove are found by measuring on the deployment runtime.

GFLOPs map poorly to latency (half the GFLOPs of a YOLOv9t gave 0.68-0.78 of its latency here: memory-bound layers,
the never-pruned Detect head, pre- and post-processing stay). ``latency=L backend=B`` therefore searches the
``flops=`` target: each probe prunes a copy of the model at one GFLOPs fraction, exports it to the backend's runtime
and times it interleaved against the dense model's FP32 artifact; bisection below the most the rules can remove
(:func:`reachable_flops`) keeps the plan whose measured latency ratio is at most ``L`` and closest to it. The search
is bounded (``max_probes``) and, given the measurements, deterministic.
The measurement is of the machine it runs on: run it on the deployment CPU.

:func:`search_flops` is the search alone (any ``measure`` function, so it is tested with a fake timer);
:class:`ArtifactProbe` measures one probe with Ultralytics' exporter and the artifact runners of :mod:`.deploy`.

Examples:
    >>> curve = lambda flops: (1.0 - 0.8 * flops, 0.01)  # a known latency curve: ratio falls with GFLOPs removed
    >>> best, probes = search_flops(curve, target=0.6)
    >>> best.flops, round(best.ratio, 3), len(probes)
    (0.5062, 0.595, 4)
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from .artifact_profile import PROFILED_FORMATS, block_times
from .bench import ratio_summary, time_interleaved
from .checkpoint import save_checkpoint
from .config import SparsityConfig, positive_int
from .deploy import artifact_runner, export_artifact
from .methods import method_of

__all__ = [
    "BACKEND_FORMATS", "HEAD_RULES", "PROTECTED_SHARE", "ArtifactProbe", "Probe", "check_latency_settings",
    "find_flops", "probe_config", "probe_name", "protected_blocks", "protected_hint", "reachable_flops", "search_flops",
]

PROTECTED_SHARE = 0.2  # protected blocks above this share of a plan's time are named, with the rules that prune them
HEAD_RULES = "thin_head"  # the preset that gives the Detect head's hidden layers a ratio
BACKEND_FORMATS = {"onnxruntime": "onnx", "openvino": "openvino", "torchscript": "torchscript"}  # backend -> format


@dataclass(frozen=True)
class Probe:
    """One measured candidate: the GFLOPs fraction removed and the pruned/dense latency ratio (median, IQR)."""

    flops: float
    ratio: float
    iqr: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict, for reports."""
        return asdict(self)


def search_flops(
    measure: Callable[[float], tuple[float, float]],
    target: float,
    low: float = 0.0,
    high: float = 0.9,
    max_probes: int = 7,
    tolerance: float = 0.02,
) -> tuple[Probe | None, list[Probe]]:
    """Bisect the removed-GFLOPs fraction until a probe's measured latency ratio is at most ``target`` and within
    ``tolerance`` of it, or ``max_probes`` probes were made.

    A probe whose ratio is above ``target`` moves the search to more removal, one at or below it to less. The kept
    probe is the measured one at or below ``target`` closest to it (the curve is not trusted to be monotonic).

    Args:
        measure (Callable[[float], tuple[float, float]]): ``flops -> (ratio median, ratio IQR)``.
        target (float): The latency ratio wanted, in (0, 1).
        low (float): Least GFLOPs fraction searched.
        high (float): Most GFLOPs fraction searched.
        max_probes (int): Bound on the measurements.
        tolerance (float): A ratio within this below ``target`` ends the search.

    Returns:
        (tuple[Probe | None, list[Probe]]): The kept probe (None when none reached ``target``) and every probe in order.

    Examples:
        >>> best, probes = search_flops(lambda f: (1.0 - 0.5 * f, 0.0), target=0.5)  # 0.5 is out of reach below 0.9
        >>> best is None, len(probes)
        (True, 7)
    """
    if not 0 < target < 1:
        raise ValueError(f"latency={target} must be a ratio to the dense model's latency in (0, 1)")
    probes: list[Probe] = []
    best = None
    for _ in range(max_probes):
        flops = round((low + high) / 2, 4)
        ratio, iqr = measure(flops)
        probe = Probe(flops, float(ratio), float(iqr))
        probes.append(probe)
        if probe.ratio <= target:
            if best is None or probe.ratio > best.ratio:
                best = probe
            if target - probe.ratio <= tolerance:
                break
            high = flops
        else:
            low = flops
    return best, probes


def reachable_flops(net: nn.Module, config: SparsityConfig, imgsz: int, high: float = 0.9) -> float:
    """The largest GFLOPs fraction, at most ``high``, that the channel rules of ``config`` can remove from ``net``.

    The latency search bisects below it, so that no probe asks for a plan the rules cannot make (a network whose
    protected head holds much of its GFLOPs reaches less than ``high``). Which channels go does not change how many
    can go, so the plan is made with L1 ranking whatever ``importance`` says.

    Examples:
        >>> from ultralytics import YOLO
        >>> reachable_flops(YOLO("yolov8n.yaml").model, SparsityConfig(method="channel"), 64) < 0.9
        True
    """
    from .prune.channel import plan_channels
    from .prune.channel_count import TargetOutOfReach
    from .rules import assign_families, load_rules

    planned = config.replace(flops=high, sparsity=None, importance="l1")
    try:
        plan_channels(net, assign_families(net, load_rules(config.rules)), planned, imgsz)
    except TargetOutOfReach as error:
        return math.floor(error.most * 1e4) / 1e4
    return high


class ArtifactProbe:
    """Measure pruned candidates of one network on one runtime: ``probe(flops) -> (ratio median, ratio IQR)``.

    The dense network is exported once, in FP32: the reference of every ratio, as in ``compare`` (so that
    ``quantize=8`` counts what INT8 gives as well as what pruning gives). Each candidate is pruned on a copy (without
    the refit: it changes no shape, so no latency), saved, exported at ``quantize`` and timed interleaved with the
    dense artifact, batch 1 on the CPU.

    Args:
        net (nn.Module): The dense network (left unchanged).
        config (SparsityConfig): The channel settings (rules, importance, round_to, ...); ``flops`` is set per probe.
        backend (str): A key of :data:`BACKEND_FORMATS`.
        quantize (int): 32, 16 or 8 (INT8 calibrated on ``data``).
        imgsz (int): Image size of export and timing.
        folder (Path): Where the artifacts of the probes go.
        data (str, optional): Dataset YAML for INT8 calibration.
        runs (int): Timed rounds per probe.
        warmup (int): Untimed rounds first.
    """

    def __init__(self, net: nn.Module, config: SparsityConfig, backend: str, quantize: int, imgsz: int, folder: Path,
                 data: str | None = None, runs: int = 30, warmup: int = 5):
        """Export and load the dense artifact."""
        if backend not in BACKEND_FORMATS:
            raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKEND_FORMATS)}")
        self.net, self.config, self.quantize, self.imgsz = net, config, quantize, imgsz
        self.fmt, self.folder, self.data, self.runs, self.warmup = BACKEND_FORMATS[backend], Path(folder), data, runs, warmup
        self.artifacts: dict[str, Path] = {}  # "dense" and "flops-0.1234" -> the exported artifact
        self.dense = self._runner(copy.deepcopy(net), "dense", 32)

    def __call__(self, flops: float) -> tuple[float, float]:
        """Prune a copy at ``flops``, export and time it against the dense artifact; return the ratio's median, IQR."""
        from .oneshot import sparsify

        candidate = copy.deepcopy(self.net)
        sparsify(candidate, probe_config(self.config, flops), imgsz=self.imgsz)
        runner = self._runner(candidate, probe_name(flops), self.quantize)
        times = time_interleaved({"dense": self.dense, "pruned": runner}, self.runs, self.warmup)
        ratio = ratio_summary(times["dense"], times["pruned"])
        return ratio.median, ratio.iqr

    def _runner(self, net: nn.Module, name: str, quantize: int) -> Callable[[], Any]:
        """Save ``net`` as a checkpoint, export it to the backend's format at ``quantize`` and return its runner."""
        from ultralytics.utils import LOGGER

        folder = self.folder / name
        weights = save_checkpoint(net, {}, self.folder / f"{name}.pt", None, compress=False)
        level = LOGGER.level
        LOGGER.setLevel("WARNING")  # the exporter's own lines, once per probe, are not the user's business
        try:
            artifact = export_artifact(weights, self.fmt, quantize, folder, self.imgsz, self.data)
        finally:
            LOGGER.setLevel(level)
        self.artifacts[name] = Path(artifact)
        return artifact_runner(artifact, self.fmt, self.imgsz)

    def time_by_block(self, flops: float, rules: Any) -> dict[str, Any] | None:
        """Where the dense artifact and the probe at ``flops`` spend their time, per block (None where the backend's
        runtime gives no per-operation profile): each block's profiled ms in both, and the share of the probe's time
        that blocks no rule prunes take."""
        if self.fmt not in PROFILED_FORMATS:
            return None
        dense = block_times(self.artifacts["dense"], self.fmt, self.imgsz)
        pruned = block_times(self.artifacts[probe_name(flops)], self.fmt, self.imgsz)
        kept = protected_blocks(self.net, rules)
        layers = getattr(self.net, "model", [])
        rows = [
            {"block": block, "class": _block_class(layers, block), "protected": block in kept,
             "dense_ms": round(dense.get(block, 0.0), 3), "pruned_ms": round(pruned.get(block, 0.0), 3)}
            for block in dict.fromkeys([*dense, *pruned])
        ]
        total = sum(pruned.values()) or 1.0
        return {"blocks": rows, "protected_share": round(sum(pruned.get(b, 0.0) for b in kept) / total, 4)}


def probe_config(config: SparsityConfig, flops: float) -> SparsityConfig:
    """The settings a probe prunes with: ``flops`` as the target, no refit (it changes no shape, so no latency), and
    ``importance=taylor`` ranked as ``l1``: per layer (``scope=layer``) the ranking decides which channels go, not how
    many (but for the one group that crosses at the target), and the probes have no calibration data for gradients.

    Examples:
        >>> probe_config(SparsityConfig(method="channel", importance="taylor"), 0.5).importance
        'l1'
    """
    importance = "l1" if config.importance == "taylor" else config.importance
    return config.replace(flops=flops, sparsity=None, reconstruct=False, importance=importance)


def probe_name(flops: float) -> str:
    """The name of a probe's checkpoint and artifact folder.

    Examples:
        >>> probe_name(0.5)
        'flops-0.5000'
    """
    return f"flops-{flops:.4f}"


def protected_blocks(net: nn.Module, rules: Any) -> set[str]:
    """Top-level blocks (``model.N``) whose every weight the rules protect: pruning can thin their inputs, never
    their own width.

    Examples:
        >>> from ultralytics import YOLO
        >>> sorted(protected_blocks(YOLO("yolov8n.yaml").model, "default"))
        ['model.22']
    """
    from .rules import assign_families, load_rules

    status: dict[str, bool] = {}
    for info in assign_families(net, load_rules(rules)).weights:
        if info.layer is not None:
            block = f"model.{info.layer}"
            status[block] = status.get(block, True) and info.protected
    return {block for block, protected in status.items() if protected}


def _block_class(layers: Any, block: str) -> str:
    """The class name of ``model.N`` in the network's layer list (``-`` for ``other``)."""
    if block == "other":
        return "-"
    index = int(block.split(".")[1])
    return type(layers[index]).__name__ if index < len(layers) else "?"


def check_latency_settings(latency: Any, backend: Any, quantize: Any, config: SparsityConfig, data: Any,
                           probes: Any = 7) -> dict:
    """Check ``latency=``, ``backend=`` and ``quantize=`` of a latency target before any work; return them parsed.

    Raises:
        ValueError: A ratio outside (0, 1), another method than channel, a GFLOPs or sparsity target beside it, an
            unknown backend, a missing runtime (naming the extra), INT8 without ``data`` or INT8 TorchScript.

    Examples:
        >>> check_latency_settings(0.6, "torchscript", 32, SparsityConfig(method="channel"), None)["format"]
        'torchscript'
    """
    from numbers import Real

    from .deploy import check_deploy_settings, parse_quantize

    if isinstance(latency, bool) or not isinstance(latency, Real) or not 0 < latency < 1:
        raise ValueError(f"latency={latency!r} must be a ratio to the dense model's latency in (0, 1), e.g. 0.6")
    if not method_of(config).removes:
        raise ValueError(f"latency= targets channel pruning: add method=channel (this is method={config.method!r})")
    if config.flops is not None or config.sparsity is not None:
        raise ValueError("give latency= or a flops=/sparsity= target, not both (latency= finds flops= by measuring)")
    if config.importance == "taylor" and config.scope == "global":
        raise ValueError("latency= with importance=taylor needs scope=layer (the channel default): with scope=global "
                         "the widths follow gradients, which the probes do not compute")
    if backend not in BACKEND_FORMATS:
        raise ValueError(f"latency= needs backend=, the runtime you deploy on: one of {', '.join(BACKEND_FORMATS)}")
    precisions = parse_quantize(quantize)
    if len(precisions) != 1:
        raise ValueError(f"quantize={quantize} must be one precision with latency= (the one you deploy)")
    check_deploy_settings(BACKEND_FORMATS[backend], precisions[0], data)  # INT8 needs data, runtimes installed, ...
    return {"latency": float(latency), "backend": backend, "format": BACKEND_FORMATS[backend], "quantize": precisions[0],
            "max_probes": positive_int("probes", probes)}


def find_flops(net: nn.Module, config: SparsityConfig, settings: dict, imgsz: int, data: Any = None
               ) -> tuple[SparsityConfig, dict[str, Any]]:
    """Search the ``flops=`` that meets ``settings["latency"]`` on its backend; return the config and a report section.

    The probes' artifacts live in a temporary folder, removed afterwards.

    Raises:
        ValueError: If no probe reached the target (the lowest ratio measured is named).
    """
    import tempfile
    import time

    from ultralytics.utils import LOGGER

    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ultra-sparse-latency-") as folder:
        probe = ArtifactProbe(net, config, settings["backend"], settings["quantize"], imgsz, Path(folder), data)

        def measure(flops: float) -> tuple[float, float]:
            ratio, iqr = probe(flops)
            LOGGER.info(f"ultra-sparse latency: flops={flops:.4f} -> {ratio:.3f} of dense FP32 (IQR {iqr:.3f})")
            return ratio, iqr

        high = reachable_flops(net, config, imgsz)
        best, probes = search_flops(measure, settings["latency"], high=high, max_probes=settings["max_probes"])
        profile = probe.time_by_block((best or min(probes, key=lambda p: p.ratio)).flops, config.rules)
    section = {
        **settings, "reachable_flops": high, "probes": [p.to_dict() for p in probes],
        "chosen": best.to_dict() if best else None, "wall_s": round(time.perf_counter() - clock, 1),
        "time_by_block": profile,
        "note": "ratios to the dense model's FP32 artifact, measured on this machine at batch 1: run the search on the "
                "CPU you deploy on",
    }
    hint = protected_hint(profile)
    if best is None:
        lowest = min(probes, key=lambda p: p.ratio)
        raise ValueError(f"latency={settings['latency']} was not reached on {settings['backend']}: the lowest ratio "
                         f"measured was {lowest.ratio:.3f} at flops={lowest.flops} (these rules remove at most "
                         f"flops={high}{'; ' + hint if hint else ''}); raise latency=")
    if hint:
        LOGGER.info(f"ultra-sparse latency: {hint}")
    return config.replace(flops=best.flops), section


def protected_hint(profile: dict[str, Any] | None, share: float = PROTECTED_SHARE) -> str:
    """A clause naming the protected blocks and the rules that prune them, when they hold ``share`` of the pruned
    artifact's time (else empty).

    Examples:
        >>> rows = [{"block": "model.22", "class": "Detect", "protected": True}]
        >>> protected_hint({"blocks": rows, "protected_share": 0.33})[:62]
        'model.22 (Detect), which no rule prunes, takes 33% of the time'
        >>> protected_hint({"blocks": rows, "protected_share": 0.1})
        ''
    """
    if not profile or profile["protected_share"] < share:
        return ""
    names = ", ".join(f"{r['block']} ({r['class']})" for r in profile["blocks"] if r["protected"])
    return (f"{names}, which no rule prunes, takes {profile['protected_share']:.0%} of the time of the pruned artifact: "
            f"give it a ratio in rules= (rules={HEAD_RULES} does so for the Detect head's hidden layers)")
