"""Triton Python-backend model: an ONNX graph run by ONNX Runtime inside Triton.

Copied as model.py into a model version folder by `inception-deploy package --triton-backend
python`, for Triton servers without the onnxruntime backend (PyTriton's server carries only
the Python backend). Triton's dynamic batcher hands several requests to one `execute` call;
they are run as one batch (that is what batching is for) and the answers split per request.
The session is made as inception-deploy's own ONNX Runtime runner makes it (log level 3, all
graph optimizations), so the endpoint answers like `validate` on the .onnx file.

Reads its settings from the model config's parameters: onnx_model (file name in the version
folder), execution_provider (CPUExecutionProvider or CUDAExecutionProvider), intra_op_threads.
Needs numpy and onnxruntime (onnxruntime-gpu for CUDA) in the Python backend's environment.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        provider = params.get("execution_provider") or "CPUExecutionProvider"
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = int(params.get("intra_op_threads") or 0)
        if threads:
            options.intra_op_num_threads = threads
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(folder / (params.get("onnx_model") or "model.onnx")),
                                            sess_options=options, providers=providers)
        if self.session.get_providers()[0] != provider:
            # ORT falls back to the CPU silently; a model configured for a GPU must not.
            raise pb_utils.TritonModelException(f"ONNX Runtime could not start {provider} here "
                                                f"(it offers {self.session.get_providers()})")
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        try:
            feeds = [{name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
                     for request in requests]
            if self.batched and len(feeds) > 1:
                sizes = [len(feed[self.inputs[0]]) for feed in feeds]
                joined = {name: np.concatenate([feed[name] for feed in feeds]) for name in self.inputs}
                results = self.session.run(self.outputs, joined)
                cuts = np.cumsum(sizes)[:-1]
                answers = list(zip(*[np.split(result, cuts) for result in results]))
            else:
                answers = [self.session.run(self.outputs, feed) for feed in feeds]
        except Exception as exc:  # noqa: BLE001 - one error response per request, the server keeps serving
            error = pb_utils.TritonError(f"ONNX Runtime failed: {' '.join(str(exc).split())[:500]}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(name, np.ascontiguousarray(value))
                                            for name, value in zip(self.outputs, answer)])
                for answer in answers]

    def finalize(self):
        self.session = None
