"""Decoder-only transformer (Flax linen) whose answer is read at the last position.

The standard grokking recipe (Nanda et al. 2023; ../shared/bench/torch_reference.py) is depth 1,
d_model 128, 4 heads, d_mlp 512, ReLU, no LayerNorm, every weight drawn N(0, 1/fan_in) and biases
zero. Only the last position is read, so the last block computes its query, attention output and
MLP at that position alone: the same numbers as the full causal block there, with less work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from gsweep.models.numerics import Numerics


def fan_in_normal(fan_in: int):
    return nn.initializers.normal(stddev=fan_in**-0.5)


class LayerNorm(nn.Module):
    @nn.compact
    def __call__(self, h):
        d = h.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        return (h - mu) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class Block(nn.Module):
    d_model: int
    heads: int
    d_mlp: int
    layernorm: bool
    activation: str
    last_only: bool
    num: Numerics

    @nn.compact
    def __call__(self, h_BxTxD):
        d, H = self.d_model, self.heads
        dh = d // H
        mm = self.num.mm
        x = LayerNorm(name="ln_attn")(h_BxTxD) if self.layernorm else h_BxTxD
        w_qkv = self.param("qkv", fan_in_normal(d), (d, 3 * d))
        w_out = self.param("out", fan_in_normal(d), (d, d))
        B, T, _ = x.shape
        kv_BxTx2D = mm("btd,de->bte", x, w_qkv[:, d:])
        k, v = (z.reshape(B, T, H, dh) for z in jnp.split(kv_BxTx2D, 2, axis=-1))
        if self.last_only:
            q = mm("btd,de->bte", x[:, -1:], w_qkv[:, :d]).reshape(B, 1, H, dh)
            mask_QxT = jnp.ones((1, T), dtype=bool)
            h_res = h_BxTxD[:, -1:]
        else:
            q = mm("btd,de->bte", x, w_qkv[:, :d]).reshape(B, T, H, dh)
            mask_QxT = jnp.tril(jnp.ones((T, T), dtype=bool))
            h_res = h_BxTxD
        att_BxHxQxT = mm("bqhe,bthe->bhqt", q, k) / jnp.sqrt(jnp.float32(dh))
        att_BxHxQxT = jnp.where(mask_QxT, att_BxHxQxT, -jnp.inf)
        att_BxHxQxT = jax.nn.softmax(att_BxHxQxT, axis=-1)
        self.sow("intermediates", "attention", att_BxHxQxT)
        z = mm("bhqt,bthe->bqhe", att_BxHxQxT, v).reshape(B, -1, d)
        h = h_res + mm("bqd,de->bqe", z, w_out)
        x = LayerNorm(name="ln_mlp")(h) if self.layernorm else h
        w_in = self.param("w_in", fan_in_normal(d), (d, self.d_mlp))
        b_in = self.param("b_in", nn.initializers.zeros, (self.d_mlp,))
        w_o = self.param("w_out", fan_in_normal(self.d_mlp), (self.d_mlp, d))
        b_o = self.param("b_out", nn.initializers.zeros, (d,))
        act = jax.nn.relu if self.activation == "relu" else jax.nn.gelu
        a = act(mm("bqd,dm->bqm", x, w_in) + b_in)
        self.sow("intermediates", "mlp", a)
        return h + mm("bqm,md->bqd", a, w_o) + b_o


class Transformer(nn.Module):
    vocab_size: int
    n_classes: int
    seq_len: int
    depth: int = 1
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    layernorm: bool = False
    activation: str = "relu"
    num: Numerics = Numerics()

    @nn.compact
    def __call__(self, x_BxT):
        d = self.d_model
        embed = self.param("embed", fan_in_normal(d), (self.vocab_size, d))
        pos = self.param("pos", fan_in_normal(d), (self.seq_len, d))
        h = embed[x_BxT] + pos[: x_BxT.shape[1]]
        for i in range(self.depth):
            h = Block(d, self.heads, self.d_mlp, self.layernorm, self.activation,
                      last_only=(i == self.depth - 1), num=self.num, name=f"block{i}")(h)
        h_BxD = h[:, -1]
        if self.layernorm:
            h_BxD = LayerNorm(name="ln_final")(h_BxD)
        unembed = self.param("unembed", fan_in_normal(d), (d, self.n_classes))
        return self.num.mm("bd,dc->bc", h_BxD, unembed)


class MLP(nn.Module):
    """An MLP on the concatenated token embeddings (one-hot inputs times an embedding matrix)."""

    vocab_size: int
    n_classes: int
    seq_len: int
    depth: int = 2
    d_model: int = 128
    d_mlp: int = 512
    activation: str = "relu"
    num: Numerics = Numerics()

    @nn.compact
    def __call__(self, x_BxT):
        embed = self.param("embed", fan_in_normal(self.d_model), (self.vocab_size, self.d_model))
        h = embed[x_BxT].reshape(x_BxT.shape[0], -1)
        act = jax.nn.relu if self.activation == "relu" else jax.nn.gelu
        for i in range(self.depth):
            fan = h.shape[-1]
            w = self.param(f"w{i}", fan_in_normal(fan), (fan, self.d_mlp))
            b = self.param(f"b{i}", nn.initializers.zeros, (self.d_mlp,))
            h = act(self.num.mm("bi,io->bo", h, w) + b)
        w = self.param("unembed", fan_in_normal(self.d_mlp), (self.d_mlp, self.n_classes))
        return self.num.mm("bi,io->bo", h, w)
