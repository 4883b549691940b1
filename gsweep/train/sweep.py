"""`gsweep run`: a sweep spec -> groups -> chunks of runs -> results dir, resumable at any point.

Work is planned as *units*: consecutive slices of one group's runs, each trained by that group's
compiled program from step 0 to the budget. A unit checkpoints every ``train.checkpoint_every``
step-chunks, appends its curve rows per step-chunk under ``parts/``, and leaves a record under
``units/`` when finished. The plan depends only on the spec and on which units are finished, so
a resumed sweep rebuilds the same units and continues the unfinished one from its checkpoint.

:func:`run_sweep` is the sequence of steps; one unit's training is :mod:`gsweep.train.unit_loop`,
signals :mod:`gsweep.train.signals`, the environment records :mod:`gsweep.train.environment`, and
the device-memory fitting :mod:`gsweep.train.memory`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
from pathlib import Path

import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.spec import Run, SweepSpec
from gsweep.tasks.recorded import check_recorded_splits
from gsweep.train import testhooks
from gsweep.train.environment import cpu_devices_rule, enable_compilation_cache, versions
from gsweep.train.memory import check_fits, compile_seconds, is_oom
from gsweep.train.progress import Progress
from gsweep.train.resultsdir import (
    Lock,
    _now,
    check_existing,
    check_writable,
    clear_for_fresh,
    clear_stale_temps,
    merged_meta,
    remove_stale_units,
)
from gsweep.train.signals import Interrupted, Signals
from gsweep.train.tables import finished_runs, verify_parts, write_tables
from gsweep.train.unit_loop import UnitContext, train_unit
from gsweep.train.units import Shard, group_runs, plan_units, shard_runs


@dataclasses.dataclass
class SweepResult:
    out: Path
    runs: pd.DataFrame
    status: str


def run_sweep(spec: SweepSpec, out: Path, *, fresh: bool = False, extend: bool = False, shard: Shard | None = None,
              progress: bool = True, command: str = "", n_devices: int | None = None,
              rollback: bool = False) -> SweepResult:
    """Train every run of ``spec`` (or of its shard) into ``out``; resumes what is there.

    ``n_devices`` limits the mesh to the first N devices (tests compare 1 device with several).
    """
    import jax

    from gsweep.train.engine import make_mesh

    is_main = jax.process_index() == 0
    mode, runs_all, mine, old_meta = _check_before_writing(spec, out, fresh, extend, shard)
    lock = Lock(out)
    if is_main:
        lock.acquire()
    sig = Signals()  # from here to the last write: a signal at any phase leaves a resumable dir
    sig.on_hard = lock.release  # until meta.json is written (then record.on_hard below)
    record = _Record(out, spec, old_meta, is_main, lock)
    try:
        sig.__enter__()
        _prepare_dir(out, mode, fresh, is_main)
        enable_compilation_cache()
        fin = finished_runs(out)
        todo = [r for r in mine if r.run_id not in fin]
        mesh = make_mesh(jax.devices()[:n_devices] if n_devices else None)
        record.meta.update(_session_meta(spec, runs_all, mine, shard, mode, command, mesh))
        if not todo:
            record.start()
        groups = group_runs(mine)
        pending_groups = {g: [r for r in rs if r.run_id not in fin] for g, rs in groups.items()}
        total = sum(r.settings["train.steps"] for r in todo)
        # progress: a bool, or a factory (total, enabled) -> a Progress-like bar (gsweep.run's notebook bar)
        prog_bar = (progress if callable(progress) else Progress)(total, enabled=bool(progress) and is_main)
        ctx = UnitContext(out, prog_bar, sig, {}, is_main, record.start, rollback)
        sig.on_hard = record.on_hard
        status = "done"
        for gi, (gid, grp) in enumerate(groups.items()):
            if not pending_groups[gid]:
                continue
            st = _train_group(ctx, record.meta["groups"], spec, runs_all, gid, grp, pending_groups[gid], mesh,
                              where=f"{gi + 1}/{len(groups)} {gid}")
            if st == "interrupted":
                status = "interrupted"
                break
        prog_bar.close()
        table = _write_results(record, mine, status, ctx.in_progress)
        _raise_if_interrupted(sig, status, command, out)
        return SweepResult(out, table, status)
    except BaseException as e:
        record.on_error(e)  # meta.json tells the truth: a sweep that stopped on an error is not `running`
        raise
    finally:
        sig.__exit__()
        lock.release()


def _check_before_writing(spec: SweepSpec, out: Path, fresh: bool, extend: bool,
                          shard: Shard | None) -> tuple[str, list[Run], list[Run], dict]:
    """Every refusal before anything is written: (mode, all runs, this shard's runs, the old meta.json)."""
    mode = check_existing(out, spec, fresh, extend, shard)  # raises before anything is written
    runs_all = spec.runs()
    mine = shard_runs(runs_all, shard)
    if not mine:
        raise UserError(f"shard {shard.index}/{shard.count} holds none of the {len(runs_all)} runs of this sweep; "
                        f"use at most {len(runs_all)} shards")
    old_meta = store.read_meta(out) if mode != "new" else {}
    check_recorded_splits(out, old_meta, runs_all)  # an older split meaning is refused, not mixed
    if not fresh:  # --fresh starts over: what it clears need not verify
        verify_parts(out, runs_all)  # a damaged unit record or part file is refused here, before anything changes
    check_writable(out)
    return mode, runs_all, mine, old_meta


def _prepare_dir(out: Path, mode: str, fresh: bool, is_main: bool) -> None:
    """Interrupted writes' temporaries go; ``--fresh`` clears what gsweep wrote (all processes wait)."""
    if is_main:
        clear_stale_temps(out)
    if mode == "new" and fresh and (out / store.SPEC).exists() and is_main:
        kept = clear_for_fresh(out)
        if kept:
            print(f"gsweep: --fresh kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} gsweep did not "
                  f"write: {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}", file=sys.stderr)
    _sync_processes("gsweep:fresh")


def _session_meta(spec: SweepSpec, runs_all: list[Run], mine: list[Run], shard: Shard | None, mode: str,
                  command: str, mesh) -> dict:
    """meta.json of this session as it starts (the groups' records are added as they are trained)."""
    import jax
    return {
        "name": spec.name, "status": "running", "started": _now(), "finished": None, "command": command,
        "host": socket.gethostname(), "pid": os.getpid(), "versions": versions(),
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind, "process_count": jax.process_count(),
        "run_devices": int(mesh.devices.size), "cpu_devices": cpu_devices_rule(),
        "precision": sorted({r.settings["train.precision"] for r in runs_all}),
        "swept_keys": spec.swept_keys, "n_runs": len(mine), "shard": dataclasses.asdict(shard) if shard else None,
        "mode": mode, "groups": {},
    }


@dataclasses.dataclass
class _Record:
    """spec.yaml and meta.json of this session, written by process 0 (``is_main``): first once the
    first unit has restored (or started) cleanly, last with the tables; a second signal or an error
    on the way leaves meta.json saying so."""

    out: Path
    spec: SweepSpec
    old_meta: dict
    is_main: bool
    lock: Lock
    meta: dict = dataclasses.field(default_factory=dict)
    started: bool = False

    def start(self) -> None:
        """Write spec and meta once the first unit has restored (or started) cleanly: a corrupt or
        foreign checkpoint is refused before anything in the results dir changes."""
        if self.is_main and not self.started:
            store.write_marker(self.out)
            store.write_text(self.out / store.SPEC, self.spec.to_yaml())
            store.write_json(self.out / store.META, merged_meta(self.old_meta, self.meta))
        self.started = True

    def write_meta(self, **changes) -> None:
        store.write_json(self.out / store.META, merged_meta(self.old_meta, {**self.meta, **changes}))

    def on_hard(self) -> None:
        """A second signal: meta.json says interrupted, the lock goes; tables rebuild on resume."""
        if self.is_main and self.started:
            self.write_meta(status="interrupted", finished=_now())
        self.lock.release()

    def on_error(self, e: BaseException) -> None:
        """A sweep that stopped on an error (or KeyboardInterrupt) is `failed` (`interrupted`), not `running`."""
        if self.is_main and self.started and self.meta.get("status") == "running" and not isinstance(e, Interrupted):
            try:
                self.write_meta(finished=_now(), status="interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass


def _train_group(ctx: UnitContext, meta_groups: dict, spec: SweepSpec, runs_all: list[Run], gid: str,
                 grp: list[Run], pending: list[Run], mesh, where: str) -> str:
    """Compile and size one group's program, then train its pending units; a device out-of-memory
    error halves the runs per chunk and retries. "done" or "interrupted"; ``meta_groups[gid]`` records it."""
    from gsweep.train.engine import TRACE_COUNT, GroupProgram, group_mesh
    from gsweep.train.memory import size_runs_per_chunk

    full_group = [r for r in runs_all if r.group_id == gid]  # fixes shapes for any shard/extension
    batching = grp[0].settings.get("train.batching", "auto")
    gmesh = group_mesh(mesh, len(grp), batching)  # map: the fewest devices as fast as all
    prog = GroupProgram(gid, full_group, runs_per_chunk=gmesh.devices.size, mesh=gmesh,
                        batching=batching,
                        threshold=float(spec.analysis["threshold"]))
    sizing = size_runs_per_chunk(prog, len(grp), int(grp[0].settings["train.runs_per_chunk"]))
    check_fits(gid, sizing, gmesh.devices.size)
    prog.resize(sizing.runs_per_chunk)
    meta_groups[gid] = {"runs": len(grp), "runs_per_chunk": prog.R, "devices": prog.n_dev,
                        "chunk_steps": prog.K,
                        "evals_per_chunk": prog.E, "pool": prog.data.n, "train_width": prog.M,
                        "splits": list(prog.split_names), "batching": prog.batching,
                        **sizing.meta()}
    while True:
        try:
            st = _train_units(ctx, meta_groups[gid], prog, sizing, grp, pending, where)
            break
        except Exception as e:  # noqa: BLE001 - only device out-of-memory is retried
            if not is_oom(e):
                raise
            if prog.R <= prog.n_dev:  # nothing left to halve: the program itself is too big
                raise UserError(f"group {gid}: does not fit in device memory even with {prog.R} run(s) "
                                "per chunk; reduce the task size (task.p), the model, or "
                                "train.batch_size") from None
            half = max(prog.n_dev, prog.R // 2)
            print(f"\ngsweep: device out of memory with {prog.R} runs per chunk in group {gid}; "
                  f"retrying with {half}", file=sys.stderr)
            prog.resize(half)
            meta_groups[gid]["runs_per_chunk"] = prog.R
            meta_groups[gid].setdefault("oom_retries", 0)
            meta_groups[gid]["oom_retries"] += 1
    if st != "interrupted":
        meta_groups[gid]["traces"] = TRACE_COUNT.get(gid, 0)
    return st


def _train_units(ctx: UnitContext, group_meta: dict, prog, sizing, grp: list[Run], pending: list[Run],
                 where: str) -> str:
    """The group's units not yet finished, in order, at the program's current runs per chunk."""
    st = "done"
    for unit in plan_units(grp, [r for r in pending if r.run_id not in finished_runs(ctx.out)], prog.R):
        label = f"[{where} runs {len(unit.runs)}]"
        st = train_unit(ctx, unit, prog, label)
        group_meta.update(row_steps=prog.row_steps, widths=sorted(prog.widths | {prog.R}, reverse=True))
        if "compile_s" not in group_meta and prog.chunk_times:
            group_meta.update(compile_seconds(prog.chunk_times, sizing.sizing_s))
        if st == "interrupted":
            break
    return st


def _write_results(record: _Record, mine: list[Run], status: str, in_progress: dict) -> pd.DataFrame | None:
    """The two tables and the final meta.json (process 0); every process waits for them."""
    table = None
    if record.is_main:
        record.start()
        if status == "done":
            remove_stale_units(record.out)
        testhooks.signal_at("tables")
        table = write_tables(record.out, mine, record.spec, in_progress)
        record.meta.update(status=status, finished=_now())
        record.write_meta()
    _sync_processes("gsweep:end")
    return table


def _raise_if_interrupted(sig: Signals, status: str, command: str, out: Path) -> None:
    if status == "interrupted":
        raise Interrupted(f"interrupted by {signal.Signals(sig.caught).name}; checkpoint and tables written. "
                          f"Resume with the same command: {command or 'gsweep run ... --out ' + str(out)}",
                          sig.caught)
    if sig.caught:  # a signal while the tables were written: they are complete, the sweep is done
        raise Interrupted(f"{signal.Signals(sig.caught).name} received after training; the sweep is done and "
                          "its tables are written", sig.caught)


def _sync_processes(tag: str) -> None:
    """With jax.distributed: every process waits here for the others."""
    import jax
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(tag)
