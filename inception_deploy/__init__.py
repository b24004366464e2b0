"""inception-deploy: PyTorch Inception networks to ONNX and TensorRT, with proof that nothing was lost.

Stages (each a function from artifacts to artifacts, each a CLI command):
export -> optimize -> quantize -> build-engine -> validate. Heavy libraries (torch,
onnxruntime, tensorrt) are imported only by the modules that need them, so importing
this package is cheap.
"""

__version__ = "0.1.0"
