"""k-hop induction heads over random strings (Sanford, Hsu and Telgarsky 2024).

For a string X of length N (positions 0..N-1), find(i) is the largest j <= i with X[j-1] == X[i]:
the position just after the most recent earlier occurrence of X[i] (none when X[i] has not occurred
before). hop_k(X) = X[find^k(N-1)], or the "none" answer when a hop finds nothing. One hop is the
induction head (the token after the previous occurrence of the last token); k hops need about
log2(k) layers (Sanford et al.).

Tokens: symbols 0..S-1 (S = ``alphabet``), then one query token per hop count (S + k - 1 asks for
k hops). An example is ``X_0 ... X_{N-1} Q_k``; the answer, read at the last position, is a symbol
or the class S ("none").

Pool (static, ``pool_seed``): ``pool_size`` distinct examples, hop counts 1..``hops`` in turn, strings
uniformly random. Per run (data seed): a ``data_frac`` share of the pool is trained on; the rest is
``test``, and ``hop1`` ... ``hopK`` are the held-out examples asking for that many hops.
"""

from __future__ import annotations

import functools

import numpy as np

from gsweep.params import Param, at_least
from gsweep.tasks.base import Task, TaskData
from gsweep.tasks.composition import static_rng
from gsweep.tasks.modular import random_split


def hop_answers(X_NxL: np.ndarray, k_N: np.ndarray, none: int) -> np.ndarray:
    """hop_k(X) for each row (vectorised over rows; loops over positions and hops)."""
    n, L = X_NxL.shape
    # find_NxL[:, i] = largest j <= i with X[j-1] == X[i], or -1
    find = np.full((n, L), -1, dtype=np.int64)
    last_pos = np.full((n, int(X_NxL.max()) + 1), -1, dtype=np.int64)  # last position of each symbol so far
    rows = np.arange(n)
    for i in range(L):
        prev = last_pos[rows, X_NxL[:, i]]  # most recent occurrence strictly before i
        find[:, i] = np.where(prev >= 0, prev + 1, -1)
        last_pos[rows, X_NxL[:, i]] = i
    pos = np.full(n, L - 1, dtype=np.int64)
    for step in range(int(k_N.max())):
        active = (step < k_N) & (pos >= 0)
        pos = np.where(active, find[rows, np.maximum(pos, 0)], pos)
    safe = np.maximum(pos, 0)
    return np.where(pos >= 0, X_NxL[rows, safe], none)


def sample_unique(rng: np.random.Generator, n: int, draw) -> np.ndarray:
    """n distinct rows from draw(m) -> int array [m, T], kept in first-drawn order."""
    rows = np.zeros((0, 0), dtype=np.int64)
    for _ in range(100):
        new = draw(max(n - len(rows), 1) + 16)
        rows = new if rows.size == 0 else np.concatenate([rows, new])
        _, first = np.unique(rows, axis=0, return_index=True)
        rows = rows[np.sort(first)]
        if len(rows) >= n:
            return rows[:n]
    raise ValueError(f"could not draw {n} distinct examples")


@functools.lru_cache(maxsize=8)
def _pool(N: int, S: int, K: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = static_rng("khop", N, S, K, size, seed)
    k_all = np.arange(size) % K + 1

    def draw(m):
        return rng.integers(0, S, size=(m, N))

    X = np.zeros((size, N), dtype=np.int64)
    for k in range(1, K + 1):  # distinct strings within each hop count
        idx = np.flatnonzero(k_all == k)
        X[idx] = sample_unique(rng, len(idx), draw)
    return X, k_all


class KHop(Task):
    name = "khop"
    params = {
        "seq_len": Param(int, 32, check=at_least(2), doc="string length N"),
        "alphabet": Param(int, 4, check=at_least(2), doc="symbols S"),
        "hops": Param(int, 4, check=at_least(1), doc="largest hop count K (splits hop1..hopK)"),
        "pool_size": Param(int, 20000, check=at_least(2), doc="examples in the fixed pool (all hop counts)"),
        "pool_seed": Param(int, 0, check=at_least(0), doc="seed of the pool (static)"),
    }

    @classmethod
    def check(cls, cfg):
        N, S, K, size = cfg["seq_len"], cfg["alphabet"], cfg["hops"], cfg["pool_size"]
        if size < K:
            return f"task.pool_size: {size} examples cannot cover {K} hop counts (task.hops)"
        if S**N < 4 * (size // K + 1):
            return (f"task.pool_size: {size} distinct examples over {K} hop counts need more strings than "
                    f"task.alphabet^task.seq_len = {S}^{N} allows comfortably")
        if size > 200_000:
            return f"task.pool_size: {size} examples is too many to evaluate at every eval (at most 200000)"
        return None

    @classmethod
    def build(cls, cfg):
        N, S, K = cfg["seq_len"], cfg["alphabet"], cfg["hops"]
        X, k = _pool(N, S, K, cfg["pool_size"], cfg["pool_seed"])
        y = hop_answers(X, k, none=S)
        x = np.concatenate([X, (S + k - 1)[:, None]], axis=1)
        return TaskData(x_NxT=x.astype(np.int32), y_N=y.astype(np.int32), vocab_size=S + K, n_classes=S + 1,
                        split_names=("train", "test", *(f"hop{i}" for i in range(1, K + 1))),
                        info={"hops": K, "none_class": S})

    @classmethod
    def masks(cls, data, cfg):
        train, test = random_split(cfg, data.n, cfg["data_frac"])
        k = data.x_NxT[:, -1] - cfg["alphabet"] + 1
        out = {"train": train, "test": test}
        for i in range(1, cfg["hops"] + 1):
            out[f"hop{i}"] = test & (k == i)
        return out

    @classmethod
    def held_out_parts(cls, split_names):
        # hop<k> is the part of test that asks for k hops: test contains every hop split's examples
        hops = [s for s in split_names if s.startswith("hop")]
        out = {s: frozenset({f"{s} examples"}) for s in hops}
        out["train"] = frozenset()
        out["test"] = frozenset(f"{s} examples" for s in hops)
        return out
