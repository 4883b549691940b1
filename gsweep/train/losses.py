"""Loss registry: a sweep's ``train.loss`` picks one (static). A loss maps float logits [N, C] and
integer labels [N] to per-example losses [N]; the step weights and averages them. JAX is imported
inside the functions, so the schema can read the names without it.

- ``softmax_ce``: cross-entropy on the softmax (the default).
- ``stablemax_ce``: cross-entropy on StableMax (Prieto et al. 2025, "Grokking at the edge of
  numerical stability"): s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0, normalised over the
  classes, instead of exp. It grows linearly, not exponentially, so the loss cannot be driven to a
  floating-point zero by scaling the logits (the paper's "softmax collapse"). The paper computes it
  in float64; gsweep in float32 as log1p(sum_{j != y} s_j / s_y), which stays exact where
  log(sum s) - log(s_y) would cancel to 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gsweep.registry import Registry


def softmax_ce(logits_NxC, y_N):
    import jax.numpy as jnp
    import optax

    return optax.softmax_cross_entropy_with_integer_labels(logits_NxC.astype(jnp.float32), y_N)


def stablemax_s(x):
    """s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0); both branches finite everywhere (safe gradients)."""
    import jax.numpy as jnp

    return jnp.where(x >= 0, x + 1.0, 1.0 / (1.0 - jnp.minimum(x, 0.0)))


def stablemax_ce(logits_NxC, y_N):
    """-log(s_y / sum_j s_j) as log1p(sum_{j != y} s_j / s_y): exact in float32 at high confidence,
    where log(sum s) - log(s_y) cancels to 0 (and its gradient with it)."""
    import jax.numpy as jnp

    s_NxC = stablemax_s(logits_NxC.astype(jnp.float32))
    is_y_NxC = jnp.arange(s_NxC.shape[-1])[None, :] == y_N[:, None]
    s_y_N = jnp.sum(jnp.where(is_y_NxC, s_NxC, 0.0), -1)
    return jnp.log1p(jnp.sum(jnp.where(is_y_NxC, 0.0, s_NxC), -1) / s_y_N)


LOSSES: Registry = Registry("loss")


def register(name: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Add a loss under ``name`` (``train.loss`` accepts every registered name)."""
    return LOSSES.register(fn, name)


register("softmax_ce", softmax_ce)
register("stablemax_ce", stablemax_ce)
