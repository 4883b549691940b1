"""Binary operations mod a prime p (Power et al. 2022), and composition in S5.

A single operation feeds the tokens ``x y =``; mixed operations (``op: add|mul``) feed
``x OP y =`` with one token per operation. The pool is every pair; a run trains on a
``data_frac`` share of it drawn with its data seed and is tested on the rest.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from gsweep.params import Param, at_least, is_prime
from gsweep.tasks.base import Task, TaskData, rng_for, take_fraction

OPS = {
    "add": lambda x, y, p: (x + y) % p,
    "sub": lambda x, y, p: (x - y) % p,
    "mul": lambda x, y, p: (x * y) % p,
    "div": lambda x, y, p: (x * pow_mod(y, p - 2, p)) % p,
    "x2_y2": lambda x, y, p: (x * x + y * y) % p,
    "x2_xy_y2": lambda x, y, p: (x * x + x * y + y * y) % p,
    "x3_xy": lambda x, y, p: (x * x * x + x * y) % p,
}
DIVIDES = {"div"}


def pow_mod(base: np.ndarray, exp: int, p: int) -> np.ndarray:
    result = np.ones_like(base)
    b = base % p
    while exp:
        if exp & 1:
            result = (result * b) % p
        b = (b * b) % p
        exp >>= 1
    return result


def parse_ops(op: str) -> list[str]:
    return [o.strip() for o in op.split("|")]


def random_split(cfg: Mapping[str, Any], n: int, frac: float) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out masks over n examples: a data_frac share drawn with the run's data seed."""
    perm = rng_for(cfg, "split").permutation(n)
    train = np.zeros(n, dtype=bool)
    train[perm[: take_fraction(n, frac)]] = True
    return train, ~train


class Modular(Task):
    name = "modular"
    params = {
        "p": Param(int, 113, check=at_least(2), doc="modulus"),
        "op": Param(str, "add", doc=f"one of {', '.join(OPS)}; 'a|b' mixes operations (adds an op token)"),
        "nonzero_y": Param(bool, False, new=True,
                           doc="drop the pairs with y = 0 for every operation (div always drops them)"),
    }

    @classmethod
    def check(cls, cfg):
        ops = parse_ops(cfg["op"])
        for o in ops:
            if o not in OPS:
                return f"task.op: unknown operation {o!r}; valid: {', '.join(OPS)}"
        if len(set(ops)) != len(ops):
            return f"task.op: repeated operation in {cfg['op']!r}"
        if DIVIDES & set(ops) and not is_prime(cfg["p"]):
            return f"task.p: {cfg['p']} is not prime, and {cfg['op']!r} divides mod p"
        return None

    @classmethod
    def build(cls, cfg):
        p, ops = cfg["p"], parse_ops(cfg["op"])
        xs, ys, ans, opi = [], [], [], []
        for k, o in enumerate(ops):
            x, y = (a.ravel().astype(np.int64) for a in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
            if o in DIVIDES or cfg.get("nonzero_y", False):
                keep = y != 0
                x, y = x[keep], y[keep]
            xs.append(x)
            ys.append(y)
            ans.append(OPS[o](x, y, p))
            opi.append(np.full_like(x, k))
        x, y, a, k = (np.concatenate(v) for v in (xs, ys, ans, opi))
        eq = p + len(ops) if len(ops) > 1 else p
        if len(ops) > 1:
            x_NxT = np.stack([x, p + k, y, np.full_like(x, eq)], axis=1)
        else:
            x_NxT = np.stack([x, y, np.full_like(x, eq)], axis=1)
        return TaskData(x_NxT=x_NxT.astype(np.int32), y_N=a.astype(np.int32), vocab_size=eq + 1, n_classes=p,
                        split_names=("train", "test"), fourier_p=p, info={"ops": ops})

    @classmethod
    def masks(cls, data, cfg):
        train, test = random_split(cfg, data.n, cfg["data_frac"])
        return {"train": train, "test": test}


class S5(Task):
    """Composition x∘y of permutations of 5 elements (120 × 120 pairs, 120 classes)."""

    name = "s5"
    params = {}

    @staticmethod
    def elements() -> list[tuple[int, ...]]:
        return list(itertools.permutations(range(5)))

    @classmethod
    def build(cls, cfg):
        perms = cls.elements()
        index = {q: i for i, q in enumerate(perms)}
        n = len(perms)
        x, y = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
        # (x∘y)(i) = x(y(i))
        ans = np.array([index[tuple(perms[a][perms[b][i]] for i in range(5))] for a, b in zip(x, y, strict=True)])
        x_NxT = np.stack([x, y, np.full_like(x, n)], axis=1)
        return TaskData(x_NxT=x_NxT.astype(np.int32), y_N=ans.astype(np.int32), vocab_size=n + 1, n_classes=n,
                        split_names=("train", "test"))

    @classmethod
    def masks(cls, data, cfg):
        train, test = random_split(cfg, data.n, cfg["data_frac"])
        return {"train": train, "test": test}
