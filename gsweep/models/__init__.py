"""Model registry: a sweep's ``model.name`` picks one.

An entry (a :class:`Model` subclass) carries everything gsweep needs about a model: its keys and
defaults (``params``, besides the common ``name``, ``init_scale`` and ``output_scale``), its
cross-key rules (``check``), the parameter that holds its token embedding (``embedding``: the
engine records that matrix's Fourier sparsity on modular tasks; None: not recorded) and how to
build the Flax module (``module``). Memory needs are measured from the compiled program, so an
entry has no byte count. This module imports no JAX: the schema reads the entries' keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gsweep.params import Param, at_least, positive


class Model:
    """Base class of the registry's models. Subclasses set ``name``, ``params`` and implement
    :meth:`module` (static keys are passed to it; per-run keys are applied by the training step)."""

    name: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}
    embedding: ClassVar[str | None] = "embed"

    @classmethod
    def check(cls, cfg: Mapping[str, Any]) -> str | None:
        """Cross-key rules of this model's settings (cfg: the model block, defaults filled)."""
        return None

    @classmethod
    def module(cls, cfg: Mapping[str, Any], vocab_size: int, n_classes: int, seq_len: int, num):
        """The Flax module; ``cfg`` holds this model's static keys, ``num`` the matmul numerics."""
        raise NotImplementedError


# Keys every model has; the training step applies them (per run).
COMMON_MODEL: dict[str, Param] = {
    "init_scale": Param(float, 1.0, dynamic=True, check=positive,
                        doc="multiplies every initial weight (Liu et al. 2022's knob)"),
    "output_scale": Param(float, 1.0, dynamic=True, check=positive, new=True,
                          doc="alpha multiplying the logits (Kumar et al. 2024's laziness knob)"),
}

ACTIVATION = Param(str, "relu", choices=("relu", "gelu"))


class Transformer(Model):
    name = "transformer"
    params = {
        "depth": Param(int, 1, check=at_least(1), doc="number of blocks"),
        "d_model": Param(int, 128, check=at_least(1)),
        "heads": Param(int, 4, check=at_least(1)),
        "d_mlp": Param(int, 512, check=at_least(1)),
        "layernorm": Param(bool, False, doc="pre-LayerNorm in each block and before the unembedding"),
        "activation": ACTIVATION,
        "attention": Param(str, "softmax", choices=("softmax", "linear", "none"), new=True,
                           doc="causal softmax; causal linear (elu+1 features); none (no token mixing)"),
    }

    @classmethod
    def check(cls, cfg):
        d, h = cfg["d_model"], cfg["heads"]
        return f"model.heads: {h} heads do not divide model.d_model = {d}" if d % h else None

    @classmethod
    def module(cls, cfg, vocab_size, n_classes, seq_len, num):
        from gsweep.models.transformer import Transformer as T

        return T(vocab_size=vocab_size, n_classes=n_classes, seq_len=seq_len, num=num, **cfg)


class MLP(Model):
    name = "mlp"
    params = {
        "depth": Param(int, 2, check=at_least(1), doc="hidden layers"),
        "d_model": Param(int, 128, check=at_least(1), doc="embedding width per input token"),
        "d_mlp": Param(int, 512, check=at_least(1), doc="hidden width"),
        "activation": ACTIVATION,
    }

    @classmethod
    def module(cls, cfg, vocab_size, n_classes, seq_len, num):
        from gsweep.models.transformer import MLP as M

        return M(vocab_size=vocab_size, n_classes=n_classes, seq_len=seq_len, num=num, **cfg)


MODELS: dict[str, type[Model]] = {m.name: m for m in (Transformer, MLP)}


def register(model: type[Model]) -> type[Model]:
    """Add a model class to the registry (usable as a decorator)."""
    MODELS[model.name] = model
    return model


def get_model(name: str) -> type[Model]:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def model_params(name: str) -> dict[str, Param]:
    """Every key of the model block of model ``name``."""
    return {"name": Param(str, name), **get_model(name).params, **COMMON_MODEL}


def build_model(cfg: Mapping[str, Any], vocab_size: int, n_classes: int, seq_len: int, precision: str):
    """A Flax module from a run's model block (its static keys; per-run keys are the step's)."""
    from gsweep.models.numerics import Numerics

    entry = get_model(cfg["name"])
    kw = {k: v for k, v in cfg.items() if k in entry.params and not entry.params[k].dynamic}
    return entry.module(kw, vocab_size, n_classes, seq_len, Numerics(precision))


__all__ = ["COMMON_MODEL", "MODELS", "Model", "build_model", "get_model", "model_params", "register"]
