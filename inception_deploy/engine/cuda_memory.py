"""GPU identity and CUDA buffers through torch, for the TensorRT runner (stage: runtime).

Kept apart from the modules that import tensorrt so those stay thin: everything here is
plain torch and numpy. torch is imported inside the functions (it is heavy).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import UserError

# TensorRT DataType member names -> numpy dtypes of the host arrays we exchange.
NUMPY_DTYPES = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
    "BOOL": np.bool_, "UINT8": np.uint8,
}


def numpy_dtype(trt_dtype_name: str) -> type:
    try:
        return NUMPY_DTYPES[trt_dtype_name]
    except KeyError:
        raise UserError(f"engine I/O of type {trt_dtype_name} is not supported by this runner; "
                        "keep the graph's inputs and outputs FP32 (Cast inside the graph)") from None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_identity(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of a CUDA device."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def host_array(value, dtype: type, name: str) -> np.ndarray:
    """The feed as a contiguous array of the engine's type; float widths convert, other kinds refuse."""
    array = np.asarray(value)
    wanted = np.dtype(dtype)
    if array.dtype != wanted:
        if array.dtype.kind == "f" and wanted.kind == "f":
            array = array.astype(wanted)
        else:
            raise UserError(f"input '{name}' is {array.dtype}; the engine takes {wanted}")
    return np.ascontiguousarray(array)


def to_device(array: np.ndarray, device: int = 0):
    import torch

    return torch.from_numpy(array).to(f"cuda:{device}")


def empty_device(shape: Sequence[int], dtype: type, device: int = 0):
    import torch

    torch_dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    return torch.empty(tuple(int(d) for d in shape), dtype=torch_dtype, device=f"cuda:{device}")


def to_host(tensor) -> np.ndarray:
    return tensor.cpu().numpy()


def stream_handle(device: int = 0) -> int:
    """The raw cudaStream_t of torch's current stream, so copies and inference stay in order."""
    import torch

    return torch.cuda.current_stream(device).cuda_stream


def synchronize(device: int = 0) -> None:
    import torch

    torch.cuda.current_stream(device).synchronize()
