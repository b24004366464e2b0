"""What TensorRT's ONNX parser imports, as data (stage: lint).

Encoded from the TensorRT 10.15 operator matrix (onnx-tensorrt docs/operators.md) plus
the parser changes in the TensorRT 11.0-11.5 release notes. Each row: the release that
first imports the op (None: never) and the tensor types of its data inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import TensorProto

TYPE_CODES = {
    "F32": TensorProto.FLOAT, "F16": TensorProto.FLOAT16, "BF16": TensorProto.BFLOAT16,
    "I32": TensorProto.INT32, "I64": TensorProto.INT64, "I8": TensorProto.INT8,
    "U8": TensorProto.UINT8, "B": TensorProto.BOOL, "FP8": TensorProto.FLOAT8E4M3FN,
    "FP4": TensorProto.FLOAT4E2M1, "I4": TensorProto.INT4,
}
QUANTIZED_TYPES = {TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4, TensorProto.FLOAT4E2M1}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type) if elem_type else "UNDEFINED"


@dataclass(frozen=True)
class OpSupport:
    op_type: str
    since: tuple[int, int] | None  # first TensorRT release whose parser imports it
    types: frozenset[int]

    def supported_by(self, target) -> bool:
        if target.rtx and self.op_type in RTX_NOT_IMPORTED:
            return False
        return self.since is not None and target.at_least(*self.since)


# Ops TensorRT 11 imports that TensorRT-RTX 1.7's parser does not (it looks for a plugin of that
# name): measured here by building one-node graphs with tensorrt_rtx 1.7.1.116.
RTX_NOT_IMPORTED = frozenset({"DFT"})


_FLT = "F32 F16 BF16"
_NUM = "F32 F16 BF16 I32 I64"
_ALL = "F32 F16 BF16 I32 I64 B"

# op types sharing one row; "Y" = imported by 10.x and 11.x, "N" = never, "11.x" = from 11.x.
_TABLE = """
Abs|Y|{NUM}; Acos Acosh Asin Asinh Atan Atanh|Y|{FLT}; Add|Y|{NUM}; AffineGrid|N|
And|Y|B; ArgMax ArgMin|Y|{NUM}; Attention|Y|F32 F16 BF16 I8 FP8; AveragePool|Y|{FLT}
BatchNormalization|Y|{FLT}; Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor|N|
BlackmanWindow HammingWindow HannWindow|Y|F32 F16; Cast CastLike|Y|F32 F16 BF16 I32 I64 U8 B
Ceil Celu|Y|{FLT}; CenterCropPad Col2Im Compress ConcatFromSequence|N|; Clip|Y|{FLT}
Concat|Y|{ALL}; Constant ConstantOfShape|Y|F32 F16 BF16 FP8 FP4 I4 I32 I64 B
Conv ConvTranspose|Y|{FLT}; ConvInteger|N|; Cos Cosh|Y|{FLT}; CumSum|Y|{FLT}
DFT|11.2|{FLT}; DeformConv|Y|F32 F16; DepthToSpace|Y|{NUM}; DequantizeLinear|Y|I8 FP8 FP4 I4
Det|N|; Div|Y|{NUM}; Dropout|Y|{FLT}; DynamicQuantizeLinear|N|; Einsum|Y|{FLT}; Elu|Y|{FLT}
Equal|Y|{NUM}; Erf Exp|Y|{FLT}; Expand|Y|{ALL}; EyeLike Flatten|Y|{ALL}; Floor|Y|{FLT}
Gather GatherElements GatherND|Y|{ALL}; Gelu|Y|F32 F16 BF16 I8 I32 I64; Gemm|Y|{FLT}
GlobalAveragePool GlobalLpPool GlobalMaxPool|Y|{FLT}; Greater GreaterOrEqual|Y|{NUM}
GridSample|Y|F32 F16; GroupNormalization GRU|Y|{FLT}; HardSigmoid HardSwish Hardmax|Y|{FLT}
Identity If|Y|{ALL}; ImageDecoder|N|; ImageScaler InstanceNormalization IsInf|Y|{FLT}
IsNaN|Y|{NUM}; LayerNormalization LeakyRelu|Y|{FLT}; Less LessOrEqual|Y|{NUM}
Log LogSoftmax|Y|{FLT}; Loop|Y|{ALL}; LpNormalization LpPool LRN LSTM MatMul|Y|{FLT}
MatMulInteger|N|; Max|Y|{NUM}; MaxPool|Y|{FLT}; MaxRoiPool MaxUnpool|N|
Mean|Y|F32 F16 BF16 FP8 I32 I64; MeanVarianceNormalization|Y|{FLT}; MelWeightMatrix|N|
Min|Y|{NUM}; Mish|Y|F32 F16; Mod Mul|Y|{NUM}; Multinomial|N|; Neg|Y|{NUM}
NegativeLogLikelihoodLoss|N|; NonMaxSuppression NonZero|Y|F32 F16; Not|Y|B; OneHot|Y|{ALL}
Optional OptionalGetElement OptionalHasElement|N|; Or|Y|B; Pad|Y|{NUM}
ParametricSoftplus|Y|{FLT}; Pow|Y|{NUM}; PRelu|Y|{FLT}; QLinearConv QLinearMatMul|N|
QuantizeLinear|Y|{FLT}; RandomNormal RandomNormalLike RandomUniform RandomUniformLike|Y|{FLT}
Range|Y|{NUM}; Reciprocal|Y|{FLT}
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare|Y|{NUM}
RegexFullMatch|N|; Relu|Y|{NUM}; Reshape|Y|{ALL}; Resize|Y|{FLT}; ReverseSequence|Y|{ALL}
RMSNormalization RNN|Y|{FLT}; RoiAlign|Y|F32 F16; RotaryEmbedding Round|Y|{FLT}; STFT|Y|F32
ScaledTanh Scan|Y|{FLT}; Scatter ScatterElements ScatterND|Y|{NUM}; Selu|Y|{FLT}
SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert SequenceLength SequenceMap|N|
Shape|Y|{ALL}; Shrink Sign|Y|{NUM}; Sigmoid Sin Sinh|Y|{FLT}; Size Slice|Y|{ALL}
Softmax|Y|{FLT}; SoftmaxCrossEntropyLoss|N|; Softplus Softsign|Y|{FLT}; SpaceToDepth|Y|{NUM}
Split|Y|{ALL}; SplitToSequence|N|; Sqrt|Y|{FLT}; Squeeze|Y|{ALL}
StringConcat StringNormalizer StringSplit|N|; Sub Sum|Y|{NUM}; Swish|11.0|{FLT}
Tan Tanh|Y|{FLT}; TensorScatter|Y|F32 F16 BF16 I32; TfIdfVectorizer|N|; ThresholdedRelu|Y|{FLT}
Tile|Y|{ALL}; TopK|Y|{NUM}; Transpose Trilu|Y|{ALL}; Unique|N|; Unsqueeze|Y|{ALL}
Upsample|Y|{FLT}; Where|Y|{ALL}; Xor|Y|B
""".format(NUM=_NUM, FLT=_FLT, ALL=_ALL)

# Custom ops the parser imports by name (not the ONNX default domain), and since when.
TRT_CUSTOM_OPS = {
    **{name: (10, 0) for name in (
        "TRT_FP8QuantizeLinear", "TRT_FP8DequantizeLinear", "TRT_INT4QuantizeLinear",
        "TRT_INT4DequantizeLinear", "TRT_MXFP8QuantizeLinear", "TRT_MXFP8DequantizeLinear",
        "TRT_MXFP8DynamicQuantize", "TRT_FP4DynamicQuantize", "TRT_BlockQuantize",
        "TRT_BlockDequantize", "TRT_DynamicQuantize")},
    **{name: (11, 0) for name in ("TRT_Attention", "TRT_MoE", "TRT_KVCacheUpdate")},
}

# Where the whole node fails to import, say what to do instead.
REPLACEMENT_HINTS = {
    "QLinearConv": "export in QDQ form (QuantizeLinear/DequantizeLinear around a float Conv)",
    "QLinearMatMul": "export in QDQ form (QuantizeLinear/DequantizeLinear around a float MatMul)",
    "ConvInteger": "export in QDQ form",
    "MatMulInteger": "export in QDQ form",
    "DynamicQuantizeLinear": "quantize statically with `inception-deploy quantize --int8`",
}


def _parse(table: str) -> dict[str, OpSupport]:
    rows: dict[str, OpSupport] = {}
    for entry in table.replace("\n", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        names, support, types = (part.strip() for part in entry.split("|"))
        since = {"Y": (10, 0), "N": None}.get(support)
        if since is None and support != "N":
            major, minor = support.split(".")
            since = (int(major), int(minor))
        codes = frozenset(TYPE_CODES[t] for t in types.split())
        for name in names.split():
            rows[name] = OpSupport(name, since, codes)
    return rows


OPERATORS: dict[str, OpSupport] = _parse(_TABLE)

# Ops whose every input is data of one type variable (checked input by input); for the
# rest only input 0 is data and the others are shapes, axes, scales or indices.
ALL_INPUTS_ARE_DATA = {
    "Concat", "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Equal", "Greater",
    "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Where",
}
