"""The two TensorRT builders, as one small object each (stage: build-engine, runtime).

One builder drives both: datacenter TensorRT 10/11 (`tensorrt`) and TensorRT-RTX
(`tensorrt_rtx`). What differs between them lives here and in their hook modules
(trt_build.py for TensorRT, rtx_build.py for TensorRT-RTX), not in if-chains:

| | TensorRT 10/11 | TensorRT-RTX |
| --- | --- | --- |
| module | tensorrt | tensorrt_rtx |
| targets | the GPU it builds on, or with a hardware-compatibility level Ampere+ GPUs / GPUs of its compute capability | compute capabilities named at build time (several per plan) |
| build needs a GPU | yes | no (ahead-of-time build on the CPU) |
| build cache | timing cache | none (kernels compile at run time; the runner keeps a runtime cache) |
| layer report | engine inspector JSON (needs the engine deserialized) | the builder's VERBOSE log |
| running the plan | a GPU | a GPU of one of the plan's compute capabilities |

Nothing here imports TensorRT: presence is read from import specs and package metadata.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Optional

from ..errors import MissingDependency, UserError

BUILDER_CHOICES = ("auto", "tensorrt", "tensorrt-rtx")

# TensorRT-RTX 1.7's ComputeCapability targets (SM90 Hopper is not among them: H100/H200 need
# TensorRT 10/11). The default: Ampere (A100 sm80, RTX 30xx/A-series sm86), Ada (RTX 40xx,
# L4/L40 sm89) and Blackwell RTX (RTX 50xx, RTX PRO sm120): the GPUs TensorRT-RTX builds for
# by default, named so the manifest says where the plan runs. Turing (sm75) only on request:
# it has no FP32 GEMM in TensorRT-RTX (the classifier of an INT8 graph stays FP32) and NVIDIA
# advises Turing-specific plans; sm121 (GB10) on request.
COMPUTE_CAPABILITIES = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")
DEFAULT_COMPUTE_CAPABILITIES = ("sm80", "sm86", "sm89", "sm120")

# TensorRT 10/11's HardwareCompatibilityLevel, by the --hardware-compatibility value. A plan built
# with one runs on other GPUs than the one it was built on, at some cost in speed (fewer tactics,
# 48 KiB shared memory per kernel): "ampere-plus" on any Ampere or newer GPU, "same-compute-capability"
# on GPUs of the building GPU's compute capability. TensorRT-RTX names its targets instead.
HARDWARE_COMPATIBILITY = ("none", "ampere-plus", "same-compute-capability")


@dataclass(frozen=True)
class Flavour:
    name: str  # the --builder value and the manifest's "builder"
    title: str
    module: str
    distributions: tuple[str, ...]  # package names the wheels install under (for the version)
    install: str  # the pip command
    build_needs_gpu: bool
    hooks_module: str  # the module with this flavour's TensorRT calls, imported when building/running

    @property
    def install_hint(self) -> str:
        return self.install + (" on a machine with an NVIDIA GPU" if self.build_needs_gpu else
                               " (builds on any machine, no GPU needed)")

    def installed(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False

    def version(self) -> Optional[str]:
        if not self.installed():
            return None
        for name in self.distributions:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None



TENSORRT = Flavour(
    name="tensorrt", title="TensorRT", module="tensorrt",
    distributions=("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt_cu13_bindings", "tensorrt_cu12_bindings"),
    install="pip install -e '.[tensorrt]'",
    build_needs_gpu=True, hooks_module="trt_build")
TENSORRT_RTX = Flavour(
    name="tensorrt-rtx", title="TensorRT-RTX", module="tensorrt_rtx",
    distributions=("tensorrt-rtx", "tensorrt_rtx", "tensorrt_rtx_cu13", "tensorrt_rtx_cu12"),
    install="pip install -e '.[rtx]'",
    build_needs_gpu=False, hooks_module="rtx_build")
FLAVOURS = {flavour.name: flavour for flavour in (TENSORRT, TENSORRT_RTX)}


def flavour_hooks(flavour: Flavour):
    """The object holding a flavour's TensorRT calls (its module imports no TensorRT until used)."""
    return importlib.import_module(f"{__package__}.{flavour.hooks_module}").HOOKS


def flavour_named(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise UserError(f"unknown builder '{name}'; choose one of {', '.join(BUILDER_CHOICES)}") from None


def choose_flavour(choice: str = "auto", purpose: str = "build-engine", compute_capabilities: bool = False,
                   hardware_compatibility: bool = False) -> Flavour:
    """The builder to use: TensorRT where it imports and a GPU is present, else TensorRT-RTX.

    `compute_capabilities`: the caller names RTX targets, which only TensorRT-RTX builds for.
    `hardware_compatibility`: the caller asks for a TensorRT hardware-compatibility level, which
    only TensorRT 10/11 builds. Raises MissingDependency (one line, exit 2) naming what is
    missing and how to install it.
    """
    from .cuda_memory import cuda_available

    if compute_capabilities and hardware_compatibility:
        raise UserError("--compute-capability (TensorRT-RTX targets) and --hardware-compatibility (TensorRT 10/11 "
                        "levels) name targets of different builders; give one of them")
    if choice == "auto" and hardware_compatibility:
        choice = TENSORRT.name  # only TensorRT has the levels; its refusal below says what is missing
    if choice == "auto":
        if TENSORRT.installed() and cuda_available() and not compute_capabilities:
            return TENSORRT
        if TENSORRT_RTX.installed():
            return TENSORRT_RTX
        missing = [f"{TENSORRT_RTX.title} (Python package '{TENSORRT_RTX.module}')"]
        if not TENSORRT.installed():
            missing.append(f"{TENSORRT.title} (Python package '{TENSORRT.module}')")
        if not cuda_available():
            missing.append("an NVIDIA GPU (torch.cuda.is_available() is False)")
        listed = ", ".join(missing[:-1]) + f" and {missing[-1]}" if len(missing) > 1 else missing[0]
        raise MissingDependency(f"{purpose} needs TensorRT-RTX, or TensorRT and an NVIDIA GPU; missing here: "
                                f"{listed}. Install with {TENSORRT_RTX.install_hint}, or {TENSORRT.install_hint}")
    flavour = flavour_named(choice)
    if flavour is TENSORRT_RTX and hardware_compatibility:
        raise UserError("--hardware-compatibility is a TensorRT 10/11 build setting; TensorRT-RTX plans name their "
                        "target GPUs with --compute-capability (use --builder tensorrt on a GPU machine, or drop "
                        "--hardware-compatibility)")
    if flavour is TENSORRT and compute_capabilities:
        raise UserError("--compute-capability names TensorRT-RTX targets; TensorRT builds for the GPU it runs on "
                        "(use --builder tensorrt-rtx, or drop --compute-capability)")
    missing = [] if flavour.installed() else [f"{flavour.title} (Python package '{flavour.module}')"]
    if flavour.build_needs_gpu and not cuda_available():
        missing.append("an NVIDIA GPU (torch.cuda.is_available() is False)")
    if missing:
        needs = f"{flavour.title} and an NVIDIA GPU" if flavour.build_needs_gpu else flavour.title
        raise MissingDependency(f"{purpose} --builder {flavour.name} needs {needs}; missing here: "
                                f"{' and '.join(missing)}. Install with {flavour.install_hint}")
    return flavour


def parse_compute_capabilities(text: str | None) -> tuple[str, ...]:
    """'sm86,sm89' (also '86', '8.6', 'SM86') -> ('sm86', 'sm89'); None/'' -> the default set."""
    if not text:
        return DEFAULT_COMPUTE_CAPABILITIES
    found = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        digits = part.lower().removeprefix("sm").removeprefix("_").replace(".", "")
        name = f"sm{digits}"
        if name not in COMPUTE_CAPABILITIES:
            raise UserError(f"--compute-capability '{part}' is not a TensorRT-RTX target; choose from "
                            f"{', '.join(COMPUTE_CAPABILITIES)} (Hopper sm90 needs TensorRT 10/11: --builder tensorrt "
                            "on that GPU)")
        if name not in found:
            found.append(name)
    if not found:
        raise UserError("--compute-capability is empty; give e.g. sm86,sm89")
    return tuple(found)


def parse_hardware_compatibility(level: str | None) -> str:
    """The --hardware-compatibility value, checked ('none' when not given)."""
    level = (level or "none").lower()
    if level not in HARDWARE_COMPATIBILITY:
        raise UserError(f"--hardware-compatibility '{level}': choose one of {', '.join(HARDWARE_COMPATIBILITY)}")
    return level


def capability_of(gpu_capability: str) -> str:
    """'8.6' (torch's major.minor) -> 'sm86'."""
    return "sm" + gpu_capability.replace(".", "")
