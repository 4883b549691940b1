"""Chains of one modular operation: (((x0 op x1) op x2) op x3) mod p, one to three steps.

Tokens: residues 0..p-1, OP = p, EQ = p+1, PAD = p+2. A k-step chain is ``x0 OP x1 ... OP xk =``,
left-padded with PAD to the three-step length (T = 8), so the answer is read at the last position.
The *parts* of a chain are the one-step facts it goes through: (x0, x1), (x0 op x1, x2), ...

Pool (static, ``pool_seed``): every one-step pair (p^2), a fixed sample of ``n_hop2`` two-step chains
and one of ``n_hop3`` three-step chains (all of them when there are fewer). Per run (data seed):

- ``train``: a ``data_frac`` share of the one-step pairs, plus a ``hop2_frac`` (``hop3_frac``) share of
  the two-step (three-step) chains whose parts are all training pairs. No held-out pair ever appears
  in training, not even inside a chain.
- ``test``: the held-out one-step pairs (the grokking split).
- ``hop2``: held-out two-step chains whose parts are all training pairs (composition of known facts).
- ``hop2_novel``: two-step chains with at least one held-out part (needs the generalised rule).
- ``hop3``: held-out three-step chains whose parts are all training pairs (parts all trained).
- ``hop3_novel``: three-step chains with at least one held-out part.

``hop2`` and ``hop3`` are the clean targets for ``gsweep analyze`` (no held-out pair inside); ``hop2_novel``
and ``hop3_novel`` pass through the held-out pairs that ``test`` measures (:meth:`held_out_parts`).
Results dirs written before ``hop3_novel`` existed recorded ``hop3`` as every held-out three-step chain:
``gsweep run`` refuses to resume them (the recorded splits differ), and ``gsweep analyze`` reads their
``hop3`` as overlapping.
"""

from __future__ import annotations

import functools

import numpy as np

from gsweep.params import Param, at_least, in_unit_closed_open
from gsweep.tasks.base import Task, TaskData, rng_for
from gsweep.tasks.composition import static_rng
from gsweep.tasks.modular import DIVIDES, OPS, random_split

MAX_HOPS = 3
SEQ_LEN = 2 * (MAX_HOPS + 1)  # x0 OP x1 OP x2 OP x3 =
CHAIN_OPS = tuple(o for o in OPS if o not in DIVIDES)


def apply_op(op: str, a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    return OPS[op](a.astype(np.int64), b.astype(np.int64), p) % p


def operands(flat: np.ndarray, p: int, n: int) -> np.ndarray:
    """Decode base-p integers into n operands (most significant first): [len(flat), n]."""
    digits = [(flat // p ** (n - 1 - i)) % p for i in range(n)]
    return np.stack(digits, axis=1).astype(np.int64)


def parts_of(ops_NxK: np.ndarray, op: str, p: int) -> tuple[np.ndarray, np.ndarray]:
    """The one-step pair index (a * p + b) of each step of each chain, and the chain's answer."""
    acc = ops_NxK[:, 0]
    parts = []
    for i in range(1, ops_NxK.shape[1]):
        parts.append(acc * p + ops_NxK[:, i])
        acc = apply_op(op, acc, ops_NxK[:, i], p)
    return np.stack(parts, axis=1), acc


def encode(ops_NxK: np.ndarray, p: int) -> np.ndarray:
    n, k = ops_NxK.shape
    x = np.full((n, SEQ_LEN), p + 2, dtype=np.int64)
    body = np.full((n, 2 * k), p, dtype=np.int64)  # OP tokens between the operands
    body[:, 0::2] = ops_NxK
    body[:, -1] = p + 1  # '=' replaces the trailing OP
    x[:, SEQ_LEN - 2 * k:] = body
    return x


@functools.lru_cache(maxsize=16)
def _chains(p: int, n: int, cap: int, seed: int) -> np.ndarray:
    """The pool's chains of n operands: all p^n of them, or a fixed sample of cap (sorted)."""
    total = p**n
    if total <= cap:
        flat = np.arange(total, dtype=np.int64)
    else:
        rng = static_rng("modular_chain", p, n, cap, seed)
        flat = np.sort(rng.choice(total, size=cap, replace=False).astype(np.int64))
    return operands(flat, p, n)


class ModularChain(Task):
    name = "modular_chain"
    params = {
        "p": Param(int, 11, check=at_least(2), doc="modulus (small: the pool holds p^2 pairs and samples of p^3, p^4)"),
        "op": Param(str, "add", choices=CHAIN_OPS, doc="the one operation applied at every step"),
        "hop2_frac": Param(float, 0.5, dynamic=True, check=in_unit_closed_open,
                           doc="share of the two-step chains built from training pairs that is trained on"),
        "hop3_frac": Param(float, 0.0, dynamic=True, check=in_unit_closed_open,
                           doc="share of the three-step chains built from training pairs that is trained on"),
        "n_hop2": Param(int, 4000, check=at_least(1), doc="most two-step chains in the pool (fixed sample of p^3)"),
        "n_hop3": Param(int, 4000, check=at_least(1), doc="most three-step chains in the pool (fixed sample of p^4)"),
        "pool_seed": Param(int, 0, check=at_least(0), doc="seed of the chain samples (static)"),
    }

    @classmethod
    def check(cls, cfg):
        if cfg["n_hop2"] + cfg["n_hop3"] + cfg["p"] ** 2 > 200_000:
            return (f"task.p: {cfg['p']}^2 one-step pairs + task.n_hop2 + task.n_hop3 = "
                    f"{cfg['p'] ** 2 + cfg['n_hop2'] + cfg['n_hop3']} examples: too many to evaluate at every eval")
        return None

    @classmethod
    def build(cls, cfg):
        p, op = cfg["p"], cfg["op"]
        one = operands(np.arange(p * p), p, 2)
        c2 = _chains(p, 3, cfg["n_hop2"], cfg["pool_seed"])
        c3 = _chains(p, 4, cfg["n_hop3"], cfg["pool_seed"])
        x, y, hops = [], [], []
        for k, c in ((1, one), (2, c2), (3, c3)):
            _, ans = parts_of(c, op, p)
            x.append(encode(c, p))
            y.append(ans)
            hops.append(np.full(len(c), k))
        info = {"p": p, "op": op, "n_one": p * p, "n_hop2": len(c2), "n_hop3": len(c3)}
        return TaskData(x_NxT=np.concatenate(x).astype(np.int32), y_N=np.concatenate(y).astype(np.int32),
                        vocab_size=p + 3, n_classes=p,
                        split_names=("train", "test", "hop2", "hop2_novel", "hop3", "hop3_novel"), fourier_p=p,
                        info=info)

    @classmethod
    def masks(cls, data, cfg):
        p, op = cfg["p"], cfg["op"]
        n1, n2 = data.info["n_one"], data.info["n_hop2"]
        train1, _ = random_split(cfg, n1, cfg["data_frac"])
        out = {s: np.zeros(data.n, dtype=bool) for s in data.split_names}
        out["train"][:n1] = train1
        out["test"][:n1] = ~train1
        for k, start, n, frac in ((2, n1, n2, cfg["hop2_frac"]), (3, n1 + n2, data.n - n1 - n2, cfg["hop3_frac"])):
            c = _chains(p, k + 1, cfg[f"n_hop{k}"], cfg["pool_seed"])
            assert len(c) == n, "pool does not match the task settings"
            parts, _ = parts_of(c, op, p)
            known = train1[parts].all(axis=1)
            order = rng_for(cfg, f"hop{k}").permutation(n)
            eligible = order[known[order]]
            trained = np.zeros(n, dtype=bool)
            trained[eligible[: int(round(frac * len(eligible)))]] = True
            out["train"][start:start + n] = trained
            out[f"hop{k}"][start:start + n] = known & ~trained
            out[f"hop{k}_novel"][start:start + n] = ~known
        return out

    @classmethod
    def held_out_parts(cls, split_names):
        pairs = frozenset({"held-out pairs"})
        parts = {"train": frozenset(), "test": pairs, "hop2": frozenset(), "hop2_novel": pairs,
                 "hop3": frozenset(), "hop3_novel": pairs}
        if "hop3_novel" not in split_names:  # an older dir: hop3 was every held-out three-step chain
            parts["hop3"] = pairs
        return {s: parts[s] for s in split_names if s in parts}

