"""Library exceptions about the user's input -> one-line UserError (stage: the CLI boundary).

Our own readers turn bad input into UserError where they can say the most (checkpoints,
recipes, datasets, onnx_reader). What still escapes from a library while a stage works on
a user's file (ONNX Runtime refusing a graph or an input, protobuf, onnx's checker or
shape inference, PIL, torch's ONNX exporter, an output path that cannot be written) is
translated here, in one table, and nowhere else. Only these library families are
translated: anything else (a KeyError in our code, an assertion) is a bug and keeps its
traceback. The message names the file: the one the exception names when it names one of
the command's files, else the command's files of the kind the library reads.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .errors import ABOUT_NOTE, UserError

# Which command parameters hold which kind of file.
SUBJECT_PARAMS = {
    "model": ("model", "graph", "targets", "reference"),
    "data": ("data", "calib_data"),
    "weights": ("weights",),
    "recipe": ("recipe",),
    "output": ("output", "output_dir", "json_path", "calib_cache", "timing_cache"),
}


@dataclass(frozen=True)
class Translation:
    library: str  # module prefix of the exception class ("onnxruntime", "PIL", "builtins")
    names: tuple[str, ...]  # class names in the exception's MRO; empty: any class of that library
    pattern: Optional[str]  # regex the message must match; None: any
    subject: str  # the kind of file named when the exception does not name one (SUBJECT_PARAMS)
    problem: str  # what is wrong; {detail} is the library's first line, shortened
    fix: str


TABLE: tuple[Translation, ...] = (
    Translation("onnxruntime", (), r"Got invalid dimensions|Invalid rank|Unexpected input data type|invalid input type",
                "model", "its input does not take the data given (ONNX Runtime: {detail})",
                "use a recipe (--recipe) whose preprocessing size and layout match the graph's input"),
    Translation("onnxruntime", (), r"[Ee]xternal data|external_data|\.data", "model",
                "ONNX Runtime could not read its external data ({detail})", "keep the .data file beside the .onnx"),
    Translation("onnxruntime", (), None, "model", "ONNX Runtime cannot load or run it ({detail})",
                "check it with `inception-deploy lint`, or export it again from the PyTorch model"),
    Translation("google.protobuf", ("DecodeError", "EncodeError"), None, "model",
                "not a readable ONNX model (DecodeError: truncated, or another format)",
                "export it again, or give the .onnx it was made from"),
    Translation("onnx", ("ValidationError", "InferenceError", "ShapeInferenceError"), None, "model",
                "the ONNX graph is invalid ({detail})", "export it again, or fix the tool that wrote it"),
    Translation("PIL", ("DecompressionBombError", "UnidentifiedImageError"), None, "data",
                "an image cannot be decoded safely ({detail})", "remove it, or pass --allow-fewer to skip it"),
    Translation("torch.onnx", (), None, "weights", "torch cannot export the model to ONNX ({detail})",
                "choose another opset (--opset 13-21), or export a state_dict of a supported architecture"),
    Translation("builtins", ("PermissionError", "IsADirectoryError", "NotADirectoryError", "FileExistsError"), None,
                "output", "cannot be written ({detail})", "choose a writable output path (-o)"),
    Translation("builtins", ("OSError",), rf"^\[Errno ({errno.ENOSPC}|{errno.EROFS}|{errno.EDQUOT})\]", "output",
                "cannot be written ({detail})", "free some space or choose another output path (-o)"),
)


def translate(exc: BaseException, params: Mapping[str, object]) -> Optional[UserError]:
    """The UserError for `exc` raised while a command ran with `params`, or None (a bug: re-raise)."""
    text = _first_line(exc)
    for rule in TABLE:
        if _matches(rule, exc, text):
            detail = (getattr(exc, "strerror", None) or text) if rule.library == "builtins" else text
            where = _where(exc, text, rule.subject, params)
            return UserError(f"{where}: {rule.problem.format(detail=_shorten(detail))}; {rule.fix}")
    return None


def _matches(rule: Translation, exc: BaseException, text: str) -> bool:
    classes = type(exc).__mro__
    if rule.library == "builtins":
        if not any(cls.__module__ == "builtins" and cls.__name__ in rule.names for cls in classes):
            return False
        # Only OSErrors about a file: a PermissionError from elsewhere is not about the user's paths.
        if getattr(exc, "filename", None) is None:
            return False
    else:
        from_library = [cls for cls in classes if cls.__module__.split(".")[0] == rule.library.split(".")[0]
                        and cls.__module__.startswith(rule.library)]
        if not from_library or (rule.names and not any(cls.__name__ in rule.names for cls in from_library)):
            return False
    return rule.pattern is None or re.search(rule.pattern, str(exc)) is not None


def _where(exc: BaseException, text: str, subject: str, params: Mapping[str, object]) -> str:
    """The command's file the exception names, else the file it names (not a hidden temporary),
    else the command's files of the subject's kind."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith(ABOUT_NOTE):  # the stage said which file it was working on (errors.about)
            return note[len(ABOUT_NOTE):]
    candidates = _files(subject, params)
    filename = str(getattr(exc, "filename", None) or "")
    message = str(exc)
    for name in (c for s in SUBJECT_PARAMS for c in _files(s, params)):
        if name == filename or name in message:
            return name
    if filename and not (subject == "output" and candidates and Path(filename).name.startswith(".")):
        return filename
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        return "one of " + ", ".join(candidates)
    return "input"


def _files(subject: str, params: Mapping[str, object]) -> list[str]:
    found = []
    for key in SUBJECT_PARAMS[subject]:
        value = params.get(key)
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if item is not None and str(item) and (subject != "model" or Path(str(item)).suffix == ".onnx"):
                found.append(str(item))
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # ONNX Runtime prefixes "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "; keep what follows.
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", text)
    if text.startswith("Got invalid dimensions"):  # its indices are on the next lines
        return re.sub(r"\s*Please fix.*$", "", " ".join(text.split()))
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
