"""Sparse parity (Barak et al. 2022): n random bits, the answer is the parity of k of them.

Tokens: the bits 0 and 1, then EQ = 2; an example is ``b_0 ... b_{n-1} =`` and the answer (0 or 1)
is read at the last position. The k relevant positions are a fixed random subset (``pool_seed``;
listed in the pool's info as ``relevant``).

Pool (static, ``pool_seed``): ``pool_size`` distinct bit strings (every string when 2^n is smaller).
Per run (data seed): a ``data_frac`` share is trained on, the rest is ``test``.
"""

from __future__ import annotations

import functools

import numpy as np

from gsweep.params import Param, at_least
from gsweep.tasks.base import Task, TaskData
from gsweep.tasks.composition import static_rng
from gsweep.tasks.khop import sample_unique
from gsweep.tasks.modular import random_split


@functools.lru_cache(maxsize=8)
def _pool(n: int, k: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = static_rng("sparse_parity", n, k, size, seed)
    relevant = np.sort(rng.choice(n, size=k, replace=False))
    if 2**n <= size:
        flat = np.arange(2**n)
        bits = (flat[:, None] >> np.arange(n - 1, -1, -1)[None, :]) & 1
    else:
        bits = sample_unique(rng, size, lambda m: rng.integers(0, 2, size=(m, n)))
    return bits.astype(np.int64), relevant


class SparseParity(Task):
    name = "sparse_parity"
    params = {
        "n_bits": Param(int, 40, check=at_least(1), doc="bits n per example"),
        "k": Param(int, 3, check=at_least(1), doc="relevant bits k (the answer is their parity)"),
        "pool_size": Param(int, 20000, check=at_least(2), doc="examples in the fixed pool (at most 2^n)"),
        "pool_seed": Param(int, 0, check=at_least(0), doc="seed of the pool and of the relevant bits (static)"),
    }

    @classmethod
    def check(cls, cfg):
        if cfg["k"] > cfg["n_bits"]:
            return f"task.k: {cfg['k']} relevant bits out of task.n_bits = {cfg['n_bits']}"
        if cfg["pool_size"] > 200_000:
            return f"task.pool_size: {cfg['pool_size']} examples is too many to evaluate at every eval (at most 200000)"
        return None

    @classmethod
    def build(cls, cfg):
        n = cfg["n_bits"]
        bits, relevant = _pool(n, cfg["k"], cfg["pool_size"], cfg["pool_seed"])
        y = bits[:, relevant].sum(axis=1) % 2
        x = np.concatenate([bits, np.full((len(bits), 1), 2)], axis=1)
        return TaskData(x_NxT=x.astype(np.int32), y_N=y.astype(np.int32), vocab_size=3, n_classes=2,
                        split_names=("train", "test"), info={"relevant": [int(i) for i in relevant]})

    @classmethod
    def masks(cls, data, cfg):
        train, test = random_split(cfg, data.n, cfg["data_frac"])
        return {"train": train, "test": test}
