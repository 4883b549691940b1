"""Optimizer registry: a sweep's ``train.optimizer`` picks one (static: each optimizer is its own group).

An entry is an optax-style factory whose keyword hyperparameters are arrays (one compiled program
serves every run's values), the map from its arguments to per-run ``train.*`` keys (``hyper``), the
static ``train.*`` keys it reads (``static``), and its own learning-rate schedules (``schedules``:
optax schedules of the step count built from per-run keys; the shipped entries warm up linearly over
``train.warmup``). The shared keys (``lr``, ``b1``, ``b2``, ``weight_decay``, ``warmup``) are
declared in :data:`gsweep.schema.TRAIN_SCHEMA`; an entry declares any key of its own in ``params``
(e.g. ``momentum``). :func:`register` refuses a key that clashes with another entry's or the
schema's, and a declared key that the entry does not read.

This module imports optax only inside the factories, so the schema (and ``gsweep validate``) stay
free of JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from gsweep.params import Param, in_unit_closed_open, positive
from gsweep.registry import TRAIN_KEYS, Registry


def linear_warmup(lr, warmup):
    """The optax schedule ``count -> lr * min(1, (count + 1) / warmup)`` (``lr`` itself when warmup
    is 0): the step ``count`` (0-based) uses the fraction (count + 1) / warmup."""
    import jax.numpy as jnp

    def schedule(count):
        ramp = jnp.minimum(1.0, (count + 1).astype(jnp.float32) / jnp.maximum(warmup, 1))
        return lr * jnp.where(warmup > 0, ramp, 1.0)

    return schedule


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The schedule of one factory argument: ``make(*the run's values of keys)`` returns an optax
    schedule (step count -> value), evaluated at every update from the optimizer state's count."""

    arg: str
    keys: tuple[str, ...]
    make: Callable[..., Callable[[Any], Any]]


WARMUP = Schedule("learning_rate", ("lr", "warmup"), linear_warmup)


def scheduled(tx, schedules: Mapping[str, Callable[[Any], Any]]):
    """``tx`` (an ``optax.inject_hyperparams`` transformation) with the hyperparameters named in
    ``schedules`` set from their schedule at the state's step count, at init and at every update
    (exactly what inject_hyperparams does for schedules, without a schedule state of its own: the
    state keeps v0.1's structure, so old checkpoints restore)."""
    import optax

    if not schedules:
        return tx

    def at(state):
        return state._replace(hyperparams={**state.hyperparams,
                                           **{a: f(state.count) for a, f in schedules.items()}})

    return optax.GradientTransformationExtraArgs(
        lambda params: at(tx.init(params)),
        lambda updates, state, params=None, **extra: tx.update(updates, at(state), params, **extra))


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One entry: ``factory(**{arg: run's value of key for arg, key in hyper.items()}, **scheduled
    args, **static args, **fixed)`` returns an ``optax.GradientTransformation``."""

    name: str
    factory: Callable[..., Any] | str  # or "module:attr", imported when first used (e.g. "optax:adamw")
    hyper: Mapping[str, str]  # factory argument -> train.* key (per run)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # constants
    params: Mapping[str, Param] = dataclasses.field(default_factory=dict)  # keys this entry adds
    doc: str = ""
    schedules: tuple[Schedule, ...] = (WARMUP,)  # scheduled factory arguments
    static: Mapping[str, str] = dataclasses.field(default_factory=dict)  # factory argument -> static train.* key

    def reads(self) -> set[str]:
        """The train.* keys this entry reads."""
        return {*self.hyper.values(), *(k for s in self.schedules for k in s.keys), *self.static.values()}

    def transform(self, values: Mapping[str, Any], static: Mapping[str, Any] = ()):
        """The run's optax transformation, hyperparameters injected (they live in the state), from
        the run's per-run values ``values`` (``{"lr": ..., "b1": ...}``) and the group's static
        ``static`` values of :attr:`static`'s keys."""
        import importlib

        import jax.numpy as jnp
        import optax

        factory = self.factory
        if isinstance(factory, str):
            mod, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(mod), attr)
        sched = {s.arg: s.make(*(values[k] for k in s.keys)) for s in self.schedules}
        static = dict(static)
        tx = optax.inject_hyperparams(factory)(
            **{arg: values[key] for arg, key in self.hyper.items()}, **{a: f(jnp.zeros((), jnp.int32)) for a, f in sched.items()},
            **{arg: static[key] for arg, key in self.static.items()}, **self.fixed)
        return scheduled(tx, sched)


def _adam_l2(learning_rate, b1, b2, eps, weight_decay):
    """Adam with L2 in the loss: the gradient of weight_decay/2 * |w|^2 is added before the moments."""
    import optax

    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.adam(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps))


def _sgd(learning_rate, momentum, weight_decay):
    """Heavy-ball SGD with L2 (PyTorch's SGD(weight_decay=...))."""
    import optax

    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate=learning_rate, momentum=momentum))


def _lion(learning_rate, b1, b2, weight_decay):
    import optax

    return optax.lion(learning_rate=learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)


def muon_dims(params):
    """Which leaves Muon orthogonalises: 2-D weights inside blocks/hidden layers; the token and
    position embeddings and the unembedding (and every vector) go to AdamW, as Jordan et al. do."""
    import jax
    from optax.contrib import MuonDimensionNumbers

    def one(path, x):
        name = str(getattr(path[-1], "key", path[-1]))
        if x.ndim != 2 or (len(path) == 1 and name in ("embed", "pos", "unembed")):
            return None
        return MuonDimensionNumbers(reduction_axis=0, output_axis=1)

    return jax.tree_util.tree_map_with_path(one, params)


def _muon(learning_rate, adam_learning_rate, momentum, b1, b2, weight_decay, eps, nesterov):
    """optax.contrib.muon: Muon (momentum ``momentum``, 5 Newton-Schulz steps) on the matrices of
    :func:`muon_dims`, AdamW (b1, b2, its own learning rate) on the rest; decoupled decay on both.
    optax passes ``nesterov`` to both parts (with it, the Adam part is NAdamW: Nesterov AdamW) and
    ``eps`` to both (the Newton-Schulz normaliser and Adam's epsilon)."""
    from optax.contrib import muon

    return muon(learning_rate=learning_rate, beta=momentum, eps=eps, weight_decay=weight_decay, nesterov=nesterov,
                adam_b1=b1, adam_b2=b2, adam_weight_decay=weight_decay, adam_learning_rate=adam_learning_rate,
                muon_weight_dimension_numbers=muon_dims)


def _adam_part_warmup(lr, ratio, warmup):
    """Muon's Adam part: train.lr x train.adam_lr_ratio, warmed up like the Muon part."""
    return linear_warmup(lr * ratio, warmup)


MOMENTUM = Param(float, 0.9, dynamic=True, check=in_unit_closed_open, new=True,
                 doc="momentum of sgd; Muon's beta")
EPS = Param(float, 1e-8, dynamic=True, check=positive, new=True,
            doc="epsilon of adamw and adam; of muon's Adam part and its Newton-Schulz normaliser (one eps in optax)")
MUON = {
    "momentum": MOMENTUM, "eps": EPS,
    "adam_lr_ratio": Param(float, 1.0, dynamic=True, check=positive, new=True,
                           doc="muon: the Adam part's learning rate is train.lr times this"),
    "muon_nesterov": Param(bool, True, new=True,
                           doc="muon: Nesterov momentum; optax.contrib.muon passes it to its Adam part too "
                               "(true: NAdamW, Nesterov AdamW; false: AdamW)"),
}



def _validate(name: str, opt: Optimizer) -> None:
    """An entry reads every key it declares, and declares none that clashes with the schema's or
    another entry's."""
    unread = sorted(set(opt.params) - opt.reads())
    if unread:
        raise ValueError(f"optimizer {name}: declares train.{unread[0]} but reads it nowhere "
                         "(map it in hyper, a schedule's keys or static)")
    msg = TRAIN_KEYS.clash(f"optimizer {name}", opt.params)
    if msg:
        raise ValueError(msg)


OPTIMIZERS: Registry = Registry("optimizer", _validate)


def register(opt: Optimizer) -> Optimizer:
    """Add an optimizer entry to the registry (before any sweep that names it is loaded); its keys
    join the train.* keys at once."""
    OPTIMIZERS.register(opt)
    TRAIN_KEYS.declare(f"optimizer {opt.name}", opt.params)
    return opt


for _o in (
    # optax.adamw itself: its injected state is v0.1's, so old checkpoints restore
    Optimizer("adamw", "optax:adamw", {"b1": "b1", "b2": "b2", "eps": "eps", "weight_decay": "weight_decay"},
              params={"eps": EPS}, doc="AdamW, decoupled decay (the default)"),
    Optimizer("adam", _adam_l2, {"b1": "b1", "b2": "b2", "eps": "eps", "weight_decay": "weight_decay"},
              params={"eps": EPS}, doc="Adam, weight_decay as L2 in the loss"),
    Optimizer("sgd", _sgd, {"momentum": "momentum", "weight_decay": "weight_decay"},
              params={"momentum": MOMENTUM}, doc="SGD with momentum, weight_decay as L2"),
    Optimizer("lion", _lion, {"b1": "b1", "b2": "b2", "weight_decay": "weight_decay"},
              doc="Lion (Chen et al. 2023), decoupled decay"),
    Optimizer("muon", _muon, {"momentum": "momentum", "b1": "b1", "b2": "b2", "eps": "eps",
                              "weight_decay": "weight_decay"},
              schedules=(WARMUP, Schedule("adam_learning_rate", ("lr", "adam_lr_ratio", "warmup"), _adam_part_warmup)),
              static={"nesterov": "muon_nesterov"}, params=MUON,
              doc="Muon on hidden matrices, (N)AdamW with its own learning rate on the rest"),
):
    register(_o)
