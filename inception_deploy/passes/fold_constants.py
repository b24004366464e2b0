"""Pass `fold-constants`: subgraphs that depend only on constants replaced by their value (stage: optimize).

Built on onnxscript's constant folder (onnxscript.optimizer.fold_constants), which
evaluates constant subgraphs with the ONNX reference evaluator, keeps the names of the
nodes it leaves and the values it replaces, and removes Identity/Dropout chains over
constants on the way. Its default size limits (8192 input, 262144 output elements) would
leave weight-sized folds alone (a Transpose or a Mul on a 1024x2048 Gemm weight): raised
here to 16M elements, so every weight-only computation ends up as one initializer; the
safety check still compares the outputs. Constant nodes left afterwards become
initializers (onnx-ir's LiftConstantsToInitializersPass), which the quantizer expects.
"""

from __future__ import annotations

from .base import GraphPass, PassContext, register

SIZE_LIMIT = 1 << 24  # elements


@register
class FoldConstants(GraphPass):
    """op(constants...) -> constant, Constant nodes -> initializers (onnxscript's folder)."""

    name = "fold-constants"
    idle = "no constant subgraph (torch.onnx folds constants when it exports)"

    def run(self, model, ctx: PassContext) -> list[str]:
        import onnx_ir as ir
        import onnx_ir.passes.common  # noqa: F401 - registers ir.passes.common
        from onnxscript.optimizer import fold_constants

        fold_constants(model, onnx_shape_inference=False, input_size_limit=SIZE_LIMIT, output_size_limit=SIZE_LIMIT)
        ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
        return []
