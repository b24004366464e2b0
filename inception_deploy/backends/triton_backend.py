"""Triton endpoint backend (stage: runtime): a served model behind the shared runner shape.

`TritonRunner("triton://host:8000/googlenet-digits")` sends each `infer` feed to the server
through tritonclient (HTTP, or gRPC for triton+grpc://), binary tensors, split into requests
of at most the model's max_batch_size. `activate` checks, each with a timeout and one line
naming the endpoint: the server answers, the model (and version) is ready, and its inputs and
outputs are known; `check_input` compares the model's input with what a recipe makes. The
served model's `inception_deploy.*` config parameters (written by `package`) give its
precision, recipe and preprocessing, read by validate. tritonclient is imported here only.
"""

from __future__ import annotations

import json
from typing import Mapping, Optional

import numpy as np

from ..errors import MissingDependency, UserError
from ..serving.endpoint import TritonEndpoint, parse_endpoint
from .base import Runner

DEFAULT_TIMEOUT_S = 30.0


class TritonRunner(Runner):
    name = "triton"

    def __init__(self, endpoint: str | TritonEndpoint, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.endpoint = parse_endpoint(endpoint)
        self.timeout = float(timeout)
        self.client = None
        self.metadata: dict = {}
        self.config: dict = {}
        self._module = None

    # -- life cycle
    def activate(self) -> None:
        if self.client is not None:  # already connected and checked (validate probes targets first)
            return
        self._module = _client_module(self.endpoint.protocol)
        endpoint, timeout = self.endpoint, self.timeout
        if endpoint.protocol == "http":
            self.client = self._module.InferenceServerClient(endpoint.address, connection_timeout=timeout,
                                                             network_timeout=timeout)
        else:
            self.client = self._module.InferenceServerClient(endpoint.address)
        live = self._call("is_server_live", what="the server")
        if not live:
            raise UserError(f"{endpoint}: the server at {endpoint.address} answers but is not live; check its log")
        if not self._call("is_model_ready", endpoint.model, endpoint.version, what="the model"):
            raise UserError(f"{endpoint}: model '{endpoint.model}'{self._version_words()} is not ready on "
                            f"{endpoint.address}{self._known_models()}; load it, or check the name")
        self.metadata = self._json(self._call("get_model_metadata", endpoint.model, endpoint.version, what="the model"))
        config = self._json(self._call("get_model_config", endpoint.model, endpoint.version, what="the model"))
        self.config = config.get("config", config)  # gRPC wraps it in {"config": ...}

    def deactivate(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a dead connection is not an error worth a traceback
                pass
        self.client = None

    # -- what the model is
    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.metadata.get("inputs", [])]

    @property
    def output_names(self) -> list[str]:
        return [t["name"] for t in self.metadata.get("outputs", [])]

    @property
    def max_batch_size(self) -> int:
        return int(self.config.get("max_batch_size", 0) or 0)

    @property
    def input_shape(self) -> list:
        """The first input's full shape as the server states it (-1 where open), batch axis included."""
        tensor = self.metadata["inputs"][0]
        shape = [int(d) for d in tensor["shape"]]
        return shape if self.max_batch_size == 0 else [None, *shape[1:]]

    @property
    def input_dtype(self) -> np.dtype:
        from tritonclient.utils import triton_to_np_dtype

        return np.dtype(triton_to_np_dtype(self.metadata["inputs"][0]["datatype"]))

    def served_parameters(self) -> dict[str, str]:
        """The config's inception_deploy.* parameters (recipe, precision, preprocessing, sha256)."""
        from ..serving.model_config import served_parameters

        return served_parameters(self.config)

    def check_input(self, sample_shape, dtype: str = "float32", recipe_name: str = "the recipe") -> None:
        """Refuse a model whose input is not what the recipe's preprocessing makes, naming both."""
        inputs = self.metadata.get("inputs", [])
        if len(inputs) != 1:
            raise UserError(f"{self.endpoint}: the model has {len(inputs)} inputs ({', '.join(self.input_names)}); "
                            "validation feeds one image tensor")
        served = [int(d) for d in inputs[0]["shape"]][1 if self.max_batch_size else 0:]
        wanted = [int(d) for d in sample_shape]
        fits = len(served) == len(wanted) and all(s in (-1, w) for s, w in zip(served, wanted))
        if self.max_batch_size == 0:
            fits = len(served) == len(wanted) + 1 and all(s in (-1, w) for s, w in zip(served[1:], wanted))
            served = served[1:]
        if not fits or self.input_dtype != np.dtype(dtype):
            datatype = inputs[0]["datatype"]
            raise UserError(f"{self.endpoint}: the model's input '{inputs[0]['name']}' takes {datatype} "
                            f"[N, {', '.join(map(str, served))}], but {recipe_name} makes {np.dtype(dtype).name} "
                            f"[N, {', '.join(map(str, wanted))}]; serve the model made with this recipe, or give "
                            "its --recipe")

    # -- inference
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.client is None:
            raise UserError(f"{self.endpoint}: TritonRunner.infer called outside `with runner:`")
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise UserError(f"{self.endpoint}: the feed lacks input(s) {', '.join(missing)}")
        arrays = {name: np.ascontiguousarray(feed[name]) for name in self.input_names}
        count = len(next(iter(arrays.values())))
        step = self.max_batch_size or count
        parts = [self._request({n: a[i:i + step] for n, a in arrays.items()}) for i in range(0, count, step)]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _request(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        module = self._module
        inputs = []
        for name, array in arrays.items():
            tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(name) for name in self.output_names]
        # HTTP: the client's network_timeout bounds the wait; gRPC takes it per call.
        keyword = {} if self.endpoint.protocol == "http" else {"client_timeout": self.timeout}
        result = self._call("infer", self.endpoint.model, inputs, self.endpoint.version, outputs, what="inference",
                            **keyword)
        return {name: result.as_numpy(name) for name in self.output_names}

    # -- errors: one line naming the endpoint
    def _call(self, method: str, *args, what: str, **kwargs):
        from tritonclient.utils import InferenceServerException

        endpoint = self.endpoint
        if endpoint.protocol == "grpc" and "client_timeout" not in kwargs and method != "infer":
            kwargs["client_timeout"] = self.timeout
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except InferenceServerException as exc:
            message = " ".join(str(exc.message() or exc).split())
            if _unreachable(message):
                raise UserError(f"{endpoint}: no Triton server answers at {endpoint.address} ({message[:160]}); "
                                "start it, or check the host and port") from None
            if method == "infer":
                raise UserError(f"{endpoint}: the server refused the request ({message[:300]})") from None
            raise UserError(f"{endpoint}: {what}: {message[:300]}") from None
        except (ConnectionError, TimeoutError, OSError) as exc:
            reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
            raise UserError(f"{endpoint}: no Triton server answers at {endpoint.address} within {self.timeout:g} s "
                            f"({reason[:160]}); start it, or check the host and port") from None

    def _json(self, answer):
        if isinstance(answer, (dict, list)):
            return answer
        from google.protobuf.json_format import MessageToDict

        return json.loads(json.dumps(MessageToDict(answer, preserving_proto_field_name=True)))

    def _version_words(self) -> str:
        return f" version {self.endpoint.version}" if self.endpoint.version else ""

    def _known_models(self) -> str:
        try:
            index = self._json(self.client.get_model_repository_index(
                **({"client_timeout": self.timeout} if self.endpoint.protocol == "grpc" else {})))
        except Exception:  # noqa: BLE001 - the index is a hint only; some servers restrict it
            return ""
        models = index.get("models", index) if isinstance(index, dict) else index
        ready = sorted({m.get("name", "?") for m in models if m.get("state") == "READY"})
        return f" (ready there: {', '.join(ready)})" if ready else " (no model is ready there)"


def _unreachable(message: str) -> bool:
    lowered = message.lower()
    return any(s in lowered for s in ("connection refused", "failed to connect", "unavailable", "deadline exceeded",
                                      "connect failed", "timed out", "name or service not known"))


def _client_module(protocol: str):
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as exc:
        raise MissingDependency(f"talking to a Triton server needs tritonclient ({exc}); "
                                "pip install 'inception-deploy[triton]'") from None
    return module


def open_triton_runner(endpoint, timeout: Optional[float] = None) -> TritonRunner:
    return TritonRunner(endpoint, timeout=DEFAULT_TIMEOUT_S if timeout is None else timeout)
