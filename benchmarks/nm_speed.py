"""Dense against 2:4 (method=nm) on a CUDA GPU with sparse tensor cores: per-layer GEMMs in torch, whole models in TensorRT.

Models are built from YAML with random weights (fine for timing) and made 2:4 with ``sparsify(method="nm")``.

1. torch: every eligible, ungrouped convolution run as the GEMM it lowers to (rows = batch x output positions,
   K = kernel positions x input channels, input channel innermost), dense fp16 ``F.linear`` against the same weight
   as ``torch.sparse.to_sparse_semi_structured``. torch has no semi-structured convolution, so this times the GEMMs
   only, grouped by output channels (NVIDIA reports gains only for large layers).
2. TensorRT (where ``tensorrt`` >= 10 imports): both models exported to fp16 ONNX by Ultralytics, engines built with
   identical flags (FP16 and SPARSE_WEIGHTS; Ultralytics' own ``format=engine`` export does not set
   SPARSE_WEIGHTS), end-to-end latency of each engine.

Timed runs alternate dense and sparse after warm-up (``ultra_sparse.bench.time_interleaved``, CUDA synchronised);
the script prints medians, IQRs and the honest verdict of the per-round ratios. Without CUDA it says so and exits 0.

Usage:
    python benchmarks/nm_speed.py [--models yolov9t.yaml yolo11l.yaml yolo11x.yaml] [--imgsz 640] [--batches 1 16]
                                  [--runs 50] [--warmup 10] [--json results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ultra_sparse.bench import ratio_summary, summarize, time_interleaved, verdict
from ultra_sparse.checkpoint import save_checkpoint
from ultra_sparse.oneshot import sparsify

BUCKETS = ((0, 128), (129, 256), (257, 512), (513, 1 << 30))  # output channels


def gemm_layers(net: nn.Module, imgsz: int, weights: set[str]) -> list[dict]:
    """The ungrouped Conv2d layers owning ``weights`` with their GEMM shape: out, K and output positions per image."""
    positions, hooks = {}, []

    def record(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            positions[name] = output.shape[-2] * output.shape[-1]

        return hook

    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.groups == 1 and f"{name}.weight" in weights:
            hooks.append(module.register_forward_hook(record(name)))
    param = next(net.parameters())
    with torch.inference_mode():
        net(torch.zeros(1, 3, imgsz, imgsz, device=param.device, dtype=param.dtype))
    for hook in hooks:
        hook.remove()
    modules = dict(net.named_modules())
    return [
        {"name": name, "out": modules[name].out_channels, "k": modules[name].weight[0].numel(), "positions": n, "module": modules[name]}
        for name, n in positions.items()
    ]


def time_gemms(sparse_net: nn.Module, weights: set[str], imgsz: int, batch: int, runs: int, warmup: int) -> dict:
    """Dense against semi-structured GEMM time of the 2:4 ``weights`` of the model, summed per channel bucket."""
    from torch.sparse import to_sparse_semi_structured

    buckets = {b: {"layers": 0, "dense": [0.0] * runs, "sparse": [0.0] * runs} for b in BUCKETS}
    skipped = 0
    for layer in gemm_layers(sparse_net, imgsz, weights):
        rows, out, k = batch * layer["positions"], layer["out"], layer["k"]
        if out % 32 or k % 64 or rows % 8:  # the semi-structured kernels' shape constraints for fp16
            skipped += 1
            continue
        weight = layer["module"].weight.detach().half().cuda().permute(0, 2, 3, 1).reshape(out, k).contiguous()
        sparse_weight = to_sparse_semi_structured(weight)
        x = torch.randn(rows, k, device="cuda", dtype=torch.float16)
        with torch.inference_mode():
            times = time_interleaved(
                {"dense": lambda: F.linear(x, weight), "sparse": lambda: F.linear(x, sparse_weight)},
                runs=runs, warmup=warmup, sync=torch.cuda.synchronize,
            )
        bucket = buckets[next(b for b in BUCKETS if b[0] <= out <= b[1])]
        bucket["layers"] += 1
        for side in ("dense", "sparse"):
            bucket[side] = [a + b for a, b in zip(bucket[side], times[side])]
        del x, weight, sparse_weight
    return {"skipped_layers": skipped, "buckets": {f"{lo}-{hi}" if hi < 1 << 30 else f">{lo - 1}": v for (lo, hi), v in buckets.items()}}


def tensorrt_runner(onnx_path: Path):
    """A zero-argument function running one inference of an engine built from ``onnx_path`` (FP16 + SPARSE_WEIGHTS)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {parser.get_error(0)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    for flag in ("FP16", "SPARSE_WEIGHTS"):  # TensorRT 11 is strongly typed (no FP16 flag): the ONNX is fp16 already
        if hasattr(trt.BuilderFlag, flag):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    blob = builder.build_serialized_network(network, config)
    engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
    context = engine.create_execution_context()
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32}
    buffers = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        buffer = torch.zeros(tuple(engine.get_tensor_shape(name)), dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
        context.set_tensor_address(name, buffer.data_ptr())
        buffers.append(buffer)
    stream = torch.cuda.current_stream().cuda_stream

    def run() -> None:
        context.execute_async_v3(stream)

    run.keep_alive = (engine, context, buffers)  # the engine and its I/O tensors live as long as the runner
    return run


def export_onnx(net: nn.Module, folder: Path, stem: str, imgsz: int, batch: int) -> Path:
    """Save ``net`` as a checkpoint and export it with Ultralytics to fp16 ONNX at a fixed batch."""
    from ultralytics import YOLO

    weights = save_checkpoint(net.cpu(), {}, folder / f"{stem}-b{batch}.pt", None)
    return Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, batch=batch, half=True, device=0, simplify=False))


def summary(times: dict) -> dict:
    """Medians (ms) and the verdict of the per-round sparse/dense ratios."""
    ratio = ratio_summary(times["dense"], times["sparse"])
    return {
        "dense_ms": summarize(times["dense"]).median * 1e3,
        "sparse_ms": summarize(times["sparse"]).median * 1e3,
        "ratio": ratio.to_dict(),
        "verdict": verdict(ratio),
    }


def main() -> int:
    """Parse arguments, time every model and batch, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolov9t.yaml", "yolo11l.yaml", "yolo11x.yaml"])
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here (a new file)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("nm_speed: needs a CUDA GPU with 2:4 sparse tensor cores (compute capability 8.0+); none found, nothing timed")
        return 0
    if torch.cuda.get_device_capability() < (8, 0):
        print(f"nm_speed: {torch.cuda.get_device_name()} has no 2:4 sparse tensor cores (compute capability < 8.0); nothing timed")
        return 0
    try:
        import tensorrt  # noqa: F401

        with_trt = True
    except ImportError:
        with_trt = False
    from ultralytics import YOLO

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "imgsz": args.imgsz, "models": {}}
    print(f"# Dense vs 2:4 on {results['device']} (imgsz {args.imgsz}, {args.runs} interleaved runs after {args.warmup} warm-up)")
    with tempfile.TemporaryDirectory() as tmp:
        for yaml_name in args.models:
            dense = YOLO(yaml_name).model.eval()
            sparse = copy.deepcopy(dense)
            report = sparsify(sparse, method="nm").report
            nm = report["nm"]
            patterned = {x["name"] for x in report["layers"] if x.get("nm") and x["nm"]["eligible"]}
            entry = results["models"][yaml_name] = {"eligible_layers": nm["eligible_layers"], "batches": {}}
            print(f"\n## {yaml_name}: 2:4 holds in {nm['eligible_layers']} eligible layers ({nm['eligible_params']:,} weights)")
            for batch in args.batches:
                gemms = time_gemms(sparse.half().cuda(), patterned, args.imgsz, batch, args.runs, args.warmup)
                row = entry["batches"][batch] = {"gemm": {}, "skipped_gemm_layers": gemms["skipped_layers"]}
                for bucket, data in gemms["buckets"].items():
                    if data["layers"]:
                        row["gemm"][bucket] = {"layers": data["layers"], **summary(data)}
                        s = row["gemm"][bucket]
                        print(f"batch {batch:>2} torch GEMMs, {bucket:>7} out channels ({data['layers']:>2} layers): "
                              f"dense {s['dense_ms']:.3f} ms, 2:4 {s['sparse_ms']:.3f} ms; {s['verdict']}")
                if with_trt:
                    folder = Path(tmp) / Path(yaml_name).stem
                    folder.mkdir(exist_ok=True)
                    runners = {
                        side: tensorrt_runner(export_onnx(copy.deepcopy(net).float(), folder, side, args.imgsz, batch))
                        for side, net in (("dense", dense), ("sparse", sparse))
                    }
                    row["tensorrt"] = summary(time_interleaved(runners, args.runs, args.warmup, sync=torch.cuda.synchronize))
                    t = row["tensorrt"]
                    print(f"batch {batch:>2} TensorRT fp16 engine: dense {t['dense_ms']:.3f} ms, 2:4 {t['sparse_ms']:.3f} ms; {t['verdict']}")
                else:
                    print(f"batch {batch:>2} TensorRT: not installed, engines not timed")
            del dense, sparse
            torch.cuda.empty_cache()
    if args.json is not None:
        with open(args.json, "x") as f:  # never overwrite
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
