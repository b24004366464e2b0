"""Serving (stage: package): a Triton model repository from any artifact, and live endpoints.

    package_triton(["out/g.int8.plan"], "model_repository/")   # config.pbtxt, plan, labels, manifest
    parse_endpoint("triton://127.0.0.1:8000/googlenet-digits")  # what `validate --target` takes

tensors.py reads I/O names, dtypes and shapes from an artifact (ONNX graph or plan manifest);
model_config.py turns them into Triton ModelConfig protobufs (Triton's own schema, carried by
tritonclient); repository.py lays out the repository; python_models/ holds the Python-backend
models it copies (ONNX Runtime inside Triton, and the recipe's preprocessing); endpoint.py
parses triton:// targets. tritonclient is imported only where a config or a request is made.
"""

from .endpoint import TritonEndpoint, is_endpoint, parse_endpoint

__all__ = ["TritonEndpoint", "is_endpoint", "package_triton", "parse_endpoint"]


def package_triton(*args, **kwargs):
    """See repository.package_triton (imported lazily: it needs tritonclient's protobufs)."""
    from .repository import package_triton as _package

    return _package(*args, **kwargs)
