"""What a TensorRT plan file is called (stage: build-engine, runtime, validate).

One place for the suffixes, importable without TensorRT: build-engine refuses other names,
and validate/benchmark pick the TensorRT runner by them.
"""

from __future__ import annotations

from pathlib import Path

PLAN_SUFFIXES = (".plan", ".engine")


def is_plan(path: str | Path) -> bool:
    return Path(path).suffix in PLAN_SUFFIXES
