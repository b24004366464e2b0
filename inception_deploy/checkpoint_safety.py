"""Static checks that admit graph checkpoints without running anything from them (stage: load).

A TorchScript archive and a torch.export program (.pt2) are programs, not data: loading a
.pt2 with `torch.export.load` unpickles with weights_only=False in several places (weights
or constants marked `use_pickle`, custom/opaque objects, legacy members, sample inputs
through a fallback that retries an unsafe load), evaluates symbolic shape strings with
sympy (Python `eval`), compiles guard code strings, and loads AOTInductor shared objects;
`torch.jit.load` runs a module's TorchScript `__setstate__`; and calling either runs
whatever operators the graph holds (`aten::from_file` maps a user's file and `fill_`
overwrote it in a reported case).

The choice made here, rather than refusing every graph checkpoint: such a file is admitted
without `--trust-checkpoint` only when a static reading shows it can do nothing but
tensor arithmetic, because a TorchScript or .pt2 file is how users hand over a model whose
Python code they do not have, and the Inception family needs few operators. The reading:

- the archive is a zip read here in memory (the same bytes are then given to torch);
- .pt2: only the members `torch.export.save` writes for a CPU program; no pickled payload,
  no AOTInductor folder, no custom objects, no guard code, every symbolic shape string made
  of sympy integer arithmetic on shape symbols, sample inputs that load with
  `torch.load(weights_only=True)` (so torch's unsafe retry never happens), every graph node
  an operator of PURE_OPERATORS;
- TorchScript: its pickles reference only tensor-rebuilding globals and the archive's own
  module classes (scanned opcode by opcode, never unpickled here), no `__setstate__` (the
  only code `torch.jit.load` runs), and after loading, no hooks and every node of the
  inlined `forward` graph in PURE_OPERATORS.

PURE_OPERATORS lists tensor operators that read their inputs and write only their outputs
(no file, stream, process, random state or global state): the ones torch's tracer,
scripting and torch.export produce for GoogLeNet / Inception v3 and their torchvision
variants, plus the plain arithmetic, shape and activation operators a retrained head or a
preprocessing prologue uses. A refusal names the first operator (or member) not admitted.
"""

from __future__ import annotations

import ast
import io
import json
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Iterable, Optional

from .errors import UserError

# aten operators (TorchScript kind "aten::x", torch.export target "torch.ops.aten.x.<overload>").
PURE_ATEN = frozenset("""
_convolution conv1d conv2d conv3d convolution
batch_norm native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training
_native_batch_norm_legit_functional instance_norm layer_norm group_norm native_layer_norm
relu relu_ relu6 hardtanh hardtanh_ leaky_relu leaky_relu_ gelu silu silu_ sigmoid tanh elu hardswish
hardsigmoid softmax log_softmax _softmax _log_softmax
max_pool2d max_pool2d_with_indices avg_pool2d adaptive_avg_pool2d _adaptive_avg_pool2d adaptive_max_pool2d
mean sum amax amin max min argmax
cat concat concatenate stack flatten view reshape _unsafe_view _reshape_alias unsqueeze squeeze permute
transpose t contiguous clone detach alias expand expand_as select slice narrow split split_with_sizes
chunk unbind view_as
linear addmm mm matmul bmm
add add_ sub sub_ mul mul_ div div_ rsub neg pow sqrt rsqrt exp log clamp clamp_ clamp_min clamp_max abs
maximum minimum where
dropout dropout_ native_dropout feature_dropout feature_dropout_ alpha_dropout feature_alpha_dropout
pad constant_pad_nd upsample_bilinear2d upsample_nearest2d
size sym_size dim len Int Float Bool ScalarImplicit IntImplicit FloatImplicit to _to_copy type_as
zeros_like ones_like full_like scalar_tensor lift_fresh_copy
eq ne gt lt ge le __is__ __isnot__ __not__ __and__ __or__ __getitem__ floordiv remainder
""".split())
# TorchScript's own structural nodes: constants, attribute reads, containers, control flow.
PURE_PRIM = frozenset("""
prim::Constant prim::GetAttr prim::ListConstruct prim::ListUnpack prim::TupleConstruct prim::TupleUnpack
prim::TupleIndex prim::NumToTensor prim::If prim::Loop prim::RaiseException prim::Uninitialized
prim::unchecked_cast prim::device prim::dtype prim::min prim::max prim::shape
""".split())
PURE_PYTHON_TARGETS = frozenset({"_operator.getitem"})  # torch.export's tuple indexing

def _refuse(path: Path, what: str) -> UserError:
    return UserError(f"{path}: refused: {what}; nothing was run. Save a state_dict "
                     "(torch.save(model.state_dict(), ...)), or pass --trust-checkpoint if you trust where it came from")


def read_archive(path: Path, data: bytes, kind: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UserError(f"{path}: not a {kind} archive (not a readable zip file); save or copy it again") from None


def _member(archive: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:  # CRC errors, truncation, encryption
        raise UserError(f"{path}: truncated or corrupt archive member {name} ({exc}); save or copy it again") from None


# --------------------------------------------------------------------------- torch.export (.pt2)
_PT2_PAYLOAD = re.compile(r"^(data/weights/weight_\d+|data/constants/tensor_[A-Za-z0-9_]+|"
                          r"data/weights/[A-Za-z0-9_]+_weights_config\.json|"
                          r"data/constants/[A-Za-z0-9_]+_constants_config\.json|"
                          r"data/sample_inputs/[A-Za-z0-9_]+\.pt|models/[A-Za-z0-9_]+\.json|extra/.+|"
                          r"archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id)$")
_SYMBOL = re.compile(r"^[a-z]{1,4}\d+$")  # torch's shape symbols: s0, s77, u3, zuf0
_SYMPY_NAMES = frozenset("""
Symbol Integer Rational Float Add Mul Pow Max Min Abs Eq Ne Lt Le Gt Ge And Or Not oo true false True False
FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural
FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt
RoundDecimal ToFloat Identity
""".split())
_SYMPY_KEYWORDS = frozenset({"positive", "integer", "nonnegative", "real", "finite", "negative", "evaluate"})
_EXPR_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp, ast.UnaryOp,
               ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
               ast.Tuple)


def check_exported_program(path: Path, data: bytes) -> None:
    """Refuse a .pt2 that torch.export.load could run code from (see the module docstring)."""
    archive = read_archive(path, data, "torch.export (.pt2)")
    names = archive.namelist()
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1 or any("/" not in name for name in names):
        raise UserError(f"{path}: not a torch.export archive (its members are not under one folder); "
                        "save it with torch.export.save")
    root = roots.pop() + "/"
    members = {name[len(root):]: name for name in names if not name.endswith("/")}
    archive_format = _member(archive, root + "archive_format", path).strip() if "archive_format" in members else b""
    if archive_format != b"pt2":
        raise UserError(f"{path}: not a torch.export archive (no archive_format 'pt2'; older torch.export files "
                        "hold pickles): save it again with torch.export.save, or pass --trust-checkpoint")
    for member in members:
        if member.startswith("data/aotinductor/"):
            raise _refuse(path, f"the archive holds AOTInductor compiled code ({member})")
        if not _PT2_PAYLOAD.match(member):
            raise _refuse(path, f"the archive holds {member}, which torch.export.save does not write for a "
                                "CPU program (a pickle, or a member this tool does not read)")
    programs = [m for m in members if m.startswith("models/")]
    if not programs:
        raise UserError(f"{path}: the archive holds no program (models/*.json); save it with torch.export.save")
    for program in programs:
        model = program[len("models/"):-len(".json")]
        for config in (f"data/weights/{model}_weights_config.json", f"data/constants/{model}_constants_config.json"):
            if config in members:
                _check_payload_config(path, config, _json(archive, root + config, path), members)
        sample = f"data/sample_inputs/{model}.pt"
        if sample in members:
            _check_weights_only_pickle(path, sample, _member(archive, root + sample, path))
        _check_program_json(path, program, _json(archive, root + program, path))


def _json(archive: zipfile.ZipFile, name: str, path: Path):
    try:
        return json.loads(_member(archive, name, path))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: archive member {name} is not valid JSON ({exc}); save the program again") from None


def _check_payload_config(path: Path, member: str, config, members) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UserError(f"{path}: archive member {member} is not a torch.export payload config")
    for fqn, entry in entries.items():
        name = entry.get("path_name", "") if isinstance(entry, dict) else ""
        if not isinstance(entry, dict) or entry.get("use_pickle"):
            raise _refuse(path, f"'{fqn}' in {member} is stored as a pickle (use_pickle), which torch loads "
                                "with weights_only=False")
        if not name.startswith(("weight_", "tensor_")):
            raise _refuse(path, f"'{fqn}' in {member} is a {name.split('_obj')[0] or 'non-tensor'} object "
                                "(custom or opaque objects are unpickled)")
        payload = f"{member.rsplit('/', 1)[0]}/{name}"
        if payload not in members:
            raise UserError(f"{path}: the archive lacks {payload}, which holds '{fqn}'; the file is truncated or "
                            "damaged: save the program again with torch.export.save")


def _check_weights_only_pickle(path: Path, member: str, payload: bytes) -> None:
    """torch retries a failed weights_only load of the sample inputs with weights_only=False;
    a payload that loads weights-only here never reaches that retry."""
    import pickle

    import torch

    try:
        torch.load(io.BytesIO(payload), weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        reason = f"it calls {found.group(1)}" if found else "it is not a weights-only pickle"
        raise _refuse(path, f"{member} needs arbitrary unpickling ({reason})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises anything
        raise UserError(f"{path}: archive member {member} is corrupt ({type(exc).__name__}); save the program again") from None


def _check_program_json(path: Path, member: str, program) -> None:
    if not isinstance(program, dict) or "graph_module" not in program:
        raise UserError(f"{path}: archive member {member} is not a serialized ExportedProgram")
    if program.get("guards_code"):
        raise _refuse(path, f"{member} carries guard code (Python source that torch compiles and runs)")
    for key, value in _walk(program):
        if key == "expr_str":
            _check_sympy_expression(path, member, value)
        elif key in ("as_custom_obj", "custom_obj_values") and value:
            raise _refuse(path, f"{member} uses custom (torchbind) objects, which are unpickled")
        elif key == "nodes" and isinstance(value, list):
            for node in value:
                target = node.get("target") if isinstance(node, dict) else None
                if not _pure_export_target(target):
                    raise _refuse(path, f"its graph calls {target}, which is not on the list of pure tensor operators")


def _walk(value, key=None) -> Iterable[tuple]:
    yield key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _pure_export_target(target) -> bool:
    if not isinstance(target, str):
        return False
    if target in PURE_PYTHON_TARGETS:
        return True
    parts = target.split(".")
    # torch.ops.aten.<op>.<overload>
    return len(parts) == 5 and parts[:3] == ["torch", "ops", "aten"] and parts[3] in PURE_ATEN


def _check_sympy_expression(path: Path, member: str, text) -> None:
    """torch parses these strings with sympy.sympify, which evaluates Python: admit only
    sympy arithmetic on shape symbols."""
    ok = isinstance(text, str) and len(text) <= 4096
    if ok:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            ok = False
    if ok:
        for node in ast.walk(tree):
            if not isinstance(node, _EXPR_NODES):
                ok = False
            elif isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_NAMES):
                ok = False
            elif isinstance(node, ast.Name) and not (node.id in _SYMPY_NAMES or _SYMBOL.match(node.id)):
                ok = False
            elif isinstance(node, ast.keyword) and node.arg not in _SYMPY_KEYWORDS:
                ok = False
            elif isinstance(node, ast.Constant) and not (isinstance(node.value, (int, float, bool))
                                                         or (isinstance(node.value, str) and _SYMBOL.match(node.value))):
                ok = False
            if not ok:
                break
    if not ok:
        shown = text[:60] + "..." if isinstance(text, str) and len(text) > 60 else text
        raise _refuse(path, f"{member} holds a symbolic shape {shown!r} that is not plain integer arithmetic "
                            "(torch evaluates these strings as Python)")


# --------------------------------------------------------------------------- TorchScript
# Globals a TorchScript pickle may name: tensor and storage rebuilding, containers, and the
# archive's own module classes (__torch__.*, defined by its code/ folder, checked after loading).
_TS_GLOBAL_MODULES = {"torch._utils": {"_rebuild_tensor_v2", "_rebuild_parameter"},
                      "collections": {"OrderedDict"},
                      "torch.jit._pickle": {"restore_type_tag", "build_intlist", "build_tensorlist",
                                            "build_doublelist", "build_boollist", "build_tensor_from_id"}}


def check_torchscript_archive(path: Path, data: bytes) -> None:
    """Before torch.jit.load: its pickles name only safe globals; no __setstate__ in its code."""
    archive = read_archive(path, data, "TorchScript")
    for name in archive.namelist():
        if name.endswith((".pkl", ".debug_pkl")):
            _check_torchscript_pickle(path, name, _member(archive, name, path))
        elif "/code/" in name and name.endswith(".py"):
            source = _member(archive, name, path).decode("utf-8", "replace")
            if re.search(r"\bdef\s+__setstate__\b", source):
                raise _refuse(path, f"its code ({name}) defines __setstate__, which torch.jit.load runs")


def _check_torchscript_pickle(path: Path, member: str, payload: bytes) -> None:
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(payload)):
            if opcode.name in ("STACK_GLOBAL", "INST", "OBJ"):
                raise _refuse(path, f"{member} builds objects by name ({opcode.name}), which TorchScript archives do not")
            if opcode.name != "GLOBAL":
                continue
            module, _, attr = str(arg).partition(" ")
            own_class = module == "__torch__" or (module.startswith("__torch__.")
                                                  and not module.startswith("__torch__.torch.classes"))
            allowed = own_class or \
                (module == "torch" and attr.endswith("Storage")) or attr in _TS_GLOBAL_MODULES.get(module, ())
            if not allowed:
                raise _refuse(path, f"{member} references {module}.{attr}, which is not a tensor or module class")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others on damaged data
        raise UserError(f"{path}: archive member {member} is corrupt ({type(exc).__name__}); save or copy it again") from None


def check_torchscript_module(path: Path, module) -> None:
    """After torch.jit.load (which ran nothing, __setstate__ being refused): no hooks, and the
    inlined forward graph uses pure tensor operators only."""
    for sub in module.modules():
        c = getattr(sub, "_c", None)
        if c is not None and (c._get_forward_hooks() or c._get_forward_pre_hooks()):
            raise _refuse(path, "a module in it has forward hooks (TorchScript code run beside forward)")
    first = first_impure_node(module.inlined_graph)
    if first is not None:
        raise _refuse(path, f"its graph calls {first}, which is not on the list of pure tensor operators")


def first_impure_node(graph) -> Optional[str]:
    for node in graph.nodes():
        kind = node.kind()
        namespace, _, op = kind.partition("::")
        if not ((namespace == "aten" and op in PURE_ATEN) or kind in PURE_PRIM):
            return kind
        for block in node.blocks():
            inner = first_impure_node(block)
            if inner is not None:
                return inner
    return None
