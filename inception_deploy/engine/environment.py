"""Can a plan run here? Answered without importing TensorRT (stage: runtime).

Building is the flavours' business (flavours.choose_flavour: TensorRT-RTX builds without a
GPU). Running a plan always needs an NVIDIA GPU and the module of the builder that made it;
where either is missing the runner stops with one line that names what is missing.
"""

from __future__ import annotations

from ..errors import MissingDependency
from .cuda_memory import cuda_available
from .flavours import TENSORRT, TENSORRT_RTX, Flavour, flavour_named

NO_GPU = "an NVIDIA GPU (torch.cuda.is_available() is False)"


def plan_flavour(manifest) -> Flavour:
    """The builder that made a plan: from its manifest, else TensorRT where it is installed, else TensorRT-RTX."""
    if manifest is not None:
        return flavour_named(getattr(manifest, "builder", "tensorrt"))
    return TENSORRT if TENSORRT.installed() or not TENSORRT_RTX.installed() else TENSORRT_RTX


def missing_to_run(flavour: Flavour) -> list[str]:
    missing = [] if flavour.installed() else [f"{flavour.title} (Python package '{flavour.module}')"]
    if not cuda_available():
        missing.append(NO_GPU)
    return missing


def require_to_run(flavour: Flavour, purpose: str) -> None:
    """Raise MissingDependency (one line, exit 2) unless the plan's TensorRT and a CUDA GPU are both here."""
    missing = missing_to_run(flavour)
    if missing:
        install = "" if flavour.installed() else f". Install with {flavour.install} on a machine with an NVIDIA GPU"
        raise MissingDependency(f"{purpose} needs {flavour.title} and an NVIDIA GPU; missing here: "
                                f"{' and '.join(missing)}{install}")
