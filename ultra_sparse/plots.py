"""Plots for comparisons: size and accuracy changes, the measured speed ratio with its spread, weights kept per family.

Colours say good or bad at a glance: green where the sparse model is better (smaller, faster, more accurate), red where
it is worse, grey where nothing changed or the speed ratio is within its spread. The speed panel and the title use the
benchmark's own outcome, so the picture never says more than the verdict. ``plot_sensitivity`` draws a scan's
curves (mAP50, or the metric it chose by, against the ratio of each layer group, the chosen ratios marked).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

from .bench.stats import ratio_text
from .checkpoint import atomic_write_bytes
from .metrics import ACCURACY_KEYS

__all__ = [
    "BAD",
    "GOOD",
    "NEUTRAL",
    "plot_comparison",
    "plot_sensitivity",
    "plot_tradeoff",
    "row_colour",
    "speed_words",
    "tradeoff_metric",
]

GOOD, BAD, NEUTRAL = "tab:green", "tab:red", "tab:gray"
LOWER_IS_BETTER = ("total params", "nonzero params", "GFLOPs", "file size (MB)")
OUTCOME_COLOURS = {"speed-up": GOOD, "slow-down": BAD, "none": NEUTRAL}
OUTCOME_WORDS = {"speed-up": "faster", "slow-down": "slower", "none": "no measurable speed-up"}


def row_colour(metric: str, rel_change: float) -> str:
    """Green when a relative change is good for ``metric``, red when bad, grey when there is none.

    Examples:
        >>> row_colour("GFLOPs", -0.5), row_colour("mAP50", -0.01), row_colour("total params", 0.0)
        ('tab:green', 'tab:red', 'tab:gray')
    """
    if rel_change == 0:
        return NEUTRAL
    better = rel_change < 0 if metric in LOWER_IS_BETTER else rel_change > 0
    return GOOD if better else BAD


def speed_words(timing: Mapping[str, Any]) -> str:
    """What one backend's timing shows, in the words of the plot: ``1.67x faster``, ``1.20x slower`` or no speed-up.

    The outcome comes from the benchmark (``bench.outcome``: the spread decides), the factor from the median ratio.

    Examples:
        >>> speed_words({"outcome": "speed-up", "ratio": {"median": 0.6}})
        '1.67x faster'
        >>> speed_words({"outcome": "none", "ratio": {"median": 0.9}})
        'no measurable speed-up'
    """
    median = timing["ratio"]["median"]
    if timing["outcome"] == "none":
        return OUTCOME_WORDS["none"]
    factor = 1 / median if timing["outcome"] == "speed-up" else median
    return f"{factor:.2f}x {OUTCOME_WORDS[timing['outcome']]}"


def plot_comparison(result: Mapping[str, Any], path: str | Path) -> Path:
    """Draw a three-panel PNG of a ``compare.compare_models`` result.

    1. Size and accuracy: relative change of params, non-zero params, GFLOPs, file size, mAP, P and R.
    2. Speed: the per-round sparse/dense latency ratio of each backend, median with its interquartile range (thick)
       and min-max (thin), against 1.0 (no change) and, where counted, the GFLOPs ratio (the compute expectation).
    3. Weights kept per family: the sparse model's non-zero weights as a share of the dense model's non-zero weights
       in each module family of the dense model (zeros and removed channels both count as gone; blue: reduced, grey:
       untouched); fixed weights (DFL) are left out.

    Args:
        result (Mapping[str, Any]): A ``compare.compare_models`` result.
        path (str | Path): PNG file to create, atomically (its folder is created).

    Returns:
        (Path): ``path``.

    Examples:
        >>> plot_comparison(result, "runs/sparse/compare/compare.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.1, 1.2, 1.1]})
    _size_and_accuracy(ax1, result["rows"])
    headline = _speed(ax2, result.get("benchmark") or {})
    _families(ax3, result)
    kind = result.get("kind") or "?"
    fig.suptitle(f"sparse vs dense ({kind} pair): {headline}", fontsize=13, fontweight="bold")
    fig.tight_layout()
    return _save(fig, path)


def _size_and_accuracy(ax, rows) -> None:
    """Horizontal bars of the relative changes, coloured good/bad; unknown values (no GFLOPs counter) left out."""
    rows = [r for r in rows if r["metric"] in (*LOWER_IS_BETTER, *ACCURACY_KEYS) and r["rel_change"] is not None]
    names = [r["metric"] for r in rows]
    changes = [100 * r["rel_change"] for r in rows]
    ax.barh(names, changes, color=[row_colour(r["metric"], r["rel_change"]) for r in rows])
    limit = 1.45 * max([1.0, *(abs(c) for c in changes)])  # centred on 0, room for the labels
    ax.set_xlim(-limit, limit)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("sparse vs dense (% change)")
    ax.set_title("Size and accuracy\n(green: better, red: worse)", fontsize=10)
    for y, c in enumerate(changes):
        ax.annotate(f"{c:+.1f}%", (c, y), xytext=(3 if c >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if c >= 0 else "right", va="center", fontsize=9)


def _speed(ax, bench: Mapping[str, Any]) -> str:
    """The measured latency ratio per backend with its spread; returns the headline for the figure title."""
    timings = bench.get("timings") or {}
    if not timings:
        ax.set_axis_off()
        ax.set_title("Speed: not measured", fontsize=10)
        return "speed not measured"
    words = []
    for y, (backend, t) in enumerate(timings.items()):
        r, colour = t["ratio"], OUTCOME_COLOURS[t["outcome"]]
        ax.hlines(y, r["min"], r["max"], color=colour, linewidth=1.5, alpha=0.6)
        ax.hlines(y, r["q1"], r["q3"], color=colour, linewidth=12, alpha=0.9)
        ax.plot([r["median"]], [y], marker="|", markersize=26, markeredgewidth=3, color="black")
        said = speed_words(t)
        words.append(f"{backend} {said}")
        ax.annotate(
            f"{said}\nratio {r['median']:.2f}, IQR {ratio_text(r['q1'])}-{ratio_text(r['q3'])}, "
            f"min-max {r['min']:.2f}-{r['max']:.2f}",
            (r["median"], y), xytext=(0, 18), textcoords="offset points", ha="center", va="bottom", fontsize=9,
            color=colour, fontweight="bold", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85},
        )
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="1.0: same speed")
    expected = bench.get("gflops_ratio")
    if expected is not None and bench.get("kind") == "structured":
        ax.axvline(expected, color="tab:blue", linestyle=":", linewidth=1.5, label=f"GFLOPs ratio {expected:.2f}")
    # the view spans the IQRs, 1.0 and the GFLOPs ratio; far outliers of min-max run off the edge (their values are
    # in the labels)
    marks = [v for t in timings.values() for v in (t["ratio"]["q1"], t["ratio"]["q3"])] + [expected or 1.0, 1.0]
    pad = 0.35 * max(0.2, max(marks) - min(marks))
    ax.set_xlim(max(0.0, min(marks) - pad), max(marks) + pad)
    ax.set_ylim(len(timings) - 0.4, -0.8)
    ax.set_yticks(range(len(timings)), list(timings))
    ax.set_xlabel("latency sparse / dense per round (< 1: sparse faster)")
    ax.set_title("Speed (thick: IQR, thin: min-max, |: median)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return ", ".join(words)


def _families(ax, result: Mapping[str, Any]) -> None:
    """Bars of the sparse model's non-zero weights per family as a share of the dense model's non-zero weights."""
    dense = {f["family"]: f["params"] - f["zeros"] for f in result["dense"]["families"] if f["family"] != "fixed"}
    sparse = {f["family"]: f["params"] - f["zeros"] for f in result["sparse"]["families"] if f["family"] != "fixed"}
    families = [f for f, params in dense.items() if params]
    kept = [100 * sparse.get(f, 0) / dense[f] for f in families]
    colours = [NEUTRAL if k >= 99.995 else "tab:blue" for k in kept]
    ax.bar(range(len(families)), kept, color=colours)
    ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
    ax.axhline(100, color="black", linewidth=0.8)
    ax.set_ylim(0, 118)
    ax.set_ylabel("non-zero weights kept (% of dense)")
    ax.set_title(f"Weights kept per family (rules: {result['settings'].get('rules_name', '?')})", fontsize=10)
    for x, k in enumerate(kept):
        ax.annotate(f"{k:.1f}%" if 99.5 <= k < 100 else f"{k:.0f}%", (x, k), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)


def plot_sensitivity(result: Mapping[str, Any], path: str | Path, target: tuple[str, float]) -> Path:
    """Draw a scan's curves: its metric (mAP50 unless ``metric`` says otherwise) against one group's ratio.

    Each group is one line through its measured points: from the dense model (ratio 0) when the others were dense,
    or through its base ratio when the others were kept at the base allocation. A star marks the ratio chosen for
    it, at the value its curve predicts there. Dashed: the dense model's; dash-dotted: the base allocation's; dotted:
    the value measured with all chosen ratios applied at once; solid black: the value measured for the ratios
    written (the best measured allocation; the legend gives each group's written ratio).

    Args:
        result (Mapping[str, Any]): A :func:`ultra_sparse.scan.scan` result with ``method`` added.
        path (str | Path): PNG file to create, atomically (its folder is created).
        target (tuple[str, float]): The overall target the scan was made for, ``("sparsity", S)`` or
            ``("flops", F)`` (:func:`ultra_sparse.scan.target_of`).

    Returns:
        (Path): ``path``.

    Examples:
        >>> plot_sensitivity(result, "runs/sparse/scan/sensitivity.png", ("sparsity", 0.7))  # doctest: +SKIP
    """
    plt = _pyplot()
    key, goal = target
    at = f"{goal:.0%}" + (" of GFLOPs" if key == "flops" else "")
    metric = result.get("metric", "mAP50")
    dense, base = result["dense"][metric], result.get("base")
    reference = base[metric] if base else dense
    by_flops = result.get("size_unit") == "FLOPs"  # share of what the groups remove per ratio, else of weights
    share = {g["name"]: g["size"] if by_flops else g["params"] for g in result["groups"]}
    total, of = sum(share.values()), "GFLOPs" if by_flops else "weights"
    colors = plt.get_cmap("tab20" if len(result["groups"]) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(12, 6), tight_layout=True)
    written = result.get("written", result["measured"])[metric]
    values = [dense, reference, result["measured"][metric], written]
    for i, group in enumerate(result["groups"]):
        start = [(group["base_ratio"], reference)] if base else [(0.0, dense)]
        points = sorted(start + [(p["ratio"], p[metric]) for p in group["points"]])
        values += [y for _, y in points]
        color = colors(i % colors.N)
        label = f"{group['name']} ({share[group['name']] / total:.0%} of {of}): {group['written_ratio']:.0%}"
        ax.plot([100 * x for x, _ in points], [y for _, y in points], "o-", color=color, markersize=4, linewidth=1.5,
                label=label)
        ax.plot(100 * group["chosen_ratio"], reference - group["predicted_loss"], "*", color=color, markersize=15,
                markeredgecolor="black", markeredgewidth=0.6)
    ax.axhline(dense, color="black", linestyle="--", linewidth=1, label=f"dense: {dense:.3f}")
    if base:
        ax.axhline(reference, color="gray", linestyle="-.", linewidth=1.2,
                   label=f"base (input rules at {at}): {reference:.3f}")
    ax.axhline(values[2], color="tab:red", linestyle=":", linewidth=1.5,
               label=f"chosen ratios at {at}: {values[2]:.3f} "
                     f"(predicted {result['predicted'][metric]:.3f})")
    ax.axhline(written, color="black", linestyle="-", linewidth=2.0,
               label=f"written rules ({result.get('written_from', 'choice')}, measured): {written:.3f}")
    context = "the others at the base allocation" if base else "every other group dense"
    unit = "channels" if result.get("method") == "channel" else "weights"
    ax.set_xlabel(f"{unit} of the group pruned (%), {context}")
    ax.set_ylabel(metric)
    ax.set_xlim(0, 100)
    ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.05))
    ax.grid(alpha=0.3)
    ax.set_title("Sensitivity scan: one group moved at a time\n(stars: the choice from these curves; legend: share of "
                 f"{of}, ratio written)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _save(fig, path)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Render ``fig`` as a PNG, write it to ``path`` atomically (its folder is created), close it; return the path."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_tradeoff(artifacts: Mapping[str, Any], path: str | Path) -> Path:
    """Draw every exported artifact on accuracy against latency: the trade-off a deployment is chosen on.

    One colour per model (dense, sparse, each ``also=`` reference), one marker shape per format, filled for FP32 and
    hollow for the quantized precisions (the legend spells each out); the horizontal bar is the latency's interquartile
    range. Up and to the left is better.

    Args:
        artifacts (Mapping[str, Any]): A ``deploy.compare_artifacts`` result whose rows were validated.
        path (str | Path): PNG file to create, atomically.

    Returns:
        (Path): ``path``.

    Examples:
        >>> rows = [{"model": "dense", "format": "onnx", "precision": "FP32", "accuracy": {"mAP50-95": 0.5},
        ...          "latency_ms": {"median": 10.0, "q1": 9.5, "q3": 10.5}}]
        >>> plot_tradeoff({"rows": rows}, "/tmp/tradeoff-example.png").name
        'tradeoff-example.png'
    """
    from matplotlib.lines import Line2D

    plt = _pyplot()
    rows = [r for r in artifacts["rows"] if r.get("accuracy")]
    metric = tradeoff_metric(rows)
    colours = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(r["model"] for r in rows))}
    shapes = {f: "osD^v<>"[i % 7] for i, f in enumerate(dict.fromkeys(r["format"] for r in rows))}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for row in rows:
        lat, colour = row["latency_ms"], colours[row["model"]]
        ax.errorbar(lat["median"], row["accuracy"][metric], xerr=[[lat["median"] - lat["q1"]], [lat["q3"] - lat["median"]]],
                    fmt=shapes[row["format"]], color=colour, markersize=10, capsize=3, alpha=0.85,
                    markerfacecolor=colour if row["precision"] == "FP32" else "white", markeredgewidth=2)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", markersize=9, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], color="black", marker=m, linestyle="", markersize=9, label=f) for f, m in shapes.items()]
    handles += [Line2D([], [], color="black", marker="o", linestyle="", markersize=9, markerfacecolor="white",
                       label="hollow: quantized (INT8/FP16)")] if any(r["precision"] != "FP32" for r in rows) else []
    ax.legend(handles=handles, fontsize=9, loc="best")
    ax.set_xlabel("latency per image, ms (median, IQR bar; batch 1, on this machine)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against latency of every exported artifact (up and left is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def tradeoff_metric(rows: list[Mapping[str, Any]]) -> str:
    """The accuracy a trade-off plot shows: mAP50-95 where the rows report it, else top-1 accuracy, else the first.

    Examples:
        >>> tradeoff_metric([{"accuracy": {"top-1 accuracy": 0.9, "top-5 accuracy": 1.0}}])
        'top-1 accuracy'
    """
    reported = rows[0]["accuracy"] if rows else {}
    return next((m for m in ("mAP50-95", "top-1 accuracy") if m in reported), next(iter(reported), "mAP50-95"))
