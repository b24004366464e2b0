"""Checks every command runs on its parameters before any work (stage: CLI).

Output paths (-o, --output-dir, --json, caches) are checked writable first, so a read-only
folder or a path under a file is one line before minutes of export or calibration, not a
PermissionError after them. ONNX inputs that parse are structure-checked
(onnx_reader.check_graph: inputs, cycles, initializer data); one that does not parse is
left to the command, whose reader says so in its own words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

OUTPUT_FOLDERS = ("output_dir", "output_dir_alias")
OUTPUT_FILES = ("output", "json_path", "calib_cache", "timing_cache")
ONNX_INPUTS = ("model", "graph", "targets", "reference")


def preflight(params: Mapping[str, object], output_suffixes: tuple[str, ...] = ()) -> None:
    from ..fileio import check_writable
    from .options import is_folder_output

    for key in OUTPUT_FOLDERS:
        if params.get(key):
            check_writable(params[key], folder=True)
    for key in OUTPUT_FILES:
        value = params.get(key)
        if value == "-" and key == "json_path":
            continue  # stdout
        if key == "output" and value and is_folder_output(str(value), output_suffixes):
            check_writable(value, folder=True)  # -o DIR/: the artifact keeps its name inside
            continue
        if value and not (key in ("calib_cache", "timing_cache") and Path(str(value)).is_file()):
            check_writable(value)  # an existing cache is read, not written
    for key in ONNX_INPUTS:
        value = params.get(key)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            path = Path(str(item)) if item else None
            if path is not None and path.suffix == ".onnx" and path.is_file():
                # The main input is read next by the command (artifact.load_onnx): it keeps this parse.
                _check_onnx(path, keep=key == "model")


def _check_onnx(path: Path, keep: bool) -> None:
    from ..onnx_reader import check_ahead

    check_ahead(path, keep)
