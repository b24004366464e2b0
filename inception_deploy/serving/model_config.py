"""Triton model configurations (stage: package), built as Triton's own ModelConfig protobuf.

The messages come from tritonclient's copy of Triton's model_config.proto, so a config we
write is one Triton's schema accepts by construction (a wrong field name is an AttributeError
here, not a server that refuses the model), and `read_config` parses config.pbtxt files with
the same schema. What goes in each config, and why:

- the network: `tensorrt_plan` (plans, one per GPU family, chosen by `cc_model_filenames`),
  `onnxruntime_onnx` (with the TensorRT or CUDA execution provider on GPU instances), or the
  Python backend running ONNX Runtime (for servers without the onnxruntime backend);
  `max_batch_size` and dims without the batch axis when the artifact batches; dynamic batching
  with preferred sizes at the profile's opt and max; warm-up requests at batch 1 and opt, since
  TensorRT-RTX compiles its kernels on the first run and ORT's TensorRT EP builds its engine then;
- `label_filename` on the classifier output when the recipe names its classes (Triton's
  classification extension then answers "score:index:name");
- `parameters` under `inception_deploy.*` (recipe, precision, preprocessing, artifact sha256),
  which Triton backends ignore and `validate --target triton://` reads to pick its tolerances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ..errors import MissingDependency, UserError
from .tensors import TensorSpec

PARAMETER_PREFIX = "inception_deploy."
TRITON_INSTALL = "pip install 'inception-deploy[triton]' (tritonclient, which carries Triton's model-config schema)"


def schema():
    """Triton's model_config_pb2 (from tritonclient), or one line saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise MissingDependency(f"writing and reading Triton configs needs tritonclient ({exc}); "
                                f"{TRITON_INSTALL}") from None
    return model_config_pb2


def triton_type(dtype: str) -> str:
    """numpy dtype name -> model-config type name ('float32' -> 'TYPE_FP32', bytes -> 'TYPE_STRING')."""
    import numpy as np
    from tritonclient.utils import np_to_triton_dtype

    name = np_to_triton_dtype(np.dtype(dtype))
    if name is None:
        raise UserError(f"Triton has no tensor type for numpy {dtype}")
    return "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"


@dataclass
class Batching:
    """How Triton batches a model: max_batch_size 0 means the artifact has a fixed batch."""

    max_batch_size: int
    preferred: Sequence[int] = ()
    dynamic: bool = True
    max_queue_delay_us: int = 100
    warmup: Sequence[int] = ()  # batch sizes of the zero-filled warm-up requests


def _tensor(message, spec: TensorSpec, batched: bool, label_file: Optional[str] = None):
    message.name = spec.name
    message.data_type = schema().DataType.Value(triton_type(spec.dtype))
    message.dims.extend(spec.shape[1:] if batched else spec.shape)
    if label_file:
        message.label_filename = label_file
    return message


def _instances(config, kind: str, count: int) -> None:
    group = config.instance_group.add()
    group.count = count
    group.kind = schema().ModelInstanceGroup.Kind.Value("KIND_GPU" if kind == "gpu" else "KIND_CPU")


def _batching(config, batching: Batching, inputs: Sequence[TensorSpec]) -> None:
    config.max_batch_size = batching.max_batch_size
    if batching.max_batch_size and batching.dynamic:
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred)
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    for size in batching.warmup if batching.max_batch_size else ():
        warmup = config.model_warmup.add()
        warmup.name = f"zeros-batch-{size}"
        warmup.batch_size = size
        for spec in inputs:
            entry = warmup.inputs[spec.name]
            entry.data_type = schema().DataType.Value(triton_type(spec.dtype))
            entry.dims.extend(spec.shape[1:])
            entry.zero_data = True


def _parameters(config, values: dict) -> None:
    for key, value in values.items():
        if value is not None:
            config.parameters[key].string_value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def network_config(name: str, platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   batching: Batching, kind: str, instances: int, label_output: Optional[str] = None,
                   cc_model_filenames: Optional[dict[str, str]] = None, default_model_filename: Optional[str] = None,
                   accelerator: Optional[tuple[str, dict[str, str]]] = None, parameters: Optional[dict] = None):
    """The network model's config. platform: tensorrt_plan | onnxruntime_onnx | python (the backend)."""
    config = schema().ModelConfig(name=name)
    if platform == "python":
        config.backend = "python"
    else:
        config.platform = platform
    batched = batching.max_batch_size > 0
    for spec in inputs:
        _tensor(config.input.add(), spec, batched)
    for spec in outputs:
        _tensor(config.output.add(), spec, batched, "labels.txt" if spec.name == label_output else None)
    _batching(config, batching, inputs)
    _instances(config, kind, instances)
    for capability, filename in (cc_model_filenames or {}).items():
        config.cc_model_filenames[capability] = filename
    if default_model_filename:
        config.default_model_filename = default_model_filename
    if accelerator is not None:
        accelerator_name, settings = accelerator
        entry = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name=accelerator_name)
        for key, value in settings.items():
            entry.parameters[key] = value
    _parameters(config, parameters or {})
    return config


def preprocess_config(name: str, image_input: str, output: TensorSpec, max_batch_size: int, kind: str,
                      instances: int, parameters: Optional[dict] = None):
    """The Python-backend model that turns encoded image bytes into the network's input."""
    config = schema().ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    image = config.input.add(name=image_input, data_type=schema().DataType.Value("TYPE_STRING"))
    image.dims.append(1)
    _tensor(config.output.add(), output, max_batch_size > 0)
    if max_batch_size:
        config.dynamic_batching.max_queue_delay_microseconds = 100
    # Decoding and resizing are CPU work whatever runs the network.
    _instances(config, "cpu", instances if kind == "cpu" else max(instances, 2))
    _parameters(config, parameters or {})
    return config


def ensemble_config(name: str, image_input: str, preprocess_model: str, network_model: str,
                    network_input: TensorSpec, outputs: Sequence[TensorSpec], max_batch_size: int,
                    label_output: Optional[str] = None, parameters: Optional[dict] = None):
    """image bytes -> preprocess model -> network model, as one model Triton schedules."""
    config = schema().ModelConfig(name=name, platform="ensemble", max_batch_size=max_batch_size)
    image = config.input.add(name=image_input, data_type=schema().DataType.Value("TYPE_STRING"))
    image.dims.append(1)
    batched = max_batch_size > 0
    for spec in outputs:
        _tensor(config.output.add(), spec, batched, "labels.txt" if spec.name == label_output else None)
    pre = config.ensemble_scheduling.step.add(model_name=preprocess_model, model_version=-1)
    pre.input_map[image_input] = image_input
    pre.output_map[network_input.name] = "preprocessed"
    net = config.ensemble_scheduling.step.add(model_name=network_model, model_version=-1)
    net.input_map[network_input.name] = "preprocessed"
    for spec in outputs:
        net.output_map[spec.name] = spec.name
    _parameters(config, parameters or {})
    return config


def config_text(config, header: Sequence[str] = ()) -> str:
    """config.pbtxt text: '#' comment lines (protobuf text format allows them), then the message."""
    from google.protobuf import text_format

    comments = "".join(f"# {line}\n" for line in header)
    return comments + text_format.MessageToString(config, use_short_repeated_primitives=True)


def read_config(path: str | Path):
    """Parse a config.pbtxt with Triton's schema; a file it refuses is one line naming the file."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Triton config not found: {path}")
    try:
        return text_format.Parse(path.read_text(), schema().ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a valid Triton model config ({exc})") from None


def served_parameters(config) -> dict[str, str]:
    """The inception_deploy.* parameters of a config (a ModelConfig or the server's JSON dict)."""
    if isinstance(config, dict):
        raw = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    else:
        raw = {k: v.string_value for k, v in config.parameters.items()}
    return {k[len(PARAMETER_PREFIX):]: v for k, v in raw.items() if k.startswith(PARAMETER_PREFIX)}
