"""One run's training step and evaluation, as pure functions of a :class:`RunState`.

Everything here is written for ONE run; the engine vmaps it over the run axis R. Swept values
(learning rate, weight decay, betas, warm-up, init scale, the run's key and its data) are
arguments, never closed over, so one compiled program serves every run of a group.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class Hyper:
    """A run's dynamic training hyperparameters (scalars per run; [R] when stacked)."""

    lr: jax.Array
    weight_decay: jax.Array
    b1: jax.Array
    b2: jax.Array
    warmup: jax.Array
    init_scale: jax.Array


@flax.struct.dataclass
class RunState:
    """Everything a run carries from step to step (one run; the engine stacks R of them).

    params / opt_state: model parameters and optax AdamW state (hyperparameters injected per run).
    key: the run's PRNG key (uint32[2]); per-step keys are fold_in(key, step), never reused.
    diverged_at: first step whose loss or parameters were non-finite, -1 while sane. A diverged run
      is frozen at its last finite parameters, so it can never disturb anything.
    loss_sum, osc_sum, n_loss: train-loss accumulators since the last evaluation; prev1, prev2:
      the last two log-losses (for the oscillation energy: squared second differences).
    """

    params: Any
    opt_state: Any
    key: jax.Array
    hyper: Hyper
    diverged_at: jax.Array
    loss_sum: jax.Array
    osc_sum: jax.Array
    n_loss: jax.Array
    n_osc: jax.Array
    prev1: jax.Array
    prev2: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of a group's step function."""

    batch_size: int  # 0: full batch over the run's (padded) training indices
    fourier_p: int | None
    top_k: int = 1


def make_optimizer():
    return optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, b1=0.9, b2=0.98, eps=1e-8,
                                                 weight_decay=1.0)


def init_run(model, x_example_BxT, key, hyper: Hyper) -> RunState:
    """A run's initial state: parameters from its own key, scaled by its init_scale."""
    init_key = jax.random.fold_in(key, 0)
    params = model.init(init_key, x_example_BxT)["params"]
    params = jax.tree.map(lambda p: p * hyper.init_scale, params)
    opt = make_optimizer()
    opt_state = opt.init(params)
    hp = opt_state.hyperparams
    hp["learning_rate"] = jnp.asarray(hyper.lr, jnp.float32)
    hp["b1"] = jnp.asarray(hyper.b1, jnp.float32)
    hp["b2"] = jnp.asarray(hyper.b2, jnp.float32)
    hp["weight_decay"] = jnp.asarray(hyper.weight_decay, jnp.float32)
    z = jnp.zeros((), jnp.float32)
    zi = jnp.zeros((), jnp.int32)
    return RunState(params=params, opt_state=opt_state, key=key, hyper=hyper,
                    diverged_at=jnp.full((), -1, jnp.int32), loss_sum=z, osc_sum=z, n_loss=zi, n_osc=zi,
                    prev1=z, prev2=z)


def cross_entropy_N(logits_NxC, y_N):
    return optax.softmax_cross_entropy_with_integer_labels(logits_NxC.astype(jnp.float32), y_N)


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(model, cfg: StepConfig, state: RunState, step: jax.Array, pool_x_NxT, pool_y_N,
               train_idx_M, train_w_M) -> RunState:
    """One AdamW step of one run; ``step`` is the number of steps already taken (shared by the group)."""
    if cfg.batch_size:
        k = jax.random.fold_in(jax.random.fold_in(state.key, 1), step)
        # a fresh random subset of the run's training set every step (invalid padding sorts last)
        order_M = jnp.argsort(jax.random.uniform(k, train_w_M.shape) + 2.0 * (train_w_M <= 0))
        pick_B = order_M[: cfg.batch_size]
        idx, w = train_idx_M[pick_B], train_w_M[pick_B]
    else:
        idx, w = train_idx_M, train_w_M
    x_BxT, y_B = pool_x_NxT[idx], pool_y_N[idx]

    def loss_fn(params):
        ce_B = cross_entropy_N(model.apply({"params": params}, x_BxT), y_B)
        return jnp.sum(ce_B * w) / jnp.maximum(jnp.sum(w), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    hp = dict(state.opt_state.hyperparams)
    warm = jnp.where(state.hyper.warmup > 0,
                     jnp.minimum(1.0, (step + 1).astype(jnp.float32) / jnp.maximum(state.hyper.warmup, 1)), 1.0)
    hp["learning_rate"] = state.hyper.lr * warm
    opt_state = state.opt_state._replace(hyperparams=hp)
    updates, opt_state = make_optimizer().update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    ok = jnp.isfinite(loss) & all_finite(params) & (state.diverged_at < 0)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    diverged_at = jnp.where((state.diverged_at < 0) & ~ok, step + 1, state.diverged_at)

    logl = jnp.log(jnp.maximum(loss, 1e-30))
    second = logl - 2.0 * state.prev1 + state.prev2  # defined once two earlier losses exist
    use_osc = ok & (step >= 2)
    return RunState(
        params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state), key=state.key,
        hyper=state.hyper, diverged_at=diverged_at,
        loss_sum=state.loss_sum + jnp.where(ok, loss, 0.0), n_loss=state.n_loss + ok.astype(jnp.int32),
        osc_sum=state.osc_sum + jnp.where(use_osc, second**2, 0.0), n_osc=state.n_osc + use_osc.astype(jnp.int32),
        prev1=jnp.where(ok, logl, state.prev1), prev2=jnp.where(ok, state.prev1, state.prev2))


def fourier_basis(p: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2*pi*k*x/p for k = 1..p//2 (rows) and x = 0..p-1 (columns)."""
    k = np.arange(1, p // 2 + 1)[:, None]
    x = np.arange(p)[None, :]
    ang = 2 * np.pi * k * x / p
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def fourier_top_k(p: int) -> int:
    return max(1, round((p // 2) / 10))


def evaluate(model, cfg: StepConfig, state: RunState, pool_x_NxT, pool_y_N, masks_SxN) -> dict:
    """Per-split loss and accuracy over the whole pool, and the run-level progress measures.

    Also closes the train-loss accumulators: returns their interval mean and oscillation energy.
    """
    logits_NxC = model.apply({"params": state.params}, pool_x_NxT)
    ce_N = cross_entropy_N(logits_NxC, pool_y_N)
    correct_N = (jnp.argmax(logits_NxC, -1) == pool_y_N).astype(jnp.float32)
    m_SxN = masks_SxN.astype(jnp.float32)
    n_S = m_SxN.sum(-1)
    cnt_S = jnp.maximum(n_S, 1.0)
    hi = jax.lax.Precision.HIGHEST
    loss_S = jnp.dot(m_SxN, ce_N, precision=hi) / cnt_S
    empty_S = n_S == 0  # a split with no example for this run: NaN, not a misleading 0
    out = {
        "loss": jnp.where(empty_S, jnp.nan, loss_S),
        "acc": jnp.where(empty_S, jnp.nan, jnp.dot(m_SxN, correct_N, precision=hi) / cnt_S),
        "overflow": ~jnp.all(jnp.isfinite(loss_S)),
        "weight_norm": jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(state.params))),
        "train_loss_mean": jnp.where(state.n_loss > 0, state.loss_sum / jnp.maximum(state.n_loss, 1), jnp.nan),
        "train_loss_osc": jnp.where(state.n_osc > 0, state.osc_sum / jnp.maximum(state.n_osc, 1), jnp.nan),
    }
    if cfg.fourier_p:
        cos_KxP, sin_KxP = (jnp.asarray(a) for a in fourier_basis(cfg.fourier_p))
        emb_PxD = state.params["embed"][: cfg.fourier_p]
        emb_PxD = emb_PxD - emb_PxD.mean(0)
        power_K = (jnp.dot(cos_KxP, emb_PxD, precision=hi) ** 2 + jnp.dot(sin_KxP, emb_PxD, precision=hi) ** 2).sum(-1)
        top = jax.lax.top_k(power_K, cfg.top_k)[0].sum()
        out["fourier_sparsity"] = top / jnp.maximum(power_K.sum(), 1e-30)
    else:
        out["fourier_sparsity"] = jnp.float32(jnp.nan)
    return out


def after_eval(state: RunState, metrics: dict, step) -> RunState:
    """Close the train-loss interval; an evaluation with a non-finite loss marks the run diverged
    at this step (its parameters overflowed without turning NaN yet)."""
    z = jnp.zeros_like(state.loss_sum)
    zi = jnp.zeros_like(state.n_loss)
    bad = metrics["overflow"] & (state.diverged_at < 0)
    return state.replace(loss_sum=z, osc_sum=z, n_loss=zi, n_osc=zi,
                         diverged_at=jnp.where(bad, (step + 1).astype(state.diverged_at.dtype), state.diverged_at))
