"""Two-hop composition over a synthetic knowledge graph (Wang et al. 2024, "Grokked transformers are
implicit reasoners").

The graph (static: built from ``graph_seed``, shared by every run of a group) has ``n_entities``
entities and ``n_relations`` relations; each entity has ``facts_per_entity`` distinct outgoing
relations, each with a uniformly random tail: the *atomic* facts (h, r) -> t. An *inferred* fact
(h, r1, r2) -> t exists when (h, r1, b) and (b, r2, t) are atomic. An ``ood_frac`` share of the
atomic facts is out-of-distribution (OOD): trained as atomic facts, but no inferred fact that uses
one is ever trained. Inferred facts whose two hops are both in-distribution (ID) can be trained or
tested; those whose two hops are both OOD form ``test_ood``; mixed ones are left out (as Wang et al.).

Tokens: entities 0..E-1, relations E..E+R-1, PAD = E+R. An inferred fact is ``h r1 r2``, an atomic
fact ``PAD h r`` (left-padded: the relation to apply last is always at the last position, where the
answer, the tail entity, is read). Classes: the E entities.

Pool (static): every atomic fact, the ID inferred facts (a fixed sample of ``max_inferred`` of them
when there are more), and the OOD inferred facts (a fixed sample of ``n_ood``). Per run (data seed):
a permutation of the ID inferred facts puts the first ``n_test`` in ``test`` and trains the next
round(phi * |ID atomic|) (``phi`` set) or a ``data_frac`` share of the rest (``phi`` null).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from gsweep.params import Param, at_least, in_unit_closed_open
from gsweep.tasks.base import Task, TaskData, rng_for, take_fraction


def static_rng(*words: Any) -> np.random.Generator:
    """A generator from static settings only (the pool of a group)."""
    digest = hashlib.sha256(repr(list(words)).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))


@dataclasses.dataclass(frozen=True)
class Graph:
    """A knowledge graph and its facts.

    rel_ExF, tail_ExF: entity e's j-th atomic fact is (e, rel_ExF[e, j], tail_ExF[e, j]); its atomic
      index is e * F + j.  ood_A: bool per atomic index.
    id_Ix2, ood_Ox2: the (first hop, second hop) atomic indices of the pool's ID and OOD inferred facts.
    n_id_total, n_ood_total: how many ID / OOD inferred facts the graph has (before sampling).
    """

    rel_ExF: np.ndarray
    tail_ExF: np.ndarray
    ood_A: np.ndarray
    id_Ix2: np.ndarray
    ood_Ox2: np.ndarray
    n_id_total: int
    n_ood_total: int

    @property
    def n_atomic(self) -> int:
        return int(self.ood_A.size)

    @property
    def n_atomic_id(self) -> int:
        return int((~self.ood_A).sum())


def _static_key(cfg: Mapping[str, Any]) -> tuple:
    return (cfg["n_entities"], cfg["n_relations"], cfg["facts_per_entity"], float(cfg["ood_frac"]),
            cfg["max_inferred"], cfg["n_ood"], cfg["graph_seed"])


@functools.lru_cache(maxsize=16)
def _graph(E: int, R: int, F: int, ood_frac: float, max_inferred: int, n_ood: int, seed: int) -> Graph:
    rng = static_rng("composition-graph", E, R, F, ood_frac, seed)
    rel_ExF = np.argsort(rng.random((E, R)), axis=1)[:, :F]  # F distinct relations per entity
    tail_ExF = rng.integers(0, E, size=(E, F))
    A = E * F
    ood_A = np.zeros(A, dtype=bool)
    ood_A[rng.choice(A, size=int(round(ood_frac * A)), replace=False)] = True
    # inferred fact (a1, a2): a1 = (h, r1, b), a2 = (b, r2, t), i.e. a2 = b * F + j2
    a1 = np.repeat(np.arange(A), F)
    a2 = (tail_ExF.reshape(-1)[a1] * F + np.tile(np.arange(F), A)).astype(np.int64)
    id_mask = ~ood_A[a1] & ~ood_A[a2]
    ood_mask = ood_A[a1] & ood_A[a2]
    id_Ix2 = np.stack([a1[id_mask], a2[id_mask]], axis=1)
    ood_Ox2 = np.stack([a1[ood_mask], a2[ood_mask]], axis=1)
    n_id_total, n_ood_total = len(id_Ix2), len(ood_Ox2)
    if n_id_total > max_inferred:
        id_Ix2 = id_Ix2[np.sort(rng.choice(n_id_total, size=max_inferred, replace=False))]
    if n_ood_total > n_ood:
        ood_Ox2 = ood_Ox2[np.sort(rng.choice(n_ood_total, size=n_ood, replace=False))]
    return Graph(rel_ExF, tail_ExF, ood_A, id_Ix2, ood_Ox2, n_id_total, n_ood_total)


def graph(cfg: Mapping[str, Any]) -> Graph:
    """The (cached) graph of a task block's static settings."""
    return _graph(*_static_key(cfg))


def n_train_inferred(cfg: Mapping[str, Any], n_atomic_id: int, n_available: int) -> int:
    """How many ID inferred facts a run trains on: round(phi * |ID atomic|), or a data_frac share."""
    if cfg.get("phi") is not None:
        return int(round(cfg["phi"] * n_atomic_id))
    return take_fraction(n_available, cfg["data_frac"]) if n_available else 0


class Composition(Task):
    name = "composition"
    params = {
        "n_entities": Param(int, 200, check=at_least(2), doc="entities |E| (also the answer classes)"),
        "n_relations": Param(int, 20, check=at_least(1), doc="relations |R|"),
        "facts_per_entity": Param(int, 10, check=at_least(1),
                                  doc="distinct outgoing relations of each entity (atomic facts per head)"),
        "ood_frac": Param(float, 0.05, check=in_unit_closed_open,
                          doc="share of atomic facts that are OOD (trained, but never inside a trained inferred fact)"),
        "phi": Param(float, None, dynamic=True, nullable=True, check=at_least(0),
                     doc="inferred-to-ID-atomic ratio of the training set; null: data_frac is the share of "
                         "the pool's non-test ID inferred facts trained on"),
        "n_test": Param(int, 1000, check=at_least(1), doc="held-out ID inferred facts per run (the test split)"),
        "max_inferred": Param(int, 20000, check=at_least(2),
                              doc="most ID inferred facts in the pool (a fixed sample when the graph has more)"),
        "n_ood": Param(int, 2000, check=at_least(1), doc="most OOD inferred facts in the pool (test_ood)"),
        "graph_seed": Param(int, 0, check=at_least(0), doc="seed of the graph and the pool (static)"),
    }

    @classmethod
    def check(cls, cfg):
        E, R, F = cfg["n_entities"], cfg["n_relations"], cfg["facts_per_entity"]
        if F > R:
            return f"task.facts_per_entity: {F} distinct relations per entity need task.n_relations >= {F}, got {R}"
        if E * F * F > 50_000_000:
            return (f"task.n_entities: {E} entities x {F}^2 facts per entity is too many candidate inferred facts "
                    f"to enumerate ({E * F * F}); lower task.n_entities or task.facts_per_entity")
        g = graph(cfg)
        if len(g.ood_Ox2) == 0:
            return (f"task.ood_frac: {cfg['ood_frac']} leaves no inferred fact whose two hops are both OOD "
                    f"(test_ood would be empty); raise task.ood_frac or the graph size")
        n_id = len(g.id_Ix2)
        if cfg["n_test"] >= n_id:
            return (f"task.n_test: {cfg['n_test']} held-out facts leave none of the pool's {n_id} ID inferred "
                    f"facts to train on")
        available = n_id - cfg["n_test"]
        need = n_train_inferred(cfg, g.n_atomic_id, available)
        if need > available:
            max_phi = available / g.n_atomic_id
            return (f"task.phi: {cfg['phi']} needs {need} ID inferred training facts, but the pool has "
                    f"{available} besides the {cfg['n_test']} test facts (phi <= {max_phi:.2f}); raise "
                    f"task.facts_per_entity or task.max_inferred (graph: {g.n_id_total} ID inferred facts)")
        return None

    @classmethod
    def build(cls, cfg):
        g = graph(cfg)
        E, R = cfg["n_entities"], cfg["n_relations"]
        pad = E + R
        A = g.n_atomic
        heads = np.arange(A) // cfg["facts_per_entity"]
        rel_A = g.rel_ExF.reshape(-1) + E
        tail_A = g.tail_ExF.reshape(-1)
        atomic = np.stack([np.full(A, pad), heads, rel_A], axis=1)

        def inferred(pairs):
            return np.stack([heads[pairs[:, 0]], rel_A[pairs[:, 0]], rel_A[pairs[:, 1]]], axis=1)

        x = np.concatenate([atomic, inferred(g.id_Ix2), inferred(g.ood_Ox2)]).astype(np.int32)
        y = np.concatenate([tail_A, tail_A[g.id_Ix2[:, 1]], tail_A[g.ood_Ox2[:, 1]]]).astype(np.int32)
        info = {"n_atomic": A, "n_atomic_ood": int(g.ood_A.sum()), "n_inferred_id": len(g.id_Ix2),
                "n_inferred_ood": len(g.ood_Ox2), "n_inferred_id_graph": g.n_id_total,
                "n_inferred_ood_graph": g.n_ood_total}
        return TaskData(x_NxT=x, y_N=y, vocab_size=pad + 1, n_classes=E,
                        split_names=("train", "atomic", "test", "test_ood"), info=info)

    @classmethod
    def masks(cls, data, cfg):
        A, n_id = data.info["n_atomic"], data.info["n_inferred_id"]
        n_atomic_id = A - data.info["n_atomic_ood"]
        n_test = cfg["n_test"]
        n_train = min(n_train_inferred(cfg, n_atomic_id, n_id - n_test), n_id - n_test)
        perm = rng_for(cfg, "inferred").permutation(n_id)
        out = {s: np.zeros(data.n, dtype=bool) for s in data.split_names}
        out["atomic"][:A] = True
        out["train"][:A] = True
        out["train"][A + perm[n_test:n_test + n_train]] = True
        out["test"][A + perm[:n_test]] = True
        out["test_ood"][A + n_id:] = True
        return out

    @classmethod
    def held_out_parts(cls, split_names):
        # every atomic fact is trained: an inferred fact's parts are never held out, and test / test_ood
        # hold different inferred facts (ID vs OOD hops), so neither measures the other
        return {s: frozenset() for s in split_names}
