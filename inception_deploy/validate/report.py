"""Validation reports (stage: validate): the result object, JSON, JUnit XML and a self-contained HTML page.

`ValidationReport` holds every number; `write(output_dir)` writes report.json (all
metrics, the additive state shards merge from, library versions, the artifacts'
manifests), junit.xml (one testcase per target x check, for CI systems) and report.html
(inline SVG plots, no scripts, no external files: it opens anywhere, offline).
"""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..fileio import write_json_atomic, write_text_atomic
from .layerwise import LayerwiseResult
from .metrics import HIST_EDGES, ValidationComparison
from .verdict import Check

REPORT_FORMAT = "inception-deploy/validation-report/1"


@dataclass
class TargetResult:
    path: str
    name: str
    precision: str
    backend: str
    manifest: Optional[dict]
    outputs: dict[str, ValidationComparison]
    checks: list[Check] = field(default_factory=list)
    layerwise: Optional[LayerwiseResult] = None
    sha256: Optional[str] = None  # of the artifact validated: shards merge only for the same bytes
    mode: Optional[str] = None  # precision.evaluate.EXACT for a Q/DQ graph judged by exact Q/DQ semantics
    optimized: Optional[dict] = None  # output -> ValidationComparison under ORT's graph optimizations

    def evaluation(self) -> Optional[dict]:
        """How the target was run, and ORT's optimized numbers beside when they were measured."""
        from ..precision.evaluate import MODE_TEXT, OPTIMIZED, differs

        if self.mode is None:
            return None
        out = {"mode": self.mode, "description": MODE_TEXT[self.mode]}
        if self.optimized:
            out[OPTIMIZED] = {name: {**c.summary(), "differs": differs(self.outputs[name], c)}
                              for name, c in self.optimized.items()}
        return out

    def mode_lines(self) -> list[str]:
        """INFO lines: the judging mode, and ORT's optimized numbers where they differ."""
        from ..precision.evaluate import MODE_TEXT, differs

        if self.mode is None:
            return []
        lines = [f"INFO | {self.name} | evaluation mode | {MODE_TEXT[self.mode]}"]
        for name, c in (self.optimized or {}).items():
            if differs(self.outputs[name], c):
                lines.append(f"INFO | {self.name} | {name}: ONNX Runtime optimized (not judged; not what TensorRT "
                             f"computes) | max abs error {c.max_abs_error:.6g}, top-1 agreement {c.top1_agreement:.6g}, "
                             f"cosine min {c.cosine_min:.6g}")
        return lines

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "name": self.name, "precision": self.precision, "backend": self.backend,
            "sha256": self.sha256, "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "metrics": {name: c.summary() for name, c in self.outputs.items()},
            "state": {name: c.state() for name, c in self.outputs.items()},
            "layerwise": None if self.layerwise is None else self.layerwise.to_dict(),
            "evaluation": self.evaluation(),
            "manifest": self.manifest,
        }


@dataclass
class ValidationReport:
    recipe: str
    reference: str
    data: dict
    targets: list[TargetResult]
    tolerances: dict
    timing: dict = field(default_factory=dict)
    libraries: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)

    @property
    def checks(self) -> list[Check]:
        return [c for t in self.targets for c in t.checks]

    @property
    def passed(self) -> bool:
        """No check FAILED: a SKIPPED check is not a failure (unless `fail_skipped`, --strict, made it one)."""
        return all(t.passed for t in self.targets)

    @property
    def counts(self) -> dict[str, int]:
        statuses = [c.status for c in self.checks]
        return {"passed": statuses.count("PASSED"), "failed": statuses.count("FAILED"),
                "skipped": statuses.count("SKIPPED")}

    @property
    def warnings(self) -> list[str]:
        """`target | output | metric: warning` for each check whose data set is too small for its threshold."""
        return [f"{c.target} | {c.output} | {c.metric}: {c.warning}" for c in self.checks if c.warning]

    def fail_skipped(self) -> None:
        """--strict: every SKIPPED check fails, so a run that could not check everything is not green."""
        for check in self.checks:
            check.fail_skipped()

    def summary(self) -> str:
        """`validation PASSED: 2 passed, 0 failed, 1 skipped over 450 images, 1 target(s)`."""
        n = self.counts
        return (f"validation {'PASSED' if self.passed else 'FAILED'}: {n['passed']} passed, {n['failed']} failed, "
                f"{n['skipped']} skipped over {self.data['images']} images, {len(self.targets)} target(s)")

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def __bool__(self) -> bool:
        return self.passed

    def lines(self) -> list[str]:
        """`PASSED | target | metric | value | tolerance`, then a layer-wise line per target."""
        out = []
        for target in self.targets:
            show_output = len(target.outputs) > 1
            out.extend(c.line(show_output) for c in target.checks)
            out.extend(f"WARNING | {c.target} | {f'{c.output}: ' if show_output else ''}{c.metric} | {c.warning}"
                       for c in target.checks if c.warning)
            out.extend(target.mode_lines())
            if target.layerwise is not None:
                out.append(target.layerwise.line())
        return out

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT, "passed": self.passed, "exit_code": self.exit_code, "summary": self.summary(),
            "counts": self.counts, "warnings": self.warnings,
            "recipe": self.recipe, "reference": self.reference, "data": self.data,
            "tolerances": self.tolerances, "timing": self.timing, "libraries": self.libraries,
            "targets": [t.to_dict() for t in self.targets],
        }

    def write(self, output_dir: str | Path) -> dict[str, Path]:
        output_dir = Path(output_dir)
        self.files = {
            "json": write_json_atomic(output_dir / "report.json", self.to_dict()),
            "junit": write_text_atomic(output_dir / "junit.xml", junit_xml(self)),
            "html": write_text_atomic(output_dir / "report.html", html_report(self)),
        }
        return self.files


# --------------------------------------------------------------------------- JUnit
def junit_xml(report: ValidationReport) -> str:
    """One testsuite, one testcase per target x check (classname = target, name = output.metric)."""
    checks = report.checks
    suite = ET.Element("testsuite", {
        "name": f"inception-deploy validate ({report.recipe})", "tests": str(len(checks)),
        "failures": str(sum(c.status == "FAILED" for c in checks)),
        "skipped": str(sum(c.status == "SKIPPED" for c in checks)), "errors": "0",
        "time": f"{report.timing.get('seconds', 0.0):.3f}",
    })
    for check in checks:
        case = ET.SubElement(suite, "testcase", {"classname": check.target, "name": f"{check.output}.{check.metric}"})
        value = "n/a" if check.value is None else f"{check.value:.6g}"
        if check.status == "FAILED":
            failure = ET.SubElement(case, "failure", {"message": f"{check.metric} = {value}, required {check.tolerance}",
                                                      "type": "ParityFailure"})
            failure.text = check.line(True)
        elif check.status == "SKIPPED":
            ET.SubElement(case, "skipped", {"message": f"{check.metric}: {check.tolerance}"})
        ET.SubElement(case, "system-out").text = check.line(True)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- HTML
_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.WARNING{color:#9a6700}.PASSED{color:#1a7f37;font-weight:600}.FAILED{color:#cf222e;font-weight:600}.SKIPPED{color:#888}
svg{background:#fff;border:1px solid #ddd;margin:0.5em 0}h2{margin-top:1.6em}"""


def _svg_frame(width: int, height: int, title: str, body: list[str], klass: str) -> str:
    head = (f'<svg class="plot {klass}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>'
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>')
    return head + "".join(body) + "</svg>"


def _axes(x0, y0, x1, y1) -> list[str]:
    return [f'<line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#333"/>',
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>']


def _y_ticks(left: int, top: int, height: int, bottom: int, peak: int) -> list[str]:
    """Count labels (0, half, peak) and light grid lines on the y-axis of a bar plot."""
    out = []
    for value in sorted({0, peak // 2, peak}):
        y = height - bottom - (height - top - bottom) * value / max(peak, 1)
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{value}</text>')
        if value:
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + 4}" y2="{y:.1f}" stroke="#333"/>')
    return out


def error_histogram_svg(name: str, comparison: ValidationComparison, colour: str,
                        allowed: Optional[float] = None) -> str:
    """Bars of log10 |logit error| (fixed bins; exact zeros in their own bar at the left), the
    y-axis in counts (one per output value compared), `allowed` (the max_abs_error tolerance) dashed."""
    width, height, left, right, top, bottom = 640, 240, 50, 20, 28, 40
    counts = [comparison.hist[0], *comparison.hist[1:]]
    labels = ["0"] + [f"<= {e:.2g}" for e in HIST_EDGES] + [f"> {HIST_EDGES[-1]:.2g}"]
    total = max(sum(counts), 1)
    peak = max(max(counts), 1)
    n = len(counts)
    bar = (width - left - right) / n
    body = _axes(left, top, width - right, height - bottom)
    for i, count in enumerate(counts):
        if not count:
            continue
        h = (height - top - bottom) * count / peak
        x = left + i * bar
        body.append(f'<rect class="bar" x="{x:.1f}" y="{height - bottom - h:.1f}" width="{max(bar - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="{colour}"><title>{html.escape(labels[i])}: {count} '
                    f'({100 * count / total:.1f}%)</title></rect>')
    body.extend(_y_ticks(left, top, height, bottom, peak))
    body.append(f'<text x="12" y="{(top + height - bottom) / 2:.1f}" font-size="11" text-anchor="middle" '
                f'transform="rotate(-90 12 {(top + height - bottom) / 2:.1f})">logits</text>')
    if allowed is not None and allowed > 0:
        # Edge HIST_EDGES[k] sits at the right of bar k + 1 (bar 0 holds exact zeros).
        position = min(max((math.log10(allowed) + 9) * 4 + 2, 1.0), float(n))
        x = left + position * bar
        body.append(f'<line class="tolerance" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" '
                    f'stroke="#e45756" stroke-width="2" stroke-dasharray="5,4"><title>tolerance: max abs error '
                    f'{html.escape(f"<= {allowed:.3g}")}</title></line>'
                    f'<text x="{x - 3:.1f}" y="{top + 10}" font-size="10" text-anchor="end">'
                    f'tolerance {allowed:.3g}</text>')
    ticks = [(0.5, "0")] + [(i + 1.0, f"1e{round(math.log10(HIST_EDGES[i - 1]))}") for i in range(1, n - 1, 8)]
    for position, text in ticks:  # bar i (i >= 1) holds errors up to HIST_EDGES[i - 1]: tick at its right edge
        body.append(f'<text x="{left + position * bar:.1f}" y="{height - bottom + 14}" font-size="10" '
                    f'text-anchor="middle">{text}</text>')
    body.append(f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">|logit error| '
                f'(log bins; max {comparison.max_abs_error:.3g})</text>')
    return _svg_frame(width, height, f"{name}: distribution of |logit error|", body, "histogram")


def class_delta_svg(name: str, per_class: dict, colour: str, allowed_drop: Optional[float] = None) -> str:
    """Per-class top-1 accuracy of the target minus the reference's, in points (the y-axis),
    `allowed_drop` (the recipe's top1_accuracy_drop_max) dashed."""
    width, height, left, right, top, bottom = 640, 240, 50, 20, 28, 40
    classes = list(per_class)
    deltas = [100 * (v["target_accuracy"] - v["reference_accuracy"]) for v in per_class.values()]
    samples = [v.get("samples", 0) for v in per_class.values()]
    span = max(max((abs(d) for d in deltas), default=0.0), 1.0, allowed_drop or 0.0)
    mid = top + (height - top - bottom) / 2
    scale = (height - top - bottom) / 2 / span
    bar = (width - left - right) / max(len(classes), 1)
    body = _axes(left, top, width - right, height - bottom)
    body.append(f'<line x1="{left}" y1="{mid}" x2="{width - right}" y2="{mid}" stroke="#999" stroke-dasharray="3,3"/>')
    body.append(f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">+{span:.2g}</text>')
    body.append(f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">-{span:.2g}</text>')
    body.append(f'<text x="{left - 4}" y="{mid + 3}" font-size="10" text-anchor="end">0</text>')
    body.append(f'<text x="12" y="{mid:.1f}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {mid:.1f})">'
                'points</text>')
    if allowed_drop is not None:
        y = mid + allowed_drop * scale
        body.append(f'<line class="tolerance" x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e45756" '
                    f'stroke-width="2" stroke-dasharray="5,4"/><text x="{width - right}" y="{y - 3:.1f}" font-size="10" '
                    f'text-anchor="end">allowed drop {allowed_drop:g} points (overall)</text>')
    for i, (cls, delta) in enumerate(zip(classes, deltas)):
        h = abs(delta) * scale
        y = mid - h if delta > 0 else mid
        fill = colour if delta >= 0 else "#e45756"
        body.append(f'<rect class="bar" x="{left + i * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                    f'height="{max(h, 0.5):.1f}" fill="{fill}"><title>class {html.escape(cls)}: {delta:+.2f} points '
                    f'on {samples[i]} images</title></rect>')
        if len(classes) <= 40:
            body.append(f'<text x="{left + (i + 0.5) * bar:.1f}" y="{height - bottom + 14}" font-size="10" '
                        f'text-anchor="middle">{html.escape(cls)}</text>')
    body.append(f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">class '
                f'(target minus reference top-1 accuracy, points)</text>')
    return _svg_frame(width, height, f"{name}: per-class accuracy delta", body, "class-delta")


def layerwise_svg(result: LayerwiseResult, colour: str) -> str:
    """log10 relative error per compute layer, the divergence threshold dashed."""
    width, height, left, right, top, bottom = 900, 260, 50, 20, 28, 40
    errors = [max(layer.rel_error, 1e-12) for layer in result.layers]
    lo = math.floor(min([math.log10(e) for e in errors] + [math.log10(result.threshold)]))
    hi = math.ceil(max([math.log10(e) for e in errors] + [math.log10(result.threshold)]))
    hi = hi if hi > lo else lo + 1
    n = max(len(errors), 2)

    def xy(i, value):
        x = left + (width - left - right) * i / (n - 1)
        y = height - bottom - (height - top - bottom) * (math.log10(value) - lo) / (hi - lo)
        return x, y

    body = _axes(left, top, width - right, height - bottom)
    _, ty = xy(0, result.threshold)
    body.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{width - right}" y2="{ty:.1f}" stroke="#e45756" stroke-width="2" '
                f'stroke-dasharray="5,4"/><text x="{width - right}" y="{ty - 3:.1f}" font-size="10" text-anchor="end">'
                f'threshold {result.threshold:g}</text>')
    for decade in range(lo, hi + 1):
        _, y = xy(0, 10.0 ** decade)
        body.append(f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">1e{decade}</text>')
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, e) for i, e in enumerate(errors)))
    body.append(f'<polyline class="curve" points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for i, (layer, e) in enumerate(zip(result.layers, errors)):
        x, y = xy(i, e)
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>{html.escape(layer.module)}: '
                    f'{layer.rel_error:.3g}</title></circle>')
    first = result.first_divergence
    if first is not None:
        x, y = xy(result.layers.index(first), max(first.rel_error, 1e-12))
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="#e45756" stroke-width="2"/>'
                    f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" font-size="11">{html.escape(first.module)}</text>')
    body.append(f'<text x="{width / 2}" y="{height - 6}" font-size="11" text-anchor="middle">compute layers in '
                f'graph order ({len(result.layers)}); relative error max|diff| / max|reference|</text>')
    return _svg_frame(width, height, f"{result.target}: layer-wise error", body, "layerwise")


def html_report(report: ValidationReport) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>inception-deploy validate: {verdict}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Validation <span class='{verdict}'>{verdict}</span></h1>",
             f"<p>recipe <b>{html.escape(report.recipe)}</b>; reference {html.escape(report.reference)}; data "
             f"{html.escape(str(report.data.get('source')))}, {report.data.get('images')} images, "
             f"{report.data.get('crops', 1)} crop(s){'' if not report.data.get('shard') else ', shard ' + html.escape(str(report.data['shard']))}.</p>",
             f"<p>{html.escape(report.summary())}</p>",
             *(f"<p class='WARNING'>WARNING: {html.escape(w)}</p>" for w in report.warnings),
             "<table><tr><th>status</th><th>target</th><th>output</th><th>metric</th><th>value</th><th>tolerance</th></tr>"]
    for c in report.checks:
        value = "n/a" if c.value is None else f"{c.value:.6g}"
        parts.append(f"<tr><td class='{c.status}'>{c.status}</td><td>{html.escape(c.target)}</td><td>{html.escape(c.output)}"
                     f"</td><td>{c.metric}</td><td>{value}</td><td>{html.escape(c.tolerance)}</td></tr>")
    parts.append("</table>")
    for i, target in enumerate(report.targets):
        colour = _COLOURS[i % len(_COLOURS)]
        mode = f", {target.mode} Q/DQ semantics" if target.mode else ""
        parts.append(f"<h2>{html.escape(target.name)} <small>({target.precision}, {html.escape(target.backend)}{mode})</small></h2>")
        for name, comparison in target.outputs.items():
            s = comparison.summary()
            parts.append(f"<p>{html.escape(name)}: max abs error {s['max_abs_error']:.3g}, mean {s['mean_abs_error']:.3g}, "
                         f"cosine min {s['cosine_min']:.6f}, top-1 agreement {100 * s['top1_agreement']:.2f}% "
                         f"(95% CI {100 * s['top1_agreement_ci95'][0]:.2f}-{100 * s['top1_agreement_ci95'][1]:.2f}%)"
                         + (f", top-1 accuracy {100 * s['labels']['reference_top1_accuracy']:.2f}% -> "
                            f"{100 * s['labels']['target_top1_accuracy']:.2f}% (McNemar p={s['labels']['mcnemar']['p_value']:.3g})"
                            if "labels" in s else "") + "</p>")
            tolerance = report.tolerances.get(target.precision) or {}
            allowed = None
            if tolerance.get("max_abs_error_rel") is not None or tolerance.get("max_abs_error") is not None:
                allowed = (tolerance.get("max_abs_error_rel") or 0.0) * comparison.max_abs_reference + \
                    (tolerance.get("max_abs_error") or 0.0)
            parts.append(error_histogram_svg(f"{target.name} / {name}", comparison, colour, allowed))
            if "labels" in s:
                parts.append(class_delta_svg(f"{target.name} / {name}", s["labels"]["per_class"], colour,
                                             tolerance.get("top1_accuracy_drop_max")))
        if target.layerwise is not None and target.layerwise.layers:
            parts.append(f"<p>{html.escape(target.layerwise.line())}</p>")
            parts.append(layerwise_svg(target.layerwise, colour))
    libs = ", ".join(f"{k} {v}" for k, v in report.libraries.items())
    parts.append(f"<p><small>{html.escape(libs)}; {report.timing.get('seconds', 0):.1f} s</small></p></body></html>")
    return "\n".join(parts)
