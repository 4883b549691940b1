"""The knobs the references need (issue 27): each reaches what it claims to, and fails without it.
StableMax exact at extreme logits; Adam's eps in the update; Muon's two learning rates in their
parameter groups; the centred output 0 at init; lr / alpha^2; modular pairs with y = 0 dropped."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax.contrib import muon

from gsweep.spec import from_dict, load_spec
from gsweep.tasks import TASKS
from gsweep.train.losses import stablemax_ce
from gsweep.train.optimizers import muon_dims
from gsweep.train.step import StepConfig, init_run, logits_of
from tests.conftest import tiny_spec_dict
from tests.test_knobs import CI_TINY_V01_GROUP_ID, CI_TINY_V01_RUN_IDS, ROOT
from tests.test_step import _setup, _steps


def _stablemax_ce64(z, y):
    s = np.where(z >= 0, z + 1.0, 1.0 / (1.0 - np.minimum(z, 0.0)))
    return np.log(s.sum(-1)) - np.log(s[np.arange(len(y)), y])


def _stablemax_grad64(z, y):
    """d/dz of log(sum_j s_j) - log(s_y), in float64."""
    s = np.where(z >= 0, z + 1.0, 1.0 / (1.0 - np.minimum(z, 0.0)))
    ds = np.where(z >= 0, 1.0, 1.0 / (1.0 - np.minimum(z, 0.0)) ** 2)
    g = ds / s.sum(-1, keepdims=True)
    g[np.arange(len(y)), y] -= ds[np.arange(len(y)), y] / s[np.arange(len(y)), y]
    return g


def test_stablemax_exact_in_float32_at_extreme_logits():
    """Correct logit 1e4, the others -1e4: log(sum s) - log(s_y) cancels to 0 in float32 (and its
    gradient with it); the log1p form keeps float64's value."""
    C = 31
    z = np.full((2, C), -1e4)
    z[0, 0] = 1e4
    z[1, 5] = 3e3
    y = np.array([0, 5])
    want = _stablemax_ce64(z, y)
    got = np.asarray(stablemax_ce(jnp.asarray(z, jnp.float32), jnp.asarray(y)))
    assert (got > 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    g = np.asarray(jax.grad(lambda a: stablemax_ce(a, jnp.asarray(y)).sum())(jnp.asarray(z, jnp.float32)))
    g64 = _stablemax_grad64(z, y)
    assert (g[np.arange(2), y] < 0).all()
    np.testing.assert_allclose(g, g64, rtol=1e-4, atol=0)


@pytest.mark.parametrize("name", ["adamw", "adam", "muon"])
def test_eps_reaches_the_update(name):
    """train.eps is the optimizer's epsilon: the step equals optax's with that eps, and a large eps
    changes the update."""
    model, x, y, h = _setup(**{"train.eps": 1e-3})
    cfg = StepConfig(batch_size=0, fourier_p=None, optimizer=name,
                     optimizer_static=(("muon_nesterov", True),) if name == "muon" else ())
    big = _steps(model, cfg, h, x, y, n=2)
    small = _steps(model, cfg, {**h, "train.eps": jnp.float32(1e-8)}, x, y, n=2)
    diff = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(small.params),
                                                           strict=True)]
    assert max(diff) > 1e-4
    # the reference: optax with eps = 1e-3
    lr, b1, b2, wd = (float(h[f"train.{k}"]) for k in ("lr", "b1", "b2", "weight_decay"))
    ref = {"adamw": lambda: optax.adamw(lr, b1=b1, b2=b2, eps=1e-3, weight_decay=wd),
           "adam": lambda: optax.chain(optax.add_decayed_weights(wd), optax.adam(lr, b1=b1, b2=b2, eps=1e-3)),
           "muon": lambda: muon(lr, beta=float(h["train.momentum"]), eps=1e-3, weight_decay=wd, adam_b1=b1,
                                adam_b2=b2, adam_weight_decay=wd, muon_weight_dimension_numbers=muon_dims)}[name]()
    st = init_run(model, x[:1], jax.random.PRNGKey(3), h, cfg)
    _assert_matches_reference(big.params, ref, model, st.params, x, y)


def _assert_matches_reference(got_params, ref, model, params0, x, y, n=2):
    """``got_params`` equal ``n`` full-batch steps of the optax transformation ``ref`` from ``params0``."""
    p, s = params0, ref.init(params0)
    for _ in range(n):
        g = jax.grad(lambda q: optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": q}, x), y).mean())(p)
        u, s = ref.update(g, s, p)
        p = optax.apply_updates(p, u)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_muon_two_learning_rates_reach_their_groups():
    """train.lr drives the Muon part (hidden matrices), train.lr x train.adam_lr_ratio the Adam part
    (embeddings, unembedding, vectors): equal to optax.contrib.muon with both learning rates."""
    model, x, y, h = _setup(**{"train.lr": 0.02, "train.adam_lr_ratio": 0.1})
    cfg = StepConfig(batch_size=0, fourier_p=None, optimizer="muon", optimizer_static=(("muon_nesterov", True),))
    two = _steps(model, cfg, h, x, y, n=2)
    one = _steps(model, cfg, {**h, "train.adam_lr_ratio": jnp.float32(1.0)}, x, y, n=2)
    st0 = init_run(model, x[:1], jax.random.PRNGKey(3), h, cfg)
    dims = muon_dims(st0.params)

    def moved(a, b, p0):
        return float(jnp.max(jnp.abs(a - p0))), float(jnp.max(jnp.abs(b - p0)))

    adam_part = jax.tree.leaves(jax.tree.map(lambda d: d is None, dims,
                                             is_leaf=lambda d: d is None or type(d).__name__ == "MuonDimensionNumbers"))
    assert any(adam_part) and not all(adam_part)
    for is_adam, a, b, p0 in zip(adam_part, jax.tree.leaves(two.params), jax.tree.leaves(one.params),
                           jax.tree.leaves(st0.params), strict=True):
        ma, mb = moved(a, b, p0)
        if is_adam:  # Adam part: a tenth of the learning rate moves it less
            if mb > 0:
                assert ma < 0.5 * mb
        else:  # Muon part: the first step is the same (its lr did not change)
            assert ma > 0
    lr, b1, b2, wd = (float(h[f"train.{k}"]) for k in ("lr", "b1", "b2", "weight_decay"))
    ref = muon(lr, beta=float(h["train.momentum"]), weight_decay=wd, adam_b1=b1, adam_b2=b2, adam_weight_decay=wd,
               adam_learning_rate=lr * 0.1, muon_weight_dimension_numbers=muon_dims)
    _assert_matches_reference(two.params, ref, model, st0.params, x, y)
    # muon_nesterov: false changes the update
    plain = _steps(model, StepConfig(batch_size=0, fourier_p=None, optimizer="muon",
                                     optimizer_static=(("muon_nesterov", False),)), h, x, y, n=2)
    assert not np.allclose(plain.params["unembed"], two.params["unembed"])


def test_centred_output_is_zero_at_init_and_trains():
    model, x, y, h = _setup(**{"model.output_scale": 4.0})
    cfg = StepConfig(batch_size=0, fourier_p=None, center_output=True)
    st = init_run(model, x[:1], jax.random.PRNGKey(3), h, cfg)
    assert float(jnp.max(jnp.abs(logits_of(model, st.params, st.hyper, x, st.params0)))) == 0.0
    plain = init_run(model, x[:1], jax.random.PRNGKey(3), h, StepConfig(batch_size=0, fourier_p=None))
    assert plain.params0 == ()
    assert float(jnp.max(jnp.abs(logits_of(model, plain.params, plain.hyper, x)))) > 0
    after = _steps(model, cfg, h, x, y, n=3)
    out = logits_of(model, after.params, after.hyper, x, after.params0)
    f, f0 = (model.apply({"params": q}, x) for q in (after.params, after.params0))
    np.testing.assert_allclose(out, 4.0 * (f - f0), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(out))) > 0
    for a, b in zip(jax.tree.leaves(after.params0), jax.tree.leaves(st.params), strict=True):
        np.testing.assert_array_equal(a, b)  # f0 stays the network at initialisation


def test_alpha_lr_scaling_divides_the_lr_by_alpha_squared():
    model, x, y, h = _setup(**{"model.output_scale": 2.0, "train.lr": 0.04})
    scaled = _steps(model, StepConfig(batch_size=0, fourier_p=None, optimizer="sgd", alpha_lr_scaling=True), h, x, y, 1)
    plain = _steps(model, StepConfig(batch_size=0, fourier_p=None, optimizer="sgd"),
                   {**h, "train.lr": jnp.float32(0.01)}, x, y, 1)
    for a, b in zip(jax.tree.leaves(scaled.params), jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert float(scaled.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.01)


def test_nonzero_y_excludes_y_zero():
    for op in ("mul", "add", "add|mul"):
        cfg = {"p": 7, "op": op, "nonzero_y": True}
        d, d_all = TASKS["modular"].build(cfg), TASKS["modular"].build({**cfg, "nonzero_y": False})
        y_col = 2 if "|" in op else 1
        assert (d.x_NxT[:, y_col] != 0).all() and (d_all.x_NxT[:, y_col] == 0).any()
        assert d.n == d_all.n - 7 * len(op.split("|"))


def test_new_reference_keys_at_default_keep_ids():
    over = ["train.eps=1e-8", "train.alpha_lr_scaling=false", "model.center_output=false", "task.nonzero_y=false"]
    runs = load_spec(ROOT / "sweeps/ci-tiny.yaml", over).runs()
    assert {r.run_id for r in runs} == CI_TINY_V01_RUN_IDS and {r.group_id for r in runs} == {CI_TINY_V01_GROUP_ID}
    muon_runs = from_dict(tiny_spec_dict(train={"optimizer": "muon"})).runs()
    explicit = from_dict(tiny_spec_dict(train={"optimizer": "muon", "adam_lr_ratio": 1.0, "muon_nesterov": True})).runs()
    assert [r.run_id for r in muon_runs] == [r.run_id for r in explicit]
    other = from_dict(tiny_spec_dict(train={"optimizer": "muon", "adam_lr_ratio": [0.1, 1.0]})).runs()
    assert len({r.group_id for r in other}) == 1 and len({r.run_id for r in other}) == 2  # per run


@pytest.mark.parametrize("key,value", [("train.eps", 0.0), ("train.adam_lr_ratio", -1.0),
                                       ("train.muon_nesterov", "yes"), ("model.center_output", 3),
                                       ("train.alpha_lr_scaling", "on"), ("task.nonzero_y", 2)])
def test_reference_keys_validated(key, value):
    from gsweep.spec import SpecError

    block, leaf = key.split(".")
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        from_dict(tiny_spec_dict(**{block: {leaf: value}}))
