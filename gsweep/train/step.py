"""One run's training step and evaluation, as pure functions of a :class:`RunState`.

Everything here is written for ONE run; the engine vmaps it over the run axis R. Swept values
(every dynamic key: learning rate, weight decay, betas, warm-up, init and output scale, Grokfast's
scalars..., the run's key and its data) are arguments, never closed over, so one compiled program
serves every run of a group. Static choices (optimizer, loss, gradient filters) are in
:class:`StepConfig`.

One step: logits = output_scale * f(x) with f = model(x, **the model entry's per-run keys)
(model.center_output: output_scale * (f(x) - f0(x)), f0 the network at initialisation); loss = the run's loss
(gsweep.train.losses); g = grad; g = Grokfast filter (if any); g = ⊥Grad (if on); the optimizer
(gsweep.train.optimizers) turns g into the update, its per-run hyperparameters injected from the
run's values at init and its learning rate from its own schedule (warm-up) at every update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gsweep.models import COMMON_MODEL
from gsweep.registry import TRAIN_KEYS
from gsweep.train.gradients import grokfast_ema, grokfast_ma, orthogonal_grad
from gsweep.train.losses import LOSSES
from gsweep.train.optimizers import OPTIMIZERS

# A run's per-run values: {dotted key: scalar} for every dynamic model.* and train.* key of the
# schema (gsweep.schema.hyper_params); [R] arrays when the engine stacks R runs.
Hyper = dict[str, jax.Array]


@flax.struct.dataclass
class RunState:
    """Everything a run carries from step to step (one run; the engine stacks R of them).

    params / opt_state: model parameters and the optimizer's optax state (hyperparameters injected per run).
    key: the run's PRNG key (uint32[2]); per-step keys are fold_in(key, step), never reused.
    diverged_at: first step whose loss or parameters were non-finite, -1 while sane. A diverged run
      is frozen at its last finite parameters, so it can never disturb anything.
    loss_sum, osc_sum, n_loss: train-loss accumulators since the last evaluation; prev1, prev2:
      the last two log-losses (for the oscillation energy: squared second differences).
    stopped_at / streak_from (only with ``train.stop_when_generalized``; ``()`` otherwise, so the
      pytree and its checkpoints are unchanged when the setting is off): the evaluated step at which
      the run was stopped (-1 while training), and the first evaluated step of the current streak of
      evaluations with every split at or above the threshold (-1 when the last evaluation was not).
      A stopped run is frozen: it trains and evaluates no more.
    """

    params: Any
    opt_state: Any
    filter_state: Any  # state of the gradient filters (Grokfast); () when none
    key: jax.Array
    hyper: Hyper
    diverged_at: jax.Array
    loss_sum: jax.Array
    osc_sum: jax.Array
    n_loss: jax.Array
    n_osc: jax.Array
    prev1: jax.Array
    prev2: jax.Array
    stopped_at: Any = ()
    streak_from: Any = ()
    params0: Any = ()  # model.center_output: the parameters at initialisation; () otherwise (pytree unchanged)


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Static settings of a group's step function."""

    batch_size: int  # 0: full batch over the run's (padded) training indices
    fourier_p: int | None
    top_k: int = 1
    embedding: str = "embed"  # the parameter whose Fourier sparsity is recorded (when fourier_p)
    optimizer: str = "adamw"
    loss: str = "softmax_ce"
    orthogonal_grad: bool = False
    grokfast: str = "none"
    grokfast_window: int = 100
    optimizer_static: tuple = ()  # (train.* key, value) of the static keys the optimizer entry reads
    center_output: bool = False  # model.center_output: logits from f - f0
    alpha_lr_scaling: bool = False  # train.alpha_lr_scaling: the optimizer's lr / output_scale^2
    stop_after: int = 0  # train.stop_when_generalized: 0 off; else steps every split stays >= threshold
    threshold: float = 0.99  # analysis.threshold (read only when stop_after > 0)

    @classmethod
    def of(cls, train_cfg, model_cfg, fourier_p: int | None, threshold: float = 0.99) -> StepConfig:
        """From a group's train and model blocks and its task's Fourier p (the model entry decides
        whether it has an embedding to measure)."""
        from gsweep.models import get_model

        emb = get_model(model_cfg["name"]).embedding
        fp = fourier_p if emb else None
        t = train_cfg
        opt_keys = sorted(set(OPTIMIZERS.lookup(t.get("optimizer", "adamw")).static.values()))
        return cls(optimizer_static=tuple((k, t.get(k, TRAIN_KEYS[k].default)) for k in opt_keys),
                   center_output=bool(model_cfg.get("center_output", False)),
                   alpha_lr_scaling=bool(t.get("alpha_lr_scaling", False)),
                   batch_size=int(t["batch_size"]), fourier_p=fp, top_k=fourier_top_k(fp) if fp else 1,
                   embedding=emb or "", optimizer=t.get("optimizer", "adamw"), loss=t.get("loss", "softmax_ce"),
                   orthogonal_grad=bool(t.get("orthogonal_grad", False)), grokfast=t.get("grokfast", "none"),
                   grokfast_window=int(t.get("grokfast_window", 100)),
                   stop_after=int(t.get("stop_when_generalized", 0)), threshold=float(threshold))


def optimizer_of(cfg: StepConfig, hyper: Hyper):
    """The run's optax transformation, its hyperparameters from the run's values."""
    values = {k[6:]: v for k, v in hyper.items() if k.startswith("train.")}
    if cfg.alpha_lr_scaling:  # Kumar et al.'s lazy regime: the lr rescaled by 1 / alpha^2
        values["lr"] = values["lr"] / jnp.square(hyper["model.output_scale"])
    return OPTIMIZERS[cfg.optimizer].transform(values, dict(cfg.optimizer_static))


def grad_filter(cfg: StepConfig, hyper: Hyper) -> optax.GradientTransformation | None:
    """Grokfast (if any) then ⊥Grad (if on); None when the run filters nothing."""
    parts = []
    if cfg.grokfast == "ema":
        parts.append(grokfast_ema(hyper["train.grokfast_alpha"], hyper["train.grokfast_lamb"]))
    elif cfg.grokfast == "ma":
        parts.append(grokfast_ma(cfg.grokfast_window, hyper["train.grokfast_lamb"]))
    if cfg.orthogonal_grad:
        parts.append(orthogonal_grad())
    return optax.chain(*parts) if parts else None


def init_run(model, x_example_BxT, key, hyper: Hyper, cfg: StepConfig | None = None) -> RunState:
    """A run's initial state: parameters from its own key, scaled by its init_scale."""
    cfg = cfg or StepConfig(batch_size=0, fourier_p=None)
    init_key = jax.random.fold_in(key, 0)
    params = model.init(init_key, x_example_BxT, **model_kwargs(hyper))["params"]
    return state_from_params(params, key, hyper, cfg)


def state_from_params(params, key, hyper: Hyper, cfg: StepConfig) -> RunState:
    """A run's initial state around freshly drawn ``params`` (scaled here by the run's init_scale):
    the optimizer's and filters' state, the bookkeeping. ``gsweep plan`` builds its probe's state
    from host-drawn parameters with it (drawing them under jit costs a compile of its own)."""
    params = jax.tree.map(lambda p: p * hyper["model.init_scale"], params)
    opt_state = optimizer_of(cfg, hyper).init(params)
    filt = grad_filter(cfg, hyper)
    z = jnp.zeros((), jnp.float32)
    zi = jnp.zeros((), jnp.int32)
    return RunState(params=params, opt_state=opt_state, filter_state=filt.init(params) if filt else (), key=key,
                    hyper=hyper, diverged_at=jnp.full((), -1, jnp.int32), loss_sum=z, osc_sum=z, n_loss=zi,
                    n_osc=zi, prev1=z, prev2=z, params0=params if cfg.center_output else (), **stop_fields(cfg))


def stop_fields(cfg: StepConfig) -> dict:
    """The stop bookkeeping of a fresh run: both -1 when the setting is on; nothing when it is off."""
    if not cfg.stop_after:
        return {"stopped_at": (), "streak_from": ()}
    return {"stopped_at": jnp.full((), -1, jnp.int32), "streak_from": jnp.full((), -1, jnp.int32)}


def running(cfg: StepConfig, state: RunState) -> jax.Array | bool:
    """Whether the run still trains (always, when stopping is off)."""
    return state.stopped_at < 0 if cfg.stop_after else True


def model_kwargs(hyper: Hyper) -> dict:
    """The model entry's own per-run keys (every per-run model.* key but the common ones the step
    applies), passed to its module's ``__call__`` by name."""
    return {k[6:]: v for k, v in hyper.items() if k.startswith("model.") and k[6:] not in COMMON_MODEL}


def logits_of(model, params, hyper: Hyper, x_BxT, params0=()):
    """The model's logits times the run's output scale alpha; with ``params0`` (model.center_output)
    the output of the network at initialisation is subtracted first: alpha * (f(x) - f0(x))."""
    kw = model_kwargs(hyper)
    out = model.apply({"params": params}, x_BxT, **kw)
    if jax.tree.leaves(params0):
        out = out - model.apply({"params": params0}, x_BxT, **kw)
    return out * hyper["model.output_scale"]


def cross_entropy_N(logits_NxC, y_N, loss: str = "softmax_ce"):
    return LOSSES[loss](logits_NxC, y_N)


def all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def train_step(model, cfg: StepConfig, state: RunState, step: jax.Array, pool_x_NxT, pool_y_N,
               train_idx_M, train_w_M) -> RunState:
    """One optimizer step of one run; ``step`` is the number of steps already taken (shared by the group)."""
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
        ce_B = cross_entropy_N(logits_of(model, params, state.hyper, x_BxT, state.params0), y_B, cfg.loss)
        return jnp.sum(ce_B * w) / jnp.maximum(jnp.sum(w), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    filt = grad_filter(cfg, state.hyper)
    filter_state = state.filter_state
    if filt is not None:
        grads, filter_state = filt.update(grads, filter_state, state.params)
    # the state carries the run's injected hyperparameters; the optimizer's schedules set its
    # learning rate from the state's step count
    updates, opt_state = optimizer_of(cfg, state.hyper).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    ok = jnp.isfinite(loss) & all_finite(params) & (state.diverged_at < 0)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
    diverged_at = jnp.where((state.diverged_at < 0) & ~ok, step + 1, state.diverged_at)

    logl = jnp.log(jnp.maximum(loss, 1e-30))
    second = logl - 2.0 * state.prev1 + state.prev2  # defined once two earlier losses exist
    use_osc = ok & (step >= 2)
    return RunState(
        params=keep(params, state.params), opt_state=keep(opt_state, state.opt_state),
        filter_state=keep(filter_state, state.filter_state), key=state.key,
        hyper=state.hyper, diverged_at=diverged_at,
        loss_sum=state.loss_sum + jnp.where(ok, loss, 0.0), n_loss=state.n_loss + ok.astype(jnp.int32),
        osc_sum=state.osc_sum + jnp.where(use_osc, second**2, 0.0), n_osc=state.n_osc + use_osc.astype(jnp.int32),
        prev1=jnp.where(ok, logl, state.prev1), prev2=jnp.where(ok, state.prev1, state.prev2),
        stopped_at=state.stopped_at, streak_from=state.streak_from, params0=state.params0)


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
    logits_NxC = logits_of(model, state.params, state.hyper, pool_x_NxT, state.params0)
    ce_N = cross_entropy_N(logits_NxC, pool_y_N, cfg.loss)
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
        emb_PxD = state.params[cfg.embedding][: cfg.fourier_p]
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


def update_stop(cfg: StepConfig, state: RunState, metrics: dict, step) -> RunState:
    """After an evaluation at step index ``step`` (evaluated step ``step + 1``): extend or break the
    streak of evaluations with every split's accuracy >= threshold (an empty split's NaN counts as
    below: such a run is never stopped), and stop the run once the streak spans ``cfg.stop_after``
    steps. A diverged run is never stopped; a stopped one stays stopped. No-op when the setting is off."""
    if not cfg.stop_after:
        return state
    at = (step + 1).astype(jnp.int32)
    live = (state.stopped_at < 0) & (state.diverged_at < 0)
    above = jnp.all(metrics["acc"] >= cfg.threshold) & live
    streak = jnp.where(above, jnp.where(state.streak_from < 0, at, state.streak_from), -1)
    stop = above & (at - streak >= cfg.stop_after)
    return state.replace(streak_from=jnp.where(live, streak, state.streak_from),
                         stopped_at=jnp.where(stop, at, state.stopped_at))
