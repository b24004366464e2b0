"""`validate`: reference and targets on the same inputs, judged by the recipe (stage: validate).

Every input is checked before any model runs (targets exist, manifests agree with the
recipe, runners start: a missing TensorRT is one line and exit 2, not a half-run). Then the
data streams batch by batch through the shared preprocessing into the reference (PyTorch
from recipe + weights, or an FP32 ONNX) and each target; only per-sample scalars and
counters are kept. Verdicts come from `recipe.tolerances.<precision of the target>`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..engine.plan_files import PLAN_SUFFIXES
from ..errors import UserError, about
from ..fileio import sha256_file
from ..manifest import check_preprocessing, library_versions
from ..precision.evaluate import EXACT, MODE_LEVELS, OPTIMIZED
from .crops import PROTOCOLS, average_softmax, crop_batches
from .layerwise import compare_layers
from .metrics import ValidationComparison
from .report import TargetResult, ValidationReport
from .verdict import judge, plan_precision

ONNX_SUFFIXES = (".onnx",)
LAYERWISE_IMAGES = 16  # one batch is enough to locate a divergence; intermediate tensors are big


def parse_shard(shard: Optional[str | tuple[int, int]]) -> Optional[tuple[int, int]]:
    """'2/4' -> (2, 4): the second of four interleaved shards (1-based)."""
    if shard is None:
        return None
    if isinstance(shard, tuple):
        index, count = shard
    else:
        try:
            index, count = (int(part) for part in str(shard).split("/"))
        except ValueError:
            raise UserError(f"--shard '{shard}': give i/n with 1 <= i <= n, e.g. 2/4") from None
    if not 1 <= index <= count:
        raise UserError(f"--shard '{index}/{count}': give i/n with 1 <= i <= n, e.g. 2/4")
    return index, count


def read_labels(path: str | Path, count: int) -> np.ndarray:
    """Labels in dataset order: .npy, or text with one integer class per line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labels file not found: {path}")
    try:
        labels = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise UserError(f"{path}: labels must be one integer class per line (or an .npy array) ({exc})") from None
    labels = np.asarray(labels).astype(np.int64).ravel()
    if len(labels) != count:
        raise UserError(f"{path}: {len(labels)} labels for {count} images; give one label per image, in dataset order")
    return labels


class _Target:
    """A target artifact, inspected before anything runs."""

    def __init__(self, path: Path, recipe, backend: str) -> None:
        self.path = path
        self.runner_object = None
        if not path.is_file():
            raise UserError(f"target not found: {path}")
        if path.suffix in ONNX_SUFFIXES:
            from ..artifact import load_onnx

            artifact = load_onnx(path, missing="target not found: {path}", load_external_data=False)
            self.manifest = artifact.manifest
            check_preprocessing(self.manifest, recipe, str(path))
            self.precision = artifact.precision
            self.backend = backend
            # A Q/DQ graph on the CPU is judged by the exact ONNX Q/DQ semantics TensorRT implements
            # (ORT's graph optimizations off); ORT's optimized numbers are measured beside.
            self.mode = EXACT if self.precision == "int8" and backend == "ort-cpu" else None
        elif path.suffix in PLAN_SUFFIXES:
            manifest_path = path.with_name(path.name + ".json")
            self.manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
            self.precision = plan_precision(path)
            self.backend = "tensorrt"
            self.mode = None
        else:
            raise UserError(f"{path}: unknown target type '{path.suffix}'; give an .onnx graph or a TensorRT .plan")

    @property
    def name(self) -> str:
        return self.path.name

    def sha256(self) -> str:
        return sha256_file(self.path)

    def runner(self, mode: Optional[str] = None):
        """The target's runner; for a Q/DQ graph on the CPU in `mode` (default: its judging mode)."""
        from ..backends import open_runner

        mode = mode or self.mode
        if mode is None:
            return open_runner(self.path, self.backend)
        return open_runner(self.path, self.backend, optimization=MODE_LEVELS[mode])


class _ServedTarget(_Target):
    """A model on a Triton server (triton://HOST:PORT/MODEL), checked before anything runs: the
    server answers, the model is ready, its input is what the recipe makes, and the preprocessing
    its config records (written by `package`) is the recipe's. Its precision, for the tolerances,
    is the one its config records; a model packaged elsewhere is judged as FP32, the strictest."""

    def __init__(self, endpoint, recipe, timeout: Optional[float]) -> None:
        from ..backends.triton_backend import open_triton_runner

        self.path = str(endpoint)
        self.backend = "triton"
        self.runner_object = open_triton_runner(endpoint, timeout)
        self.runner_object.activate()
        layout = (3, *recipe.input_hw) if recipe.preprocessing.layout == "NCHW" else (*recipe.input_hw, 3)
        self.runner_object.check_input(layout, "float32", f"recipe '{recipe.name}'")
        served = self.runner_object.served_parameters()
        preprocessing = json.loads(served["preprocessing"]) if served.get("preprocessing") else None
        self.manifest = {"endpoint": self.path, "recipe": served.get("recipe"), "precision": served.get("precision"),
                         "preprocessing": preprocessing, "sha256": served.get("sha256"),
                         "platform": self.runner_object.config.get("platform") or self.runner_object.config.get("backend")}
        check_preprocessing(self.manifest, recipe, self.path)
        self.precision = served.get("precision") if served.get("precision") in ("fp32", "fp16", "int8") else "fp32"
        self.mode = None  # the server's own runtime: not an exact-mode target

    @property
    def name(self) -> str:
        return self.path

    def sha256(self) -> Optional[str]:
        return self.manifest.get("sha256")

    def runner(self, mode: Optional[str] = None):
        return self.runner_object


def _target(target, recipe, backend: str, timeout: Optional[float]) -> _Target:
    from ..serving.endpoint import is_endpoint

    return _ServedTarget(target, recipe, timeout) if is_endpoint(target) else _Target(Path(target), recipe, backend)


def validate(recipe, weights=None, reference=None, targets: Sequence = (), data=None, labels=None,
             max_images: Optional[int] = None, output_dir=None, batch_size: int = 32, layerwise: bool = False,
             crops: int = 1, shard=None, progress: bool = True, backend: str = "ort-cpu",
             trust_checkpoint: bool = False, fp32_onnx=None, timeout: Optional[float] = None,
             strict: bool = False) -> ValidationReport:
    """Validate `targets` against the reference; write report.json/junit.xml/report.html to `output_dir`.

    targets: .onnx graphs, .plan files and served models (triton://HOST:PORT/MODEL[/VERSION];
    triton+grpc:// for gRPC; `timeout` seconds per call to the server, default 30).
    reference: an FP32 .onnx, an already loaded reference.Reference (the PyTorch model `run`
    holds), or None for the PyTorch model from `recipe` + `weights`.
    data: image folder, .npy/.npz, digits-holdout, synthetic[:N] (default: the recipe's data.validation).
    fp32_onnx: the reference's FP32 ONNX export, when one exists (layer-wise compares against
    it instead of exporting the PyTorch model again).
    strict: a SKIPPED check (e.g. accuracy without labels) fails instead of being counted as skipped.
    The returned report's `exit_code` is the verdict (0 pass, 1 fail); bad input raises UserError.
    """
    from ..recipes import resolve_recipe

    started = time.perf_counter()
    recipe = resolve_recipe(recipe)
    if not targets:
        raise UserError("no targets to validate; give --target MODEL.onnx (or a .plan), repeatable")
    if crops not in PROTOCOLS:
        raise UserError(f"--crops {crops}: choose one of {', '.join(map(str, PROTOCOLS))}")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    shard = parse_shard(shard)
    checked = [_target(t, recipe, backend, timeout) for t in targets]
    reference_onnx = _check_reference_onnx(reference, recipe)
    source, dataset, indices, list_sha = _dataset(recipe, data, labels, max_images, shard)
    ref, ref_runner, ref_description = _reference_runner(recipe, weights, reference, trust_checkpoint, progress)

    with contextlib.ExitStack() as stack:
        # Start every runner before the first batch: a missing TensorRT or GPU fails now.
        stack.enter_context(ref_runner)
        runners = [stack.enter_context(t.runner()) for t in checked]
        # Exact-mode targets run a second time under ORT's optimizations (reported, never judged).
        shadowed = [k for k, t in enumerate(checked) if t.mode == EXACT]
        runners += [stack.enter_context(checked[k].runner(OPTIMIZED)) for k in shadowed]
        order = list(range(len(checked))) + shadowed
        output_pairs = [_output_pairs(ref_runner, r, checked[k].path) for r, k in zip(runners, order)]
        comparisons = [{cand: ValidationComparison(cand) for _, cand in pairs} for pairs in output_pairs]
        images = _run(dataset, recipe, indices, batch_size, crops, ref_runner, runners, output_pairs,
                      comparisons, progress, [checked[k].path for k in order])

    results = _judge(checked, comparisons[:len(checked)], recipe)
    for k, optimized in zip(shadowed, comparisons[len(checked):]):
        results[k].mode, results[k].optimized = EXACT, optimized
    if layerwise:
        _layerwise(results, checked, recipe, ref, reference_onnx or fp32_onnx, dataset, indices)

    seconds = time.perf_counter() - started
    report = ValidationReport(
        recipe=recipe.name, reference=ref_description,
        data={"source": str(source), "images": images, "skipped": list(dataset.skipped), "crops": crops,
              "shard": None if shard is None else f"{shard[0]}/{shard[1]}", "labels": dataset.labels is not None,
              "indices_sha": _indices_digest(indices), "list_sha": list_sha},
        targets=results, tolerances=recipe.tolerances.model_dump(mode="json"),
        timing={"seconds": seconds, "images_per_second": images / seconds if seconds else None},
        libraries=library_versions(),
    )
    if strict:
        report.fail_skipped()
    if output_dir is not None:
        report.write(output_dir)
    return report


def _judge(checked, comparisons, recipe) -> list[TargetResult]:
    """Each target's comparisons judged by the recipe's tolerances for its precision."""
    results = []
    names = _display_names(checked)
    for target, name, outputs in zip(checked, names, comparisons):
        tolerance = getattr(recipe.tolerances, target.precision)
        checks = [check for c in outputs.values() for check in judge(name, c, tolerance, target.precision)]
        results.append(TargetResult(str(target.path), name, target.precision, target.backend, target.manifest,
                                    outputs, checks, sha256=target.sha256()))
    return results


def _check_reference_onnx(reference, recipe) -> Optional[Path]:
    """The --reference FP32 ONNX, checked like a target (None: the PyTorch model is the reference)."""
    if reference is None or not isinstance(reference, (str, Path)):
        return None
    reference = Path(reference)
    ref_target = _Target(reference, recipe, "ort-cpu")
    if reference.suffix not in ONNX_SUFFIXES or ref_target.precision != "fp32":
        raise UserError(f"--reference {reference}: the reference must be an FP32 ONNX graph "
                        f"(this one is {ref_target.precision}); or leave it out to use PyTorch")
    return reference


def _dataset(recipe, data, labels, max_images, shard):
    """(source, dataset, the indices to validate on: a class-balanced choice, sharded, and the
    digest of the list before sharding: `validate merge` refuses shards of different runs)."""
    from ..data import choose_indices, open_dataset

    source = data or recipe.data.validation
    if source is None:
        raise UserError(f"no validation data: give --data DIR|FILE|digits-holdout|synthetic, or set data.validation "
                        f"in recipe '{recipe.name}'")
    dataset = open_dataset(source, recipe.preprocessing)
    if labels is not None:
        dataset.labels = read_labels(labels, len(dataset))
    indices = choose_indices(dataset, max_images or recipe.data.max_images, allow_fewer=True)
    list_sha = _indices_digest(np.concatenate([[len(dataset)], indices]))
    if shard is not None:
        indices = indices[shard[0] - 1::shard[1]]
    return source, dataset, indices, list_sha


def _reference_runner(recipe, weights, reference, trust_checkpoint: bool, progress: bool):
    """(the loaded PyTorch reference or None, its runner, how reports name it)."""
    from ..backends import open_runner
    from ..backends.torch_backend import TorchRunner

    if isinstance(reference, (str, Path)):
        return None, open_runner(Path(reference), "ort-cpu"), f"ONNX Runtime CPU {reference}"
    if reference is None:
        from ..reference import load_reference

        reference = load_reference(recipe, weights, trust_checkpoint=trust_checkpoint, progress=progress)
    runner = TorchRunner(reference.module, recipe.export.input_name, [recipe.export.output_name])
    return reference, runner, f"PyTorch {recipe.model.arch} ({reference.weights})"


def _output_pairs(ref_runner, runner, path) -> list[tuple[str, str]]:
    """(reference output, target output) pairs: outputs of the same name, else the first of each."""
    common = [name for name in ref_runner.output_names if name in runner.output_names]
    if common:
        return [(name, name) for name in common]
    if not runner.output_names:
        raise UserError(f"{path}: the target has no outputs")
    return [(ref_runner.output_names[0], runner.output_names[0])]


def _infer(runner, inputs: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    if len(inputs) <= batch_size:
        return runner.infer({runner.input_names[0]: inputs})
    parts = [runner.infer({runner.input_names[0]: inputs[i:i + batch_size]}) for i in range(0, len(inputs), batch_size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _run(dataset, recipe, indices, batch_size, crops, ref_runner, runners, output_pairs, comparisons, progress,
         paths) -> int:
    from ..progress import ProgressBar

    if crops == 1:
        batches = ((x, 1, y, idx) for x, y, idx in dataset.batches(recipe.preprocessing, batch_size, indices))
    else:
        batches = crop_batches(dataset, recipe.preprocessing, crops, batch_size, indices)
    done = 0
    with ProgressBar("validate", len(indices), progress,
                     about=f"{len(indices)} images through the reference and {len(runners)} target(s)") as bar:
        for inputs, per_image, labels, idx in batches:
            ref_out = _infer(ref_runner, inputs, batch_size)
            for runner, pairs, outputs, path in zip(runners, output_pairs, comparisons, paths):
                with about(path):  # errors name the target they are about
                    cand_out = _infer(runner, inputs, batch_size)
                    for ref_name, cand_name in pairs:
                        a, b = ref_out[ref_name], cand_out[cand_name]
                        if per_image > 1:
                            a, b = average_softmax(a, per_image), average_softmax(b, per_image)
                        outputs[cand_name].update(a, b.astype(np.float32, copy=False), labels)
            done += len(idx)
            bar.advance(len(idx))
    if done == 0:
        raise UserError(f"{dataset.name}: no readable images to validate on")
    return done


def _layerwise(results, checked, recipe, ref, reference_onnx, dataset, indices) -> None:
    """Compare intermediate tensors of the FP32 reference graph and each ONNX target. Without
    an FP32 ONNX of the reference at hand, the PyTorch model is exported once, to a scratch file."""
    from ..fileio import scratch_dir

    with scratch_dir("layerwise") as scratch:
        if reference_onnx is None:
            from ..export import export_onnx

            reference_onnx = export_onnx(recipe, output=scratch / "reference.onnx", reference=ref,
                                         progress=False).path
        inputs, _, _ = next(dataset.batches(recipe.preprocessing, LAYERWISE_IMAGES, indices[:LAYERWISE_IMAGES]))
        for result, target in zip(results, checked):
            if not isinstance(target.path, Path) or target.path.suffix not in ONNX_SUFFIXES:
                continue  # a TensorRT plan has no addressable intermediate tensors here
            result.layerwise = compare_layers(reference_onnx, target.path, inputs, target.precision, result.name)


def _display_names(targets: list[_Target]) -> list[str]:
    names = [t.name for t in targets]
    return names if len(set(names)) == len(names) else [str(t.path) for t in targets]


def _indices_digest(indices: np.ndarray) -> str:
    from ..fileio import sha256_bytes

    return sha256_bytes(np.asarray(indices, dtype=np.int64).tobytes())[:16]
