"""The optimize stage's safety check: the rewritten graph must answer like the original (stage: optimize).

Both graphs run on ONNX Runtime CPU with its own graph optimizations off, so each is
evaluated exactly as written, on realistic inputs: the recipe's preprocessing over real
images (the recipe's validation data, digits-holdout by default, or the images given)
when the recipe is known, else smooth synthetic images of the graph's input shape.
Every output the candidate still has is compared with compare.OutputComparison; a
difference beyond tolerance raises ParityFailure naming the pass and the output.

The tolerance is the recipe's fp32 one (1e-5 of max |output| + 1e-6 by default), or
NOISE_FACTOR times the original graph's own float32 noise floor when that is larger: the
difference between the original run as written and run with ONNX Runtime's graph
optimizations (which fuse Conv+BN themselves). Measured: an unconditioned random-weight Inception v3 at
299 differs from itself by 5.7e-5 of max |logit| between the two, so no correct rewrite
can promise 1e-5 there; a trained GoogLeNet's floor is far below 1e-5, so the recipe's
tolerance applies. A wrong rewrite (one conv scaled by 1.01) moves outputs by ~1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..compare import OutputComparison
from ..errors import ParityFailure, UserError

DEFAULT_IMAGES = 8
BATCH = 4
NOISE_FACTOR = 2.0


@dataclass
class SafetyTolerance:
    rel: float = 1e-5  # of max |reference output|
    abs: float = 1e-6

    @classmethod
    def from_recipe(cls, recipe) -> "SafetyTolerance":
        if recipe is None:
            return cls()
        fp32 = recipe.tolerances.fp32
        return cls(rel=fp32.max_abs_error_rel if fp32.max_abs_error_rel is not None else cls.rel,
                   abs=fp32.max_abs_error if fp32.max_abs_error is not None else cls.abs)


@dataclass
class CheckInputs:
    feeds: list[dict[str, np.ndarray]]
    source: str  # what they are, for reports

    @property
    def samples(self) -> int:
        return sum(len(next(iter(f.values()))) for f in self.feeds)


def make_inputs(model_proto, pre=None, data: Optional[str] = None, count: int = DEFAULT_IMAGES,
                where: str = "the graph") -> CheckInputs:
    """Inputs for the check. `pre`: a PreprocessingSection (from --recipe or the manifest)."""
    from ..data import choose_indices, open_dataset
    from ..recipes import PreprocessingSection

    inputs = [i for i in model_proto.graph.input if i.name not in {t.name for t in model_proto.graph.initializer}]
    if len(inputs) != 1:
        return _random_inputs(inputs, count)
    name = inputs[0].name
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        return _random_inputs(inputs, count)
    nhwc = dims[1] != 3 and dims[3] == 3
    height, width = (dims[1], dims[2]) if nhwc else (dims[2], dims[3])
    if (dims[3] if nhwc else dims[1]) != 3 or min(height or 8, width or 8) < 8:
        return _random_inputs(inputs, count)  # not a batch of RGB images
    if pre is None:
        # A graph made elsewhere: ImageNet preprocessing at the graph's own size.
        size = [height or 224, width or 224]
        pre = PreprocessingSection(size=size, layout="NHWC" if nhwc else "NCHW")
        source = data or "synthetic"
    else:
        if (height, width) != (None, None) and [height, width] != list(pre.size):
            raise UserError(
                f"{where} takes {height}x{width} inputs but the recipe preprocesses to "
                f"{pre.size[0]}x{pre.size[1]}; give the recipe the graph was exported with (--recipe)")
        source = data or "digits-holdout"
    dataset = open_dataset(source, pre)
    indices = choose_indices(dataset, min(count, len(dataset)), seed=0)
    batch = dims[0] if dims[0] else BATCH
    feeds = [{name: x} for x, _, _ in dataset.batches(pre, batch, indices) if dims[0] is None or len(x) == dims[0]]
    if not feeds:
        raise UserError(f"{source}: no usable images for the safety check (the graph takes batches of {dims[0]})")
    return CheckInputs(feeds, f"{dataset.name} ({sum(len(f[name]) for f in feeds)} images, {pre.size[0]}x{pre.size[1]})")


def _random_inputs(inputs, count: int) -> CheckInputs:
    """Seeded standard-normal tensors for graphs that do not take one image batch."""
    import onnx

    rng = np.random.default_rng(0)
    feed = {}
    for value in inputs:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else min(count, BATCH) for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        feed[value.name] = rng.standard_normal(shape).astype(dtype)
    return CheckInputs([feed], f"random normal inputs ({', '.join(feed)})")


def _session(model: bytes | str, optimization: str = "disable"):
    from ..backends.onnxruntime_backend import OnnxRuntimeRunner

    return OnnxRuntimeRunner(model, optimization=optimization)


@dataclass
class SafetyCheck:
    """The original graph's outputs on the check inputs, computed once; candidates compared with them."""

    original: str  # path of the original graph
    inputs: CheckInputs
    tolerance: SafetyTolerance = field(default_factory=SafetyTolerance)
    _reference: Optional[list[dict[str, np.ndarray]]] = None
    noise_floor: dict = field(default_factory=dict)  # output -> max |as written - ORT-optimized|

    def reference(self) -> list[dict[str, np.ndarray]]:
        if self._reference is None:
            with _session(self.original) as runner:
                self._reference = [runner.infer(feed) for feed in self.inputs.feeds]
            with _session(self.original, "all") as runner:
                for feed, ref in zip(self.inputs.feeds, self._reference):
                    for name, value in runner.infer(feed).items():
                        diff = float(np.abs(value.astype(np.float64) - ref[name]).max(initial=0.0))
                        self.noise_floor[name] = max(self.noise_floor.get(name, 0.0), diff)
        return self._reference

    def allowed(self, c: OutputComparison) -> float:
        return max(self.tolerance.rel * c.max_abs_reference + self.tolerance.abs,
                   NOISE_FACTOR * self.noise_floor.get(c.name, 0.0))

    def compare(self, candidate: bytes) -> dict[str, OutputComparison]:
        reference = self.reference()
        with _session(candidate) as runner:
            missing = [n for n in runner.output_names if n not in reference[0]]
            if missing:
                raise ParityFailure(f"the optimized graph has an output '{missing[0]}' the original does not")
            results = {name: OutputComparison(name) for name in runner.output_names}
            for feed, ref in zip(self.inputs.feeds, reference):
                out = runner.infer(feed)
                for name in results:
                    results[name].update(ref[name], out[name])
        return results

    def failures(self, results: dict[str, OutputComparison]) -> list[OutputComparison]:
        return [c for c in results.values() if c.max_abs_error > self.allowed(c)]

    def describe(self, c: OutputComparison) -> str:
        return (f"max abs error {c.max_abs_error:.3g} > allowed {self.allowed(c):.3g} (max of {self.tolerance.rel:g} x "
                f"max |output| {c.max_abs_reference:.3g} + {self.tolerance.abs:g} and {NOISE_FACTOR:g} x the original's "
                f"float32 noise floor {self.noise_floor.get(c.name, 0.0):.3g}), top-1 agreement {100 * c.top1_agreement:.1f}%")

    def summary(self, c: OutputComparison) -> dict:
        return {**c.summary(), "allowed": self.allowed(c), "noise_floor": self.noise_floor.get(c.name, 0.0)}
