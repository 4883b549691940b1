"""The transformer's two shortcuts (the tabulated first block and last-position-only compute) give
the numbers of a plain full-sequence forward, written here independently from the parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gsweep.models import MODELS, build_model, get_model, model_params
from gsweep.schema import check_combination  # noqa: F401 - the schema imports the registry


def _ln(h, p):
    mu = h.mean(-1, keepdims=True)
    var = ((h - mu) ** 2).mean(-1, keepdims=True)
    return (h - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def plain_forward(params, x_BxT, heads, layernorm, activation, attention):
    """Every block over every position (causal), read at the last one: float64 numpy."""
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    B, T = x_BxT.shape
    h = P["embed"][x_BxT] + P["pos"][:T][None]
    act = (lambda z: np.maximum(z, 0)) if activation == "relu" else \
        (lambda z: np.asarray(jax.nn.gelu(jnp.asarray(z, jnp.float32)), np.float64))
    i = 0
    while f"block{i}" in P:
        b = P[f"block{i}"]
        if attention != "none":
            x = _ln(h, b["ln_attn"]) if layernorm else h
            d = x.shape[-1]
            dh = d // heads
            q, k, v = np.split(x @ b["qkv"], 3, axis=-1)
            q, k, v = (z.reshape(B, T, heads, dh) for z in (q, k, v))
            mask = np.tril(np.ones((T, T), bool))
            if attention == "softmax":
                s = np.einsum("bqhe,bthe->bhqt", q, k) / np.sqrt(dh)
                s = np.where(mask, s, -np.inf)
                a = np.exp(s - s.max(-1, keepdims=True))
                a = a / a.sum(-1, keepdims=True)
            else:
                phi = lambda z: np.where(z > 0, z + 1, np.exp(np.minimum(z, 0)))  # noqa: E731 - elu + 1
                s = np.where(mask, np.einsum("bqhe,bthe->bhqt", phi(q), phi(k)), 0.0)
                a = s / s.sum(-1, keepdims=True)
            h = h + np.einsum("bhqt,bthe->bqhe", a, v).reshape(B, T, d) @ b["out"]
        x = _ln(h, b["ln_mlp"]) if layernorm else h
        h = h + act(x @ b["w_in"] + b["b_in"]) @ b["w_out"] + b["b_out"]
        i += 1
    hl = h[:, -1]
    if layernorm:
        hl = _ln(hl, P["ln_final"])
    return hl @ P["unembed"]


# batch 40 > vocab 13: the first block is tabulated; the last block always computes its last position only
@pytest.mark.parametrize("attention,depth,layernorm,activation,batch", [
    ("softmax", 1, False, "relu", 3), ("softmax", 2, True, "gelu", 40), ("softmax", 1, False, "relu", 40),
    ("linear", 2, True, "gelu", 3), ("linear", 1, False, "relu", 40), ("none", 2, False, "relu", 40),
    ("none", 1, True, "gelu", 3)])
def test_transformer_paths_equal_plain_forward(attention, depth, layernorm, activation, batch):
    V, T = 13, 4
    cfg = {"name": "transformer", "depth": depth, "d_model": 16, "heads": 2, "d_mlp": 24,
           "layernorm": layernorm, "activation": activation, "attention": attention}
    model = build_model(cfg, vocab_size=V, n_classes=7, seq_len=T, precision="highest")
    x = np.random.default_rng(0).integers(0, V, size=(batch, T)).astype(np.int32)
    params = model.init(jax.random.PRNGKey(1), x[:1])["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jnp.ones_like(p) if p.ndim == 1 else p, params)  # non-zero biases
    got = np.asarray(model.apply({"params": params}, jnp.asarray(x)))
    want = plain_forward(params, x, 2, layernorm, activation, attention)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    assert (V < batch) == (batch == 40)


def test_no_attention_has_no_attention_weights_and_sees_only_the_last_token():
    model = build_model({"name": "transformer", "depth": 1, "d_model": 8, "heads": 2, "d_mlp": 8,
                         "attention": "none"}, vocab_size=5, n_classes=5, seq_len=3, precision="highest")
    x = np.array([[0, 1, 2], [4, 3, 2]], np.int32)
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    assert "qkv" not in params["block0"] and "out" not in params["block0"]
    y = np.asarray(model.apply({"params": params}, x))
    np.testing.assert_array_equal(y[0], y[1])  # same last token, different earlier tokens


def test_registry_entries_declare_keys_and_embedding():
    for name, entry in MODELS.items():
        keys = model_params(name)
        assert {"name", "init_scale", "output_scale"} <= set(keys)
        assert entry.embedding == "embed"
    assert model_params("transformer")["attention"].choices == ("softmax", "linear", "none")
    with pytest.raises(KeyError, match="valid models"):
        get_model("cnn")
