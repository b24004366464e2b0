"""Export: PyTorch reference -> FP32 ONNX, checked against PyTorch (stage: export).

Uses torch's TorchScript-based exporter (`dynamo=False`): it honours the opset asked for
(measured: the dynamo exporter silently writes opset 18 for these models when asked for
17, and puts weights in an external file), folds BatchNorm in eval mode, and names nodes
after the PyTorch modules (/Mixed_6b/branch7x7dbl_3/conv/Conv), which layer-wise
validation maps back. The exported file is verified (opset, onnx.checker full check) and
compared with PyTorch on ONNX Runtime CPU at batch 1 and 7 before it is moved into place.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .compare import OutputComparison, compare_runners
from .errors import NonFiniteOutput, ParityFailure, UserError
from .fileio import check_writable, scratch_dir
from .manifest import new_manifest
from .recipes import Recipe, resolve_recipe
from .reference import Reference, load_reference

log = logging.getLogger(__name__)

# Export parity: max |ORT - torch| <= REL * max |logit| + ABS, and top-1 agreement 100%.
PARITY_REL, PARITY_ABS = 1e-5, 1e-6
PARITY_BATCHES = (1, 7)  # batch 7 goes through the dynamic axis at a size never traced


@dataclass
class ExportResult:
    path: Path
    recipe: Recipe
    reference: Reference
    output_names: list[str]
    parity: dict[int, dict[str, OutputComparison]] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


def export_onnx(recipe: Recipe | str, weights: Optional[str | Path] = None, output_dir: str | Path = "out",
                output: Optional[str | Path] = None, trust_checkpoint: bool = False, keep_aux: Optional[bool] = None,
                opset: Optional[int] = None, progress: bool = True, reference: Optional[Reference] = None) -> ExportResult:
    """Export the recipe's model with `weights` to `output` (default OUTPUT_DIR/<recipe>.onnx).

    keep_aux, opset: override the recipe's export section (None: the recipe's), validated like
    the recipe. reference: an already loaded PyTorch reference (`run` passes the one it holds),
    else loaded here."""
    from .artifact import save_onnx

    recipe = resolve_recipe(recipe).with_overrides(
        {"export.keep_aux": keep_aux, "export.opset": opset}, {"export.keep_aux": "--keep-aux", "export.opset": "--opset"},
        hints={"export.opset": "ONNX opsets 13-21 are supported; 17 is the default"})
    target = Path(output) if output is not None else Path(output_dir) / f"{recipe.name}.onnx"
    check_writable(target)  # before the work, not after it
    if reference is None:
        reference = load_reference(recipe, weights, trust_checkpoint=trust_checkpoint, progress=progress)

    module = reference.with_aux() if recipe.export.keep_aux else reference.module
    output_names = [recipe.export.output_name, *(reference.aux_output_names if recipe.export.keep_aux else ())]
    with scratch_dir("export") as scratch:
        traced = scratch / "traced.onnx"
        _torch_export(module, recipe, output_names, traced)
        model, manifest = _finish(traced, recipe, reference, output_names)
        parity = {}

        def verify(written: Path) -> None:
            try:
                parity.update(check_parity(written, module, recipe, output_names))
            except NonFiniteOutput as exc:
                raise NonFiniteOutput(f"{reference.weights}: export parity (PyTorch vs ONNX Runtime): {exc}") from None

        save_onnx(model, target, manifest, what="the exported graph", full_check=True, verify=verify)
    log.info("exported %s", target)
    return ExportResult(target, recipe, reference, output_names, parity, manifest)


def _torch_export(module, recipe: Recipe, output_names: list[str], path: Path) -> None:
    import torch

    height, width = recipe.input_hw
    example = torch.zeros(2, 3, height, width) if recipe.preprocessing.layout == "NCHW" else None
    if example is None:
        raise UserError(f"recipe '{recipe.name}': export needs preprocessing.layout NCHW (the models take NCHW)")
    input_name = recipe.export.input_name
    dynamic = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}} if recipe.export.dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is not the user's business
        torch.onnx.export(
            module.eval(), (example,), str(path), dynamo=False, opset_version=recipe.export.opset,
            input_names=[input_name], output_names=output_names, dynamic_axes=dynamic,
            do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
        )


def _finish(path: Path, recipe: Recipe, reference: Reference, output_names: list[str]):
    import onnx

    model = onnx.load(str(path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset != recipe.export.opset:
        raise UserError(f"the exporter wrote opset {opset}, not the {recipe.export.opset} asked for; "
                        "set export.opset to one torch supports for these models (13-20)")
    manifest = new_manifest(
        "export", recipe,
        inputs={"weights": reference.weights, "weights_sha256": reference.weights_sha256},
        weights_kind=reference.kind, opset=opset, outputs=output_names, keep_aux=recipe.export.keep_aux,
        input_name=recipe.export.input_name, training=reference.info.get("training"),
    )
    model.producer_name = "inception-deploy"
    return model, manifest


def parity_inputs(recipe: Recipe, count: int) -> np.ndarray:
    """Real images through the recipe's preprocessing: the validation data when the
    recipe names some, else digits (a real dataset shipped with scikit-learn)."""
    from .data import choose_indices, open_dataset

    source = recipe.data.validation or "digits-holdout"
    dataset = open_dataset(source, recipe.preprocessing)
    indices = choose_indices(dataset, min(count, len(dataset)), seed=0)
    return np.concatenate([x for x, _, _ in dataset.batches(recipe.preprocessing, count, indices)])


def check_parity(onnx_path: Path, module, recipe: Recipe, output_names: list[str]) -> dict[int, dict[str, OutputComparison]]:
    """ONNX Runtime CPU vs PyTorch at each batch size of PARITY_BATCHES; raises ParityFailure."""
    from .backends.onnxruntime_backend import OnnxRuntimeRunner
    from .backends.torch_backend import TorchRunner

    inputs = parity_inputs(recipe, sum(PARITY_BATCHES))
    splits = np.split(inputs, np.cumsum(PARITY_BATCHES)[:-1])
    results = {}
    with TorchRunner(module, recipe.export.input_name, output_names) as torch_runner, \
            OnnxRuntimeRunner(onnx_path) as ort_runner:
        for batch in splits:
            comparisons = compare_runners(torch_runner, ort_runner, [batch], output_names)
            results[len(batch)] = comparisons
            for name, c in comparisons.items():
                if not c.within(PARITY_REL, PARITY_ABS) or c.top1_agreement < 1.0:
                    raise ParityFailure(
                        f"exported graph differs from PyTorch at batch {len(batch)}, output '{name}': "
                        f"max abs error {c.max_abs_error:.3g} (allowed {PARITY_REL:g} x {c.max_abs_reference:.3g} + {PARITY_ABS:g}), "
                        f"top-1 agreement {100 * c.top1_agreement:.1f}%"
                    )
    return results


def parity_lines(result: ExportResult) -> list[str]:
    lines = []
    for batch, comparisons in result.parity.items():
        for name, c in comparisons.items():
            lines.append(
                f"PASSED | export parity | batch {batch} | {name} | max abs error {c.max_abs_error:.3g} "
                f"({c.relative_error:.2g} of max |logit| {c.max_abs_reference:.3g}) | top-1 agreement {100 * c.top1_agreement:.0f}%"
            )
    return lines
