"""Releases the linter knows (stage: lint).

`tensorrt` means the newest major release we encode (11); `tensorrt-11.5` pins a minor
where the parser changed (opset 25 arrived in 11.5). `tensorrt-rtx` is TensorRT-RTX 1.7,
whose parser was measured here by feeding it the lint's broken-graph corpus
(tests/test_lint_vs_rtx.py): it imports what TensorRT 11.5 imports (opset 25, Squeeze
without axes, Swish) except DFT, and builds a few graphs that the 10/11 rules refuse (those
rules say so; see the rule messages).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError

DEFAULT_TARGET = "tensorrt-11"
RTX_TARGET = "tensorrt-rtx"
RTX_RELEASE = "1.7"
TARGET_CHOICES = ("tensorrt", "tensorrt-10", "tensorrt-11", RTX_TARGET)


@dataclass(frozen=True)
class Target:
    major: int
    minor: int
    rtx: bool = False  # TensorRT-RTX: its parser is 11.5's with the differences above

    @property
    def name(self) -> str:
        return f"{RTX_TARGET}-{RTX_RELEASE}" if self.rtx else f"tensorrt-{self.major}.{self.minor}"

    @property
    def family(self) -> str:
        """What to pass to --target for this release line."""
        return RTX_TARGET if self.rtx else f"tensorrt-{self.major}"

    @property
    def max_opset(self) -> int:
        # 10.15 matrix: opsets 9..24; 11.5 release notes add opset 25 (TensorRT-RTX 1.7 builds it too).
        return 25 if (self.major, self.minor) >= (11, 5) else 24

    min_opset = 9  # NVIDIA's ONNX opset guide: official backward support to opset 9

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)


def parse_target(text: str | Target) -> Target:
    """'tensorrt', 'tensorrt-10', 'tensorrt-11', 'tensorrt-11.5', 'tensorrt-rtx' (also 'trt-11', '10.16', 'rtx')."""
    if isinstance(text, Target):
        return text
    value = str(text).strip().lower()
    if value in ("tensorrt", "trt", ""):
        value = DEFAULT_TARGET
    if re.fullmatch(r"(?:tensorrt-|trt-)?rtx(?:-[\d.]+)?", value):
        return Target(11, 5, rtx=True)
    match = re.fullmatch(r"(?:tensorrt|trt)?-?(\d+)(?:\.(\d+))?(?:\.\d+)*", value)
    if not match or int(match.group(1)) not in (10, 11):
        raise UserError(f"unknown lint target '{text}'; choose one of {', '.join(TARGET_CHOICES)} (or e.g. tensorrt-11.5)")
    major = int(match.group(1))
    # A bare major means its earliest release: the safe side for the opset limit.
    minor = int(match.group(2)) if match.group(2) else (16 if major == 10 else 0)
    return Target(major, minor)
