"""Triton Python-backend models that `package` copies into a repository as model.py (stage: package).

They run inside Triton's Python backend (they import triton_python_backend_utils), never in
this process: read them as files (`source(name)`), do not import them.
"""

from pathlib import Path


def source(name: str) -> Path:
    """The file of a bundled Python-backend model: 'onnxruntime_model' or 'preprocess_model'."""
    return Path(__file__).with_name(f"{name}.py")
