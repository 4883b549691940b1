"""One training step of one run against independent reimplementations: the default (AdamW,
softmax CE) bitwise equal to optax.inject_hyperparams(optax.adamw) stepped directly, as v0.1 did;
output scale, StableMax, warm-up and the gradient knobs reach the step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gsweep.models import build_model
from gsweep.schema import hyper_params
from gsweep.train.gradients import grokfast_ema, orthogonal_grad
from gsweep.train.losses import stablemax_ce
from gsweep.train.step import StepConfig, init_run, train_step

P, N = 7, 30


def _setup(**over):
    model = build_model({"name": "transformer", "depth": 1, "d_model": 8, "heads": 2, "d_mlp": 16},
                        vocab_size=P + 1, n_classes=P, seq_len=3, precision="highest")
    r = np.random.default_rng(0)
    a, b = r.integers(0, P, N), r.integers(0, P, N)
    x = jnp.asarray(np.stack([a, b, np.full(N, P)], 1), jnp.int32)
    y = jnp.asarray((a + b) % P, jnp.int32)
    h = {k: jnp.asarray(p.default if p.default is not None else 0, jnp.int32 if p.type is int else jnp.float32)
         for k, p in hyper_params("transformer").items()}
    h.update({"train.lr": jnp.float32(0.01), "train.weight_decay": jnp.float32(0.5), "train.b1": jnp.float32(0.9),
              "train.b2": jnp.float32(0.98)})
    h.update({k: jnp.asarray(v, h[k].dtype) for k, v in over.items()})
    return model, x, y, h


def _steps(model, cfg, h, x, y, n=3):
    st = init_run(model, x[:1], jax.random.PRNGKey(3), h, cfg)
    idx, w = jnp.arange(N, dtype=jnp.int32), jnp.ones(N, jnp.float32)
    f = jax.jit(lambda s, t: train_step(model, cfg, s, t, x, y, idx, w))
    for t in range(n):
        st = f(st, jnp.int32(t))
    return st


def _reference(model, h, x, y, n=3, loss=None, transform=None, scale=1.0, warmup=0):
    """v0.1's step: inject_hyperparams(adamw) with the run's numbers, stepped directly."""
    params = model.init(jax.random.fold_in(jax.random.PRNGKey(3), 0), x[:1])["params"]
    tx = optax.inject_hyperparams(optax.adamw)(learning_rate=h["train.lr"], b1=h["train.b1"], b2=h["train.b2"],
                                               eps=1e-8, weight_decay=h["train.weight_decay"])
    s = tx.init(params)
    fs = transform.init(params) if transform else None
    loss = loss or (lambda lg, y: optax.softmax_cross_entropy_with_integer_labels(lg, y))

    def one(params, s, fs, t):
        w = jnp.ones(N, jnp.float32)  # v0.1's weighted mean over the (unpadded) training set
        g = jax.grad(lambda p: jnp.sum(loss(model.apply({"params": p}, x) * scale, y) * w)
                     / jnp.maximum(jnp.sum(w), 1.0))(params)
        if transform:
            g, fs = transform.update(g, fs, params)
        if warmup:
            s.hyperparams["learning_rate"] = h["train.lr"] * jnp.minimum(1.0, (t + 1.0) / warmup)
        u, s = tx.update(g, s, params)
        return optax.apply_updates(params, u), s, fs

    one = jax.jit(one)
    for t in range(n):
        params, s, fs = one(params, s, fs, jnp.float32(t))
    return params


def _leaves_equal(a, b, exact):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if exact:
            np.testing.assert_array_equal(u, v)
        else:
            np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)


def test_default_step_is_v01_adamw():
    """Within float32 rounding of the reference (two separately compiled programs may contract
    multiply-adds differently); the engine's tables are bitwise v0.1's (compared end to end)."""
    model, x, y, h = _setup()
    st = _steps(model, StepConfig(batch_size=0, fourier_p=None), h, x, y)
    _leaves_equal(st.params, _reference(model, h, x, y), exact=False)
    ref_state = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, b1=0.9, b2=0.9, eps=1e-8,
                                                      weight_decay=0.1).init(st.params)
    assert jax.tree.structure(st.opt_state) == jax.tree.structure(ref_state)  # v0.1's checkpoint layout


@pytest.mark.parametrize("what", ["output_scale", "stablemax", "warmup", "orthogonal_grad", "grokfast_ema"])
def test_knobs_reach_the_step(what):
    cfg = StepConfig(batch_size=0, fourier_p=None)
    ref = {}
    over = {}
    if what == "output_scale":
        over, ref = {"model.output_scale": 3.0}, {"scale": 3.0}
    elif what == "stablemax":
        cfg, ref = StepConfig(batch_size=0, fourier_p=None, loss="stablemax_ce"), {"loss": stablemax_ce}
    elif what == "warmup":
        over, ref = {"train.warmup": 4}, {"warmup": 4}
    elif what == "orthogonal_grad":
        cfg, ref = StepConfig(batch_size=0, fourier_p=None, orthogonal_grad=True), {"transform": orthogonal_grad()}
    else:
        cfg = StepConfig(batch_size=0, fourier_p=None, grokfast="ema")
        over, ref = {"train.grokfast_alpha": 0.9, "train.grokfast_lamb": 3.0}, {"transform": grokfast_ema(0.9, 3.0)}
    model, x, y, h = _setup(**over)
    st = _steps(model, cfg, h, x, y)
    want = _reference(model, h, x, y, **ref)
    _leaves_equal(st.params, want, exact=False)
    plain = _reference(model, h, x, y)
    assert not all(np.allclose(a, b, rtol=1e-6, atol=1e-8)
                   for a, b in zip(jax.tree.leaves(st.params), jax.tree.leaves(plain), strict=True)), "no effect"
