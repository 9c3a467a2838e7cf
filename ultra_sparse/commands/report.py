"""``ultra-sparse report``: the sparsity tables of any checkpoint, no data needed."""

from __future__ import annotations

from typing import Any

from ..checkpoint import METADATA_KEY, load_checkpoint
from ..report import log_report, pattern_of, sparsity_report, write_report
from .common import OUTPUT_KEYS, save_dir

__all__ = ["FLAGS", "HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse report model=W [rules=default] [save=False]\n\n"
    "Prints per-family and per-layer zeros of a checkpoint and totals over prunable weights and all parameters.\n"
    "With save=True, also writes report.json and report.md to <project>/<name>."
)
KEYS = {
    "model": "Ultralytics checkpoint (.pt) (required)",
    "rules": "rule preset or YAML to group weights by (default: the rules the checkpoint was sparsified with, "
    "else default)",
    "layers": "also print the per-layer table (default False)",
    "save": "write report.json and report.md (default False)",
    **OUTPUT_KEYS,
}
FLAGS = ("layers", "save")


def run(args: dict[str, Any]) -> None:
    """Print (and optionally save) the report of ``args['model']``."""
    from ultralytics.utils import LOGGER

    if not args.get("model"):
        raise ValueError("model= is required, e.g. model=runs/sparse/sparsify/weights/best-sparse.pt")
    folder = save_dir(args.get("project"), args.get("name"), "report") if args.get("save") else None
    model, ckpt = load_checkpoint(args["model"])
    metadata = ckpt.get(METADATA_KEY) or {}
    rules = args.get("rules") or (metadata.get("config") or {}).get("rules") or "default"
    asked = metadata.get("family_ratios") if rules == (metadata.get("config") or {}).get("rules") else None
    config = metadata.get("config")
    report = sparsity_report(model, rules, asked, config, pattern=pattern_of(config))
    if metadata.get("channel"):  # what channel pruning removed (recorded when it ran: the removed channels are gone)
        report["channel"] = metadata["channel"]
    log_report(report, title=f"Sparsity report: {args['model']}", layers=args.get("layers", False))
    if folder is not None:
        paths = write_report(report, folder, f"Sparsity report: {args['model']}")
        LOGGER.info(f"ultra-sparse: reports written to {paths[0]}, {paths[1]}")

