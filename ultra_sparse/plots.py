"""Plots: a comparison (relative change of every table row, per-family sparsity of both models) and a sensitivity scan."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import atomic_write_bytes

__all__ = ["plot_comparison", "plot_sensitivity"]


def plot_comparison(result: Mapping[str, Any], path: str | Path) -> Path:
    """Draw a two-panel PNG: relative change sparse vs dense per row, and zeros per module family.

    Rows without a relative change (percentages, whose change is given in points) are left out of the first panel.

    Args:
        result (Mapping[str, Any]): A ``compare.compare_models`` result.
        path (str | Path): PNG file to write (its folder is created).

    Returns:
        (Path): ``path``.

    Examples:
        >>> plot_comparison(result, "runs/sparse/compare/compare.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in result["rows"] if r["rel_change"] is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5), tight_layout=True)

    names = [r["metric"] for r in rows]
    changes = [100 * r["rel_change"] for r in rows]
    ax1.barh(names, changes, color="tab:blue")
    limit = 1.4 * max([1.0, *(abs(c) for c in changes)])  # centred on 0, room for the labels
    ax1.set_xlim(-limit, limit)
    ax1.axvline(0, color="black", linewidth=0.8)
    ax1.invert_yaxis()
    ax1.set_xlabel("sparse vs dense (% change)")
    bench = result.get("benchmark") or {}
    ax1.set_title(f"Relative change\nspeed: {bench.get('verdict', 'not measured')}", fontsize=10)
    for y, c in enumerate(changes):
        ax1.annotate(f"{c:+.1f}%", (c, y), xytext=(3 if c >= 0 else -3, 0), textcoords="offset points",
                     ha="left" if c >= 0 else "right", va="center", fontsize=8)

    families = [f["family"] for f in result["sparse"]["families"]]
    dense = {f["family"]: f["ratio_achieved"] for f in result["dense"]["families"]}
    sparse = [100 * f["ratio_achieved"] for f in result["sparse"]["families"]]
    xs = range(len(families))
    ax2.bar([x - 0.2 for x in xs], [100 * dense.get(f, 0.0) for f in families], width=0.4, label="dense")
    ax2.bar([x + 0.2 for x in xs], sparse, width=0.4, label="sparse")
    ax2.set_xticks(list(xs), families, rotation=30, ha="right")
    ax2.set_ylabel("zeros (% of family weights)")
    ax2.set_title(f"Sparsity per family (rules: {result['settings'].get('rules', '?')})")
    ax2.legend()

    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_sensitivity(result: Mapping[str, Any], path: str | Path) -> Path:
    """Draw a scan's curves: mAP50 against the ratio of one group, the chosen ratios marked.

    Each group is one line through its measured points: from the dense model (ratio 0) when the others were dense,
    or through its base ratio when the others were kept at the base allocation. A star marks the ratio chosen for
    it, at the mAP50 its curve predicts there. Dashed: the dense mAP50; dash-dotted: the base allocation's; dotted:
    the mAP50 measured with all chosen ratios applied at once (the scanned rules at the target sparsity).

    Args:
        result (Mapping[str, Any]): A :func:`ultra_sparse.scan.scan` result with ``sparsity`` added.
        path (str | Path): PNG file to create, atomically (its folder is created).

    Returns:
        (Path): ``path``.

    Examples:
        >>> plot_sensitivity(result, "runs/sparse/scan/sensitivity.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = Path(path)
    dense, base = result["dense"]["mAP50"], result.get("base")
    reference = base["mAP50"] if base else dense
    total = sum(g["params"] for g in result["groups"])
    colors = plt.get_cmap("tab20" if len(result["groups"]) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(12, 6), tight_layout=True)
    values = [dense, reference, result["measured"]["mAP50"]]
    for i, group in enumerate(result["groups"]):
        start = [(group["base_ratio"], reference)] if base else [(0.0, dense)]
        points = sorted(start + [(p["ratio"], p["mAP50"]) for p in group["points"]])
        values += [y for _, y in points]
        color = colors(i % colors.N)
        label = f"{group['name']} ({group['params'] / total:.0%} of weights): {group['written_ratio']:.0%}"
        ax.plot([100 * x for x, _ in points], [y for _, y in points], "o-", color=color, markersize=4, linewidth=1.5,
                label=label)
        ax.plot(100 * group["chosen_ratio"], reference - group["predicted_loss"], "*", color=color, markersize=15,
                markeredgecolor="black", markeredgewidth=0.6)
    ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense: {dense:.3f}")
    if base:
        ax.axhline(reference, color="gray", linestyle="-.", linewidth=1.2,
                   label=f"base (input rules at {result['sparsity']:.0%}): {reference:.3f}")
    kept = " (below base: base ratios written)" if result.get("kept_base") else ""
    ax.axhline(values[2], color="tab:red", linestyle=":", linewidth=1.5,
               label=f"chosen ratios at {result['sparsity']:.0%}: {values[2]:.3f} "
                     f"(predicted {result['predicted']['mAP50']:.3f}){kept}")
    context = "the others at the base allocation" if base else "every other group dense"
    ax.set_xlabel(f"weights of the group pruned (%), {context}")
    ax.set_ylabel("mAP50")
    ax.set_xlim(0, 100)
    ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
    ax.grid(alpha=0.3)
    ax.set_title("Sensitivity scan: one group moved at a time (stars: chosen ratio; legend: share of weights, ratio written)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
