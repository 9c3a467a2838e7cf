"""Zeros in an exported artifact's convolution weights, read from the file as its runtime stores them.

Unstructured sparsity survives export only if the stored weights keep their zeros: FP32 exports copy them, and
symmetric INT8 quantization (the scheme Ultralytics' INT8 exports use for weights, through onnxruntime and NNCF) maps
0.0 to the integer 0. This reads the stored tensors back, as a check: ONNX initializers, OpenVINO constants,
TorchScript parameters. Only convolution kernels count (4-D tensors, less those of shape (C, 1, 1, 1) or
(1, C, 1, 1): per-channel quantization scales and broadcast biases look like that), as the ``.pt`` report counts
prunable weights; a quantized model's kernels are its integer tensors.

Examples:
    >>> import torch
    >>> path = "/tmp/zeros-example.torchscript"
    >>> net = torch.nn.Conv2d(2, 2, 1, bias=False)
    >>> with torch.no_grad():
    ...     net.weight[0] = 0
    >>> torch.jit.save(torch.jit.trace(net, torch.zeros(1, 2, 4, 4)), path)
    >>> kernel_zero_fraction(path, "torchscript")
    0.5
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["kernel_zero_fraction"]


def kernel_zero_fraction(artifact: str | Path, fmt: str) -> float | None:
    """The fraction of exact zeros over the 4-D (convolution) weight tensors stored in ``artifact``.

    Args:
        artifact (str | Path): An ONNX file, an OpenVINO model folder (or its ``.xml``), or a TorchScript file.
        fmt (str): ``onnx``, ``openvino`` or ``torchscript``.

    Returns:
        (float | None): Zeros / elements over the kernels, or None when the artifact stores no 4-D tensor.

    Raises:
        ValueError: For a format this module cannot read.
    """
    readers = {"onnx": _onnx_kernels, "openvino": _openvino_kernels, "torchscript": _torchscript_kernels}
    if fmt not in readers:
        raise ValueError(f"format={fmt!r}: kernel zeros are read from {', '.join(readers)} artifacts only")
    zeros = total = 0
    for kernel in readers[fmt](Path(artifact)):
        if kernel.shape[2:] == (1, 1) and 1 in kernel.shape[:2]:
            continue  # (C, 1, 1, 1) or (1, C, 1, 1): a per-channel scale or a broadcast bias, not a kernel
        zeros += int(np.count_nonzero(kernel == 0))
        total += kernel.size
    return zeros / total if total else None


def _onnx_kernels(path: Path) -> Iterator[np.ndarray]:
    """4-D initializers of an ONNX model (INT8 QDQ models store their kernels as integer initializers)."""
    import onnx
    from onnx import numpy_helper

    for tensor in onnx.load(str(path)).graph.initializer:
        if len(tensor.dims) == 4:
            yield numpy_helper.to_array(tensor)


def _openvino_kernels(path: Path) -> Iterator[np.ndarray]:
    """4-D constants of an OpenVINO model (NNCF's INT8 models keep their kernels as integer constants)."""
    import openvino as ov

    xml = path if path.suffix == ".xml" else next(path.glob("*.xml"))
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "Constant" and len(op.get_output_partial_shape(0)) == 4:
            yield np.asarray(op.get_data())


def _torchscript_kernels(path: Path) -> Iterator[np.ndarray]:
    """4-D parameters and buffers of a TorchScript module."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    for tensor in module.state_dict().values():
        if tensor.dim() == 4:
            yield tensor.detach().float().numpy()
