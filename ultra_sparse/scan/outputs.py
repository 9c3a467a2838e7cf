"""What a scan writes: the rules file, the measured points as CSV and JSON, and the plot of the curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..checkpoint import atomic_write_bytes
from ..plots import plot_sensitivity
from ..rules import load_rules

__all__ = ["capped_groups", "target_of", "write_scan"]


def write_scan(result: Mapping[str, Any], folder: str | Path) -> dict[str, Path]:
    """Write a scan's outputs into ``folder``: ``rules.yaml``, ``sensitivity.csv``, ``sensitivity.json``, ``.png``.

    Args:
        result (Mapping[str, Any]): A :func:`scan` result with ``sparsity`` (or ``flops``) and ``description`` added (the
            description becomes the rules file's).
        folder (str | Path): Run folder (created).

    Returns:
        (dict[str, Path]): ``rules``, ``csv``, ``json`` and ``plot`` -> path.

    Examples:
        >>> described = {**result, "sparsity": 0.7, "description": "scanned on data.yaml"}  # doctest: +SKIP
        >>> write_scan(described, "runs/sparse/scan")["rules"]  # doctest: +SKIP
        PosixPath('runs/sparse/scan/rules.yaml')
    """
    folder = Path(folder)
    content = {"description": result["description"], "rules": result["rules"]["rules"]}
    load_rules(content)  # the file must load as it is written
    key, target = target_of(result)
    header = (
        f"# Written by ultra-sparse scan. The ratios reach {key}={target} as written; sparsify/train\n"
        f"# with {key}=S scale them all by one factor. Families split by layer keep their classes and add layers:.\n"
    )
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["group", "family", "layers", "params", "ratio", "others", "mAP50", "mAP50-95"])
    total, base = sum(g["params"] for g in result["groups"]), result.get("base")
    writer.writerow(["dense", "", "", total, 0.0, "dense", result["dense"]["mAP50"], result["dense"]["mAP50-95"]])
    if base:
        writer.writerow(["base", "", "", total, target, "base", base["mAP50"], base["mAP50-95"]])
    for group in result["groups"]:
        layers = "" if group["layers"] is None else " ".join(map(str, group["layers"]))
        for point in group["points"]:
            writer.writerow([group["name"], group["family"], layers, group["params"], point["ratio"],
                             "base" if base else "dense", point["mAP50"], point["mAP50-95"]])
    writer.writerow(["choice", "", "", total, target, "all", result["measured"]["mAP50"],
                     result["measured"]["mAP50-95"]])
    for step in result["refinement"]:
        name = f"refine: {step['donor']} x{step['fraction']:g}{' (kept)' if step['accepted'] else ''}"
        writer.writerow([name, "", "", total, target, "all", step["mAP50"], step["mAP50-95"]])
    paths = {name: folder / file for name, file in
             (("rules", "rules.yaml"), ("csv", "sensitivity.csv"), ("json", "sensitivity.json"), ("plot", "sensitivity.png"))}
    atomic_write_bytes(paths["rules"], (header + yaml.safe_dump(content, sort_keys=False, width=120, default_flow_style=None)).encode())
    atomic_write_bytes(paths["csv"], rows.getvalue().encode())
    atomic_write_bytes(paths["json"], json.dumps(result, indent=2).encode())
    plot_sensitivity(result, paths["plot"], (key, target))
    return paths


def capped_groups(result: Mapping[str, Any]) -> list[str]:
    """Groups of a scan result written at the highest ratio they were tested at: the choice had no room above them.

    Examples:
        >>> capped_groups({"groups": [{"name": "a", "written_ratio": 0.75, "points": [{"ratio": 0.3}, {"ratio": 0.75}]},
        ...                           {"name": "b", "written_ratio": 0.5, "points": [{"ratio": 0.3}, {"ratio": 0.75}]}]})
        ['a']
    """
    return [g["name"] for g in result["groups"]
            if g["points"] and g["written_ratio"] >= max(p["ratio"] for p in g["points"]) - 1e-9]


def target_of(result: Mapping[str, Any]) -> tuple[str, float]:
    """The overall target a scan result was made for: ``("flops", F)`` or ``("sparsity", S)``.

    Examples:
        >>> target_of({"sparsity": None, "flops": 0.5}), target_of({"sparsity": 0.7})
        (('flops', 0.5), ('sparsity', 0.7))
    """
    return ("flops", result["flops"]) if result.get("flops") is not None else ("sparsity", result["sparsity"])
