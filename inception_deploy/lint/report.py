"""Lint findings and the report object (stage: lint, before build-engine).

A report is truthy when it holds no errors, in the spirit of Polygraphy's comparator
results: `if not lint_model(path): ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

# info: worth knowing, nothing to fix (e.g. a layer quantize kept float on purpose).
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str  # rule id, e.g. "qdq-zero-point"
    node: str  # "Conv '/conv1/Conv'" or "graph" or "input 'x'"
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.node}: {self.message} [{self.rule}]"


@dataclass
class LintReport:
    target: str
    source: str
    findings: list[Finding] = field(default_factory=list)
    nodes_checked: int = 0
    sha256: Optional[str] = None  # of the ONNX bytes linted (None for an in-memory model), so a later
    # stage can reuse a passing report for the very same file instead of linting it again

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def infos(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "info"]

    def __bool__(self) -> bool:
        return not self.errors

    def rules_failed(self) -> set[str]:
        return {f.rule for f in self.errors}

    def summary(self) -> str:
        verdict = "PASSED" if self else "FAILED"
        return (f"{verdict} | {self.source} | {self.target} | {self.nodes_checked} nodes, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings"
                + (f", {len(self.infos)} info" if self.infos else ""))

    def lines(self) -> list[str]:
        return [str(f) for f in self.findings] + [self.summary()]

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "source": self.source,
            "passed": bool(self),
            "nodes_checked": self.nodes_checked,
            "findings": [f.__dict__ for f in self.findings],
        }
