"""Gradient knobs applied between the loss gradient and the optimizer, as optax transformations
whose scalars are arrays (one compiled program serves every run's values).

- :func:`orthogonal_grad` (⊥Grad, Prieto et al. 2025): per parameter tensor w with gradient g,
  g_perp = g - (w.g / (w.w + 1e-30)) w, rescaled to |g|: g_perp * |g| / (|g_perp| + 1e-30).
  (The authors' ``OrthoGrad`` wrapper.) It removes the direction that only scales the weights up.
- :func:`grokfast_ema` (Grokfast, Lee et al. 2024): mu <- alpha mu + (1 - alpha) g (mu starts at
  the first gradient), g <- g + lamb mu.
- :func:`grokfast_ma`: g <- g + lamb * mean of the last ``window`` gradients (current included),
  applied only once ``window`` gradients are in (the authors' ``warmup=True``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


def _orth_one(g, w, eps=1e-30):
    dot = jnp.sum(w * g)
    g_perp = g - (dot / (jnp.sum(w * w) + eps)) * w
    return g_perp * (jnp.sqrt(jnp.sum(g * g)) / (jnp.sqrt(jnp.sum(g_perp * g_perp)) + eps))


def orthogonal_grad() -> optax.GradientTransformation:
    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        return jax.tree.map(_orth_one, updates, params), state

    return optax.GradientTransformation(init, update)


class EmaState(NamedTuple):
    count: jax.Array
    mu: optax.Updates


def grokfast_ema(alpha, lamb) -> optax.GradientTransformation:
    def init(params):
        return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        first = state.count == 0
        mu = jax.tree.map(lambda m, g: jnp.where(first, g, alpha * m + (1 - alpha) * g), state.mu, updates)
        return jax.tree.map(lambda g, m: g + lamb * m, updates, mu), EmaState(state.count + 1, mu)

    return optax.GradientTransformation(init, update)


class MaState(NamedTuple):
    count: jax.Array
    window: optax.Updates  # [W, ...] per leaf, a ring buffer


def grokfast_ma(window: int, lamb) -> optax.GradientTransformation:
    def init(params):
        return MaState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.zeros((window, *p.shape), p.dtype), params))

    def update(updates, state, params=None):
        buf = jax.tree.map(lambda b, g: b.at[state.count % window].set(g), state.window, updates)
        full = state.count + 1 >= window
        out = jax.tree.map(lambda g, b: jnp.where(full, g + lamb * b.mean(0), g), updates, buf)
        return out, MaState(state.count + 1, buf)

    return optax.GradientTransformation(init, update)
