"""Module families: rule presets, and the assignment of every prunable weight to a family by module class.

A rule names a family, its ratio and the module classes it covers. A weight belongs to the first rule whose classes
match a module on its ancestor chain (the model, its layers, blocks, down to the Conv2d/Linear that owns it). A class
pattern matches a module whose class, or any of its base classes, has that name (``fnmatch`` globs allowed), so
``Detect`` also covers ``Segment``, ``Pose``, ``OBB`` and ``v10Detect``. Protected rules are checked before all others.
Layer names are never looked at.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from stat import S_ISREG
from typing import Any, Iterator

import torch.nn as nn
import yaml

from .messages import clip, echo

__all__ = [
    "FIXED_CLASSES",
    "PRUNABLE_TYPES",
    "Assignment",
    "Rule",
    "RuleSet",
    "WeightInfo",
    "assign_families",
    "check_prunable",
    "load_rules",
    "network_of",
    "preset_names",
    "rules_as_dict",
    "trained_network",
    "unwrap",
]

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
FIXED_CLASSES = ("DFL",)  # fixed kernels: never pruned, whatever the rules say
_RULE_KEYS = {"family", "ratio", "classes", "layers", "protect"}
_FILE_KEYS = {"name", "description", "rules"}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader where PyYAML was built with it


@dataclass(frozen=True)
class Rule:
    """One module family.

    Attributes:
        family (str): Family name shown in reports, for example ``attention``.
        ratio (float): Fraction of the family's weights to zero, in [0, 1).
        classes (tuple[str, ...]): Class names or globs (``TokenC3*``) matched along the ancestor chain.
        layers (frozenset[int] | None): Optional top-level layer indices (``model.N``) the rule is limited to.
        protect (bool): Protected rules (the head) are checked first and never pruned.
    """

    family: str
    ratio: float
    classes: tuple[str, ...]
    layers: frozenset[int] | None = None
    protect: bool = False


@dataclass(frozen=True)
class RuleSet:
    """An ordered set of rules loaded from one preset or file.

    Attributes:
        name (str): Preset name or file path it came from.
        rules (tuple[Rule, ...]): Rules in file order.
    """

    name: str
    rules: tuple[Rule, ...]

    @property
    def ratios(self) -> dict[str, float]:
        """Family name -> ratio, in rule order."""
        return {r.family: r.ratio for r in self.rules}

    @functools.cached_property
    def match_order(self) -> tuple[Rule, ...]:
        """Rules in the order they are tried: protected ones first, then file order."""
        return tuple(sorted(self.rules, key=lambda r: not r.protect))  # a stable sort keeps file order in each group

    def family_of(self, chain: tuple[nn.Module, ...], layer: int | None) -> Rule | None:
        """Return the rule a weight with this ancestor chain belongs to: protected rules first, then file order."""
        matched = 0
        for module in chain:
            matched |= self._class_bits(type(module))
        for i, rule in enumerate(self.match_order):
            if matched >> i & 1 and (rule.layers is None or layer in rule.layers):
                return rule
        return None

    def _class_bits(self, cls: type) -> int:
        """Bit ``i`` is set if rule ``match_order[i]`` names ``cls`` or one of its base classes (cached per class)."""
        bits = self._bits_by_class.get(cls)
        if bits is None:
            bits = sum(1 << i for i, rule in enumerate(self.match_order) if _class_matches(cls, rule.classes))
            self._bits_by_class[cls] = bits
        return bits

    @functools.cached_property
    def _bits_by_class(self) -> dict[type, int]:
        """Cache of :meth:`_class_bits`."""
        return {}


@dataclass(frozen=True)
class WeightInfo:
    """A Conv/Linear weight and the family it belongs to.

    Attributes:
        name (str): Full parameter name, for example ``model.9.cv1.conv.weight``.
        module (nn.Module): The Conv/Linear module that owns it.
        family (str): Family name, ``fixed`` for never-prunable kernels (DFL), or ``unmatched``.
        protected (bool): True for protected (head) and fixed weights.
        chain (tuple[str, ...]): Class names from the top-level layer down to the owning module.
        layer (int | None): Top-level layer index (``model.N``).
    """

    name: str
    module: nn.Module
    family: str
    protected: bool
    chain: tuple[str, ...]
    layer: int | None

    @property
    def weight(self):
        """The weight parameter itself."""
        return self.module.weight


@dataclass(frozen=True)
class Assignment:
    """Every Conv/Linear weight of a model with its family.

    Attributes:
        weights (tuple[WeightInfo, ...]): All Conv/Linear weights, in module order.
        ruleset (RuleSet): The rules they were assigned with.
    """

    weights: tuple[WeightInfo, ...]
    ruleset: RuleSet

    @property
    def prunable(self) -> tuple[WeightInfo, ...]:
        """Weights that may be pruned: neither protected nor fixed."""
        return tuple(w for w in self.weights if not w.protected)

    @property
    def unmatched_rules(self) -> list[str]:
        """Families whose rule matched no weight of the model (the family may simply be absent).

        A catch-all rule (``classes: ['*']`` without ``layers:``) that matched nothing is left out: it means the other
        rules cover every weight, as in a scanned rules file.
        """
        used = {w.family for w in self.weights}
        catch_all = {r.family for r in self.ruleset.rules if "*" in r.classes and r.layers is None}
        return [r.family for r in self.ruleset.rules if r.family not in used and r.family not in catch_all]


def preset_names() -> list[str]:
    """Names of the rule presets shipped in ``cfg/sparsity``."""
    folder = resources.files("ultra_sparse.cfg") / "sparsity"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_rules(spec: str | Path | dict | RuleSet = "default") -> RuleSet:
    """Load a rule set from a preset name, a YAML path or an already parsed dict.

    Args:
        spec (str | Path | dict | RuleSet): ``default``, ``tokenc3_lsnet``, a path to a rules YAML, or its content.

    Returns:
        (RuleSet): The validated rules.

    Raises:
        FileNotFoundError: If ``spec`` is neither a preset nor an existing file.
        ValueError: If the YAML does not parse, or a key or value is invalid (the message names file, key and value).

    Examples:
        >>> rules = load_rules("tokenc3_lsnet")
        >>> rules.ratios["hyperace"]
        0.04
    """
    if isinstance(spec, RuleSet):
        return spec
    if isinstance(spec, dict):
        name = spec.get("name")
        return _parse(spec, source=name if isinstance(name, str) and name else "<dict>")
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"rules={echo(spec)} must be a preset name, a path or a dict")
    path = Path(spec)
    source = str(path)
    if path.suffix not in {".yaml", ".yml"} and str(spec) in preset_names():
        path, source = Path(str(resources.files("ultra_sparse.cfg") / "sparsity" / f"{spec}.yaml")), str(spec)
    missing = FileNotFoundError(f"rules={echo(spec)} is neither a preset ({', '.join(preset_names())}) nor a file")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise missing from None
    except OSError as e:  # a name too long, a file used as a folder, ...
        raise ValueError(f"rules file {clip(source)} cannot be read ({e.strerror})") from None
    if not S_ISREG(stat.st_mode):
        raise missing
    return _load_file(str(path), source, stat.st_mtime_ns, stat.st_size)


def rules_as_dict(spec: str | Path | dict | RuleSet) -> dict[str, Any]:
    """The parsed rules as a plain dict that :func:`load_rules` accepts: what checkpoints record.

    Unlike a path, it stays usable wherever the checkpoint goes. ``name`` keeps the preset name or source path.

    Examples:
        >>> recorded = rules_as_dict("tokenc3_lsnet")
        >>> recorded["name"], load_rules(recorded).ratios == load_rules("tokenc3_lsnet").ratios
        ('tokenc3_lsnet', True)
    """
    ruleset = load_rules(spec)
    rules = []
    for rule in ruleset.rules:
        item = {"family": rule.family, "ratio": rule.ratio, "classes": list(rule.classes), "protect": rule.protect}
        if rule.layers is not None:
            item["layers"] = sorted(rule.layers)
        rules.append(item)
    return {"name": ruleset.name, "rules": rules}


def check_prunable(assignment: Assignment, sparsity: float | None) -> None:
    """Refuse rules that leave nothing to prune when zeros are asked for (a run would silently stay dense).

    Args:
        assignment (Assignment): The model's weights and families (:func:`assign_families`).
        sparsity (float | None): The overall target; ``None`` applies the rule ratios as written, ``0`` asks nothing.

    Raises:
        ValueError: If ``sparsity`` is not 0 and no weight is prunable (all protected, fixed, unmatched or in families
            of ratio 0: rules that protect everything, match no class, have ratio 0 or name layers the model lacks).

    Examples:
        >>> from ultralytics import YOLO
        >>> check_prunable(assign_families(YOLO("yolo11n.yaml").model, load_rules("default")), 0.3)
    """
    if sparsity == 0 or assignment.prunable:
        return
    rules = {r.family: r for r in assignment.ruleset.rules}
    counts: dict[str, int] = {}
    for info in assignment.weights:
        rule = rules.get(info.family) if info.family not in ("fixed", "unmatched") else None
        kind = info.family if rule is None else "protected" if rule.protect else "ratio 0"
        counts[kind] = counts.get(kind, 0) + 1
    detail = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "none"
    target = "the rule ratios" if sparsity is None else f"sparsity={sparsity}"
    raise ValueError(
        f"rules {assignment.ruleset.name} leave no prunable weight in this model (Conv/Linear weights: {detail}), "
        f"so {target} cannot be applied; give rules that match this model's modules with a ratio above 0"
    )


@functools.lru_cache(maxsize=64)
def _load_file(path: str, source: str, mtime_ns: int, size: int) -> RuleSet:
    """Parse and validate a rules file; cached on its path, modification time and size, so an edit is re-read."""
    try:
        content = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"rules file {path} does not parse: {' '.join(str(e).split())}") from None
    except OSError as e:
        raise ValueError(f"rules file {path} cannot be read ({e.strerror})") from None
    return _parse(content, source=source)


def assign_families(model: nn.Module, rules: RuleSet) -> Assignment:
    """Assign every Conv/Linear weight of ``model`` to a family.

    Args:
        model (nn.Module): A model, for example ``YOLO("yolo11n.yaml").model``.
        rules (RuleSet): Rules from :func:`load_rules`.

    Returns:
        (Assignment): All weights with their family; ``Assignment.prunable`` are those that may be pruned.

    Examples:
        >>> from ultralytics import YOLO
        >>> a = assign_families(YOLO("yolo11n.yaml").model, load_rules("default"))
        >>> {w.family for w in a.weights} >= {"head", "conv", "attention"}
        True
    """
    infos = []
    for name, module, chain in _walk(network_of(model), "", ()):
        layer = next((m.i for m in chain if isinstance(getattr(m, "i", None), int)), None)
        classes = tuple(type(m).__name__ for m in chain)
        if any(_class_matches(type(m), FIXED_CLASSES) for m in chain):
            infos.append(WeightInfo(name, module, "fixed", True, classes, layer))
            continue
        rule = rules.family_of(chain, layer)
        family = rule.family if rule else "unmatched"
        protected = rule is None or rule.protect or rule.ratio == 0.0
        infos.append(WeightInfo(name, module, family, protected, classes, layer))
    return Assignment(tuple(infos), rules)


def network_of(model: nn.Module) -> nn.Module:
    """Return the network inside an Ultralytics ``YOLO`` object, or ``model`` itself if it is one already.

    Examples:
        >>> from ultralytics import YOLO
        >>> type(network_of(YOLO("yolo11n.yaml"))).__name__
        'DetectionModel'
    """
    from ultralytics.engine.model import Model

    return model.model if isinstance(model, Model) else model


def _walk(module: nn.Module, prefix: str, chain: tuple[nn.Module, ...]) -> Iterator[tuple]:
    """Yield (weight name, owning module, ancestor chain) for each Conv/Linear weight, in module order.

    The chain runs from the top-level child of the model down to the owning module; the model itself is left out.
    """
    if isinstance(module, PRUNABLE_TYPES) and isinstance(getattr(module, "weight", None), nn.Parameter):
        yield f"{prefix}weight", module, chain or (module,)
    for child_name, child in module.named_children():
        yield from _walk(child, f"{prefix}{child_name}.", (*chain, child))


@functools.lru_cache(maxsize=4096)
def _class_matches(cls: type, patterns: tuple[str, ...]) -> bool:
    """True if ``cls`` or one of its bases below nn.Module has a name matching one of ``patterns``."""
    names = [c.__name__ for c in cls.__mro__ if c not in (nn.Module, object)]
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


def _parse(content: Any, source: str) -> RuleSet:
    """Validate parsed YAML content into a RuleSet; errors name the source, the key and the value."""
    if not isinstance(content, dict) or "rules" not in content:
        raise ValueError(f"rules file {source}: expected a mapping with a 'rules' list")
    unknown = set(content) - _FILE_KEYS
    if unknown:
        raise ValueError(f"rules file {source}: unknown key {echo(sorted(unknown)[0])} (expected {sorted(_FILE_KEYS)})")
    if not isinstance(content.get("name", ""), str):
        raise ValueError(f"rules file {source}: name={echo(content['name'])} must be a string")
    raw = content["rules"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"rules file {source}: 'rules' must be a non-empty list")
    rules, seen = [], set()
    for index, item in enumerate(raw):
        rule = _parse_rule(item, f"rules file {source}: rule {index}")
        if rule.family in seen:
            raise ValueError(f"rules file {source}: family {rule.family!r} appears twice")
        seen.add(rule.family)
        rules.append(rule)
    return RuleSet(source, tuple(rules))


def _parse_rule(item: Any, where: str) -> Rule:
    """Validate one rule mapping."""
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping, got {echo(item)}")
    unknown = set(item) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key {echo(sorted(unknown)[0])} (expected {sorted(_RULE_KEYS)})")
    family = item.get("family")
    if not isinstance(family, str) or not family:
        raise ValueError(f"{where}: family={echo(family)} must be a non-empty string")
    where = f"{where} ({echo(family)})"
    ratio = item.get("ratio")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ValueError(f"{where}: ratio={echo(ratio)} must be a number in [0, 1)")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{where}: ratio={ratio!r} is outside [0, 1)")
    classes = item.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise ValueError(f"{where}: classes={echo(classes)} must be a non-empty list of class names")
    layers = item.get("layers")
    if layers is not None:
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
            raise ValueError(f"{where}: layers={echo(layers)} must be a list of layer indices")
        layers = frozenset(layers)
    protect = item.get("protect", False)
    if not isinstance(protect, bool):
        raise ValueError(f"{where}: protect={echo(protect)} must be true or false")
    if protect and ratio != 0:
        raise ValueError(f"{where}: a protected family must have ratio 0, got {ratio!r}")
    return Rule(family, float(ratio), tuple(classes), layers, protect)


def trained_network(model: nn.Module) -> nn.Module:
    """The network whose weights are trained and saved: unwrapped, and the student when distilling.

    Examples:
        >>> trained_network(nn.DataParallel(nn.Linear(1, 1))).__class__.__name__
        'Linear'
    """
    net = unwrap(model)
    return getattr(net, "student_model", None) or net


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers (any Ultralytics version)."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
