"""``ultra-sparse report``: the sparsity tables of any checkpoint, no data needed."""

from __future__ import annotations

from typing import Any

from ..checkpoint import checkpoint_file_size, load_checkpoint
from ..report import log_report, pattern_of, report_documents, sparsity_report
from ..metadata import SparseMetadata, recorded_rules
from ..rules import load_rules
from .common import OUTPUT_KEYS, check_new_file, claim_run_dir, run_dir, write_new_files

__all__ = ["FLAGS", "HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse report model=W [rules=default] [save=False]\n\n"
    "Prints the file size, per-family and per-layer zeros of a checkpoint and totals over prunable weights and all\n"
    "parameters. With save=True, also writes report.json and report.md to a new run folder <project>/<name>."
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
    if args.get("save"):
        check_new_file(run_dir(args.get("project"), args.get("name"), "report"), "project")
    model, ckpt = load_checkpoint(args["model"])
    metadata = SparseMetadata.from_ckpt(ckpt) or SparseMetadata({})
    recorded = recorded_rules(metadata)
    rules = args.get("rules") or recorded
    config = metadata.config or None
    same = recorded == metadata.config.get("rules") and load_rules(rules) == load_rules(recorded)
    ratios = metadata.result.get("family_ratios") if same else None
    report = sparsity_report(model, rules, ratios, config, pattern=pattern_of(config))
    if metadata.result.get("channel"):  # what channel pruning removed (recorded when it ran: those channels are gone)
        report["channel"] = metadata.result["channel"]
    report["file"] = checkpoint_file_size(args["model"])
    title = f"Sparsity report: {args['model']}"
    log_report(report, title=title, layers=bool(args.get("layers")))
    if args.get("save"):
        folder = claim_run_dir(args.get("project"), args.get("name"), "report")
        paths = (folder / "report.json", folder / "report.md")
        write_new_files(dict(zip(paths, report_documents(report, title))), folder)
        LOGGER.info(f"ultra-sparse: reports written to {paths[0]}, {paths[1]}")
