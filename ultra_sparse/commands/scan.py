"""``ultra-sparse scan``: measure each layer group's sensitivity and write a rules file that reaches a sparsity."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from ultralytics.nn.tasks import guess_model_task

from .. import __version__
from ..bench import parse_device
from ..calibration import calibration_batches, loss_ready, model_stride
from ..compare import check_inputs
from ..methods import method_of
from ..rules import assign_families, load_rules
from ..scan import (
    Evaluator,
    base_ratios,
    capped_groups,
    check_budget,
    context_ladder,
    make_pruner,
    plan_groups,
    scan,
    weight_flops,
    write_scan,
)
from ..scan.allocation import DEFAULT_BUDGET, DEFAULT_MARGIN
from ..scan.config import ScanConfig
from ..scan.evaluate import check_task
from .common import OUTPUT_KEYS, ROUND_TO_HELP, check_new_file, claim_run_dir, run_dir

__all__ = ["HELP", "KEYS", "run"]

HELP = (
    "usage: ultra-sparse scan model=best.pt data=D sparsity=0.7 [budget=48] [context=target|dense] [groups=12]\n"
    "                         [rules=default] [method=unstructured] [ladder=[0.42,0.7,0.85]] [margin=0.005]\n"
    "                         [metric=mAP50] [importance=l1] [imgsz=640] [batch=16] [device=cpu]\n"
    "       ultra-sparse scan model=best.pt data=D method=channel flops=0.5 [round_to=8] [calib_batches=8] ...\n\n"
    "Sensitivity scan. Splits the prunable weights into groups (each family of the rules, large ones split into runs\n"
    "of layers), moves one group at a time to other ratios and validates every point with Ultralytics' validator;\n"
    "chooses one ratio per group that reaches sparsity= with the least predicted loss of metric= (mAP50 by default,\n"
    "or mAP50-95; both are measured at every point) and validates that choice with all groups pruned together;\n"
    "then, with the validations left in budget=, refines the better of the base allocation and the choice: zeros\n"
    "move from the groups that lose the most per weight to those that lose the least, each candidate validated as\n"
    "a whole and kept only if it gains more than margin=. Writes the best MEASURED allocation as rules.yaml (use it\n"
    "as sparsify/train rules=PATH sparsity=S), and sensitivity.csv, sensitivity.json and sensitivity.png.\n"
    "context=target (default): the others stay at the base allocation (the input rules at sparsity=), each group is\n"
    "tested at half its base zeros and halfway to 95%; the written rules never validate below the base allocation\n"
    "in metric=.\n"
    "context=dense: the others stay dense, each group is tested at the ladder ratios.\n"
    "method=channel (context=dense only, its default): channels are removed; sparsity= is the fraction of prunable\n"
    "parameters removed, or flops= the fraction of GFLOPs (then each group's cost is its metric loss per FLOP\n"
    "removed); every point is refitted on calibration images from data='s train split, as sparsify data= does.\n"
    "Detect, segment, pose and OBB models are scanned by their box mAP; classify models are refused."
)
KEYS = {
    "model": "trained Ultralytics checkpoint (.pt) to scan (required; never changed)",
    "data": "dataset YAML whose val split is validated, by path (required)",
    "sparsity": "overall fraction of zeros over prunable weights the chosen ratios reach, in (0, 1) (required, "
    "or flops= with method=channel)",
    "flops": "method=channel: fraction of GFLOPs the chosen ratios remove, in (0, 1), instead of sparsity=",
    "reconstruct": "method=channel: refit each pruned copy to the dense outputs before it is validated (default "
    "True; False measures the channels removed and nothing else)",
    "calib_batches": "method=channel: calibration batches of 8 train images for the refit (default 8)",
    "round_to": f"{ROUND_TO_HELP}; it changes which plans are possible (docs/scan.md compares scanning at 8 and "
    "at 16)",
    "context": "target (default for method=unstructured): measure each group with the others at the base "
    "allocation; dense (method=channel's only one): with the others dense",
    "groups": "most layer groups scanned, at least one per family; large families are split into runs of layers "
    "of even size, in weights (in FLOPs for flops=) (default 12 for context=target, 9 for context=dense)",
    "budget": f"most validations in all (default {DEFAULT_BUDGET}, about 12 min at imgsz=640 on 2 CPU cores for 150 "
    "val images, twice that for method=channel with its refit); at least dense + base + the curves + the choice; "
    "the rest refines the choice",
    "metric": "what the curves, the choice and the refinement keep: mAP50 (default) or mAP50-95 (box precision); "
    "both are measured and written at every point",
    "margin": f"metric= a refinement candidate must gain over the best allocation so far to be kept (default "
    f"{DEFAULT_MARGIN})",
    "ladder": "context=dense only: ratios each group is tested at, increasing, in (0, 0.95], the last >= "
    "sparsity= (default: 0.6 x target, target, halfway to 1 for the sparsity= or flops= target)",
    "rules": "rule preset (default, tokenc3_lsnet) or path to a rules YAML whose families are scanned "
    "(default: default)",
    "method": "unstructured (default) or channel",
    "importance": "how each point chooses the weights or channels it removes: l1 (default), l2, lamp, taylor (loss "
    "gradients on calib_batches batches of 8 train images, as sparsify importance=taylor ranks); l1l2 with "
    "method=unstructured",
    "imgsz": "image size (default 640)",
    "batch": "batch size (default 16)",
    "device": "cpu (default) or a CUDA device such as 0",
    **OUTPUT_KEYS,
}


def run(args: dict[str, Any]) -> None:
    """Scan ``model=`` on ``data=`` and write the rules file and the sensitivity outputs; raise on bad input."""
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import LOGGER, TQDM

    options, rest = ScanConfig.from_args(args)
    project, name = rest.pop("project", None), rest.pop("name", None)
    model, data = rest.pop("model", None), rest.pop("data", None)
    device = parse_device(rest.pop("device", "cpu"))
    config, (target_key, target) = options.pruning, options.target
    imgsz, metric, ladder = options.imgsz, options.metric, options.ladder
    ruleset = load_rules(config.rules)
    if data is None:
        raise ValueError("data= is required (a dataset YAML)")
    config = config.calibrated(True)
    (network, ckpt), = check_inputs({"model": model}, data).values()
    task = check_task(guess_model_task(network))  # a scan chooses by box mAP: refuse classify before anything runs
    check_det_dataset(str(data), autodownload=False)  # a YAML that is no dataset fails here, not inside the scan
    assignment = assign_families(network, ruleset)
    cost = weight_flops(network, assignment, imgsz) if target_key == "flops" else None  # groups follow the compute
    plan = plan_groups(assignment, options.groups, cost)
    if not plan:
        raise ValueError(f"rules={config.rules!r} leave no prunable weight in model={model}")
    check_new_file(run_dir(project, name, "scan"), "project")

    network.to(device)
    batches = None
    if config.reconstruct or config.importance == "taylor":
        batches = list(calibration_batches(data, imgsz, 8, config.calib_batches, model_stride(network), device, task))
    pruner = make_pruner(network, config, batches)
    with loss_ready(network):  # importance=taylor runs the model's own loss on the calibration batches
        base = base_ratios(pruner, ruleset, plan, target) if options.context == "target" else None
    ladders = {g.name: context_ladder(base[g.name]) if base else ladder for g in plan}
    curves = check_budget(None, ladders, base is not None)
    check_budget(options.budget, ladders, base is not None)
    LOGGER.info(
        f"ultra-sparse scan: {len(plan)} groups, {curves} validations for the curves and the choice (others "
        f"{'at the base allocation' if base else 'dense'}), up to {options.budget - curves} more to refine it; "
        f"{data} at imgsz={imgsz}"
    )
    single_cls = bool((ckpt.get("train_args") or {}).get("single_cls", False))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ultra-sparse-scan-") as workdir:
        evaluate = Evaluator(data, imgsz, options.batch, device, workdir, single_cls=single_cls, task=task)
        bar = TQDM(total=options.budget, desc="scan")  # the ETA is for the whole budget; refining may stop sooner

        def advance(done: str) -> None:
            bar.set_description(f"scan: {done}")
            bar.update(1)

        try:
            with loss_ready(network):
                result = scan(pruner, evaluate, ruleset, plan, ladders, target, base, advance, options.budget,
                              options.margin, metric)
        finally:
            if bar.n:  # a scan that stopped before its first validation keeps its total (a zero total divides by 0)
                bar.total = bar.n
            bar.close()
    wall = time.perf_counter() - start
    settings = {"model": str(model), "data": str(data), "imgsz": imgsz, "batch": options.batch, "device": device,
                "method": config.method, "rules_in": ruleset.name, "context": options.context,
                "groups_max": options.groups, "margin": options.margin,
                "ladder": None if ladder is None else list(ladder)}
    refit = f", refitted on {sum(len(b['img']) for b in batches)} calibration images" if batches else ""
    channels = method_of(config).removes
    result = {
        "version": __version__, **settings, "sparsity": config.sparsity, "flops": config.flops,
        "reconstruct": config.reconstruct, "calib_batches": config.calib_batches if batches else None,
        "round_to": config.round_to if channels else None,
        "importance": config.importance, "scope": config.scope, "wall_s": round(wall, 1), **result,
        "description": f"scanned by ultra-sparse {__version__} on {model} with {data} at imgsz={imgsz} for "
        f"{target_key}={target} by {metric} (method={config.method}, importance={config.importance}, "
        f"scope={config.scope}{refit})",
    }
    paths = write_scan(result, claim_run_dir(project, name, "scan"))
    base_line = f"base allocation {result['base'][metric]:.4f}; " if result["base"] else ""
    unit = " of its channels" if channels else ""
    kept, tried = sum(t["accepted"] for t in result["refinement"]), len(result["refinement"])
    LOGGER.info(
        f"\nultra-sparse scan: {result['validations']} validations in {wall / 60:.1f} min "
        f"({result['seconds_per_validation']:.1f} s each); dense {metric} {result['dense'][metric]:.4f}; {base_line}"
        f"chosen ratios at {target_key}={target}: predicted {result['predicted'][metric]:.4f}, "
        f"measured {result['measured'][metric]:.4f}; refined from the {result['refined_from']}: {kept} of {tried} "
        "moves kept\n"
        f"  written ({result['written_from']}): mAP50 {result['written']['mAP50']:.4f}, "
        f"mAP50-95 {result['written']['mAP50-95']:.4f}\n"
        + "\n".join(f"  {g['name']:>16s} {g['params']:>10,d} weights -> {g['written_ratio']:.2%}{unit}"
                    for g in result["groups"])
        + f"\n  rules  {paths['rules']}\n  curves {paths['csv']}, {paths['json']}, {paths['plot']}\n"
        f"  next:  ultra-sparse sparsify model={model} rules={paths['rules']} {target_key}={target}"
        + (f" method={config.method} round_to={config.round_to}" if channels else "")
        + (f" data={data}" if batches else "")
        + (f" importance={config.importance}" if config.importance != "l1" else "")
    )
    capped = capped_groups(result)
    if ladder is not None and len(capped) > len(result["groups"]) // 2:
        LOGGER.warning(
            f"ultra-sparse scan: {len(capped)} of {len(result['groups'])} groups are written at the highest ratio "
            f"tested ({ladder[-1]:.0%}): the target is near what the ladder reaches and the choice had little room; "
            f"scan again with higher ratios, e.g. ladder=[{ladder[0]:g},{(ladder[0] + 0.9) / 2:.2g},0.9]"
        )

