"""Each optimizer entry, stepped with a run's per-run arrays, equals optax's own call with those
numbers; the registry's keys reach the schema; an unknown name is a one-line error naming the key."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import muon

from gsweep.schema import TRAIN_SCHEMA
from gsweep.spec import SpecError, from_dict
from gsweep.train.optimizers import OPTIMIZERS, muon_dims
from tests.conftest import tiny_spec_dict

V = {"lr": 0.01, "b1": 0.8, "b2": 0.95, "weight_decay": 0.3, "momentum": 0.7, "warmup": 0, "eps": 1e-8,
     "adam_lr_ratio": 1.0}


def _params():
    r = np.random.default_rng(0)
    return {"embed": jnp.asarray(r.normal(size=(5, 4)), jnp.float32),
            "block0": {"w_in": jnp.asarray(r.normal(size=(4, 6)), jnp.float32),
                       "b_in": jnp.asarray(r.normal(size=(6,)), jnp.float32)}}


def _grads(params, k):
    return jax.tree.map(lambda p: jnp.sin(p * (k + 1.0)), params)


REFERENCE = {
    "adamw": lambda: optax.adamw(V["lr"], b1=V["b1"], b2=V["b2"], eps=1e-8, weight_decay=V["weight_decay"]),
    "adam": lambda: optax.chain(optax.add_decayed_weights(V["weight_decay"]),
                                optax.adam(V["lr"], b1=V["b1"], b2=V["b2"], eps=1e-8)),
    "sgd": lambda: optax.chain(optax.add_decayed_weights(V["weight_decay"]), optax.sgd(V["lr"], momentum=V["momentum"])),
    "lion": lambda: optax.lion(V["lr"], b1=V["b1"], b2=V["b2"], weight_decay=V["weight_decay"]),
    "muon": lambda: muon(V["lr"], beta=V["momentum"], weight_decay=V["weight_decay"], adam_b1=V["b1"], adam_b2=V["b2"],
                         adam_weight_decay=V["weight_decay"], muon_weight_dimension_numbers=muon_dims),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_entry_steps_like_optax(name):
    entry = OPTIMIZERS[name]
    values = {k: jnp.asarray(V[k], jnp.int32 if k == "warmup" else jnp.float32)
              for k in entry.reads() - set(entry.static.values())}
    static = {k: TRAIN_SCHEMA[k].default for k in entry.static.values()}
    tx, ref = entry.transform(values, static), REFERENCE[name]()
    p1 = p2 = _params()
    s1, s2 = tx.init(p1), ref.init(p2)
    for k in range(3):
        u1, s1 = jax.jit(tx.update)(_grads(p1, k), s1, p1)
        u2, s2 = jax.jit(ref.update)(_grads(p2, k), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(p1["embed"], _params()["embed"])  # it moved


def test_muon_orthogonalises_hidden_matrices_only():
    dims = muon_dims(_params())
    assert dims["embed"] is None and dims["block0"]["b_in"] is None and dims["block0"]["w_in"] is not None


def test_registry_keys_reach_the_schema_and_bad_names_fail():
    assert TRAIN_SCHEMA["momentum"].dynamic and not TRAIN_SCHEMA["optimizer"].dynamic
    for name in OPTIMIZERS:
        for key in OPTIMIZERS[name].reads() - set(OPTIMIZERS[name].static.values()):
            assert TRAIN_SCHEMA[key].dynamic, key
    with pytest.raises(SpecError, match=r"train\.optimizer.*unknown optimizer"):
        from_dict(tiny_spec_dict(train={"optimizer": "adamw2"}))
    with pytest.raises(SpecError, match=r"train\.momentum"):
        from_dict(tiny_spec_dict(train={"momentum": 1.5}))
