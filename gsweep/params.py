"""A key of a sweep file: its type, default, limits and whether it is per run. No imports from gsweep,
so the registries (tasks, models, optimizers) and :mod:`gsweep.schema` can all use it without a cycle."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Param:
    """One key of a block: its type, default, limits and whether it is a per-run (dynamic) value."""

    type: type
    default: Any
    dynamic: bool = False
    check: Callable[[Any], str | None] | None = None
    choices: tuple | None = None
    nullable: bool = False
    sweepable: bool = True
    doc: str = ""
    # Keys added after v0.1: left out of run ids and group ids while at their default, so runs that
    # do not use them keep their ids (old results dirs resume).
    new: bool = False


def at_least(lo: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def in_unit_open_closed(v: Any) -> str | None:
    return None if 0 < v <= 1 else "must lie in (0, 1]"


def in_unit_closed_open(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must lie in [0, 1)"


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))
