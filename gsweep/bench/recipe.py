"""What ``gsweep bench`` measures: the recipe both sides train, the plan per device, and the FLOPs
and bytes of one model-step counted analytically (see docs/performance.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gsweep.errors import UserError

# ---------------------------------------------------------------------------------------------
# plan


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The model and task both sides train (the standard grokking recipe unless --quick)."""

    p: int
    frac: float = 0.3
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    depth: int = 1
    lr: float = 1e-3
    weight_decay: float = 1.0
    b1: float = 0.9
    b2: float = 0.98


@dataclasses.dataclass(frozen=True)
class Plan:
    device: str  # 'cpu' | 'gpu'
    quick: bool
    recipe: Recipe
    precisions: tuple[str, ...]
    runs: tuple[int, ...]  # R per configuration
    chunk_steps: int  # K
    rounds: int  # gsweep/peer interleavings
    pairs: int  # (no-eval chunk, eval chunk) pairs timed per round and configuration
    loop_models: int
    loop_steps: int
    vmap_models: int
    vmap_steps: int
    torch_threads: tuple[int | None, ...]  # the loop peer's thread settings (None: torch's default)
    matmul_n: int
    matmul_reps: int
    peer_timeout_s: int
    batching: str = "auto"  # train.batching of gsweep's program: auto (map on CPU, vmap elsewhere), map, vmap
    vmap_threads: tuple[int | None, ...] = (None,)  # the torch.func ensemble's thread settings

    def threads(self, mode: str) -> tuple[int | None, ...]:
        return self.torch_threads if mode == "loop" else self.vmap_threads


def make_plan(args, device: str, cores: int = 1) -> Plan:
    """The bench's plan. ``cores``: the cores gsweep uses on CPU; the PyTorch peers get their best
    setting of them: the loop the faster of 1 thread and all ``cores`` (torch's OpenMP threads
    spin-wait, which a loaded machine punishes), the torch.func ensemble all of them."""
    quick = bool(getattr(args, "quick", False))
    every = max(1, int(cores))
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    models = tuple(getattr(args, "models", None) or ())
    if any(m < 1 for m in models):
        raise UserError(f"--models must be positive, got {list(models)}")
    p = getattr(args, "p", None)
    if p is not None and p < 2:
        raise UserError(f"--p must be at least 2, got {p}")
    precisions = tuple(dict.fromkeys(getattr(args, "precision", None) or ()))
    if quick:
        recipe = Recipe(p=p or 13, d_model=32, heads=2, d_mlp=64)
        plan = Plan(device, True, recipe, precisions or ("highest",), models or (2,), steps or 5, rounds=1,
                    pairs=1, loop_models=1, loop_steps=steps or 5, vmap_models=2, vmap_steps=steps or 3,
                    torch_threads=(1,), matmul_n=256, matmul_reps=3, peer_timeout_s=300,
                    vmap_threads=(every,) if device == "cpu" else (None,))
    elif device == "gpu":
        recipe = Recipe(p=p or 113)
        plan = Plan(device, False, recipe, precisions or ("tf32", "highest"), models or (256, 512, 1024),
                    steps or 10, rounds=2, pairs=1, loop_models=2, loop_steps=steps or 300, vmap_models=256,
                    vmap_steps=steps or 20, torch_threads=(None,), matmul_n=4096, matmul_reps=50,
                    peer_timeout_s=900)
    else:
        recipe = Recipe(p=p or 59)
        # torch's OpenMP threads spin-wait: on a loaded 2-core machine one thread can be several times
        # faster than all of them, so the loop runs with both and the faster one is the reference; the
        # ensemble (batched matmuls, big enough to share) runs with every core, as gsweep does.
        # gsweep: at least 4 runs, and one per device (a multiple of the devices).
        plan = Plan(device, False, recipe, precisions or ("highest",), models or (max(4, every),), steps or 25,
                    rounds=2, pairs=2, loop_models=1, loop_steps=steps or 30, vmap_models=max(4, every),
                    vmap_steps=steps or 20, torch_threads=tuple(dict.fromkeys((1, every))), matmul_n=1024,
                    matmul_reps=5, peer_timeout_s=900, vmap_threads=(every,))
    batching = getattr(args, "batching", None) or "auto"
    if batching not in ("auto", "map", "vmap"):
        raise UserError(f"--batching must be auto, map or vmap, got {batching!r}")
    return dataclasses.replace(plan, batching=batching)



# ---------------------------------------------------------------------------------------------
# counting


def param_count(recipe: Recipe, vocab: int, n_classes: int, seq: int) -> int:
    d, dm = recipe.d_model, recipe.d_mlp
    per_block = d * 3 * d + d * d + d * dm + dm + dm * d + d
    return vocab * d + seq * d + recipe.depth * per_block + d * n_classes


def matmul_macs(recipe: Recipe, vocab: int, n_classes: int, seq: int, batch: int, *, tabulate: bool,
                last_only: bool) -> dict[str, int]:
    """Multiply-accumulates of one forward pass, by matmul. ``tabulate``: the first block's
    projections computed once per (position, token) and gathered (gsweep's model when the vocabulary
    is smaller than the batch); ``last_only``: the last block computes its query, attention output
    and MLP at the answer position alone (gsweep). The PyTorch peer does neither."""
    d, dm, T, B, V = recipe.d_model, recipe.d_mlp, seq, batch, vocab
    tab = tabulate and V < B
    macs: dict[str, int] = {}
    for i in range(recipe.depth):
        last = last_only and i == recipe.depth - 1
        Q = 1 if last else T  # positions computed after the keys and values
        rows = T * V if (i == 0 and tab) else B * T
        q_rows = (V if last else T * V) if (i == 0 and tab) else B * Q
        macs[f"block{i}.kv"] = rows * d * 2 * d
        macs[f"block{i}.q"] = q_rows * d * d
        macs[f"block{i}.scores"] = B * Q * T * d  # H heads × (Q × T × d/H)
        macs[f"block{i}.att_v"] = B * Q * T * d
        macs[f"block{i}.out"] = B * Q * d * d
        macs[f"block{i}.mlp"] = 2 * B * Q * d * dm
    macs["unembed"] = B * d * n_classes
    return macs


def flop_counts(recipe: Recipe, vocab: int, n_classes: int, seq: int, batch: int, pool: int) -> dict[str, Any]:
    """FLOPs and bytes of one model-step of the recipe, counted three ways (see docs/performance.md)."""
    gs = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=True, last_only=True)
    lo = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=False, last_only=True)
    peer = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=False, last_only=False)
    n_par = param_count(recipe, vocab, n_classes, seq)
    evals = matmul_macs(recipe, vocab, n_classes, seq, pool, tabulate=True, last_only=True)
    return {
        "flops_per_model_step": 6 * sum(gs.values()),
        "flops_counting": ("matmul FLOPs of what gsweep computes, forward + backward = 3 x forward "
                           "(each matmul's backward is two matmuls of its size: input and weight gradients), "
                           "2 FLOPs per multiply-add; first block's projections tabulated per (position, "
                           "token), last block at the answer position only; elementwise ops, softmax and "
                           "AdamW (~20 FLOPs/parameter) not counted"),
        "flops_per_model_step_last_position_only": 6 * sum(lo.values()),
        "flops_per_model_step_peer": 6 * sum(peer.values()),
        "flops_per_model_step_6nd": 6 * n_par * batch * seq,
        "params": n_par,
        "tokens_per_step": batch * seq,
        "batch": batch,
        "forward_macs_by_matmul": gs,
        "flops_per_eval": 2 * sum(evals.values()),
        "optimizer_bytes_per_model_step": 4 * 8 * n_par,
        "optimizer_bytes_counting": ("float32 AdamW: read params, grads, m, v; write params, m, v; write grads "
                                     "in the backward pass = 8 x 4 bytes per parameter"),
    }
