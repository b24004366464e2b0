"""Is the graph meant for TensorRT at all? (stage: lint)

`quantize --int8 --for ort-cpu` writes a graph for ONNX Runtime's CPU kernels (asymmetric
uint8 activations, int32 biases behind their own DequantizeLinear; precision/targets.py).
TensorRT rejects it ("Non-zero zero point is not supported"; a quantized bias does not
parse either). The per-node Q/DQ rules report each zero point and bias one by one; this
rule says first, once, what the graph is and how to get TensorRT's, from the target the
manifest recorded.
"""

from __future__ import annotations

from ..manifest import read_onnx_manifest
from ..precision.targets import manifest_target
from .base import Rule

FIX = ("TensorRT takes symmetric int8 Q/DQ with float biases: quantize the FP32 graph again with "
       "`inception-deploy quantize --int8 --for tensorrt`")


def ort_cpu_reason(view) -> str | None:
    """Why this graph is an ONNX Runtime CPU graph (its manifest says so), or None. A graph
    made elsewhere in that form is refused by qdq.py's rules (qdq-int8, qdq-zero-point, qdq-bias)."""
    if manifest_target(read_onnx_manifest(view.model)) == "ort-cpu":
        return ("quantized for ONNX Runtime CPU (its manifest records `quantize --for ort-cpu`: asymmetric uint8 "
                "activations, int32 biases)")
    return None


class OrtCpuGraphRule(Rule):
    id = "int8-target"
    description = "the graph was not quantized for ONNX Runtime CPU (quantize --for ort-cpu)"

    def check(self, view, target):
        reason = ort_cpu_reason(view)
        if reason:
            yield self.error("<graph>", f"{reason}; {target.name} does not build it. {FIX}")


RULES = [OrtCpuGraphRule()]
