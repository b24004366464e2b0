"""Inception model definitions with torchvision-compatible state-dict keys (stage: models)."""

from .registry import MODELS, ModelSpec, build_model, check_input_size, get_spec

__all__ = ["MODELS", "ModelSpec", "build_model", "check_input_size", "get_spec"]
