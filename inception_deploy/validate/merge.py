"""`validate merge` (stage: validate): shard reports -> one report and one verdict.

Each shard's report.json carries, per target and output, the additive counters every
metric follows from (`ValidationComparison.state()`), so the merged numbers are exactly
those of one run over the whole dataset; verdicts are re-judged with the tolerances the
shards recorded. Shards must be the complete set 1/n..n/n of one run (merge_reports says
what must agree); a report missing any key it needs is one line, never a KeyError.
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


def _short(value, limit: int = 60) -> str:
    text = str(value)
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):  # a sha256: its head tells them apart
        return text[:16] + "..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What every shard report must hold for a merge, as key paths; a report without them (hand-edited,
# truncated, from another tool) is one line naming the first missing key.
_REQUIRED = (("recipe",), ("reference",), ("tolerances",), ("timing", "seconds"), ("data", "source"), ("data", "crops"),
             ("data", "images"), ("data", "skipped"), ("data", "shard"), ("targets",))
_TARGET_REQUIRED = ("name", "path", "precision", "backend", "state")


def _load(path: Path) -> dict:
    path = path / "report.json" if path.is_dir() else path
    report = read_json_file(path, f"shard report not found: {path}", "not valid JSON")
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise UserError(f"{path}: not an inception-deploy validation report (format {REPORT_FORMAT})")
    for keys in _REQUIRED:
        value = report
        for i, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise UserError(f"{path}: the report has no '{'.'.join(keys[:i + 1])}'; merge report.json files "
                                "written by `inception-deploy validate --shard I/N`, unedited")
            value = value[key]
    for index, target in enumerate(report["targets"] if isinstance(report["targets"], list) else [None]):
        missing = next((k for k in _TARGET_REQUIRED if not isinstance(target, dict) or k not in target), None)
        if missing is not None:
            raise UserError(f"{path}: target {index + 1} of the report has no '{missing}'; merge report.json files "
                            "written by `inception-deploy validate --shard I/N`, unedited")
    report["_path"] = str(path)
    return report


def _run_identity(report: dict) -> list[tuple[str, object]]:
    """What must agree between shards of one run: (what, value) pairs, compared in order."""
    data = report["data"]
    identity = [("recipe", report["recipe"]), ("reference", report["reference"]),
                ("data source", data["source"]), ("--crops", data["crops"]),
                ("data list (images chosen before sharding)", data.get("list_sha")),
                ("shard count", str(data["shard"]).partition("/")[2] or None),
                ("targets", [t["name"] for t in report["targets"]])]
    for t in report["targets"]:
        identity += [(f"precision of target {t['name']}", t["precision"]),
                     (f"sha256 of target {t['name']}", t.get("sha256"))]
    return identity


def merge_reports(paths: Sequence[str | Path], output_dir: Optional[str | Path] = None,
                  strict: bool = False) -> ValidationReport:
    """Merge the report.json of every shard (files or the folders holding them).

    Shards merge only when they come from one run: same recipe, reference, data source and
    list of images chosen before sharding, crops, shard count, targets (names, precision and
    sha256 of each artifact). The first difference is named."""
    if not paths:
        raise UserError("give the shard reports to merge (report.json files or their folders)")
    reports = [_load(Path(p)) for p in paths]
    first = reports[0]
    shards = []
    for report in reports:
        shard = report["data"]["shard"]
        if shard is None:
            raise UserError(f"{report['_path']}: not a shard report (made without --shard)")
        try:
            index, count = (int(x) for x in str(shard).split("/"))
        except ValueError:
            raise UserError(f"{report['_path']}: data.shard '{shard}' is not I/N") from None
        shards.append((index, count))
        for (what, mine), (_, theirs) in zip(_run_identity(report), _run_identity(first)):
            if mine is None or theirs is None:
                raise UserError(f"{report['_path'] if mine is None else first['_path']}: the report does not record "
                                f"the {what} (written by an older version); validate the shards again, then merge")
            if mine != theirs:
                raise UserError(f"{report['_path']}: {what} differs from {first['_path']} ({_short(mine)} vs "
                                f"{_short(theirs)}); merge shards of one run only")
    total = shards[0][1]
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
                try:
                    part = ValidationComparison.from_state(state)
                except (KeyError, TypeError):
                    raise UserError(f"{report['_path']}: the state of output '{name}' of target {head['name']} is "
                                    "incomplete; merge report.json files written by `validate --shard I/N`, unedited") from None
                outputs[name] = outputs[name].merge(part) if name in outputs else part
        if not isinstance(tolerances, dict) or head["precision"] not in tolerances:
            raise UserError(f"{first['_path']}: the report has no tolerances for precision '{head['precision']}'")
        tolerance = Tolerance(**tolerances[head["precision"]])
        checks = [c for comp in outputs.values() for c in judge(head["name"], comp, tolerance, head["precision"])]
        layerwise = next((LayerwiseResult.from_dict(r["targets"][position]["layerwise"]) for r in reports
                          if r["targets"][position].get("layerwise")), None)
        targets.append(TargetResult(head["path"], head["name"], head["precision"], head["backend"], head.get("manifest"),
                                    outputs, checks, layerwise, sha256=head.get("sha256")))
    merged = ValidationReport(
        recipe=first["recipe"], reference=first["reference"],
        data={**first["data"], "shard": None, "merged_shards": total,
              "images": sum(r["data"]["images"] for r in reports),
              "skipped": [s for r in reports for s in r["data"]["skipped"]]},
        targets=targets, tolerances=tolerances,
        timing={"seconds": sum(r["timing"]["seconds"] for r in reports)}, libraries=library_versions(),
    )
    if strict:
        merged.fail_skipped()
    if output_dir is not None:
        merged.write(output_dir)
    return merged
