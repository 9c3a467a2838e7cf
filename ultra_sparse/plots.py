"""Plots for comparisons: relative change of every table row, and per-family sparsity of both models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

__all__ = ["plot_comparison"]


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
