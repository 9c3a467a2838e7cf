"""``ultra-sparse sparsify``: one-shot sparsification of a checkpoint into a new checkpoint plus reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ultralytics.nn.tasks import guess_model_task

from ..bench import parse_device
from ..calibration import calibration_batches, loss_ready, model_imgsz, model_stride
from ..checkpoint import check_finite, checkpoint_bytes, checkpoint_file_size, load_checkpoint
from ..config import SparsityConfig, check_imgsz, positive_int
from ..importance import TAYLOR_NEEDS_DATA
from ..latency import check_latency_settings, find_flops
from ..metadata import SparseMetadata
from ..methods import method_of
from ..oneshot import sparsify
from ..report import format_file_size, log_report, report_documents
from ..rules import load_rules
from .common import (
    OUTPUT_KEYS,
    ROUND_TO_HELP,
    check_new_file,
    claim_run_dir,
    run_dir,
    write_new_files,
)

__all__ = ["FLAGS", "HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse sparsify model=best.pt [sparsity=0.10 | flops=0.5] [rules=default] [importance=l1]\n"
    "                             [scope=global|layer] [method=unstructured|channel|nm] [nm=2:4] [round_to=8] [data=D]\n"
    "                             [reconstruct=True] [latency=0.6 backend=openvino [quantize=8] [probes=7]]\n"
    "                             [name=..] [out=PATH] [compress=True]\n\n"
    "Zeroes weights of a trained checkpoint family by family (method=nm: N of every M consecutive input-channel\n"
    "weights kept), or removes whole channels (method=channel: smaller, faster dense layers), and writes a NEW\n"
    "checkpoint (never the input), with <checkpoint>-report.json and <checkpoint>-report.md beside it. The output\n"
    "loads with plain YOLO(path); fine-tune a channel-pruned one with 'ultra-sparse train' (stock 'yolo train'\n"
    "rebuilds the full-width model)."
)
KEYS = {
    "model": "trained Ultralytics checkpoint (.pt) to sparsify (required)",
    "method": "unstructured (default: zeros anywhere, exact sparsity=), channel (whole channels removed: real speed "
    "and size; sparsity= is the fraction of prunable params removed, flops= of GFLOPs) or nm (N:M semi-structured "
    "zeros for sparse tensor cores; the pattern fixes the zeros, so sparsity= is not taken)",
    "flops": "method=channel: fraction of GFLOPs to remove (Ultralytics' get_flops at the model's imgsz), in [0, 1)",
    "latency": "method=channel: latency to reach, as a ratio to the dense model's FP32 latency on backend= (e.g. "
    "0.6); flops= is found by measuring: candidates are pruned, exported and timed against the dense model on this "
    "machine",
    "backend": "with latency=: the runtime timed, onnxruntime, openvino or torchscript",
    "quantize": "with latency=: the precision timed, 32 (default), 16 or 8 (INT8, calibrated on data=)",
    "probes": "with latency=: at most this many candidates are pruned, exported and timed (default 7)",
    "round_to": ROUND_TO_HELP,
    "nm": "method=nm: N:M pattern, N kept in every group of M consecutive input channels (default 2:4); layers "
    "whose input channels per group are not a multiple of M stay dense and are listed in the report",
    "sparsity": "overall fraction of zeros over prunable weights, in [0, 1); all family ratios are scaled by one "
    "factor to hit it exactly (default: apply the rule ratios as written)",
    "rules": "rule preset (default, tokenc3_lsnet, thin_head: the Detect head's hidden layers pruned too, for "
    "latency targets) or path to a rules YAML (default: default)",
    "importance": "l1 (default), l2, l1l2 (rank like l1; not for method=channel), lamp, taylor (needs data=)",
    "scope": "global: each family loses its ratio as a whole, ranked across its layers (default for unstructured "
    "and nm; far more accurate at high sparsity); layer: each layer loses its family's ratio (the reference scheme's "
    "per-layer way; default for method=channel, where a global ranking empties some layers)",
    "data": "dataset YAML whose train split calibrates importance=taylor and, for method=channel, refits the layers "
    "that lost input channels (reconstruct)",
    "reconstruct": "method=channel: refit every conv that lost input channels to the dense model's outputs on the "
    "calibration images (least squares; default True when data= is given, which it needs)",
    "imgsz": "image size of the calibration batches; method=channel counts GFLOPs at it (default: the model's "
    "training imgsz, else 640)",
    "batch": "calibration batch size (default 8)",
    "calib_batches": "number of calibration batches for taylor and reconstruct (default 8; reconstruct runs them "
    "as one batch, so memory grows with calib_batches x batch)",
    "device": "device for calibration (taylor, reconstruct): cpu (default), a CUDA index such as 0, or cuda:N",
    "compress": "write the checkpoint with DEFLATE-compressed zip entries: much smaller for sparse weights, still "
    "loads with plain YOLO(path) (default True)",
    **OUTPUT_KEYS,
    "out": "exact path of the checkpoint to create; reports go beside it as <stem>-report.json/.md (default: "
    "<project>/<name>/weights/<stem>-sparse.pt, for method=channel <stem>-pruned.pt, for method=nm "
    "<stem>-<N>of<M>.pt such as best-2of4.pt; reports in <project>/<name>)",
}
FLAGS = ("compress",)


def run(args: dict[str, Any]) -> None:
    """Sparsify ``args['model']`` and write the checkpoint and reports; raise ValueError etc. on bad input.

    Every input and every output path is checked before the work starts; the run folder is claimed and the files
    are written only at the end, each once and atomically.
    """
    from ultralytics.utils import LOGGER

    args = dict(args)
    model_path = args.pop("model", None)
    if not model_path:
        raise ValueError("model= is required, e.g. model=runs/detect/train/weights/best.pt")
    out = args.pop("out", None)
    project, name = args.pop("project", None), args.pop("name", None)
    data, device = args.pop("data", None), parse_device(args.pop("device", "cpu"))
    given_imgsz = check_imgsz(args.pop("imgsz")) if "imgsz" in args else None
    batch = positive_int("batch", args.pop("batch", 8))
    compress = args.pop("compress", True)
    if not isinstance(compress, bool):
        raise TypeError(f"compress={compress!r} must be True or False")
    latency, backend, quantize = args.pop("latency", None), args.pop("backend", None), args.pop("quantize", 32)
    probes = args.pop("probes", 7)
    config, _ = SparsityConfig.from_args(args)
    load_rules(config.rules)  # fail on a bad rules file before any work
    target = check_latency_settings(latency, backend, quantize, config, data, probes) if latency is not None else None
    if target is None and (backend is not None or quantize != 32 or probes != 7):
        raise ValueError("backend=, quantize= and probes= go with latency= (a measured target: latency=0.6 backend=openvino)")
    if config.importance == "taylor" and not data:
        raise ValueError(TAYLOR_NEEDS_DATA)
    config = config.calibrated(bool(data))
    model_path = Path(model_path)
    model, ckpt = load_checkpoint(model_path)
    check_finite(model, f"model={model_path}")
    imgsz = given_imgsz or model_imgsz(model)
    weights_name = f"{model_path.stem}-{method_of(config).suffix(config)}.pt"
    if out is not None:
        out = Path(out)
        if out.suffix != ".pt":
            raise ValueError(f"out={out} must end in .pt")
        outputs = _outputs(out, out.parent)
    else:
        planned = run_dir(project, name, "sparsify")
        outputs = _outputs(planned / "weights" / weights_name, planned)
    for path in outputs:
        check_new_file(path, "out" if out is not None else "project")

    search = None
    if target is not None:
        config, search = find_flops(model, config, target, imgsz, data)
    batches = None
    if config.importance == "taylor" or config.reconstruct:
        model.to(device)
        task = guess_model_task(model)  # taylor's loss reads the task's own labels (masks, keypoints, angles)
        batches = calibration_batches(data, imgsz, batch, config.calib_batches, model_stride(model), device, task)
    with loss_ready(model):
        result = sparsify(model, config, batches=batches, imgsz=given_imgsz)
    model.cpu()

    metadata = SparseMetadata.of_result(result, config, source=str(model_path))
    payload = checkpoint_bytes(model, ckpt, metadata, compress=compress)
    report = {**result.report, "file": checkpoint_file_size(payload), **({"latency_search": search} if search else {})}
    claimed = None
    if out is None:
        claimed = claim_run_dir(project, name, "sparsify")
        outputs = _outputs(claimed / "weights" / weights_name, claimed)
    weights, json_path, md_path = outputs
    write_new_files(
        dict(zip((weights, json_path, md_path), (payload, *report_documents(report, f"Sparsity report: {weights.name}")))),
        claimed,
    )
    log_report(result.report, title=f"Sparsity report: {weights.name}")
    if method_of(config).removes:
        _log_channel(result.report["channel"], weights, json_path, md_path, search)
        return
    t, nm = result.report["totals"], result.report["nm"]
    pattern = f"; {nm['pattern']} holds in all {nm['eligible_layers']} eligible layers" if nm and nm["holds"] else ""
    LOGGER.info(
        f"\nultra-sparse: {t['prunable']['sparsity']:.2%} zeros over prunable weights{pattern} "
        f"({t['all']['nonzero']:,}/{t['all']['params']:,} parameters non-zero)\n"
        f"  checkpoint {weights}, {format_file_size(report['file'])}\n  reports    {json_path}, {md_path}"
    )
    if SparseMetadata.from_ckpt(ckpt) is not None:
        LOGGER.info(f"  note: {model_path} was already sparse; its zeros were kept and counted toward the target")


def _outputs(weights: Path, folder: Path) -> tuple[Path, Path, Path]:
    """The checkpoint and its two reports in ``folder``, named after it: ``a.pt`` -> ``a-report.json``, ``.md``."""
    stem = f"{weights.stem}-report"
    return weights, folder / f"{stem}.json", folder / f"{stem}.md"


def _log_channel(section: dict[str, Any], weights: Path, json_path: Path, md_path: Path, search: dict | None) -> None:
    """The closing lines of a ``method=channel`` run: sizes, the latency search, and whether it needs a refit."""
    from ultralytics.utils import LOGGER

    if search:
        c = search["chosen"]
        LOGGER.info(
            f"\nultra-sparse: latency={search['latency']} on {search['backend']} (quantize={search['quantize']}): "
            f"flops={c['flops']} measured {c['ratio']:.3f} of dense (IQR {c['iqr']:.3f}) after {len(search['probes'])} "
            f"probes in {search['wall_s']:.0f} s; {search['note']}"
        )
    if not section.get("reconstruction"):
        LOGGER.warning(
            "ultra-sparse: no refit without data=: a channel-pruned model may detect little until it is refitted "
            "(sparsify ... data=D) or fine-tuned ('ultra-sparse train')"
        )

    p, g = section["params"], section["gflops"]
    ratio = g["after"] / g["before"] if g["before"] else float("nan")
    LOGGER.info(
        f"\nultra-sparse: channels removed: params {p['before']:,} -> {p['after']:,}, GFLOPs {g['before']:.4g} -> "
        f"{g['after']:.4g} ({ratio:.2f}x) at imgsz {section['imgsz']}; {len(section['whole'])} blocks kept whole"
        + (f", {len(section['inside'])} attention blocks pruned inside" if section.get("inside") else "") + "\n"
        f"  checkpoint {weights}, {format_file_size(checkpoint_file_size(weights))} (fine-tune it with 'ultra-sparse train', "
        f"not 'yolo train')\n"
        f"  reports    {json_path}, {md_path}"
    )
