"""Sparsity reports: per family and per layer (class chain, params, zeros, ratio asked and achieved) and totals."""

from __future__ import annotations

import json
from typing import Any, Mapping

import torch
import torch.nn as nn

from .prune.nm import nm_eligibility, nm_violations, pattern_fraction
from .rules import Assignment, RuleSet, WeightInfo, assign_families, load_rules, network_of

__all__ = [
    "family_widths", "format_file_size", "format_report_md", "latency_lines", "log_report", "pattern_of",
    "reconstruction_line", "report_documents", "sparsity_report",
]


def sparsity_report(
    model: nn.Module,
    rules: str | RuleSet | Assignment = "default",
    ratios_asked: Mapping[str, float] | None = None,
    config: Mapping[str, Any] | None = None,
    zeros: Mapping[str, int] | None = None,
    pattern: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Count zeros per family and per layer of a model; with an N:M ``pattern``, check it layer by layer.

    Args:
        model (nn.Module): The model (or an Ultralytics ``YOLO`` object).
        rules (str | RuleSet | Assignment): Rules to group weights by, or an existing assignment.
        ratios_asked (Mapping[str, float], optional): Family -> ratio that was asked (after scaling), if known.
        config (Mapping[str, Any], optional): Settings to record in the report.
        zeros (Mapping[str, int], optional): Parameter name -> zeros, where already known (for example
            :attr:`ultra_sparse.prune.unstructured.MaskResult.zeros`); the other weights are counted.
        pattern (tuple[int, int], optional): ``(N, M)`` of a ``method=nm`` model (see :func:`pattern_of`). Every
            prunable layer then gets ``nm`` (``eligible``, ``reason``, ``violations``: groups with more than N
            non-zero weights), its ``ratio_asked`` is the pattern's (0 for ineligible layers), and the report gets
            an ``nm`` summary (``holds`` is True when no eligible layer has a violation).

    Returns:
        (dict): ``totals`` (over prunable weights, protected weights and all parameters), ``families``, ``layers``,
        ``warnings`` (rules that matched nothing), ``rules``, ``config`` and ``nm`` (None without a pattern).

    Examples:
        >>> import torch
        >>> from ultralytics import YOLO
        >>> _ = torch.manual_seed(0)  # a random init can draw an exact zero; this one draws none
        >>> report = sparsity_report(YOLO("yolo11n.yaml").model)
        >>> report["totals"]["prunable"]["zeros"]
        0
    """
    model = network_of(model)
    assignment = rules if isinstance(rules, Assignment) else assign_families(model, load_rules(rules))
    ratios_asked = dict(ratios_asked or {})
    known = zeros or {}
    listed = [info for info in assignment.weights if info.family != "fixed"]  # DFL's fixed kernel is never pruned
    layers, families = [], {}
    for info in listed:
        numel = info.weight.numel()
        n_zeros = known[info.name] if info.name in known else numel - int(torch.count_nonzero(info.weight.detach()))
        asked = 0.0 if info.protected else ratios_asked.get(info.family)
        nm = None if pattern is None or info.protected else _nm_layer(info, pattern)
        layers.append(
            {
                "name": info.name,
                "family": info.family,
                "protected": info.protected,
                "chain": list(info.chain),
                "params": numel,
                "zeros": n_zeros,
                "ratio_asked": asked if nm is None else nm.pop("ratio_asked"),
                "ratio_achieved": n_zeros / numel,
                **({} if pattern is None else {"nm": nm}),
            }
        )
        fam = families.setdefault(
            info.family,
            {"family": info.family, "protected": info.protected, "layers": 0, "params": 0, "zeros": 0, "ratio_asked": asked},
        )
        fam["layers"] += 1
        fam["params"] += numel
        fam["zeros"] += n_zeros
    for fam in families.values():
        fam["ratio_achieved"] = fam["zeros"] / fam["params"]
    weight_names = {info.name for info in listed}
    others = [p.detach().reshape(-1) for n, p in model.named_parameters() if n not in weight_names]
    other_params = sum(p.numel() for p in others)
    total = sum(x["params"] for x in layers) + other_params
    other_zeros = other_params - int(torch.count_nonzero(torch.cat(others))) if others else 0
    total_zeros = sum(x["zeros"] for x in layers) + other_zeros
    return {
        "rules": assignment.ruleset.name,
        "config": dict(config) if config else None,
        "totals": {
            "prunable": _totals(layers, protected=False),
            "protected": _totals(layers, protected=True),
            "all": {"params": total, "zeros": total_zeros, "nonzero": total - total_zeros, "sparsity": total_zeros / max(1, total)},
        },
        "families": list(families.values()),
        "layers": layers,
        "warnings": [f"rule {f!r} matched no weight of this model" for f in assignment.unmatched_rules],
        "nm": None if pattern is None else _nm_summary(layers, pattern),
    }


def family_widths(assignment: Assignment) -> dict[str, dict[str, Any]]:
    """Output channels and weights of every family (``channels``, ``params``, ``protected``), in rule order.

    Examples:
        >>> from ultralytics import YOLO
        >>> widths = family_widths(assign_families(YOLO("yolo11n.yaml").model, load_rules()))
        >>> widths["head"]["protected"]
        True
    """
    widths: dict[str, dict[str, Any]] = {}
    for info in assignment.weights:
        fam = widths.setdefault(info.family, {"channels": 0, "params": 0, "protected": info.protected})
        fam["channels"] += int(info.weight.shape[0])
        fam["params"] += info.weight.numel()
    return widths


def pattern_of(config: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``(N, M)`` of a stored ``method=nm`` config (a checkpoint's or report's ``config``), else None.

    Examples:
        >>> pattern_of({"method": "nm", "nm": "2:4"})
        (2, 4)
        >>> pattern_of({"method": "unstructured", "nm": "2:4"}) is None
        True
    """
    # Method branch on a STORED config (a checkpoint's or report's dict, of any version): the report renders files
    # below the method registry, and only the N:M section depends on the method.
    if not config or config.get("method") != "nm":
        return None
    n, m = str(config.get("nm", "2:4")).split(":")
    return int(n), int(m)


def format_report_md(
    report: Mapping[str, Any], title: str = "Sparsity report", layers: bool = True, warnings: bool = True
) -> str:
    """Render a report as Markdown: totals, families, layers (with ``layers``), the N:M check, warnings (with ``warnings``)."""
    t = report["totals"]
    lines = [f"# {title}", "", f"Rules: `{report['rules']}`", ""]
    if report.get("file"):
        lines += [f"File: {format_file_size(report['file'])}", ""]
    if report.get("config"):
        settings = {k: v.get("name", "<dict>") if isinstance(v, dict) else v for k, v in report["config"].items()}
        lines += ["Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items() if v is not None), ""]
    if report.get("channel"):  # what was done first; the zero counts below are of the smaller network
        lines += [*_channel_lines(report["channel"]), "",
                  "Zeros in the smaller network (removing channels leaves none; the ratios asked are channel ratios, above):",
                  ""]
    lines += [
        "| scope | params | zeros | nonzero | sparsity |",
        "|---|---:|---:|---:|---:|",
        _row("prunable weights", t["prunable"]),
        _row("protected weights", t["protected"]),
        _row("all parameters", t["all"]),
        "",
        "| family | layers | params | zeros | ratio asked | ratio achieved |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in report["families"]:
        name = f"{f['family']} (protected)" if f["protected"] else f["family"]
        lines.append(
            f"| {name} | {f['layers']} | {f['params']:,} | {f['zeros']:,} | {_pct(f['ratio_asked'])} | {_pct(f['ratio_achieved'])} |"
        )
    nm = report.get("nm")
    if layers:
        lines += ["", *_layer_table(report["layers"], nm["pattern"] if nm else None)]
    if nm:
        lines += ["", *_nm_lines(nm)]
    if report.get("latency_search"):
        lines += ["", *latency_lines(report["latency_search"])]
    if warnings and report["warnings"]:
        lines += ["", "Warnings:", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


def log_report(report: Mapping[str, Any], title: str = "Sparsity report", layers: bool = False) -> None:
    """Print a report's tables to the console (the per-layer table with ``layers``), then each warning once.

    Examples:
        >>> log_report(sparsity_report(model, "default"), layers=True)  # doctest: +SKIP
    """
    from ultralytics.utils import LOGGER

    LOGGER.info(format_report_md(report, title, layers=layers, warnings=False).strip())
    for warning in report["warnings"]:
        LOGGER.warning(f"ultra-sparse: {warning}")


def report_documents(report: Mapping[str, Any], title: str = "Sparsity report") -> tuple[bytes, bytes]:
    """The content of a report's JSON and Markdown files.

    Examples:
        >>> from ultralytics import YOLO
        >>> json_bytes, md_bytes = report_documents(sparsity_report(YOLO("yolo11n.yaml").model))
        >>> md_bytes.startswith(b"# Sparsity report")
        True
    """
    return json.dumps(report, indent=2).encode(), format_report_md(report, title).encode()


def _layer_table(layers: list[dict], pattern: str | None) -> list[str]:
    """Markdown lines of the per-layer table, with an N:M column when the report checked a pattern."""
    column, rule = (f" {pattern} |", "---|") if pattern else ("", "")
    lines = [f"| layer | family | classes | params | zeros | asked | achieved |{column}", f"|---|---|---|---:|---:|---:|---:|{rule}"]
    for x in layers:
        chain = " > ".join(x["chain"])
        cell = f" {_nm_cell(x.get('nm'))} |" if pattern else ""
        lines.append(
            f"| `{x['name']}` | {x['family']} | {chain} | {x['params']:,} | {x['zeros']:,} | {_pct(x['ratio_asked'])} | {_pct(x['ratio_achieved'])} |{cell}"
        )
    return lines


def _nm_layer(info: WeightInfo, pattern: tuple[int, int]) -> dict[str, Any]:
    """Eligibility, pattern violations and the ratio the pattern asks of one prunable layer."""
    n, m = pattern
    reason = nm_eligibility(info.module, m)
    eligible = reason is None
    return {
        "eligible": eligible,
        "reason": reason,
        "violations": nm_violations(info.weight, n, m) if eligible else None,
        "ratio_asked": pattern_fraction(n, m) if eligible else 0.0,
    }


def _nm_summary(layers: list[dict], pattern: tuple[int, int]) -> dict[str, Any]:
    """Totals of the N:M check over the prunable layers."""
    checked = [x for x in layers if x.get("nm")]
    eligible = [x for x in checked if x["nm"]["eligible"]]
    return {
        "pattern": f"{pattern[0]}:{pattern[1]}",
        "eligible_layers": len(eligible),
        "eligible_params": sum(x["params"] for x in eligible),
        "holds": bool(eligible) and all(x["nm"]["violations"] == 0 for x in eligible),
        "violating_layers": [{"name": x["name"], "violations": x["nm"]["violations"]} for x in eligible if x["nm"]["violations"]],
        "ineligible_layers": [{"name": x["name"], "params": x["params"], "reason": x["nm"]["reason"]} for x in checked if not x["nm"]["eligible"]],
    }


def _nm_lines(nm: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the N:M summary: whether the pattern holds, and the layers left dense with their reason."""
    where = f"{nm['eligible_layers']} eligible layers ({nm['eligible_params']:,} weights)"
    if nm["holds"]:
        lines = [f"N:M pattern {nm['pattern']}: holds in every group of all {where}."]
    else:
        bad = ", ".join(f"`{x['name']}` ({x['violations']:,} groups)" for x in nm["violating_layers"])
        lines = [f"N:M pattern {nm['pattern']}: does NOT hold in every group of the {where}: {bad or 'no eligible layer'}."]
    if nm["ineligible_layers"]:
        lines += [
            "",
            f"Prunable layers not eligible for {nm['pattern']} (left dense):",
            "",
            "| layer | params | reason |",
            "|---|---:|---|",
            *[f"| `{x['name']}` | {x['params']:,} | {x['reason']} |" for x in nm["ineligible_layers"]],
        ]
    return lines


def _channel_lines(section: Mapping[str, Any]) -> list[str]:
    """Markdown lines of a ``method=channel`` result: totals, channels per family, attention pruned inside, blocks
    kept whole."""
    p, g, got = section["params"], section["gflops"], section["achieved"]
    target = ", ".join(f"{k}={v}" for k, v in (section["target"] or {}).items()) or "family ratios as written"
    lines = [
        f"Channel pruning ({target}, GFLOPs at imgsz {section['imgsz']}): params {p['before']:,} -> {p['after']:,}, "
        f"GFLOPs {g['before']:.3f} -> {g['after']:.3f} ({_pct(got['flops'])} removed), "
        f"{_pct(got['sparsity'])} of prunable weights removed.",
        "",
        reconstruction_line(section),
        "",
        "| family | channels before | channels after | params before | params after | channel ratio asked |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for f in section["families"]:
        name = f"{f['family']} (protected)" if f["protected"] else f["family"]
        lines.append(
            f"| {name} | {f['channels_before']:,} | {f['channels_after']:,} | {f['params_before']:,} | "
            f"{f['params_after']:,} | {_pct(f['ratio_asked'])} |"
        )
    if section.get("inside"):
        lines += ["", "Attention pruned inside (its input and output widths stay):", "", "| block | class | pruned |",
                  "|---|---|---|", *[f"| `{a['name']}` | {a['class']} | {a['what']} |" for a in section["inside"]]]
    if section["whole"]:
        lines += ["", "Kept whole (every channel of their own stays):", "", "| block | class | reason |",
                  "|---|---|---|", *[f"| `{w['name']}` | {w['class']} | {w['reason']} |" for w in section["whole"]]]
    return lines


def latency_lines(search: Mapping[str, Any], heading: str = "## Latency search") -> list[str]:
    """The latency search of a report under ``heading``: target, every probe, the chosen plan, and the time by block
    where profiled."""
    chosen = search["chosen"]
    lines = [
        heading, "",
        f"`latency={search['latency']}` on {search['backend']} (quantize={search['quantize']}): flops={chosen['flops']} "
        f"chosen, {chosen['ratio']:.3f} of the dense FP32 artifact (IQR {chosen['iqr']:.3f}), after "
        f"{len(search['probes'])} probes (at most {search['max_probes']}; the rules remove at most "
        f"flops={search['reachable_flops']}) in {search['wall_s']:.0f} s; {search['note']}.", "",
        "| probe | flops | ratio | IQR |", "|---:|---:|---:|---:|",
        *[f"| {i} | {p['flops']:.4f} | {p['ratio']:.3f} | {p['iqr']:.3f} |" for i, p in enumerate(search["probes"], 1)],
    ]
    profile = search.get("time_by_block")
    if profile:
        rows = profile["blocks"]
        total = sum(r["pruned_ms"] for r in rows) or 1.0
        lines += [
            "", f"Time by block (the runtime's per-operation profile, ms per inference; it runs above the wall-clock "
            f"latency, so read shares): blocks no rule prunes take {profile['protected_share']:.0%} of the chosen plan's.",
            "", "| block | class | dense ms | chosen ms | share of chosen |", "|---|---|---:|---:|---:|",
            *[f"| {r['block']}{' (protected)' if r['protected'] else ''} | {r['class']} | {r['dense_ms']:.2f} | "
              f"{r['pruned_ms']:.2f} | {r['pruned_ms'] / total:.1%} |" for r in rows],
        ]
    return lines


def reconstruction_line(section: Mapping[str, Any]) -> str:
    """One sentence on the least-squares refit of a ``method=channel`` result (the report's ``reconstruction``).

    A training run (``train method=channel reconstruct=True``) records its number of refitted pruning ``steps`` and
    the last step's fit.

    Examples:
        >>> reconstruction_line({"reconstruction": None})
        'Layers not refitted (sparsify data= or train reconstruct=True refits the layers that lost inputs).'
    """
    r = section.get("reconstruction")
    if not r:
        return "Layers not refitted (sparsify data= or train reconstruct=True refits the layers that lost inputs)."
    training = "steps" in r
    target = "the network's outputs before the step" if training else "the dense model's outputs"
    fit = (
        f"{r['layers']} layers that lost inputs to {target} on {r['images']} calibration images (least squares): "
        f"mean relative output error {r['error_before']:.3f} -> {r['error_after']:.3f}."
    )
    if training:
        return f"Refitted at {r['steps']} pruning step(s) while training; the last step refitted {fit}"
    return f"Refitted {fit}"


def _nm_cell(nm: Mapping[str, Any] | None) -> str:
    """The per-layer N:M cell: protected, not eligible, holds, or the number of violating groups."""
    if nm is None:
        return "-"
    if not nm["eligible"]:
        return "not eligible"
    return "holds" if nm["violations"] == 0 else f"{nm['violations']:,} groups over N"


def format_file_size(size: Mapping[str, Any]) -> str:
    """One line for :func:`ultra_sparse.checkpoint.checkpoint_file_size`.

    Examples:
        >>> format_file_size({"bytes": 2_620_000, "mb": 2.62, "compressed": True, "uncompressed_bytes": 4_230_000})
        '2.62 MB (zip entries DEFLATE-compressed; 4.23 MB uncompressed)'
    """
    if size["compressed"]:
        return f"{size['mb']:.2f} MB (zip entries DEFLATE-compressed; {size['uncompressed_bytes'] / 1e6:.2f} MB uncompressed)"
    return f"{size['mb']:.2f} MB (not compressed)"


def _totals(layers: list[dict], protected: bool) -> dict[str, Any]:
    """Sum params and zeros over the layers with the given protection."""
    params = sum(x["params"] for x in layers if x["protected"] == protected)
    zeros = sum(x["zeros"] for x in layers if x["protected"] == protected)
    return {"params": params, "zeros": zeros, "nonzero": params - zeros, "sparsity": zeros / max(1, params)}


def _row(label: str, t: Mapping[str, Any]) -> str:
    """One totals row."""
    return f"| {label} | {t['params']:,} | {t['zeros']:,} | {t['nonzero']:,} | {t['sparsity']:.2%} |"


def _pct(value: float | None) -> str:
    """A ratio as a percentage, or a dash when unknown."""
    return "-" if value is None else f"{value:.2%}"
