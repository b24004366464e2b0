"""`validate merge` (stage: validate): shard reports -> one report and one verdict.

Each shard's report.json carries, per target and output, the additive counters every
metric follows from (`ValidationComparison.state()`), so the merged numbers are exactly
those of one run over the whole dataset; verdicts are re-judged with the tolerances the
shards recorded. Shards must be the complete set 1/n..n/n of one split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..fileio import read_json_file
from ..manifest import library_versions
from ..recipes import Tolerance
from .layerwise import LayerwiseResult
from .metrics import ValidationComparison
from .report import REPORT_FORMAT, TargetResult, ValidationReport
from .verdict import judge


def _load(path: Path) -> dict:
    path = path / "report.json" if path.is_dir() else path
    report = read_json_file(path, f"shard report not found: {path}", "not valid JSON")
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise UserError(f"{path}: not an inception-deploy validation report (format {REPORT_FORMAT})")
    report["_path"] = str(path)
    return report


def merge_reports(paths: Sequence[str | Path], output_dir: Optional[str | Path] = None) -> ValidationReport:
    """Merge the report.json of every shard (files or the folders holding them)."""
    if not paths:
        raise UserError("give the shard reports to merge (report.json files or their folders)")
    reports = [_load(Path(p)) for p in paths]
    first = reports[0]
    shards = []
    for report in reports:
        for key in ("recipe", "reference"):
            if report[key] != first[key]:
                raise UserError(f"{report['_path']}: {key} '{report[key]}' differs from '{first[key]}' in {first['_path']}")
        if report["data"]["source"] != first["data"]["source"] or report["data"]["crops"] != first["data"]["crops"]:
            raise UserError(f"{report['_path']}: data or --crops differs from {first['_path']}; merge shards of one run")
        if [t["name"] for t in report["targets"]] != [t["name"] for t in first["targets"]]:
            raise UserError(f"{report['_path']}: targets differ from {first['_path']}")
        shard = report["data"].get("shard")
        if shard is None:
            raise UserError(f"{report['_path']}: not a shard report (made without --shard)")
        shards.append(tuple(int(x) for x in shard.split("/")))
    counts = {n for _, n in shards}
    if len(counts) != 1:
        raise UserError(f"shards of different splits: {', '.join(f'{i}/{n}' for i, n in shards)}")
    total = counts.pop()
    seen = sorted(i for i, _ in shards)
    if seen != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - set(seen))
        duplicated = sorted({i for i in seen if seen.count(i) > 1})
        what = f"missing {', '.join(f'{i}/{total}' for i in missing)}" if missing else \
            f"duplicated {', '.join(f'{i}/{total}' for i in duplicated)}"
        raise UserError(f"incomplete shard set: {what}; merge exactly one report per shard")

    tolerances = first["tolerances"]
    targets = []
    for position, head in enumerate(first["targets"]):
        outputs: dict[str, ValidationComparison] = {}
        for report in reports:
            for name, state in report["targets"][position]["state"].items():
                part = ValidationComparison.from_state(state)
                outputs[name] = outputs[name].merge(part) if name in outputs else part
        tolerance = Tolerance(**tolerances[head["precision"]])
        checks = [c for comp in outputs.values() for c in judge(head["name"], comp, tolerance, head["precision"])]
        layerwise = next((LayerwiseResult.from_dict(r["targets"][position]["layerwise"]) for r in reports
                          if r["targets"][position].get("layerwise")), None)
        targets.append(TargetResult(head["path"], head["name"], head["precision"], head["backend"], head["manifest"],
                                    outputs, checks, layerwise))
    merged = ValidationReport(
        recipe=first["recipe"], reference=first["reference"],
        data={**first["data"], "shard": None, "merged_shards": total,
              "images": sum(r["data"]["images"] for r in reports),
              "skipped": [s for r in reports for s in r["data"]["skipped"]]},
        targets=targets, tolerances=tolerances,
        timing={"seconds": sum(r["timing"]["seconds"] for r in reports)}, libraries=library_versions(),
    )
    if output_dir is not None:
        merged.write(output_dir)
    return merged
