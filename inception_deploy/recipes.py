"""Recipes: one YAML file per model and deployment, validated on load (stage: configuration).

A recipe names the model, its input and preprocessing, and holds one section per later
stage (passes, calibration, precision, tolerances, engine). Unknown keys and wrong types
are errors that give the key path and, for a misspelt key, the closest known one.

Every stage resolves its recipe once, at its entry, with `resolve_recipe` (the caller's
recipe, else the one the artifact's manifest names, else a fallback such as one built from
command-line flags), applies the user's flags with `Recipe.with_overrides` (validated by the
same schema), and hands the resolved Recipe to everything below it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .bundled import bundled_dir
from .errors import UserError
from .precision.calibrators import METHODS as CALIBRATION_METHODS

# The repository's top-level recipes/ folder, inside the package in a wheel (bundled.py).
BUNDLED_DIR = bundled_dir("recipes")
# The optimize stage's pass order when a recipe names none (passes/__init__.py runs them):
# cheap removals first, so folds see plain Conv -> BN pairs; aux heads last, so the check of
# every earlier pass covers them too.
DEFAULT_PASSES = ("eliminate-dropout-identity", "fold-batchnorm", "fold-constants", "fuse-pad", "flatten-concat",
                  "strip-aux-heads")


class _Section(BaseModel):
    # allow_inf_nan=False: `std: [0.5, .nan, 0.5]` passes `s <= 0` checks (NaN compares false) and trains on NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(_Section):
    arch: str
    num_classes: Optional[int] = Field(None, ge=1, description="None: read from the weights (1000 for random init)")
    aux_logits: Optional[bool] = Field(None, description="None: read from the weights (True for random init)")
    transform_input: bool = False
    class_names: Optional[list[str]] = Field(None, description="one name per output class, in logit order "
                                                               "(a served model's labels.txt)")

    @model_validator(mode="after")
    def _one_name_per_class(self) -> "ModelSection":
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for num_classes {self.num_classes}")
        return self


class PreprocessingSection(_Section):
    """The one preprocessing every stage applies: resize, centre crop, scale, normalize, layout."""

    size: list[int] = Field(..., description="[height, width] of the network input")
    resize: Optional[int] = Field(None, description="resize the shorter side to this before cropping; None: resize straight to size")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: list[float] = [0.485, 0.456, 0.406]
    std: list[float] = [0.229, 0.224, 0.225]
    pixel_scale: float = Field(1 / 255, description="multiplies 8-bit pixels before mean/std")
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @field_validator("size", mode="before")
    @classmethod
    def _square(cls, value: Any) -> Any:
        return [value, value] if isinstance(value, int) else value

    @model_validator(mode="after")
    def _lengths(self) -> "PreprocessingSection":
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError("size must be an integer or [height, width]")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values, one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


class BatchRange(_Section):
    min: int = Field(1, ge=1)
    opt: int = Field(8, ge=1)
    max: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "BatchRange":
        if not self.min <= self.opt <= self.max:
            raise ValueError("batch range needs min <= opt <= max")
        return self


class ExportSection(_Section):
    opset: int = Field(17, ge=13, le=21)
    input_name: str = "input"
    output_name: str = "logits"
    keep_aux: bool = False
    dynamic_batch: bool = True


class CalibrationSection(_Section):
    method: Literal[CALIBRATION_METHODS] = "entropy"  # the calibrator registry's names (precision/calibrators/)
    # 99.999, not 99.99: on the digits GoogLeNet 99.99 clips activations of held-out images that the
    # 256 calibration images never reach (max abs logit error 1.0 vs 0.15; calibration/README.md).
    percentile: float = Field(99.999, gt=0, le=100)
    bins: int = Field(2048, ge=128)
    count: int = Field(256, ge=1)
    batch_size: int = Field(32, ge=1)
    data: Optional[str] = Field(None, description="image folder, .npy/.npz, or 'digits-train'")
    cache: Optional[str] = Field(None, description="calibration cache to reuse, relative to the recipe")
    seed: int = 0


class ExclusionRule(_Section):
    """Keep matching nodes out of INT8: by node name, op type, or a regex on the name."""

    name: Optional[str] = None
    op_type: Optional[str] = None
    regex: Optional[str] = None
    reason: str = ""


class Int8Section(_Section):
    enabled: bool = Field(True, description="`run` makes the INT8 graph (and its engine)")
    target: Literal["tensorrt", "ort-cpu"] = Field("tensorrt", description="the runtime the Q/DQ graph is for: "
                                                  "tensorrt (symmetric int8, float biases) or ort-cpu (asymmetric "
                                                  "uint8, int32 biases: ONNX Runtime CPU's fused QLinear kernels)")
    unsigned_activations: bool = False
    bias_correction: bool = Field(True, description="fold the mean output shift int8 rounding causes into float biases, "
                                                    "measured layer by layer on the calibration images")
    bias_correction_images: Optional[int] = Field(
        None, ge=1, description="calibration images the corrections are measured on (the first of the calibration "
                                "choice; default: enough for 1024 values a channel at the smallest Conv map, at least 16)")
    equalize: bool = Field(True, description="rescale Conv output channels (an FP32 identity through Relu/pool/Concat) "
                                             "so each fills more of its tensor's shared int8 range")
    equalize_images: Optional[int] = Field(
        None, ge=1, description="calibration images the channel ranges are measured on (the first of the calibration "
                                "choice; default: as bias_correction_images)")
    equalize_strength: float = Field(0.5, gt=0, le=1, description="s = (tensor range / channel range) ** strength")
    equalize_max_scale: float = Field(16.0, ge=1, description="largest channel scale")
    exclude: list[ExclusionRule] = []
    accuracy_budget: Optional[float] = Field(None, ge=0, description="allowed top-1 agreement loss, in points")


class Fp16Section(_Section):
    enabled: bool = Field(True, description="`run` makes the FP16 graph (and its engine)")
    keep_io_types: bool = True
    range_margin: float = Field(0.5, gt=0, le=1, description="keep FP32 where |x| exceeds this fraction of FP16 max")
    keep_fp32_ops: list[str] = []


class PrecisionSection(_Section):
    fp16: Fp16Section = Fp16Section()
    int8: Int8Section = Int8Section()


class Tolerance(_Section):
    """Verdict thresholds for one precision; a None threshold is not checked."""

    max_abs_error_rel: Optional[float] = Field(None, ge=0, description="max |diff| / max |reference logit|")
    max_abs_error: Optional[float] = Field(None, ge=0)
    cosine_min: Optional[float] = Field(None, ge=-1, le=1)
    top1_agreement_min: Optional[float] = Field(None, ge=0, le=1)
    top5_agreement_min: Optional[float] = Field(None, ge=0, le=1)
    top1_accuracy_drop_max: Optional[float] = Field(None, ge=0, description="in points (percent)")
    judge: Literal["point", "lower_bound"] = Field(
        "point", description="agreement and accuracy checks: 'point' compares the measured value; 'lower_bound' the "
                             "worst end of its 95% interval (agreement's lower bound, accuracy drop's upper bound), so "
                             "a pass is shown by the data, not only observed on it. A threshold of 1 (every image "
                             "agrees) is judged on the count either way")


class TolerancesSection(_Section):
    fp32: Tolerance = Tolerance(max_abs_error_rel=1e-5, max_abs_error=1e-6, cosine_min=0.99999, top1_agreement_min=1.0)
    fp16: Tolerance = Tolerance(max_abs_error=0.01, cosine_min=0.9999, top1_agreement_min=0.995)
    int8: Tolerance = Tolerance(top1_agreement_min=0.99, top1_accuracy_drop_max=0.5, cosine_min=0.99)


class EngineSection(_Section):
    batch: BatchRange = BatchRange()
    workspace_mb: int = Field(4096, ge=16)
    optimization_level: int = Field(3, ge=0, le=5)
    timing_cache: Optional[str] = None


class TrainingSection(_Section):
    """How the bundled test model is trained (digits recipes only)."""

    dataset: Literal["sklearn-digits"] = "sklearn-digits"
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    aux_loss_weight: float = Field(0.3, ge=0)
    holdout_fraction: float = Field(0.25, gt=0, lt=1)
    seed: int = 0


class DataSection(_Section):
    validation: Optional[str] = Field(None, description="image folder, .npy/.npz, 'digits-holdout' or 'synthetic'")
    max_images: Optional[int] = Field(None, ge=1)


class Recipe(_Section):
    name: str
    description: str = ""
    model: ModelSection
    preprocessing: PreprocessingSection
    export: ExportSection = ExportSection()
    passes: list[str] = list(DEFAULT_PASSES)
    calibration: CalibrationSection = CalibrationSection()
    precision: PrecisionSection = PrecisionSection()
    tolerances: TolerancesSection = TolerancesSection()
    engine: EngineSection = EngineSection()
    training: Optional[TrainingSection] = None
    data: DataSection = DataSection()
    source: Optional[str] = Field(None, exclude=True, description="the file it was loaded from")
    overrides: dict[str, Any] = Field(default_factory=dict, exclude=True,
                                      description="dotted key -> value the user's flags set (with_overrides)")

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.preprocessing.size[0]), int(self.preprocessing.size[1])

    def preprocessing_dict(self) -> dict:
        return self.preprocessing.model_dump(mode="json")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude={"source", "overrides"})

    def with_overrides(self, values: dict[str, Any], flags: Optional[dict[str, str]] = None,
                       hints: Optional[dict[str, str]] = None) -> "Recipe":
        """A copy with dotted keys set ('calibration.count': 512), validated by the schema like
        the YAML is; None values are left out (a flag not given). `flags` names the option each
        key came from and `hints` what to give instead, for the error line ("--opset 7: input
        should be greater than or equal to 13 (...)"). The copy records what it overrode in
        `overrides`."""
        given = {key: value for key, value in values.items() if value is not None}
        if not given:
            return self
        raw = self.to_dict()
        for key, value in given.items():
            section = raw
            *parents, last = key.split(".")
            for part in parents:
                section = section[part]
            if last not in section:
                raise KeyError(f"no recipe key '{key}'")
            section[last] = value
        try:
            recipe = Recipe.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            hint = f" ({hints[key]})" if hints and key in hints else ""
            if flags and key in flags:
                raise UserError(f"{flags[key]} {given.get(key, '')}: {message[:1].lower()}{message[1:]}{hint}") from None
            raise UserError(f"key '{key}': {message} (got {_short(error.get('input'))}){hint}") from None
        recipe.source, recipe.overrides = self.source, {**self.overrides, **given}
        return recipe


def preprocessing_difference(recorded: dict, current: dict) -> Optional[str]:
    """The first preprocessing key (sorted) whose value differs between two preprocessing
    dicts, None when they agree (missing keys count as None)."""
    differing = [k for k in sorted(set(recorded) | set(current)) if recorded.get(k) != current.get(k)]
    return differing[0] if differing else None


def resolve_recipe(recipe=None, manifest: Optional[dict] = None, what: str = "the artifact",
                   fallback=None) -> Optional[Recipe]:
    """The recipe a stage runs with, resolved once at its entry: the caller's (a Recipe, a
    bundled name or a YAML path), else the one the artifact's manifest names, else `fallback`
    (e.g. a recipe made from command-line flags). Whichever it is must agree with the
    preprocessing the manifest records (refused with both values named). None when there is
    none at all."""
    from .manifest import check_preprocessing

    if recipe is None:
        recipe = (manifest or {}).get("recipe") or fallback
        if recipe is None:
            return None
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    check_preprocessing(manifest, recipe, str(what))
    return recipe


def bundled_names() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.yaml"))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file not found: {path}")
        return path
    bundled = BUNDLED_DIR / f"{text}.yaml"
    if bundled.is_file():
        return bundled
    close = difflib.get_close_matches(text, bundled_names(), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; bundled: {', '.join(bundled_names())}"
    raise UserError(f"unknown recipe '{text}'{hint}")


# A real recipe has a few hundred YAML values; aliases (&a / *a) can make a 1 KB file stand
# for 10^9 of them, which anything walking the result (validation, error messages) expands.
MAX_RECIPE_VALUES = 100_000


def load_recipe(name_or_path: str | Path) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                        "save the recipe as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        raw = _load_yaml(text, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', None) or _short(exc)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a YAML mapping of sections (model, preprocessing, ...)")
    return recipe_from_dict(raw, source=str(path))


def _load_yaml(text: str, path: Path):
    """yaml.safe_load, refusing documents whose alias-expanded size exceeds MAX_RECIPE_VALUES
    (counted on the node graph, where an alias is one shared node, before anything expands it)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def expanded(n, depth: int = 0) -> int:
            if id(n) in sizes:
                if sizes[id(n)] < 0:
                    raise UserError(f"{path}: a YAML alias refers to itself (a recursive structure); "
                                    "a recipe is a tree of plain values")
                return sizes[id(n)]
            if depth > 64:
                raise UserError(f"{path}: YAML nested more than 64 levels deep; a recipe is a few levels of sections")
            sizes[id(n)] = -1
            children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else \
                (n.value if isinstance(n, yaml.SequenceNode) else [])
            total = 1 + sum(expanded(c, depth + 1) for c in children)
            if total > MAX_RECIPE_VALUES:
                raise UserError(f"{path}: the YAML stands for more than {MAX_RECIPE_VALUES:,} values once its aliases "
                                "(&anchor / *alias) are expanded; a recipe needs a few hundred: remove the nested aliases")
            sizes[id(n)] = total
            return total

        expanded(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _short(value, limit: int = 80) -> str:
    """A bounded repr for error messages: reprlib stops at a few items per level, so even a
    structure standing for 10^9 values costs nothing to describe."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
    shortener.maxlist = shortener.maxdict = shortener.maxtuple = shortener.maxset = 6
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def recipe_from_dict(raw: dict, source: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {_describe(exc)}") from None
    recipe.source = source
    from .models import get_spec

    get_spec(recipe.model.arch)  # an unknown architecture is a recipe error too
    return recipe


def _describe(exc: ValidationError) -> str:
    """One line for the first error: key path, what is wrong, and a did-you-mean for typos."""
    error = exc.errors()[0]
    loc = [str(part) if len(str(part)) <= 60 else str(part)[:57] + "..." for part in error["loc"]]
    path = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
        return f"unknown key '{path}'{hint}"
    if error["type"] == "missing":
        return f"missing key '{path}'"
    message = error["msg"].removeprefix("Value error, ")
    return f"key '{path}': {message} (got {_short(error.get('input'))})"


def _known_keys(loc: list[str]) -> list[str]:
    model: Any = Recipe
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return sorted(name for name in model.model_fields if name not in ("source", "overrides"))
