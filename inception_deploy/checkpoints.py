"""Checkpoint loading, safely (stage: load).

Accepted: state dicts in .pth/.pt (torch.load with weights_only=True), wrapped in
{"state_dict": ...} / {"model": ...} with epoch/optimizer entries beside them, with
`module.` (DataParallel/DDP) or `_orig_mod.` (torch.compile) prefixes; .safetensors;
TorchScript archives and torch.export programs (.pt2) as self-contained graphs for
Inception-family models whose Python code the user does not have, admitted after a static
check that they hold nothing but pure tensor operators (checkpoint_safety.py). A file that
needs arbitrary unpickling, or a graph with any other operator, is refused without running
anything unless the user passes --trust-checkpoint. Every weight must be finite, and
floating where the model's parameter is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .checkpoint_safety import check_exported_program, check_torchscript_archive, check_torchscript_module
from .errors import UserError
from .finite import describe, first_non_finite
from .models import MODELS, ModelSpec, build_model, get_spec

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class Checkpoint:
    """What a checkpoint file holds: a state dict, or a self-contained graph."""

    path: Path
    kind: str  # "state_dict" | "torchscript" | "exported_program" | "module"
    state_dict: Optional[dict] = None
    module: Optional[object] = None  # a callable torch module for graph kinds


def load_checkpoint(path: str | Path, trust: bool = False) -> Checkpoint:
    """Read a checkpoint without running anything from it (unless `trust`); see checkpoint_safety
    for what graph checkpoints must satisfy. Every weight is checked finite and floating."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        checkpoint = Checkpoint(path, "state_dict", state_dict=_load_safetensors(path))
    elif path.suffix == ".pt2":
        checkpoint = _load_exported_program(path, trust)
    elif _is_torchscript(path):
        checkpoint = _load_torchscript(path, trust)
    else:
        obj = _torch_load(path, trust)
        if isinstance(obj, torch.nn.Module):  # a pickled whole module, only reachable when trusted
            checkpoint = Checkpoint(path, "module", module=obj.eval(), state_dict=obj.state_dict())
        else:
            checkpoint = Checkpoint(path, "state_dict", state_dict=_unwrap_state_dict(obj, path))
    if checkpoint.module is not None:
        named = [*checkpoint.module.named_parameters(), *checkpoint.module.named_buffers()]
    else:
        named = list(checkpoint.state_dict.items())
    check_weights_finite(named, path)
    return checkpoint


def check_weights_finite(named_tensors, source) -> None:
    """The first NaN/Inf weight is an error: a NaN model 'passes' every comparison otherwise."""
    for name, tensor in named_tensors:
        found = first_non_finite(tensor)
        if found is not None:
            raise UserError(f"{source}: weight '{name}' holds {describe(found)} (the first non-finite weight); "
                            "a model with NaN/Inf weights computes nothing: retrain or fix the checkpoint")


@contextlib.contextmanager
def _quiet_torch():
    """torch's loaders log warnings with whole tracebacks (exc_info) and warn about legacy
    formats; what matters to the user is our one line, so they are silenced here."""
    loggers = [logging.getLogger(name) for name in ("torch", "torch.export", "torch._export", "torch.jit")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _load_torchscript(path: Path, trust: bool) -> Checkpoint:
    import torch

    data = path.read_bytes()  # checked and loaded from the same bytes
    if trust:
        log.warning("loading TorchScript %s without the static check (--trust-checkpoint): it can run code", path)
    else:
        check_torchscript_archive(path, data)
    try:
        with _quiet_torch():
            module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - TorchScript raises many kinds
        raise UserError(f"{path}: TorchScript archive could not be loaded: {_first_line(exc)}") from None
    if not trust:
        check_torchscript_module(path, module)
    return Checkpoint(path, "torchscript", module=module.eval())


def _torch_load(path: Path, trust: bool):
    import torch

    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise UserError(f"{path}: the file is empty; save or copy the checkpoint again")
    if not head.startswith(b"PK") and head[:1] != b"\x80":
        # torch.save writes a zip archive (or, before 1.6, a pickle starting with 0x80).
        kind = "a text file" if head.isascii() else "an unknown binary format"
        raise UserError(f"{path}: not a PyTorch checkpoint ({kind}, not a torch.save archive); "
                        "give a .pth/.pt state dict, .safetensors, TorchScript or .pt2 file")

    if trust:
        log.warning("loading %s with full unpickling (--trust-checkpoint): it can run code", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{path}: could not be loaded even with --trust-checkpoint: {_first_line(exc)}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and "invalid load key" not in text:
            raise UserError(
                f"{path}: refused: this checkpoint needs arbitrary unpickling, which can run code from the file; "
                "nothing was run. Save a plain state_dict (torch.save(model.state_dict(), ...)), or pass "
                "--trust-checkpoint if you trust where it came from"
            ) from None
        raise UserError(f"{path}: not a PyTorch checkpoint (it does not unpickle: {_load_key(text)})") from None
    except RuntimeError as exc:
        text = str(exc)
        if "zip archive" in text or "central directory" in text or "file not found" in text.lower():
            raise UserError(f"{path}: truncated or corrupt checkpoint (the zip archive is incomplete); save or copy it again") from None
        raise UserError(f"{path}: could not be loaded: {_first_line(exc)}") from None
    except (EOFError, ValueError, OSError) as exc:
        raise UserError(f"{path}: truncated or corrupt checkpoint ({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises anything (KeyError, IndexError, ...)
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _load_key(text: str) -> str:
    for line in text.splitlines():
        if "invalid load key" in line:
            return line.strip().rstrip(".")
    return _first_line(text)


def _first_line(exc) -> str:
    # torch's "check the warnings above" points at log lines silenced here (_quiet_torch)
    text = str(exc).replace(" Please check the warnings above for possible errors.", "").strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        return False
    # TorchScript archives carry their serialized code; plain torch.save archives do not.
    return any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names)


def _load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .safetensors file ({_first_line(exc)})") from None


def _load_exported_program(path: Path, trust: bool) -> Checkpoint:
    import torch

    data = path.read_bytes()  # checked and loaded from the same bytes
    if trust:
        log.warning("loading torch.export program %s without the static check (--trust-checkpoint): it can run code", path)
    else:
        check_exported_program(path, data)
    try:
        with _quiet_torch():
            program = torch.export.load(io.BytesIO(data))
            module = program.module()
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: torch.export program could not be loaded: {_first_line(exc).rstrip('.')}; "
                        f"save it again with torch.export.save (torch {torch.__version__.split('+')[0]} reads it)") from None
    return Checkpoint(path, "exported_program", module=_ExportedModule(module))


def _exported_module_class():
    import torch

    class ExportedModule(torch.nn.Module):
        """Holds a torch.export graph module. Such modules refuse .eval()/.train() (they are
        already specialised for inference), so mode switches stop here."""

        def __init__(self, graph_module) -> None:
            super().__init__()
            self.graph_module = graph_module

        def train(self, mode: bool = True):
            return self

        def forward(self, x):
            return self.graph_module(x)

    return ExportedModule


def _ExportedModule(graph_module):
    return _exported_module_class()(graph_module)


def _unwrap_state_dict(obj, path: Path) -> dict:
    import torch

    for _ in range(3):  # {"model": {"state_dict": ...}} happens
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not _is_tensor_dict(obj):
        found = ", ".join(sorted(map(str, obj))[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(
            f"{path}: no state dict found (top-level keys: {found}); expected tensors, or one of "
            f"{', '.join(repr(k) for k in _WRAPPER_KEYS)} holding them"
        )
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: dict) -> bool:
    import torch

    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= max(1, len(values) // 2)


# --------------------------------------------------------------------------- into a module
def guess_arch(state_dict: dict) -> Optional[str]:
    for spec in MODELS.values():
        if any(key in state_dict for key in spec.signature_keys):
            return spec.name
    return None


def weights_info(state_dict: dict, spec: ModelSpec) -> tuple[int, bool]:
    """num_classes and aux presence, read from the weights."""
    fc = state_dict.get("fc.weight")
    if fc is None:
        raise UserError(f"the weights have no 'fc.weight' key, so they are not {spec.name} weights")
    has_aux = any(k.startswith(spec.aux_prefixes) for k in state_dict)
    return int(fc.shape[0]), has_aux


def module_from_state_dict(state_dict: dict, arch: str, transform_input: bool, source: str):
    """Build the architecture from the weights' own num_classes and aux presence, then load
    strictly; any mismatch is one line naming the first keys and the likely cause."""
    spec = get_spec(arch)
    guessed = guess_arch(state_dict)
    if guessed is not None and get_spec(guessed).signature_keys != spec.signature_keys:
        raise UserError(
            f"{source}: these look like {guessed} weights, not {spec.name}; "
            f"use a {guessed} recipe (e.g. --recipe {guessed})"
        )
    num_classes, has_aux = weights_info(state_dict, spec)
    model = build_model(spec.name, num_classes=num_classes, aux_logits=has_aux,
                        transform_input=transform_input, init_weights=False)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
        if mismatched:
            k = mismatched[0]
            parts.append(
                f"{len(mismatched)} shape mismatches ({k}: file {list(state_dict[k].shape)} vs model {list(expected[k].shape)})"
            )
        cause = "the checkpoint was saved from a different architecture or a modified model"
        if guessed is None:
            cause = f"these do not look like {spec.name} weights (no {spec.signature_keys[0]})"
        raise UserError(f"{source}: weights do not fit {spec.name}: {'; '.join(parts)}; likely cause: {cause}")
    # load_state_dict casts silently: int32 weights would become a different (e.g. all-zero) model.
    not_float = [k for k in expected if expected[k].is_floating_point() and not state_dict[k].is_floating_point()]
    if not_float:
        k = not_float[0]
        raise UserError(f"{source}: weight '{k}' is {str(state_dict[k].dtype).removeprefix('torch.')}, not floating "
                        f"point ({len(not_float)} such weights); save the float weights of the trained model")
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")
