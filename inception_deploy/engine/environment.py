"""Is TensorRT (and a GPU) here? Answered without importing tensorrt (stage: build-engine, runtime).

Where either is missing, build-engine and the .plan runner stop with one line that names
what is missing and how to install it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Optional

from ..errors import MissingDependency
from .cuda_memory import cuda_available

INSTALL_HINT = "pip install -e '.[tensorrt]' on a machine with an NVIDIA GPU"
# Distribution names TensorRT's wheels install under (the plain name, or per CUDA major).
_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13_bindings", "tensorrt_cu12_bindings")


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def installed_tensorrt_version() -> Optional[str]:
    """The installed TensorRT version from package metadata, None when absent."""
    if not tensorrt_installed():
        return None
    for name in _DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def missing_pieces() -> list[str]:
    missing = []
    if not tensorrt_installed():
        missing.append("TensorRT (Python package 'tensorrt')")
    if not cuda_available():
        missing.append("an NVIDIA GPU (torch.cuda.is_available() is False)")
    return missing


def require_tensorrt_and_gpu(purpose: str) -> None:
    """Raise MissingDependency (one line, exit 2) unless TensorRT and a CUDA GPU are both here."""
    missing = missing_pieces()
    if missing:
        raise MissingDependency(f"{purpose} needs TensorRT and an NVIDIA GPU; missing here: {' and '.join(missing)}. "
                                f"Install with {INSTALL_HINT}")


def tensorrt_import_error(exc: ImportError) -> MissingDependency:
    return MissingDependency(f"TensorRT is installed but does not import ({exc}); reinstall with {INSTALL_HINT}")
