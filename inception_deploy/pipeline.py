"""The `run` pipeline: every stage of a recipe, in order, artifacts passed along (stage: all).

Each stage is a function from the pipeline's state (recipe, reference, artifacts so far)
to new artifacts; the pipeline only sequences them and reports. A stage raises on
failure, so a pipeline that returns has passed every check it ran.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .recipes import Recipe, load_recipe

log = logging.getLogger(__name__)


@dataclass
class PipelineState:
    recipe: Recipe
    weights: Optional[str]
    output_dir: Path
    trust_checkpoint: bool = False
    progress: bool = True
    reference: object = None
    artifacts: dict[str, Path] = field(default_factory=dict)  # stage name -> artifact
    lines: list[str] = field(default_factory=list)  # what the user is shown
    seconds: dict[str, float] = field(default_factory=dict)
    exit_code: int = 0


def _export(state: PipelineState) -> None:
    from .export import export_onnx, parity_lines
    from .reference import load_reference

    state.reference = load_reference(state.recipe, state.weights, state.trust_checkpoint, state.progress)
    result = export_onnx(state.recipe, output_dir=state.output_dir, reference=state.reference, progress=state.progress)
    state.artifacts["fp32"] = result.path
    state.lines += parity_lines(result)


STAGES: list[tuple[str, Callable[[PipelineState], None]]] = [
    ("export", _export),
]


def run_pipeline(recipe: Recipe | str = "googlenet-digits", weights: Optional[str] = None,
                 output_dir: str | Path = "out", trust_checkpoint: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print) -> PipelineState:
    recipe = load_recipe(recipe) if isinstance(recipe, (str, Path)) else recipe
    state = PipelineState(recipe, weights, Path(output_dir), trust_checkpoint, progress)
    for name, stage in STAGES:
        started = time.perf_counter()
        shown = len(state.lines)
        stage(state)
        state.seconds[name] = round(time.perf_counter() - started, 2)
        for line in state.lines[shown:]:
            echo(line)
        echo(f"[{name}] done in {state.seconds[name]:.1f} s")
    return state
