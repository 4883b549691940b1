"""Model registry: a sweep's ``model.name`` picks one.

An entry (a :class:`Model` subclass) carries everything gsweep needs about a model: its keys and
defaults (``params``, besides the common ``name``, ``init_scale`` and ``output_scale``), its
cross-key rules (``check``), the parameter that holds its token embedding (``embedding``: the
engine records that matrix's Fourier sparsity on modular tasks; None: not recorded), how to build
the Flax module (``module``: static keys are its fields; per-run keys are keyword arguments of its
``__call__``) and its parameter count (``param_count``: by default from ``jax.eval_shape`` of its
init; the sweep's size guard and the shard balance read it). Memory needs are measured from the
compiled program. This module imports no JAX: the schema reads the entries' keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from gsweep.params import Param, at_least, positive
from gsweep.registry import Registry


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
        """The Flax module; ``cfg`` holds this model's static keys, ``num`` the matmul numerics. The
        model's per-run keys are keyword arguments of the module's ``__call__`` (the step passes
        them by name, as arrays)."""
        raise NotImplementedError

    @classmethod
    def param_count(cls, cfg: Mapping[str, Any], vocab_size: int, n_classes: int, seq_len: int) -> int:
        """Parameters of one run (``cfg``: the model block, defaults filled): by default counted on
        ``jax.eval_shape`` of the module's init (nothing is allocated)."""
        import jax
        import jax.numpy as jnp
        import numpy as np

        from gsweep.models.numerics import Numerics

        mod = cls.module(static_keys(cls, cfg), vocab_size, n_classes, seq_len, Numerics("highest"))
        kw = {k: jnp.asarray(cfg.get(k, p.default)) for k, p in cls.params.items() if p.dynamic}
        shapes = jax.eval_shape(lambda: mod.init(jax.random.PRNGKey(0), jnp.zeros((1, seq_len), jnp.int32), **kw))
        return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))


# Keys every model has; the training step applies them.
COMMON_MODEL: dict[str, Param] = {
    "init_scale": Param(float, 1.0, dynamic=True, check=positive,
                        doc="multiplies every initial weight (the knob of Omnigrok, Liu, Michaud & Tegmark 2022)"),
    "output_scale": Param(float, 1.0, dynamic=True, check=positive, new=True,
                          doc="alpha multiplying the logits (Kumar et al. 2024's laziness knob)"),
    "center_output": Param(bool, False, new=True,
                           doc="logits = output_scale * (f(x) - f0(x)), f0 the network at initialisation "
                               "(0 at init; keeps a copy of the initial parameters)"),
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
    def param_count(cls, cfg, vocab_size, n_classes, seq_len):
        d, h, ln = cfg["d_model"], cfg["d_mlp"], 2 * cfg["d_model"] * bool(cfg["layernorm"])
        attn = 0 if cfg["attention"] == "none" else 4 * d * d + ln
        block = attn + 2 * d * h + h + d + ln
        return (vocab_size + seq_len) * d + cfg["depth"] * block + ln + d * n_classes

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
    def param_count(cls, cfg, vocab_size, n_classes, seq_len):
        d, h = cfg["d_model"], cfg["d_mlp"]
        return vocab_size * d + (seq_len * d + 1) * h + (cfg["depth"] - 1) * (h + 1) * h + h * n_classes

    @classmethod
    def module(cls, cfg, vocab_size, n_classes, seq_len, num):
        from gsweep.models.transformer import MLP as M

        return M(vocab_size=vocab_size, n_classes=n_classes, seq_len=seq_len, num=num, **cfg)


def static_keys(entry: type[Model], cfg: Mapping[str, Any]) -> dict:
    """The entry's static keys of a model block (what its module is built from)."""
    return {k: cfg.get(k, p.default) for k, p in entry.params.items() if not p.dynamic}


def _validate(name: str, entry: type[Model]) -> None:
    """An entry declares no common key, and its module reads each per-run key it declares (a
    keyword argument of the module's ``__call__``)."""
    import inspect

    clash = sorted(set(entry.params) & ({"name"} | set(COMMON_MODEL)))
    if clash:
        raise ValueError(f"model {name}: model.{clash[0]} is a key every model has; pick another name")
    dynamic = [k for k, p in entry.params.items() if p.dynamic]
    if not dynamic:
        return
    from gsweep.models.numerics import Numerics

    defaults = {k: p.default for k, p in entry.params.items()}
    mod = entry.module(static_keys(entry, defaults), 2, 2, 2, Numerics("highest"))
    sig = inspect.signature(type(mod).__call__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        unread = [k for k in dynamic if k not in sig]
        if unread:
            raise ValueError(f"model {name}: declares the per-run key model.{unread[0]} but its module's "
                             "__call__ has no argument of that name: nothing would read it")


MODELS: Registry = Registry("model", _validate)


def register(model: type[Model]) -> type[Model]:
    """Add a model class to the registry (usable as a decorator); refuses a common key and a
    per-run key the module does not read."""
    return MODELS.register(model)


for _m in (Transformer, MLP):
    register(_m)

get_model = MODELS.lookup


def model_params(name: str) -> dict[str, Param]:
    """Every key of the model block of model ``name``."""
    return {"name": Param(str, name), **get_model(name).params, **COMMON_MODEL}


def build_model(cfg: Mapping[str, Any], vocab_size: int, n_classes: int, seq_len: int, precision: str):
    """A Flax module from a run's model block (its static keys; per-run keys are the step's)."""
    from gsweep.models.numerics import Numerics

    entry = get_model(cfg["name"])
    return entry.module(static_keys(entry, cfg), vocab_size, n_classes, seq_len, Numerics(precision))


__all__ = ["COMMON_MODEL", "MODELS", "Model", "build_model", "get_model", "model_params", "register", "static_keys"]
