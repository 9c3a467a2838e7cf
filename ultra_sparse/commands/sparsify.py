"""``ultra-sparse sparsify``: one-shot sparsification of a checkpoint into a new checkpoint plus reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import __version__
from ..calibration import calibration_batches, loss_ready
from ..checkpoint import METADATA_KEY, load_checkpoint, save_checkpoint
from ..config import SparsityConfig
from ..oneshot import sparsify
from ..bench import parse_device
from ..report import log_report, write_report
from ..rules import load_rules
from .common import OUTPUT_KEYS, check_writable, positive_int, save_dir

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse sparsify model=best.pt [sparsity=0.10] [rules=default] [importance=l1] [scope=global]\n"
    "                             [method=unstructured|nm] [nm=2:4] [data=D] [name=..] [out=PATH]\n\n"
    "Zeroes weights of a trained checkpoint family by family (method=nm: N of every M consecutive input-channel\n"
    "weights kept) and writes a NEW checkpoint (never the input), with report.json and report.md beside it.\n"
    "The output loads with plain YOLO(path)."
)
KEYS = {
    "model": "trained Ultralytics checkpoint (.pt) to sparsify (required)",
    "method": "unstructured (default: zeros anywhere, exact sparsity=) or nm (N:M semi-structured zeros for "
    "sparse tensor cores; the pattern fixes the zeros, so sparsity= is not taken)",
    "nm": "method=nm: N:M pattern, N kept in every group of M consecutive input channels (default 2:4); layers "
    "whose input channels per group are not a multiple of M stay dense and are listed in the report",
    "sparsity": "overall fraction of zeros over prunable weights, in [0, 1); all family ratios are scaled by one "
    "factor to hit it exactly (default: apply the rule ratios as written)",
    "rules": "rule preset (default, tokenc3_lsnet) or path to a rules YAML (default: default)",
    "importance": "l1 (default), l2, l1l2 (rank like l1), lamp, taylor (needs data=)",
    "scope": "global: each family loses its ratio as a whole, ranked across its layers (default); layer: each "
    "layer loses its family's ratio (the reference scheme's per-layer way; far less accurate at high sparsity)",
    "data": "dataset YAML whose train split calibrates importance=taylor",
    "imgsz": "image size of the calibration batches (default 640)",
    "batch": "calibration batch size (default 8)",
    "calib_batches": "number of calibration batches for taylor (default 8)",
    "device": "device for taylor calibration: cpu (default), a CUDA index such as 0, or cuda:N",
    **OUTPUT_KEYS,
    "out": "exact path of the sparse checkpoint to create (default: <project>/<name>/weights/<stem>-sparse.pt, "
    "for method=nm <stem>-<N>of<M>.pt, e.g. best-2of4.pt)",
}


def run(args: dict[str, Any]) -> None:
    """Sparsify ``args['model']`` and write the checkpoint and reports; raise ValueError etc. on bad input."""
    from ultralytics.utils import LOGGER

    args = dict(args)
    model_path = args.pop("model", None)
    if not model_path:
        raise ValueError("model= is required, e.g. model=runs/detect/train/weights/best.pt")
    out = args.pop("out", None)
    project, name = args.pop("project", None), args.pop("name", None)
    data, device = args.pop("data", None), parse_device(args.pop("device", "cpu"))
    imgsz, batch = positive_int("imgsz", args.pop("imgsz", 640)), positive_int("batch", args.pop("batch", 8))
    config, _ = SparsityConfig.from_args(args)
    load_rules(config.rules)  # fail on a bad rules file before any work
    if config.importance == "taylor" and not data:
        raise ValueError("importance=taylor needs data= (a dataset YAML whose train split calibrates it)")
    model_path = Path(model_path)
    if out is not None:
        out = Path(out)
        if out.suffix != ".pt":
            raise ValueError(f"out={out} must end in .pt")
        if out.exists():
            raise FileExistsError(f"out={out} already exists; choose a new path")
        check_writable(out.parent)
    folder = out.parent if out is not None else save_dir(project, name, "sparsify")
    weights = out if out is not None else folder / "weights" / f"{model_path.stem}-{_suffix(config)}.pt"
    model, ckpt = load_checkpoint(model_path)

    batches = None
    if config.importance == "taylor":
        model.to(device)
        stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32
        batches = calibration_batches(data, imgsz, batch, config.calib_batches, stride, device)
    with loss_ready(model):
        result = sparsify(model, config, batches=batches)
    model.cpu()

    metadata = {
        "version": __version__,
        "source": str(model_path),
        "config": config.to_dict(),
        "scale": result.scale,
        "family_ratios": {f["family"]: f["ratio_asked"] for f in result.report["families"]},
        "totals": result.report["totals"],
    }
    save_checkpoint(model, ckpt, weights, metadata)
    json_path, md_path = write_report(result.report, folder, title=f"Sparsity report: {weights.name}")
    t, nm = result.report["totals"], result.report["nm"]
    log_report(result.report, title=f"Sparsity report: {weights.name}")
    pattern = f"; {nm['pattern']} holds in all {nm['eligible_layers']} eligible layers" if nm and nm["holds"] else ""
    LOGGER.info(
        f"\nultra-sparse: {t['prunable']['sparsity']:.2%} zeros over prunable weights{pattern} "
        f"({t['all']['nonzero']:,}/{t['all']['params']:,} parameters non-zero)\n"
        f"  checkpoint {weights}\n  reports    {json_path}, {md_path}"
    )
    if METADATA_KEY in ckpt:
        LOGGER.info(f"  note: {model_path} was already sparse; its zeros were kept and counted toward the target")


def _suffix(config: SparsityConfig) -> str:
    """The output name's suffix: ``sparse``, or ``2of4`` for ``method=nm nm=2:4``."""
    if config.method == "nm":
        n, m = config.nm_pattern
        return f"{n}of{m}"
    return "sparse"
