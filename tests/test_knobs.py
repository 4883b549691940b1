"""Each knob's formula on a toy tensor, against a plain reimplementation of the paper's code;
every new key validated; new keys at their default leave run ids and group ids as v0.1 wrote them."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsweep.spec import SpecError, from_dict, load_spec
from gsweep.train.gradients import grokfast_ema, grokfast_ma, orthogonal_grad
from gsweep.train.losses import softmax_ce, stablemax_ce
from tests.conftest import tiny_spec_dict

ROOT = Path(__file__).resolve().parents[1]
G = np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.2]], np.float32)
W = np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 1.5]], np.float32)


def test_stablemax_ce_formula():
    logits = np.array([[2.0, -1.0, 0.0, -3.0], [-0.5, 0.5, 4.0, 1.0]], np.float32)
    y = np.array([0, 3])
    s = np.where(logits >= 0, logits + 1.0, 1.0 / (1.0 - np.minimum(logits, 0.0)))
    want = -np.log(s[np.arange(2), y] / s.sum(-1))
    np.testing.assert_allclose(stablemax_ce(jnp.asarray(logits), jnp.asarray(y)), want, rtol=1e-6)
    # finite gradients at the branch point and far out (safe where)
    g = jax.grad(lambda z: stablemax_ce(z, jnp.asarray(y)).sum())(jnp.asarray(logits).at[0, 1].set(0.0) * 1e3)
    assert np.isfinite(np.asarray(g)).all()
    want_sm = -np.log(np.exp(logits[np.arange(2), y]) / np.exp(logits).sum(-1))
    np.testing.assert_allclose(softmax_ce(jnp.asarray(logits), jnp.asarray(y)), want_sm, rtol=1e-5)


def test_orthogonal_grad_formula():
    """⊥Grad per tensor: g - (w.g / w.w) w, rescaled to |g| (the authors' OrthoGrad)."""
    tx = orthogonal_grad()
    out, _ = tx.update({"a": jnp.asarray(G)}, tx.init({"a": W}), {"a": jnp.asarray(W)})
    w, g = W.ravel().astype(np.float64), G.ravel().astype(np.float64)
    perp = g - (w @ g) / (w @ w) * w
    want = (perp * np.linalg.norm(g) / np.linalg.norm(perp)).reshape(G.shape)
    np.testing.assert_allclose(out["a"], want, rtol=1e-5, atol=1e-6)
    assert abs(float(jnp.sum(out["a"] * W))) < 1e-5


def _torch_style_ema(gs, alpha, lamb):
    """ironjr/grokfast gradfilter_ema: the EMA starts at the first gradient."""
    ema, out = None, []
    for g in gs:
        ema = g.copy() if ema is None else ema
        ema = ema * alpha + g * (1 - alpha)
        out.append(g + ema * lamb)
    return out


def _torch_style_ma(gs, window, lamb):
    """gradfilter_ma(filter_type='mean', warmup=True): filtered once the window is full."""
    q, out = [], []
    for g in gs:
        q = (q + [g])[-window:]
        out.append(g + lamb * sum(q) / len(q) if len(q) == window else g)
    return out


@pytest.mark.parametrize("kind", ["ema", "ma"])
def test_grokfast_formula(kind):
    gs = [G * (k + 1) - k for k in range(6)]
    if kind == "ema":
        tx, want = grokfast_ema(jnp.float32(0.8), jnp.float32(2.0)), _torch_style_ema(gs, 0.8, 2.0)
    else:
        tx, want = grokfast_ma(3, jnp.float32(5.0)), _torch_style_ma(gs, 3, 5.0)
    st = tx.init(jnp.asarray(W))
    for g, w in zip(gs, want, strict=True):
        out, st = tx.update(jnp.asarray(g), st, jnp.asarray(W))
        np.testing.assert_allclose(out, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("key,value", [
    ("train.optimizer", "adamw2"), ("train.loss", "mse"), ("train.orthogonal_grad", "yes"),
    ("train.grokfast", "fast"), ("train.grokfast_alpha", 1.0), ("train.grokfast_lamb", -1.0),
    ("train.grokfast_window", 0), ("train.momentum", -0.1), ("model.output_scale", 0.0),
    ("model.attention", "flash")])
def test_new_keys_validated(key, value):
    block, leaf = key.split(".")
    with pytest.raises(SpecError, match=key.replace(".", r"\.")):
        from_dict(tiny_spec_dict(**{block: {leaf: value}}))


# run ids and group id of sweeps/ci-tiny.yaml as v0.1 (before these keys existed) wrote them:
# existing results dirs must keep resuming.
CI_TINY_V01_RUN_IDS = {"04226f01516f", "1fe59ecd4b7b", "303347f256de", "554d0ac9165a",
                       "790a238807ad", "868f9b11e332", "8e59cd53d322", "aaba967baf46"}
CI_TINY_V01_GROUP_ID = "g5b43a340"


def test_new_keys_at_default_keep_v01_ids():
    runs = load_spec(ROOT / "sweeps/ci-tiny.yaml").runs()
    assert {r.run_id for r in runs} == CI_TINY_V01_RUN_IDS
    assert {r.group_id for r in runs} == {CI_TINY_V01_GROUP_ID}
    explicit = load_spec(ROOT / "sweeps/ci-tiny.yaml", ["train.optimizer=adamw", "model.output_scale=1.0",
                                                        "train.grokfast=none", "model.attention=softmax"]).runs()
    assert {r.run_id for r in explicit} == CI_TINY_V01_RUN_IDS
    other = load_spec(ROOT / "sweeps/ci-tiny.yaml", ["train.optimizer=sgd"]).runs()
    assert not {r.run_id for r in other} & CI_TINY_V01_RUN_IDS
    assert {r.group_id for r in other} != {CI_TINY_V01_GROUP_ID}
    scaled = load_spec(ROOT / "sweeps/ci-tiny.yaml", ["model.output_scale=2.0"]).runs()
    assert {r.group_id for r in scaled} == {CI_TINY_V01_GROUP_ID}  # per run: same program
    assert not {r.run_id for r in scaled} & CI_TINY_V01_RUN_IDS


def test_readme_key_table_follows_the_schema():
    from gsweep.schema import key_table

    assert key_table() in (ROOT / "README.md").read_text(), "README's key table: paste gsweep.schema.key_table()"


def test_readme_extending_example_runs(tmp_path):
    """The README's 'Extending gsweep' code, run as written (fresh process: registries are global)."""
    import re
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    section = text.split("## Extending gsweep", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    # the model's per-run key reaches its apply (two temperatures, two curves); the optimizer's own
    # schedule and per-run keys are recorded
    check = """
import pandas as pd
runs = result.runs
assert (runs['status'] == 'done').all() and len(runs) == 4
curves = pd.read_parquet(result.out / 'curves.parquet')
tr = curves[curves['split'] == 'train'].merge(runs[['run_id', 'model.temp', 'train.rms_decay']], on='run_id')
one = tr[tr['train.rms_decay'] == 0.9].set_index(['model.temp', 'step'])['loss']
assert not np.allclose(one.loc[1.0].to_numpy(), one.loc[100.0].to_numpy()), 'model.temp did not reach the model'
assert (runs['train.lr_half_life'] == 20.0).all()
"""
    code = "import numpy as np\n" + "\n".join(blocks) + check
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rms_decay" in p.stdout and "model.temp" in p.stdout
