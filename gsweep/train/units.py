"""Planning a sweep's work: shards of the grid, groups, and *units* (consecutive slices of one
group's runs, each trained by that group's compiled program from step 0 to the budget). The plan
depends only on the spec and on which units are finished (no JAX)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence

from gsweep.errors import UserError
from gsweep.spec import Run
from gsweep.spec.guards import param_estimate


@dataclasses.dataclass(frozen=True)
class Unit:
    unit_id: str
    group_id: str
    runs: tuple[Run, ...]


@dataclasses.dataclass(frozen=True)
class Shard:
    index: int
    count: int


# ----------------------------------------------------------------------------------------------
# planning


def parse_shard(text: str | None, env: dict | None = None) -> Shard | None:
    """``--shard I/N``, else SLURM_ARRAY_TASK_ID/MIN/COUNT when present (ids need not start at 0)."""
    env = os.environ if env is None else env
    if text:
        try:
            i, n = (int(x) for x in text.split("/"))
            if n > 1_000_000:
                raise ValueError
        except ValueError:
            raise UserError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4") from None
        if not (n >= 1 and 0 <= i < n):
            raise UserError(f"--shard {text!r}: need 0 <= I < N")
        return Shard(i, n)
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        vals = {}
        for k, default in (("SLURM_ARRAY_TASK_ID", None), ("SLURM_ARRAY_TASK_MIN", "0"),
                           ("SLURM_ARRAY_TASK_COUNT", None), ("SLURM_ARRAY_TASK_STEP", "1")):
            v = env.get(k, default)
            try:
                vals[k] = int(str(v).strip())
            except ValueError:
                raise UserError(f"{k}={v!r}: expected an integer (or pass --shard I/N)") from None
        tid, lo, n = vals["SLURM_ARRAY_TASK_ID"], vals["SLURM_ARRAY_TASK_MIN"], vals["SLURM_ARRAY_TASK_COUNT"]
        step = vals["SLURM_ARRAY_TASK_STEP"]
        if not 1 <= n <= 1_000_000:
            raise UserError(f"SLURM_ARRAY_TASK_COUNT={n}: expected 1 to 1,000,000 tasks (or pass --shard I/N)")
        if step < 1:
            raise UserError(f"SLURM_ARRAY_TASK_STEP={step}: expected a positive integer (or pass --shard I/N)")
        i, off = divmod(tid - lo, step)  # --array=0-10:2 numbers its tasks 0, 2, 4, ...
        if not (off == 0 and 0 <= i < n):
            raise UserError(f"SLURM_ARRAY_TASK_ID={tid}: outside the array (MIN {lo}, STEP {step}, COUNT {n}); "
                            "need ID = MIN + k*STEP with 0 <= k < COUNT")
        return Shard(i, n)
    return None


def run_cost(run: Run) -> float:
    """Relative cost of a run: steps times its model's parameter count (from the model entry)."""
    return float(run.settings["train.steps"]) * param_estimate(run.settings)


def shard_runs(runs: Sequence[Run], shard: Shard | None) -> list[Run]:
    """A deterministic, balanced share: within each group (so shards share compiled programs), runs
    sorted by id are dealt round-robin, the group's first run going to the shard with the least cost
    so far."""
    if shard is None or shard.count == 1:
        return list(runs)
    by_group: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_group[r.group_id].append(r)
    load = [0.0] * shard.count
    mine: set[str] = set()
    for gid in sorted(by_group):
        group = sorted(by_group[gid], key=lambda r: r.run_id)
        start = min(range(shard.count), key=lambda i: (load[i], i))
        for k, r in enumerate(group):
            owner = (start + k) % shard.count
            load[owner] += run_cost(r)
            if owner == shard.index:
                mine.add(r.run_id)
    return [r for r in runs if r.run_id in mine]


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        out[r.group_id].append(r)
    return dict(sorted(out.items()))


def plan_units(group: Sequence[Run], todo: Sequence[Run], per_chunk: int) -> list[Unit]:
    ids = {r.run_id for r in todo}
    pending = [r for r in group if r.run_id in ids]
    units = []
    for i in range(0, len(pending), per_chunk):
        chunk = tuple(pending[i: i + per_chunk])
        h = hashlib.sha1((chunk[0].group_id + ":" + ",".join(r.run_id for r in chunk)).encode()).hexdigest()[:12]
        units.append(Unit(f"u{h}", chunk[0].group_id, chunk))
    return units


