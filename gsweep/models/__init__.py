"""Model registry: a sweep's ``model.name`` picks one; keys are in gsweep.schema.MODEL_SCHEMAS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gsweep.models.numerics import Numerics
from gsweep.models.transformer import MLP, Transformer

MODELS = {"transformer": Transformer, "mlp": MLP}


def build_model(cfg: Mapping[str, Any], vocab_size: int, n_classes: int, seq_len: int, precision: str):
    """A Flax module from a run's model block (static keys only; init_scale is applied at init)."""
    kw = {k: v for k, v in cfg.items() if k not in ("name", "init_scale")}
    return MODELS[cfg["name"]](vocab_size=vocab_size, n_classes=n_classes, seq_len=seq_len,
                               num=Numerics(precision), **kw)


__all__ = ["MODELS", "Numerics", "build_model"]
