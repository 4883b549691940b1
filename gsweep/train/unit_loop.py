"""One unit's training: restore or start its states, then chunk by chunk train, write its part file,
checkpoint, and record each run's progress; a finished unit leaves its record under ``units/``.

A checkpoint is built on only as far as the unit's verified part files reach; rows written after the
checkpoint it resumes from are recomputed. ``train.stop_when_generalized`` ends a unit once every run
has stopped or diverged (and, on the batched path, narrows each chunk to the runs still training).
A caught signal (:class:`~gsweep.train.signals.Signals`) ends the unit after the chunk in flight,
checkpointed."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gsweep.errors import UserError
from gsweep.train import testhooks
from gsweep.train.progress import Progress
from gsweep.train.resultsdir import CKPT, PARTS
from gsweep.train.signals import Signals
from gsweep.train.tables import (
    curve_rows,
    part_path,
    remove_part,
    verified_parts,
    write_part,
    write_unit_record,
)
from gsweep.train.units import Unit


@dataclasses.dataclass
class UnitContext:
    """What every unit of one sweep is trained with (the same for all its units).

    out: the results dir. bar: the progress bar (a :class:`Progress` or the notebook's). sig: the
    sweep's signal handler; a caught signal ends the unit after the chunk in flight. in_progress:
    run_id -> status/steps_done of the runs trained so far (filled here, read by the tables).
    is_main: this process writes the results (process 0). on_start: called once a unit has restored
    (or started) cleanly, before anything of it is written (writes spec.yaml and meta.json once).
    rollback: ``--rollback``, passed to :func:`gsweep.checkpoint.restore`."""

    out: Path
    bar: Progress
    sig: Signals
    in_progress: dict
    is_main: bool
    on_start: Callable[[], None] = lambda: None
    rollback: bool = False


def train_unit(ctx: UnitContext, unit: Unit, prog, label: str) -> str:
    """Train ``unit`` with ``prog`` (its group's GroupProgram); "done", or "interrupted" by a signal."""
    out, bar, sig, in_progress, is_main, on_start, rollback = (
        ctx.out, ctx.bar, ctx.sig, ctx.in_progress, ctx.is_main, ctx.on_start, ctx.rollback)
    testhooks.oom_above(prog.R)
    from gsweep import checkpoint
    from gsweep.train.engine import live_rows, to_host
    ckpt_dir = out / CKPT / unit.unit_id
    if ckpt_dir.is_symlink() or (ckpt_dir.exists() and not ckpt_dir.is_dir()):
        raise UserError(f"{ckpt_dir}: is a link or a file where gsweep keeps a unit's checkpoints; gsweep never "
                        "reads or deletes through a link it did not make (link checkpoints/ itself instead)")
    every = int(unit.runs[0].settings["train.checkpoint_every"])
    u = prog.unit_arrays(unit.runs)
    states = prog.init_states(u)
    start = 0
    record = {"unit_id": unit.unit_id, "group_id": unit.group_id, "run_ids": [r.run_id for r in unit.runs]}
    checkpoint.discard_uncommitted(ckpt_dir)
    # a checkpoint is built on only as far as the unit's verified part files reach (parts deleted, or
    # checkpoints copied from a dir that got further: those chunks retrain, no rows are skipped)
    have = verified_parts(out, unit.unit_id)
    if checkpoint.unverified(ckpt_dir):
        print(f"gsweep: {label} {ckpt_dir}: no checksum record, so unverified; retraining this chunk of runs "
              "from step 0", file=sys.stderr)
        checkpoint.clear(ckpt_dir)
    elif checkpoint.latest_step(ckpt_dir) is not None:
        if checkpoint.latest_step(ckpt_dir) > len(have):
            print(f"gsweep: {label} part files after chunk {len(have)} are missing or unverified; retraining "
                  "from the last checkpoint they reach", file=sys.stderr)
        if not [s for s in checkpoint.committed_steps(ckpt_dir) if s <= len(have)]:
            checkpoint.clear(ckpt_dir)
        else:
            states, _, start = checkpoint.restore(ckpt_dir, states, record, rollback=rollback, max_step=len(have))
            print(f"gsweep: {label} resuming at step {min(start * prog.K, prog.steps)} from {ckpt_dir}",
                  file=sys.stderr)
            bar.done += min(start * prog.K, prog.steps) * len(unit.runs)
    part_sums = {part_path(out, unit.unit_id, c).name: h for c, h in have.items() if c < start}
    on_start()
    if is_main:  # rows written after the checkpoint are recomputed
        for p in (out / PARTS).glob(f"{unit.unit_id}-*.parquet"):
            if int(p.stem.rsplit("-", 1)[1]) >= start:
                remove_part(p)
    n, R = len(unit.runs), prog.R
    diverged_R, stopped_R = np.full(R, -1), np.full(R, -1)
    if prog.stops:  # restored: as checkpointed
        stopped_R = np.array(to_host(states.stopped_at))
        if start:
            diverged_R = np.array(to_host(states.diverged_at))
    diverged, stopped = diverged_R[:n], stopped_R[:n]
    decided0 = prog.stops and bool(np.all((stopped >= 0) | (diverged >= 0)))  # a unit that ended early, resumed
    # rows: the unit's rows the chunk program trains. All R of them, unless train.stop_when_generalized
    # on the batched path has narrowed the chunk to the runs still training (act = their states)
    rows, act, act_u = np.arange(R), states, u
    for c in range(start, start if decided0 else prog.n_chunks):
        if prog.shrinks:
            keep = live_rows(stopped_R, diverged_R, n, R, prog.n_dev)
            if len(keep) < len(rows):
                if len(rows) < R:
                    states = prog.put_rows(states, act, rows)
                rows, act, act_u = keep, prog.take_rows(states, keep), prog.take_rows(u, keep)
                prog.widths.add(len(rows))
        busy = len(rows) if prog.shrinks or not prog.stops else int(np.sum((stopped_R < 0) & (diverged_R < 0)))
        prog.row_steps += busy * (min((c + 1) * prog.K, prog.steps) - min(c * prog.K, prog.steps))
        act, host, steps = prog.train_chunk(act, c, act_u)
        if len(rows) == R:
            states = act
        else:  # the decided rows' metrics are cut by curve_rows (after their stop step) anyway
            host = {k: _widen(v, rows, R) for k, v in host.items()}
        diverged_R[rows] = to_host(act.diverged_at)
        if prog.stops:
            stopped_R[rows] = to_host(act.stopped_at)
        diverged, stopped = diverged_R[:n], stopped_R[:n]
        if is_main:
            rows_df = curve_rows(unit, steps, host, prog.split_names, diverged, stopped)
            pp = part_path(out, unit.unit_id, c)
            part_sums[pp.name] = write_part(pp, rows_df)
            testhooks.kill_at("after_part", c + 1)
        done_steps = min((c + 1) * prog.K, prog.steps)
        # train.stop_when_generalized: once every run of the unit has stopped (or diverged), the unit ends
        decided = prog.stops and bool(np.all((stopped >= 0) | (diverged >= 0)))
        last = c == prog.n_chunks - 1 or decided
        if (c + 1) % every == 0 or last or sig.caught:
            if len(rows) < R:
                states = prog.put_rows(states, act, rows)
            checkpoint.save(ckpt_dir, c + 1, states, record)
        bar.update(label, prog.steps if last else done_steps, prog.steps,
                   ((prog.steps if last else done_steps) - min(c * prog.K, prog.steps)) * n, final=last)
        for r, d, s_at in zip(unit.runs, diverged, stopped, strict=True):
            in_progress[r.run_id] = {**_run_info(int(d), done_steps, finished=False, stopped_at=int(s_at)),
                                     "unit_id": unit.unit_id}
        if decided:
            break
        if sig.caught and not last:
            return "interrupted"
    if is_main:
        recs = {r.run_id: _run_info(int(d), prog.steps, finished=True, stopped_at=int(s_at))
                for r, d, s_at in zip(unit.runs, diverged, stopped, strict=True)}
        write_unit_record(out, unit.unit_id, unit.group_id, recs, part_sums)
    return "done"


def _widen(v: np.ndarray, rows: np.ndarray, R: int) -> np.ndarray:
    """Metrics [E, len(rows), ...] of a narrowed chunk back at the unit's width R (NaN elsewhere)."""
    out = np.full((v.shape[0], R, *v.shape[2:]), np.nan, v.dtype)
    out[:, rows] = v
    return out


def _run_info(diverged_at: int, steps_done: int, finished: bool, stopped_at: int = -1) -> dict:
    """status and steps_done of a run: diverged (steps before the non-finite one), stopped by
    train.stop_when_generalized (at its stop step), else done / running at ``steps_done``."""
    if diverged_at >= 0:
        return {"status": "diverged", "steps_done": max(0, diverged_at - 1), "diverged_step": diverged_at}
    if stopped_at >= 0:
        return {"status": "stopped", "steps_done": stopped_at, "diverged_step": None}
    return {"status": "done" if finished else "running", "steps_done": steps_done, "diverged_step": None}
