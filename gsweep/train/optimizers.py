"""Optimizer registry: a sweep's ``train.optimizer`` picks one (static: each optimizer is its own group).

An entry is an optax-style factory whose keyword hyperparameters are arrays (one compiled program
serves every run's values), and the map from its arguments to per-run ``train.*`` keys. The shared
keys (``lr``, ``b1``, ``b2``, ``weight_decay``) are declared in :data:`gsweep.schema.TRAIN_SCHEMA`;
an entry declares any key of its own in ``params`` (e.g. ``momentum``), which the schema then
takes in: declared once. The argument fed from ``train.lr`` also gets the warm-up multiplier.

This module imports optax only inside the factories, so the schema (and ``gsweep validate``) stay
free of JAX.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

from gsweep.params import Param, in_unit_closed_open


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """One entry: ``factory(**{arg: run's value of key for arg, key in hyper.items()}, **fixed)``
    returns an ``optax.GradientTransformation``."""

    name: str
    factory: Callable[..., Any] | str  # or "module:attr", imported when first used (e.g. "optax:adamw")
    hyper: Mapping[str, str]  # factory argument -> train.* key (per run)
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # constants
    params: Mapping[str, Param] = dataclasses.field(default_factory=dict)  # keys this entry adds
    doc: str = ""

    def transform(self, values: Mapping[str, Any]):
        """The run's optax transformation, hyperparameters injected (they live in the state), from
        the run's per-key values ``values`` (``{"lr": ..., "b1": ...}``)."""
        import importlib

        import optax

        factory = self.factory
        if isinstance(factory, str):
            mod, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(mod), attr)
        return optax.inject_hyperparams(factory)(
            **{arg: values[key] for arg, key in self.hyper.items()}, **self.fixed)


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


def _muon(learning_rate, momentum, b1, b2, weight_decay):
    """optax.contrib.muon: Muon (Nesterov momentum ``momentum``, 5 Newton-Schulz steps) on the
    matrices of :func:`muon_dims`, AdamW (b1, b2) on the rest; decoupled decay on both."""
    from optax.contrib import muon

    return muon(learning_rate=learning_rate, beta=momentum, weight_decay=weight_decay, adam_b1=b1, adam_b2=b2,
                adam_weight_decay=weight_decay, muon_weight_dimension_numbers=muon_dims)


MOMENTUM = Param(float, 0.9, dynamic=True, check=in_unit_closed_open, new=True,
                 doc="momentum of sgd; Muon's beta")

OPTIMIZERS: dict[str, Optimizer] = {}


def register(opt: Optimizer) -> Optimizer:
    """Add an optimizer entry to the registry (before any sweep that names it is loaded)."""
    OPTIMIZERS[opt.name] = opt
    schema = sys.modules.get("gsweep.schema")
    if schema is not None and hasattr(schema, "TRAIN_SCHEMA"):  # an entry registered after the schema was built
        schema.TRAIN_SCHEMA.update({k: p for k, p in opt.params.items() if k not in schema.TRAIN_SCHEMA})
    return opt


for _o in (
    # optax.adamw itself: its injected state is v0.1's, so old checkpoints restore
    Optimizer("adamw", "optax:adamw", {"learning_rate": "lr", "b1": "b1", "b2": "b2", "weight_decay": "weight_decay"},
              {"eps": 1e-8}, doc="AdamW, decoupled decay (the default)"),
    Optimizer("adam", _adam_l2, {"learning_rate": "lr", "b1": "b1", "b2": "b2", "weight_decay": "weight_decay"},
              {"eps": 1e-8}, doc="Adam, weight_decay as L2 in the loss"),
    Optimizer("sgd", _sgd, {"learning_rate": "lr", "momentum": "momentum", "weight_decay": "weight_decay"},
              params={"momentum": MOMENTUM}, doc="SGD with momentum, weight_decay as L2"),
    Optimizer("lion", _lion, {"learning_rate": "lr", "b1": "b1", "b2": "b2", "weight_decay": "weight_decay"},
              doc="Lion (Chen et al. 2023), decoupled decay"),
    Optimizer("muon", _muon, {"learning_rate": "lr", "momentum": "momentum", "b1": "b1", "b2": "b2",
                              "weight_decay": "weight_decay"},
              params={"momentum": MOMENTUM}, doc="Muon on hidden matrices, AdamW on the rest"),
):
    register(_o)


def optimizer_params() -> dict[str, Param]:
    """The train.* keys the registered optimizers add (one Param per key; a clash is a bug)."""
    out: dict[str, Param] = {}
    for o in OPTIMIZERS.values():
        for k, p in o.params.items():
            if out.setdefault(k, p) is not p:
                raise ValueError(f"optimizers declare train.{k} twice with different Params")
    return out
