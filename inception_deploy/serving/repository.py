"""`package --triton`: a Triton model repository from artifacts (stage: package).

    model_repository/
      googlenet-digits-int8-plan/
        config.pbtxt               platform tensorrt_plan, cc_model_filenames -> the plans below
        labels.txt                 when the recipe names its classes (classification extension)
        manifest.json              each artifact's manifest, with this stage appended
        1/model.tensorrt-rtx-sm80-sm86-sm89-sm120.plan
      googlenet-digits-int8-plan-preprocess/    (--with-preprocessing) Python backend: bytes -> input
      googlenet-digits-int8-plan-ensemble/      (--with-preprocessing) preprocess -> network

One call makes one model: an ONNX graph, or one or more plans for different GPUs (their
compute capabilities, read from their manifests, must not overlap; their I/O and precision
must agree). Each model folder is written beside its final place and renamed into it, so a
failure leaves the repository as it was; other models in the repository are left alone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .. import __version__
from ..errors import UserError
from .model_config import (PARAMETER_PREFIX, Batching, config_text, ensemble_config, network_config,
                           preprocess_config)
from .tensors import ServedArtifact, read_artifact

KINDS = ("gpu", "cpu")
TRITON_BACKENDS = ("auto", "onnxruntime", "python")  # how an ONNX graph is served
EXECUTION_PROVIDERS = ("tensorrt", "cuda", "cpu")  # ONNX Runtime's, for ONNX graphs
IMAGE_INPUT = "IMAGE"
_ORT_PRECISION_MODE = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
_PYTHON_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass
class PackagedModel:
    name: str
    folder: Path
    config: object  # model_config_pb2.ModelConfig
    files: list[str] = field(default_factory=list)  # relative to the folder

    @property
    def config_path(self) -> Path:
        return self.folder / "config.pbtxt"


@dataclass
class PackageResult:
    repository: Path
    models: list[PackagedModel]
    warnings: list[str] = field(default_factory=list)

    @property
    def network(self) -> PackagedModel:
        return self.models[0]

    def to_dict(self) -> dict:
        from google.protobuf.json_format import MessageToDict

        return {"repository": str(self.repository), "warnings": list(self.warnings),
                "models": [{"name": m.name, "folder": str(m.folder), "files": m.files,
                            "config": MessageToDict(m.config, preserving_proto_field_name=True)}
                           for m in self.models]}

    def lines(self) -> list[str]:
        lines = []
        for model in self.models:
            config = model.config
            what = config.platform or config.backend
            batch = (f"max_batch_size {config.max_batch_size}" if config.max_batch_size else "fixed batch")
            if config.HasField("dynamic_batching") and config.dynamic_batching.preferred_batch_size:
                batch += f", dynamic batching (preferred {list(config.dynamic_batching.preferred_batch_size)})"
            lines.append(f"PASSED | package | {model.name} | {what} | {batch} | {model.config_path}")
        return lines + [f"WARNING | package | {w}" for w in self.warnings]


def default_name(artifact: ServedArtifact) -> str:
    """recipe (or file stem) + precision unless FP32 + '-plan' for plans: googlenet-digits-int8-plan."""
    base = artifact.recipe_name or artifact.path.name.split(".")[0]
    name = base + ("" if artifact.precision == "fp32" else f"-{artifact.precision}")
    return name + ("-plan" if artifact.kind == "plan" else "")


def package_triton(artifacts: Sequence, output_dir="model_repository", name: Optional[str] = None,
                   instances: int = 1, max_batch: Optional[int] = None, dynamic_batching: Optional[bool] = None,
                   kind: str = "gpu", execution_provider: Optional[str] = None, triton_backend: str = "auto",
                   with_preprocessing: bool = False, recipe=None, version: int = 1,
                   max_queue_delay_us: int = 100) -> PackageResult:
    """Write one model (and with_preprocessing, its preprocessing model and ensemble) into `output_dir`.

    artifacts: one .onnx, or .plan files for different GPUs. kind: instance kind (plans: gpu only).
    execution_provider: ONNX Runtime's for an ONNX graph (gpu: tensorrt (default) or cuda; cpu: cpu).
    triton_backend: for an ONNX graph, 'onnxruntime' (Triton's backend; the default) or 'python'
    (ONNX Runtime inside Triton's Python backend). max_batch: at most the plan profile's max.
    """
    from ..recipes import resolve_recipe

    if not artifacts:
        raise UserError("give the artifacts to package: an .onnx graph, or .plan files for different GPUs")
    _check_choice("--kind", kind, KINDS)
    _check_choice("--triton-backend", triton_backend, TRITON_BACKENDS)
    if execution_provider is not None:
        _check_choice("--execution-provider", execution_provider, EXECUTION_PROVIDERS)
    if instances < 1:
        raise UserError(f"--instances {instances}: give at least 1 instance")
    if version < 1:
        raise UserError(f"--version {version}: Triton model versions start at 1")
    served = [read_artifact(a) for a in artifacts]
    kinds = {a.kind for a in served}
    if len(kinds) > 1 or (kinds == {"onnx"} and len(served) > 1):
        raise UserError("one model per call: give one .onnx graph, or .plan files for different GPUs; call "
                        "`package` again with the same --output-dir for another model")
    first = served[0]
    recipe = resolve_recipe(recipe, first.manifest, first.path)
    if first.kind == "plan":
        _check_plans(served)
        if kind != "gpu":
            raise UserError(f"{first.path}: a TensorRT plan runs only on a GPU; --kind cpu serves an .onnx graph")
        if triton_backend not in ("auto",) or execution_provider is not None:
            raise UserError(f"{first.path}: --triton-backend and --execution-provider are for .onnx graphs; Triton "
                            "runs plans with its tensorrt backend")
    name = name or default_name(first)
    _check_name(name)
    batching = _batching(first, recipe, max_batch, dynamic_batching, max_queue_delay_us)
    class_names = _class_names(recipe, first)
    label_output = _label_output(first, class_names)

    if with_preprocessing:  # checked before anything is written
        _check_ensemble(first, recipe)
    repository = Path(output_dir)
    if repository.exists() and not repository.is_dir():
        raise UserError(f"{repository}: is a file, not a folder; give the model repository folder (--output-dir)")
    result = PackageResult(repository, [])
    if first.kind == "plan":
        model = _write_plans(repository, name, served, batching, instances, label_output, class_names, recipe, version,
                             result)
    else:
        model = _write_onnx(repository, name, first, batching, kind, instances, execution_provider, triton_backend,
                            label_output, class_names, recipe, version, result)
    result.models.append(model)
    if with_preprocessing:
        result.models += _write_ensemble(repository, name, first, batching, kind, instances, label_output,
                                         class_names, recipe, version)
    return result


def _check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"{option} {value}: choose one of {', '.join(choices)}")


def _check_name(name: str) -> None:
    from .endpoint import _MODEL_NAME

    if not _MODEL_NAME.match(name):
        raise UserError(f"--name '{name}': a Triton model name is a folder name: letters, digits, '_', '-', '.'")


def _check_plans(plans: list[ServedArtifact]) -> None:
    """Plans served as one model: same I/O and precision, no GPU claimed twice."""
    first = plans[0]
    claimed: dict[str, Path] = {}
    for plan in plans:
        if plan.signature() != first.signature():
            raise UserError(f"{plan.path}: its inputs/outputs differ from {first.path}'s; one model serves plans of one "
                            "network (build them from the same ONNX graph)")
        if plan.precision != first.precision:
            raise UserError(f"{plan.path} is {plan.precision}, {first.path} is {first.precision}: plans of one model "
                            "must share a precision (validate judges a model by it); package them as two models")
        if plan.recipe_name != first.recipe_name:
            raise UserError(f"{plan.path} was made with recipe {plan.recipe_name!r}, {first.path} with "
                            f"{first.recipe_name!r}; plans of one model must come from one recipe")
        for capability in plan.compute_capabilities:
            if capability in claimed:
                raise UserError(f"{plan.path} and {claimed[capability]} both target compute capability {capability}; "
                                "Triton loads one plan per GPU: give one plan per GPU family")
            claimed[capability] = plan.path


def _batching(artifact: ServedArtifact, recipe, max_batch: Optional[int], dynamic: Optional[bool],
              delay_us: int) -> Batching:
    from ..recipes import EngineSection

    batched = [t for t in artifact.inputs if t.batched]
    if not batched:
        fixed = artifact.inputs[0].shape[0] if artifact.inputs and artifact.inputs[0].shape else "?"
        if max_batch is not None or dynamic:
            raise UserError(f"{artifact.path}: its input has a fixed batch of {fixed}, so Triton cannot batch it "
                            "(max_batch_size 0); export it with a dynamic batch axis for --max-batch or "
                            "--dynamic-batching")
        return Batching(0, dynamic=False)
    if max_batch is not None and max_batch < 1:
        raise UserError(f"--max-batch {max_batch}: give at least 1")
    if artifact.batch_range is not None:  # a plan: its optimization profile is the limit
        smallest, opt, largest = artifact.batch_range
        if smallest > 1:
            raise UserError(f"{artifact.path}: its optimization profile starts at batch {smallest}, but Triton sends "
                            "batches from 1 up; rebuild it with --min-batch 1")
        if max_batch is not None and max_batch > largest:
            raise UserError(f"--max-batch {max_batch}: {artifact.path.name}'s optimization profile ends at batch "
                            f"{largest}, and a TensorRT engine refuses larger batches; give at most {largest}, or "
                            f"rebuild the plan with `build-engine --max-batch {max_batch}`")
    else:  # an ONNX graph batches freely: the recipe's engine batch range is the serving range
        batch = (recipe.engine if recipe is not None else EngineSection()).batch
        opt, largest = batch.opt, batch.max
    maximum = max_batch if max_batch is not None else largest
    opt = min(opt, maximum)
    preferred = sorted({opt, maximum})
    return Batching(maximum, preferred, dynamic is not False, delay_us, warmup=sorted({1, opt}))


def _class_names(recipe, artifact: ServedArtifact) -> Optional[list[str]]:
    if recipe is not None and recipe.model.class_names:
        return list(recipe.model.class_names)
    return artifact.class_names


def _label_output(artifact: ServedArtifact, class_names: Optional[list[str]]) -> Optional[str]:
    """The classifier output: the first whose last dim is the number of classes."""
    if not class_names:
        return None
    return next((t.name for t in artifact.outputs if t.shape and t.shape[-1] == len(class_names)), None)


def _parameters(artifact: ServedArtifact, recipe, sha256: dict[str, str]) -> dict:
    manifest = artifact.manifest or {}
    preprocessing = recipe.preprocessing_dict() if recipe is not None else manifest.get("preprocessing")
    return {f"{PARAMETER_PREFIX}recipe": recipe.name if recipe is not None else manifest.get("recipe"),
            f"{PARAMETER_PREFIX}precision": artifact.precision,
            f"{PARAMETER_PREFIX}preprocessing": preprocessing,
            f"{PARAMETER_PREFIX}sha256": ",".join(sha256[k] for k in sorted(sha256)),
            f"{PARAMETER_PREFIX}toolkit_version": __version__}


def _header(artifacts: list[ServedArtifact], extra: Sequence[str] = ()) -> list[str]:
    names = ", ".join(a.path.name for a in artifacts)
    return [f"Written by inception-deploy {__version__} `package --triton` from {names}.", *extra]


def _write_common(folder: Path, name: str, artifacts: list[ServedArtifact], files: dict[str, ServedArtifact],
                  class_names: Optional[list[str]], version: int, sha256: dict[str, str]) -> None:
    """labels.txt and manifest.json (each artifact's manifest, with this stage appended)."""
    from ..manifest import add_stage, new_manifest

    if class_names:
        (folder / "labels.txt").write_text("".join(f"{label}\n" for label in class_names))
    manifests = {}
    for filename, artifact in files.items():
        inputs = {str(artifact.path): sha256[filename]}
        manifests[filename] = (add_stage(artifact.manifest, "package", inputs=inputs, model=name, version=version)
                               if artifact.manifest else new_manifest("package", inputs=inputs, model=name))
    record = {"format": "inception-deploy/triton-model/1", "model": name, "version": version, "files": manifests}
    (folder / "manifest.json").write_text(json.dumps(record, indent=2, default=str) + "\n")


def _copy(source: Path, target: Path) -> str:
    from ..fileio import sha256_file

    shutil.copyfile(source, target)
    return sha256_file(target)


def _write_plans(repository: Path, name: str, plans: list[ServedArtifact], batching: Batching, instances: int,
                 label_output: Optional[str], class_names, recipe, version: int, result: PackageResult
                 ) -> PackagedModel:
    from ..fileio import atomic_dir

    first = plans[0]
    filenames = {f"model.{plan.builder}-{'-'.join('sm' + c.replace('.', '') for c in plan.compute_capabilities)}"
                 f"{plan.path.suffix}": plan for plan in plans}
    cc_files = {capability: filename for filename, plan in filenames.items() for capability in plan.compute_capabilities}
    header = []
    for filename, plan in filenames.items():
        builder = "TensorRT-RTX" if plan.builder == "tensorrt-rtx" else "TensorRT"
        header.append(f"{filename}: {plan.precision.upper()} plan built by {builder} {plan.builder_version} for "
                      f"compute capability {', '.join(plan.compute_capabilities)} (from {plan.path.name}).")
        if plan.builder == "tensorrt-rtx":
            result.warnings.append(f"{plan.path.name} is a TensorRT-RTX plan: Triton's tensorrt backend loads it only "
                                   f"when built against TensorRT-RTX {plan.builder_version} (NGC's Triton images use "
                                   "datacenter TensorRT); for those, build with `build-engine --builder tensorrt` on the "
                                   "serving GPU, or serve the .onnx with the ONNX Runtime TensorRT provider")
    header += ["A plan runs only under the TensorRT version that built it: the server's tensorrt backend must match.",
               "No default_model_filename: on a GPU no plan targets, the model fails to load rather than run a plan "
               "built for another GPU."]
    with atomic_dir(repository / name) as folder:
        (folder / str(version)).mkdir()
        sha256 = {filename: _copy(plan.path, folder / str(version) / filename) for filename, plan in filenames.items()}
        config = network_config(name, "tensorrt_plan", first.inputs, first.outputs, batching, "gpu", instances,
                                label_output, cc_model_filenames=cc_files,
                                parameters=_parameters(first, recipe, sha256))
        (folder / "config.pbtxt").write_text(config_text(config, _header(plans, header)))
        _write_common(folder, name, plans, filenames, class_names, version, sha256)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return PackagedModel(name, repository / name, config, files)


def _ort_accelerator(artifact: ServedArtifact, recipe, batching: Batching, provider: str):
    """ONNX Runtime's TensorRT provider settings a user would set: the graph's own precision (Q/DQ
    graphs need INT8 mode; an FP32 graph must not be lowered), the recipe's workspace and builder
    level, an engine cache, and one profile over the serving batch range, so the provider builds
    one engine for every batch Triton sends instead of one per new batch size."""
    from ..recipes import EngineSection

    if provider == "cuda":
        return ("cuda", {"cudnn_conv_use_max_workspace": "1"})
    engine = recipe.engine if recipe is not None else EngineSection()
    settings = {"precision_mode": _ORT_PRECISION_MODE[artifact.precision],
                "max_workspace_size_bytes": str(engine.workspace_mb << 20),
                "trt_builder_optimization_level": str(engine.optimization_level),
                "trt_engine_cache_enable": "1", "trt_timing_cache_enable": "1"}
    if batching.max_batch_size:
        for key, batch in (("min", 1), ("opt", batching.preferred[0]), ("max", batching.max_batch_size)):
            settings[f"trt_profile_{key}_shapes"] = ",".join(
                f"{t.name}:{'x'.join(str(d) for d in [batch, *t.shape[1:]])}" for t in artifact.inputs)
    return ("tensorrt", settings)


def _write_onnx(repository: Path, name: str, artifact: ServedArtifact, batching: Batching, kind: str, instances: int,
                execution_provider: Optional[str], triton_backend: str, label_output: Optional[str], class_names,
                recipe, version: int, result: PackageResult) -> PackagedModel:
    from ..fileio import atomic_dir
    from .python_models import source

    provider = execution_provider or ("tensorrt" if kind == "gpu" else "cpu")
    if (kind == "cpu") != (provider == "cpu"):
        raise UserError(f"--execution-provider {provider} with --kind {kind}: the CPU provider runs CPU instances, "
                        "tensorrt and cuda run GPU instances")
    backend = "onnxruntime" if triton_backend == "auto" else triton_backend
    if backend == "python" and provider == "tensorrt":
        raise UserError("--triton-backend python runs ONNX Runtime with the cpu or cuda provider; for its TensorRT "
                        "provider use Triton's onnxruntime backend (the default)")
    header = [f"{artifact.precision.upper()} ONNX graph {artifact.path.name}, served by "
              + ("Triton's onnxruntime backend" if backend == "onnxruntime" else
                 f"ONNX Runtime ({_PYTHON_PROVIDERS[provider]}) in Triton's Python backend (model.py)") + "."]
    for data in artifact.external_data:
        if not data.is_file():
            raise UserError(f"{artifact.path}: its weights file {data} is missing; keep it beside the graph")
    with atomic_dir(repository / name) as folder:
        target = folder / str(version)
        target.mkdir()
        sha256 = {"model.onnx": _copy(artifact.path, target / "model.onnx")}
        for data in artifact.external_data:  # the graph names its weights file: same name, same folder
            shutil.copyfile(data, target / data.name)
        parameters = _parameters(artifact, recipe, sha256)
        if backend == "python":
            shutil.copyfile(source("onnxruntime_model"), target / "model.py")
            parameters.update(onnx_model="model.onnx", execution_provider=_PYTHON_PROVIDERS[provider])
            config = network_config(name, "python", artifact.inputs, artifact.outputs, batching, kind, instances,
                                    label_output, parameters=parameters)
        else:
            accelerator = _ort_accelerator(artifact, recipe, batching, provider) if kind == "gpu" else None
            config = network_config(name, "onnxruntime_onnx", artifact.inputs, artifact.outputs, batching, kind,
                                    instances, label_output, default_model_filename="model.onnx",
                                    accelerator=accelerator, parameters=parameters)
        (folder / "config.pbtxt").write_text(config_text(config, _header([artifact], header)))
        _write_common(folder, name, [artifact], {"model.onnx": artifact}, class_names, version, sha256)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return PackagedModel(name, repository / name, config, files)


def _check_ensemble(artifact: ServedArtifact, recipe) -> None:
    if recipe is None:
        raise UserError(f"{artifact.path}: --with-preprocessing applies the recipe's preprocessing, and the artifact "
                        "names no recipe; give --recipe")
    if len(artifact.inputs) != 1:
        raise UserError(f"{artifact.path}: --with-preprocessing feeds one image input; this graph has "
                        f"{len(artifact.inputs)} inputs")
    network_input = artifact.inputs[0]
    expected = [3, *recipe.input_hw] if recipe.preprocessing.layout == "NCHW" else [*recipe.input_hw, 3]
    if network_input.shape[1:] != expected or network_input.dtype != "float32" or not network_input.batched:
        raise UserError(f"{artifact.path}: input '{network_input.name}' is {network_input.dtype} {network_input.shape} "
                        f"(batch first), recipe '{recipe.name}' preprocesses to float32 [N, "
                        f"{', '.join(map(str, expected))}]; package with the recipe the artifact was made with")


def _write_ensemble(repository: Path, name: str, artifact: ServedArtifact, batching: Batching, kind: str,
                    instances: int, label_output: Optional[str], class_names, recipe, version: int
                    ) -> list[PackagedModel]:
    from ..fileio import atomic_dir
    from .python_models import source

    network_input = artifact.inputs[0]
    parameters = {f"{PARAMETER_PREFIX}recipe": recipe.name,
                  f"{PARAMETER_PREFIX}preprocessing": recipe.preprocessing_dict(),
                  f"{PARAMETER_PREFIX}toolkit_version": __version__}
    models = []
    pre_name, ensemble_name = f"{name}-preprocess", f"{name}-ensemble"
    with atomic_dir(repository / pre_name) as folder:
        (folder / str(version)).mkdir()
        shutil.copyfile(source("preprocess_model"), folder / str(version) / "model.py")
        (folder / str(version) / "preprocessing.json").write_text(json.dumps(recipe.preprocessing_dict(), indent=2))
        config = preprocess_config(pre_name, IMAGE_INPUT, network_input, batching.max_batch_size, kind, instances,
                                   parameters)
        header = [f"Encoded image bytes -> '{network_input.name}' by recipe '{recipe.name}' (inception_deploy.data."
                  "preprocess, in Triton's Python backend); needs inception-deploy in that backend's environment."]
        (folder / "config.pbtxt").write_text(config_text(config, _header([artifact], header)))
        models.append(PackagedModel(pre_name, repository / pre_name, config,
                                    ["config.pbtxt", f"{version}/model.py", f"{version}/preprocessing.json"]))
    with atomic_dir(repository / ensemble_name) as folder:
        (folder / str(version)).mkdir()  # an ensemble has no files, but Triton wants its version folder
        config = ensemble_config(ensemble_name, IMAGE_INPUT, pre_name, name, network_input, artifact.outputs,
                                 batching.max_batch_size, label_output, parameters)
        header = [f"{IMAGE_INPUT} (encoded image bytes) -> {pre_name} -> {name}."]
        (folder / "config.pbtxt").write_text(config_text(config, _header([artifact], header)))
        if class_names:
            (folder / "labels.txt").write_text("".join(f"{label}\n" for label in class_names))
        models.append(PackagedModel(ensemble_name, repository / ensemble_name, config,
                                    ["config.pbtxt"] + (["labels.txt"] if class_names else [])))
    return models
