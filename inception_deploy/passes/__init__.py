"""Graph passes: ONNX in, cleaner ONNX out, every rewrite proven numerically (stage: optimize).

`optimize_onnx(input, output)` loads a graph into onnx-ir, applies an ordered list of
registered passes (the recipe's `passes:` or the caller's), and after each pass runs the
cleanup (dead nodes and unused initializers removed, topological order, shape
inference) and records what changed. The safety check (passes/safety.py) then runs the
result against the original on ONNX Runtime CPU, after every pass with check="each"; a
difference beyond tolerance raises ParityFailure naming the pass and the output, and
nothing is written. The output carries the input's manifest with an `optimize` stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import ParityFailure, UserError
from ..recipes import DEFAULT_PASSES as _DEFAULT_PASSES
from .base import REGISTRY, GraphPass, PassContext, PassRecord, get_pass, op_counts, register, unregister
from . import eliminate_dropout_identity, flatten_concat, fold_batchnorm, fold_constants, fuse_pad, strip_aux_heads  # noqa: F401,E402 - register the passes

log = logging.getLogger(__name__)

DEFAULT_PASSES = list(_DEFAULT_PASSES)  # the recipe schema's default (recipes.DEFAULT_PASSES says why this order)
CHECK_MODES = ("end", "each", "off")


@dataclass
class OptimizeResult:
    path: Optional[Path]  # None when nothing was written (output_path=None and write=False)
    input_path: Path
    passes: list[str]
    records: list[PassRecord]
    counts_before: dict[str, int]
    counts_after: dict[str, int]
    outputs_before: list[str]
    outputs_after: list[str]
    check: str
    check_inputs: Optional[str] = None  # what the safety check ran on
    comparisons: dict = field(default_factory=dict)  # output -> OutputComparison, final graph vs original
    allowed: dict = field(default_factory=dict)  # output -> the max abs error the check allowed
    noise_floor: dict = field(default_factory=dict)  # output -> the original's float32 noise floor
    manifest: dict = field(default_factory=dict)
    unchanged: bool = False  # no pass changed the graph: the input's graph was written as it was
    bytes_before: int = 0
    bytes_after: int = 0

    @property
    def nodes_before(self) -> int:
        return sum(self.counts_before.values())

    @property
    def nodes_after(self) -> int:
        return sum(self.counts_after.values())


def default_output_path(input_path: str | Path) -> Path:
    """MODEL.onnx -> MODEL.opt.onnx, beside the input."""
    path = Path(input_path)
    return path.with_name(f"{path.name[:-5] if path.name.endswith('.onnx') else path.name}.opt.onnx")


def parse_pass_list(passes: Optional[str | Sequence[str]], where: str = "--passes") -> Optional[list[str]]:
    if passes is None:
        return None
    names = [p.strip() for p in passes.split(",")] if isinstance(passes, str) else [str(p).strip() for p in passes]
    names = [n for n in names if n]
    for name in names:
        get_pass(name, where)
    return names


def cleanup(model) -> None:
    """After every pass: dead nodes and unused initializers out, topological order, shapes."""
    import onnx_ir as ir
    import onnx_ir.passes.common  # noqa: F401 - registers ir.passes.common

    ir.passes.common.RemoveUnusedNodesPass()(model)
    ir.passes.common.TopologicalSortPass()(model)
    ir.passes.common.ShapeInferencePass(strict_mode=False)(model)


def run_passes(model, names: Sequence[str], ctx: PassContext,
               after_each: Optional[Callable[[str, object, PassRecord], None]] = None) -> list[PassRecord]:
    """Apply the passes `names` in order to the onnx-ir `model`, in place."""
    records = []
    cleanup(model)  # passes see a sorted graph with shapes
    for name in names:
        graph_pass: GraphPass = get_pass(name)()
        before = op_counts(model.graph)
        start = time.perf_counter()
        notes = graph_pass.run(model, ctx) or []
        cleanup(model)
        after = op_counts(model.graph)
        record = PassRecord(
            name=name,
            removed={op: n - after.get(op, 0) for op, n in before.items() if n > after.get(op, 0)},
            added={op: n - before.get(op, 0) for op, n in after.items() if n > before.get(op, 0)},
            nodes_before=sum(before.values()), nodes_after=sum(after.values()),
            notes=list(notes), seconds=time.perf_counter() - start, idle=graph_pass.idle,
        )
        records.append(record)
        log.info("%s: %d -> %d nodes", name, record.nodes_before, record.nodes_after)
        if after_each is not None:
            after_each(name, model, record)
    return records


def _serialize(model) -> bytes:
    import onnx_ir as ir

    return ir.serde.serialize_model(model).SerializeToString()


def _resolve_recipe(recipe, manifest, input_path: Path):
    """(recipe or None, preprocessing or None): from the caller, else from the input's manifest;
    a graph whose manifest names a recipe that is not at hand (or changed since) is still
    checked with the preprocessing the manifest records."""
    from ..recipes import PreprocessingSection, resolve_recipe

    try:
        recipe = resolve_recipe(recipe, manifest, input_path)
    except UserError:
        if recipe is not None:
            raise
        recipe = None
    if recipe is not None:
        return recipe, recipe.preprocessing
    if manifest and manifest.get("preprocessing"):
        return None, PreprocessingSection(**manifest["preprocessing"])
    return None, None


def optimize_onnx(input_path: str | Path, output_path: Optional[str | Path] = None, recipe=None,
                  passes: Optional[str | Sequence[str]] = None, check: str = "end",
                  keep_outputs: Optional[Sequence[str]] = None, data: Optional[str] = None,
                  check_images: int = 8) -> OptimizeResult:
    """Optimize the graph at `input_path` and write it to `output_path` (default MODEL.opt.onnx).

    recipe: a Recipe, a bundled name or a YAML path; None: the recipe named in the input's
    manifest, if any. passes: names (list or "a,b,c"); None: the recipe's `passes:`.
    check: "end" (default), "each" (after every pass) or "off". keep_outputs: the outputs
    to keep (all others are stripped by strip-aux-heads). data: images for the check.
    """
    import onnx_ir as ir

    from ..artifact import load_onnx, save_onnx
    from . import safety

    input_path = Path(input_path)
    artifact = load_onnx(input_path, missing="input graph not found: {path}")
    if check not in CHECK_MODES:
        raise UserError(f"--check must be one of {', '.join(CHECK_MODES)}, not '{check}'")
    target = Path(output_path) if output_path is not None else default_output_path(input_path)
    proto, manifest = artifact.model, artifact.manifest
    recipe, pre = _resolve_recipe(recipe, manifest, input_path)
    outputs_before = [o.name for o in proto.graph.output]
    names = _pass_names(passes, recipe, keep_outputs, outputs_before, input_path)
    ctx = _context(recipe, manifest, keep_outputs)
    checker = None
    if check != "off":
        inputs = safety.make_inputs(proto, pre, data, count=check_images, where=str(input_path))
        checker = safety.SafetyCheck(str(input_path), inputs, safety.SafetyTolerance.from_recipe(recipe))
    model = ir.from_proto(proto)
    counts_before = op_counts(model.graph)
    records, comparisons = _apply(model, names, ctx, checker, check, input_path)
    out_proto = ir.serde.serialize_model(model)
    # Nothing changed (an export the exporter had already cleaned): write the input's own graph,
    # not onnx-ir's re-serialization of it, which adds inferred shapes (value_info) and grows the file.
    unchanged = _same_graph(proto, out_proto)
    if unchanged:
        out_proto = proto
    updated = _manifest(manifest, recipe, input_path, records, check, checker, comparisons, out_proto)
    save_onnx(out_proto, target, updated, what="the optimized graph")
    return OptimizeResult(
        path=target, input_path=input_path, passes=names, records=records, counts_before=counts_before,
        counts_after=op_counts(model.graph), outputs_before=outputs_before,
        outputs_after=[o.name for o in out_proto.graph.output], check=check,
        check_inputs=checker.inputs.source if checker else None, comparisons=comparisons, manifest=updated,
        allowed={k: checker.allowed(c) for k, c in comparisons.items()} if checker else {},
        noise_floor=dict(checker.noise_floor) if checker else {},
        unchanged=unchanged, bytes_before=input_path.stat().st_size, bytes_after=target.stat().st_size,
    )


def _same_graph(before, after) -> bool:
    """The same nodes in the same order, the same initializers (by name, any order) and the
    same inputs and outputs; inferred shapes (value_info) do not count."""
    return (list(before.graph.node) == list(after.graph.node)
            and list(before.graph.input) == list(after.graph.input)
            and list(before.graph.output) == list(after.graph.output)
            and {t.name: t for t in before.graph.initializer} == {t.name: t for t in after.graph.initializer})


def _pass_names(passes, recipe, keep_outputs, outputs_before: list[str], input_path: Path) -> list[str]:
    """The passes to run: the caller's, else the recipe's (else the defaults); strip-aux-heads
    added when --keep-output asks to strip the other outputs."""
    names = parse_pass_list(passes) if passes is not None else parse_pass_list(
        recipe.passes if recipe is not None else DEFAULT_PASSES, where=f"recipe '{recipe.name}' passes" if recipe else "passes")
    if keep_outputs:
        unknown = [n for n in keep_outputs if n not in outputs_before]
        if unknown:
            raise UserError(f"--keep-output: {input_path} has no output '{unknown[0]}'; its outputs: {', '.join(outputs_before)}")
        if "strip-aux-heads" not in names:
            names.append("strip-aux-heads")  # --keep-output is a request to strip the rest
    return names


def _context(recipe, manifest, keep_outputs) -> PassContext:
    from ..models import get_spec

    arch = recipe.model.arch if recipe is not None else ((manifest or {}).get("model") or {}).get("arch")
    return PassContext(
        recipe=recipe, manifest=manifest, keep_outputs=list(keep_outputs) if keep_outputs else None,
        aux_output_names=get_spec(arch).aux_output_names if arch else (),
        main_output=recipe.export.output_name if recipe is not None else None,
    )


def _apply(model, names, ctx, checker, check: str, input_path: Path):
    """Run the passes on `model` in place with the safety check `check` asks for; returns
    (records, final comparisons). A failed check raises ParityFailure naming the pass."""
    def check_now(name, model, record):
        results = checker.compare(_serialize(model))
        record.check = {k: checker.summary(c) for k, c in results.items()}
        bad = checker.failures(results)
        if bad:
            raise ParityFailure(
                f"pass '{name}' changed output '{bad[0].name}': {checker.describe(bad[0])}; nothing written")
        return results

    if check == "each":
        state = {}
        records = run_passes(model, names, ctx, after_each=lambda n, m, r: state.update(last=check_now(n, m, r)))
        return records, state.get("last") or check_now("(none)", model, PassRecord("(none)"))
    records = run_passes(model, names, ctx)
    if checker is None:
        return records, {}
    comparisons = checker.compare(_serialize(model))
    bad = checker.failures(comparisons)
    if bad:
        culprit = _find_culprit(input_path, names, ctx, check_now)
        raise ParityFailure(f"{culprit}changed output '{bad[0].name}': {checker.describe(bad[0])}; nothing written")
    return records, comparisons


def _manifest(manifest, recipe, input_path: Path, records, check: str, checker, comparisons, out_proto) -> dict:
    from ..fileio import sha256_file
    from ..manifest import add_stage, new_manifest

    stage = dict(
        inputs={"onnx": str(input_path), "onnx_sha256": sha256_file(input_path)},
        passes=[r.to_dict() for r in records], check=check,
        check_inputs=checker.inputs.source if checker else None,
        check_results={k: checker.summary(c) for k, c in comparisons.items()} if checker else {},
        outputs=[o.name for o in out_proto.graph.output],
    )
    return add_stage(manifest, "optimize", **stage) if manifest else new_manifest("optimize", recipe, **stage)


def _find_culprit(input_path: Path, names, ctx, check_now) -> str:
    """The end check failed: replay the passes from the input, checking after each, to name the pass."""
    import onnx_ir as ir

    try:
        run_passes(ir.load(str(input_path)), names, ctx, after_each=check_now)
    except ParityFailure as exc:
        return str(exc).split(" changed output")[0] + " "
    return "the pass sequence " + ", ".join(names) + " "  # only the combination differs


__all__ = [
    "CHECK_MODES", "DEFAULT_PASSES", "REGISTRY", "GraphPass", "OptimizeResult", "PassContext", "PassRecord",
    "cleanup", "default_output_path", "get_pass", "optimize_onnx", "parse_pass_list", "register", "run_passes", "unregister",
]
