"""The task interface: an example pool built once per group, and per-run split masks over it.

A task turns its *static* settings into a :class:`TaskData` (every example the group's runs can see,
as token sequences with the answer read at the last position), and a run's *dynamic* settings
(``data_frac``, ``data_seed``, task-specific fractions) into boolean masks over that pool, one per
named split. ``train`` is the training set; every other split is evaluated. Splits may overlap
(``atomic`` facts are also trained on). Masks have the pool's length, so all runs in a group have
the same shapes whatever their fractions.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from gsweep.params import Param


@dataclasses.dataclass(frozen=True)
class TaskData:
    """The example pool of one group.

    x_NxT: int32 token ids, answer read at position T-1.  y_N: int32 answer class in [0, n_classes).
    split_names: the splits every run of this task has, ``train`` first.
    fourier_p: for modular tasks whose first p token ids are the residues 0..p-1, p; else None
      (the engine then records the embedding's Fourier sparsity).
    """

    x_NxT: np.ndarray
    y_N: np.ndarray
    vocab_size: int
    n_classes: int
    split_names: tuple[str, ...]
    fourier_p: int | None = None
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.x_NxT.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.x_NxT.shape[1])


class Task:
    """Base class of the registry's tasks. Subclasses set ``name`` and ``params`` and implement
    :meth:`build` and :meth:`masks`."""

    name: ClassVar[str]
    params: ClassVar[dict[str, Param]] = {}

    @classmethod
    def check(cls, cfg: Mapping[str, Any]) -> str | None:
        """Cross-key rules of this task's settings (cfg: the task block, defaults filled)."""
        return None

    @classmethod
    def build(cls, cfg: Mapping[str, Any]) -> TaskData:
        """The pool, from the static settings only (must not read data_frac or data_seed)."""
        raise NotImplementedError

    @classmethod
    def masks(cls, data: TaskData, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Per-run boolean masks over the pool, keyed by split name, in ``data.split_names`` order."""
        raise NotImplementedError

    @classmethod
    def held_out_parts(cls, split_names: tuple[str, ...]) -> dict[str, frozenset[str]] | None:
        """Per evaluated split, the held-out components its examples depend on (``gsweep analyze``: a
        target sharing one with the source overlaps it: part of what it measures is the source).

        ``split_names``: the splits a results dir recorded (an older dir may carry an older split
        meaning, told by its names). None when the task declares nothing.
        """
        return None


def rng_for(cfg: Mapping[str, Any], *salt: Any) -> np.random.Generator:
    """A numpy generator that depends only on the run's data seed, the task name and the salt."""
    words = [cfg["name"], int(cfg["data_seed"]), *salt]
    digest = hashlib.sha256(repr(words).encode()).digest()
    return np.random.default_rng(np.frombuffer(digest[:16], dtype=np.uint32))


def take_fraction(n: int, frac: float) -> int:
    """How many of n items a fraction selects: at least 1 and at most n (int(frac*n), as the peer)."""
    return int(min(n, max(1, int(frac * n + 1e-9))))
