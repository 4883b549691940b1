"""Decoder-only transformer (Flax linen) whose answer is read at the last position.

The standard grokking recipe (Nanda et al. 2023; gsweep/bench/torch_peer.py) is depth 1,
d_model 128, 4 heads, d_mlp 512, ReLU, no LayerNorm, every weight drawn N(0, 1/fan_in) and biases
zero. Only the last position is read, so the last block computes its query, attention output and
MLP at that position alone: the same numbers as the full causal block there, with less work.

``attention``: ``softmax`` (causal softmax attention), ``linear`` (causal linear attention: weights
phi(q).phi(k) / sum_t phi(q).phi(k_t) with phi = elu + 1, Katharopoulos et al. 2020), or ``none``
(no attention sublayer: no token mixing at all, so each position sees only its own token and
position. The answer is read at the last position, so with ``none`` the prediction is a function of
the last token alone: a control that can fit only what that token determines.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    attention: str = "softmax"

    @nn.compact
    def __call__(self, h_BxTxD, x_BxT=None, h0_TxVxD=None):
        """``h0_TxVxD`` given (first block): the block's input depends only on (position, token),
        so its projections are computed once per (position, vocabulary entry) and gathered per
        example — the same numbers as projecting every example, with B/V times less work."""
        d, H = self.d_model, self.heads
        dh = d // H

        def mlp(h):
            x = LayerNorm(name="ln_mlp")(h) if self.layernorm else h
            w_in = self.param("w_in", fan_in_normal(d), (d, self.d_mlp))
            b_in = self.param("b_in", nn.initializers.zeros, (self.d_mlp,))
            w_o = self.param("w_out", fan_in_normal(self.d_mlp), (self.d_mlp, d))
            b_o = self.param("b_out", nn.initializers.zeros, (d,))
            act = jax.nn.relu if self.activation == "relu" else jax.nn.gelu
            a = act(self.num.dense(x, w_in) + b_in)
            self.sow("intermediates", "mlp", a)
            return h + self.num.dense(a, w_o) + b_o

        if self.attention == "none":  # no mixing: the residual stream at each (kept) position
            if h0_TxVxD is not None:
                T = h0_TxVxD.shape[0]
                h = h0_TxVxD[-1][x_BxT[:, -1]][:, None] if self.last_only else \
                    h0_TxVxD[jnp.arange(T)[None, :], x_BxT]
            else:
                h = h_BxTxD[:, -1:] if self.last_only else h_BxTxD
            return mlp(h)
        w_qkv = self.param("qkv", fan_in_normal(d), (d, 3 * d))
        w_out = self.param("out", fan_in_normal(d), (d, d))
        ln = LayerNorm(name="ln_attn") if self.layernorm else (lambda z: z)
        if h0_TxVxD is not None:
            T = h0_TxVxD.shape[0]
            B = x_BxT.shape[0]
            pos_T = jnp.arange(T)
            x_TxVxD = ln(h0_TxVxD)
            kv_BxTx2D = self.num.dense(x_TxVxD, w_qkv[:, d:])[pos_T[None, :], x_BxT]
            if self.last_only:
                q = self.num.dense(x_TxVxD[-1], w_qkv[:, :d])[x_BxT[:, -1]][:, None]
                h_res = h0_TxVxD[-1][x_BxT[:, -1]][:, None]
            else:
                q = self.num.dense(x_TxVxD, w_qkv[:, :d])[pos_T[None, :], x_BxT]
                h_res = h0_TxVxD[pos_T[None, :], x_BxT]
        else:
            B, T, _ = h_BxTxD.shape
            x = ln(h_BxTxD)
            kv_BxTx2D = self.num.dense(x, w_qkv[:, d:])
            if self.last_only:
                q = self.num.dense(x[:, -1:], w_qkv[:, :d])
                h_res = h_BxTxD[:, -1:]
            else:
                q = self.num.dense(x, w_qkv[:, :d])
                h_res = h_BxTxD
        k, v = (z.reshape(B, T, H, dh) for z in jnp.split(kv_BxTx2D, 2, axis=-1))
        Q = q.shape[1]
        q = q.reshape(B, Q, H, dh)
        mask_QxT = jnp.ones((1, T), dtype=bool) if self.last_only else jnp.tril(jnp.ones((T, T), dtype=bool))
        if self.attention == "linear":
            phi = lambda z: jax.nn.elu(z) + 1.0  # noqa: E731 - positive features
            sim_BxHxQxT = jnp.where(mask_QxT, self.num.mm("bqhe,bthe->bhqt", phi(q), phi(k)), 0.0)
            att_BxHxQxT = sim_BxHxQxT / sim_BxHxQxT.sum(-1, keepdims=True)
        else:
            att_BxHxQxT = self.num.mm("bqhe,bthe->bhqt", q, k) / jnp.sqrt(jnp.float32(dh))
            att_BxHxQxT = jnp.where(mask_QxT, att_BxHxQxT, -jnp.inf)
            att_BxHxQxT = jax.nn.softmax(att_BxHxQxT, axis=-1)
        self.sow("intermediates", "attention", att_BxHxQxT)
        z = self.num.mm("bhqt,bthe->bqhe", att_BxHxQxT, v).reshape(B, -1, d)
        h = h_res + self.num.dense(z, w_out)
        return mlp(h)


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
    attention: str = "softmax"
    num: Numerics = Numerics()

    @nn.compact
    def __call__(self, x_BxT):
        d = self.d_model
        embed = self.param("embed", fan_in_normal(d), (self.vocab_size, d))
        pos = self.param("pos", fan_in_normal(d), (self.seq_len, d))
        T = x_BxT.shape[1]
        h0_TxVxD = embed[None, :, :] + pos[:T, None, :]
        # tabulate the first block when there are fewer vocabulary entries than examples
        tabular = self.vocab_size < x_BxT.shape[0]
        h = None if tabular else h0_TxVxD[jnp.arange(T)[None, :], x_BxT]
        for i in range(self.depth):
            blk = Block(d, self.heads, self.d_mlp, self.layernorm, self.activation,
                        last_only=(i == self.depth - 1), num=self.num, attention=self.attention,
                        name=f"block{i}")
            h = blk(None, x_BxT, h0_TxVxD) if (i == 0 and tabular) else blk(h)
        h_BxD = h[:, -1]
        if self.layernorm:
            h_BxD = LayerNorm(name="ln_final")(h_BxD)
        unembed = self.param("unembed", fan_in_normal(d), (d, self.n_classes))
        return self.num.dense(h_BxD, unembed)


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
            h = act(self.num.dense(h, w) + b)
        w = self.param("unembed", fan_in_normal(self.d_mlp), (self.d_mlp, self.n_classes))
        return self.num.dense(h, w)
