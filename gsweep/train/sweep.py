"""`gsweep run`: a sweep spec -> groups -> chunks of runs -> results dir, resumable at any point.

Work is planned as *units*: consecutive slices of one group's runs, each trained by that group's
compiled program from step 0 to the budget. A unit checkpoints every ``train.checkpoint_every``
step-chunks, appends its curve rows per step-chunk under ``parts/``, and leaves a record under
``units/`` when finished. The plan depends only on the spec and on which units are finished, so
a resumed sweep rebuilds the same units and continues the unfinished one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.spec import SweepSpec
from gsweep.tasks.recorded import check_recorded_splits
from gsweep.train.progress import Progress
from gsweep.train.resultsdir import (
    CKPT,
    PARTS,
    UNITS,
    Lock,
    _now,
    check_existing,
    check_writable,
    clear_for_fresh,
    clear_stale_temps,
    merged_meta,
    remove_owned,
)
from gsweep.train.tables import (
    curve_rows,
    finished_runs,
    part_path,
    remove_part,
    verified_parts,
    verify_parts,
    write_part,
    write_tables,
    write_unit_record,
)
from gsweep.train.units import Shard, Unit, group_runs, plan_units, shard_runs


class Interrupted(Exception):
    def __init__(self, msg: str, signum: int = signal.SIGINT):
        super().__init__(msg)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal's number)."""
        return 128 + self.signum


# ----------------------------------------------------------------------------------------------
# the run


def versions() -> dict:
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for pkg in ("gsweep", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "pandas",
                "pyarrow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def enable_compilation_cache() -> None:
    """Persistent XLA cache (GSWEEP_CACHE_DIR, default ~/.cache/gsweep/jax): repeats skip compiling."""
    import jax
    path = os.environ.get("GSWEEP_CACHE_DIR", str(Path.home() / ".cache" / "gsweep" / "jax"))
    if path.lower() in ("", "0", "off", "none"):
        return
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except Exception as e:  # noqa: BLE001 - a cache is a convenience, never a failure
        print(f"gsweep: compilation cache off ({e})", file=sys.stderr)


@dataclasses.dataclass
class SweepResult:
    out: Path
    runs: pd.DataFrame
    status: str


class _Signals:
    """SIGINT/SIGTERM: finish the chunk in flight, checkpoint, write the tables, exit 130.

    A second signal stops at once, cleanly: the handler never raises into JAX (an exception thrown
    while XLA compiles or runs aborts the process); it calls ``on_hard`` (meta.json -> interrupted,
    the lock released) and leaves with status 130. The last checkpoint and the finished units stay,
    so the same command resumes."""

    def __init__(self):
        self.caught: int | None = None
        self.on_hard = None
        self._old = {}
        self._depth = 0

    def __enter__(self):
        self._depth += 1
        if self._depth > 1:  # already installed: it covers the whole sweep, tables and meta included
            return self
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.caught is not None:  # a second signal: stop now, cleanly
            print(f"\ngsweep: second {signal.Signals(signum).name}: stopping now; the last checkpoint is kept",
                  file=sys.stderr, flush=True)
            try:
                if self.on_hard is not None:
                    self.on_hard()
            finally:
                os._exit(128 + int(signum))
        self.caught = signum
        print(f"\ngsweep: {signal.Signals(signum).name} received: finishing the chunk in flight, then "
              "checkpointing (a second signal stops at once)", file=sys.stderr)

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth > 0:
            return
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def run_sweep(spec: SweepSpec, out: Path, *, fresh: bool = False, extend: bool = False, shard: Shard | None = None,
              progress: bool = True, command: str = "", n_devices: int | None = None,
              rollback: bool = False) -> SweepResult:
    """Train every run of ``spec`` (or of its shard) into ``out``; resumes what is there.

    ``n_devices`` limits the mesh to the first N devices (tests compare 1 device with several).
    """
    import jax

    from gsweep import checkpoint
    from gsweep.train.engine import TRACE_COUNT, GroupProgram, group_mesh, make_mesh, to_host
    from gsweep.train.memory import size_runs_per_chunk

    is_main = jax.process_index() == 0
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
    lock = Lock(out)
    if is_main:
        lock.acquire()
    sig = _Signals()  # from here to the last write: a signal at any phase leaves a resumable dir
    sig.on_hard = lock.release  # until meta.json is written (then on_hard below)
    started: list = []
    meta: dict = {}
    try:
        sig.__enter__()
        if is_main:
            clear_stale_temps(out)
        if mode == "new" and fresh and (out / store.SPEC).exists() and is_main:
            kept = clear_for_fresh(out)
            if kept:
                print(f"gsweep: --fresh kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} gsweep did not "
                      f"write: {', '.join(kept[:5])}{' ...' if len(kept) > 5 else ''}", file=sys.stderr)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gsweep:fresh")
        enable_compilation_cache()
        fin = finished_runs(out)
        todo = [r for r in mine if r.run_id not in fin]
        mesh = make_mesh(jax.devices()[:n_devices] if n_devices else None)
        meta.update({
            "name": spec.name, "status": "running", "started": _now(), "finished": None, "command": command,
            "host": socket.gethostname(), "pid": os.getpid(), "versions": versions(),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "process_count": jax.process_count(),
            "run_devices": int(mesh.devices.size), "cpu_devices": cpu_devices_rule(),
            "precision": sorted({r.settings["train.precision"] for r in runs_all}),
            "swept_keys": spec.swept_keys, "n_runs": len(mine), "shard": dataclasses.asdict(shard) if shard else None,
            "mode": mode, "groups": {},
        })

        def on_start():
            """Write spec and meta once the first unit has restored (or started) cleanly: a corrupt or
            foreign checkpoint is refused before anything in the results dir changes."""
            if is_main and not started:
                store.write_marker(out)
                store.write_text(out / store.SPEC, spec.to_yaml())
                store.write_json(out / store.META, merged_meta(old_meta, meta))
            started.append(True)

        if not todo:
            on_start()
        groups = group_runs(mine)
        pending_groups = {g: [r for r in rs if r.run_id not in fin] for g, rs in groups.items()}
        total = sum(r.settings["train.steps"] for r in todo)
        # progress: a bool, or a factory (total, enabled) -> a Progress-like bar (gsweep.run's notebook bar)
        prog_bar = (progress if callable(progress) else Progress)(total, enabled=bool(progress) and is_main)
        in_progress: dict[str, dict] = {}
        status = "done"

        def on_hard():
            """A second signal: meta.json says interrupted, the lock goes; tables rebuild on resume."""
            if is_main and started:
                store.write_json(out / store.META, merged_meta(old_meta, {**meta, "status": "interrupted",
                                                                          "finished": _now()}))
            lock.release()

        with sig:
            sig.on_hard = on_hard
            for gi, (gid, grp) in enumerate(groups.items()):
                if not pending_groups[gid]:
                    continue
                full_group = [r for r in runs_all if r.group_id == gid]  # fixes shapes for any shard/extension
                batching = grp[0].settings.get("train.batching", "auto")
                gmesh = group_mesh(mesh, len(grp), batching)  # map: the fewest devices as fast as all
                prog = GroupProgram(gid, full_group, runs_per_chunk=gmesh.devices.size, mesh=gmesh,
                                    batching=batching,
                                    threshold=float(spec.analysis["threshold"]))
                sizing = size_runs_per_chunk(prog, len(grp), int(grp[0].settings["train.runs_per_chunk"]))
                check_fits(gid, sizing, gmesh.devices.size)
                prog.resize(sizing.runs_per_chunk)
                meta["groups"][gid] = {"runs": len(grp), "runs_per_chunk": prog.R, "devices": prog.n_dev,
                                       "chunk_steps": prog.K,
                                       "evals_per_chunk": prog.E, "pool": prog.data.n, "train_width": prog.M,
                                       "splits": list(prog.split_names), "batching": prog.batching,
                                       **sizing.meta()}
                while True:
                    try:
                        st = "done"
                        for unit in plan_units(grp, [r for r in pending_groups[gid] if r.run_id not in
                                                     finished_runs(out)], prog.R):
                            label = f"[{gi + 1}/{len(groups)} {gid} runs {len(unit.runs)}]"
                            st = _train_unit(out, unit, prog, checkpoint, to_host, prog_bar, label, sig,
                                             in_progress, is_main, on_start, rollback)
                            meta["groups"][gid].update(row_steps=prog.row_steps,
                                                       widths=sorted(prog.widths | {prog.R}, reverse=True))
                            if "compile_s" not in meta["groups"][gid] and prog.chunk_times:
                                meta["groups"][gid].update(compile_seconds(prog.chunk_times, sizing.sizing_s))
                            if st == "interrupted":
                                break
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
                        meta["groups"][gid]["runs_per_chunk"] = prog.R
                        meta["groups"][gid].setdefault("oom_retries", 0)
                        meta["groups"][gid]["oom_retries"] += 1
                if st == "interrupted":
                    status = "interrupted"
                    break
                meta["groups"][gid]["traces"] = TRACE_COUNT.get(gid, 0)
        prog_bar.close()
        table = None
        if is_main:
            on_start()
            if status == "done":
                remove_stale_units(out)
            _test_signal("tables")
            table = write_tables(out, mine, spec, in_progress)
            meta.update(status=status, finished=_now())
            store.write_json(out / store.META, merged_meta(old_meta, meta))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gsweep:end")
        if status == "interrupted":
            raise Interrupted(f"interrupted by {signal.Signals(sig.caught).name}; checkpoint and tables written. "
                              f"Resume with the same command: {command or 'gsweep run ... --out ' + str(out)}",
                              sig.caught)
        if sig.caught:  # a signal while the tables were written: they are complete, the sweep is done
            raise Interrupted(f"{signal.Signals(sig.caught).name} received after training; the sweep is done and "
                              "its tables are written", sig.caught)
        return SweepResult(out, table, status)
    except BaseException as e:
        # meta.json tells the truth: a sweep that stopped on an error is not `running`
        if is_main and started and meta.get("status") == "running" and not isinstance(e, Interrupted):
            try:
                store.write_json(out / store.META, merged_meta(old_meta, {
                    **meta, "finished": _now(),
                    "status": "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"}))
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    finally:
        sig.__exit__()
        lock.release()


def check_fits(gid: str, sizing, n_dev: int) -> None:
    """A group whose program, by its own memory analysis, needs more than the device holds even at one
    run per device is refused before it runs (a one-line error, not an allocation failure)."""
    smallest = sizing.probes.get(n_dev, sizing.compiled_bytes if sizing.runs_per_chunk <= n_dev else None)
    if smallest is not None and smallest > sizing.limit_bytes:
        def size(b: int) -> str:
            return f"{b / 2**30:,.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.3g} MiB"
        raise UserError(f"group {gid}: its compiled program needs {size(smallest)} per device even with "
                        f"one run per device, more than the {size(sizing.limit_bytes)} available "
                        f"({sizing.limit_source}); reduce the task size (task.p), the model, or train.batch_size")


def cpu_devices_rule() -> str:
    """How the host platform's device count was chosen (meta.json)."""
    from gsweep.devices import chosen
    return chosen()[1]


def compile_seconds(chunk_times: Sequence[float], sizing_s: float) -> dict:
    """A group's compile time: the sizing compiles plus the first chunk call's excess over a steady
    one (the median of the later calls; the first call alone when there is only one)."""
    steady = float(np.median(chunk_times[1:])) if len(chunk_times) > 1 else 0.0
    return {"compile_s": round(sizing_s + max(0.0, chunk_times[0] - steady), 2),
            "first_chunk_s": round(chunk_times[0], 2), "steady_chunk_s": round(steady, 2)}


class DeviceOOM(RuntimeError):
    pass


def is_oom(e: BaseException) -> bool:
    """A device out-of-memory error from XLA (or the test hook's stand-in)."""
    text = f"{type(e).__name__}: {e}"
    return isinstance(e, DeviceOOM) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text \
        or "out of memory" in text


def _test_hook(event: str, chunk: int) -> None:
    """Test-only fault injection: GSWEEP_TEST_KILL="EVENT:CHUNK" SIGKILLs this process at that
    point (EVENT: after_part = rows written, checkpoint not yet)."""
    spec = os.environ.get("GSWEEP_TEST_KILL")
    if spec and spec == f"{event}:{chunk}":
        os.kill(os.getpid(), signal.SIGKILL)


def _test_signal(event: str) -> None:
    """Test-only fault injection: GSWEEP_TEST_SIGNAL="EVENT:NAME[:N]" sends this process signal NAME
    (INT or TERM) N times (default 1) at EVENT (tables: as the tables are about to be written)."""
    spec = os.environ.get("GSWEEP_TEST_SIGNAL", "").split(":")
    if len(spec) >= 2 and spec[0] == event:
        for _ in range(int(spec[2]) if len(spec) > 2 else 1):
            os.kill(os.getpid(), getattr(signal, "SIG" + spec[1]))


def _train_unit(out, unit: Unit, prog, checkpoint, to_host, bar: Progress, label: str, sig: _Signals,
                in_progress: dict, is_main: bool, on_start=lambda: None, rollback: bool = False) -> str:
    oom_above = os.environ.get("GSWEEP_TEST_OOM_ABOVE")  # test-only: pretend R runs do not fit
    if oom_above and prog.R > int(oom_above):
        raise DeviceOOM(f"RESOURCE_EXHAUSTED: test hook: {prog.R} runs per chunk > {oom_above}")
    from gsweep.train.engine import live_rows
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
            _test_hook("after_part", c + 1)
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


def remove_stale_units(out: Path) -> None:
    """Once every run is finished: part files and checkpoints of units that never finished (superseded
    by --extend or another train.runs_per_chunk) are gsweep's own leftovers; remove them. Only entries
    gsweep verifiably made are removed (:func:`remove_owned`): ``checkpoints/`` or ``parts/`` may be
    links to a scratch disk holding other files, and those stay."""
    done = {f.stem for f in (out / UNITS).glob("*.json")} if (out / UNITS).exists() else set()
    for folder in (PARTS, CKPT):
        remove_owned(out / folder, keep_units=done)


def check_backend() -> None:
    """JAX's devices, or a one-line error (``JAX_PLATFORMS=cuda`` on a host without a GPU) before any work."""
    import jax
    try:
        jax.devices()
    except Exception as e:  # noqa: BLE001 - jax raises RuntimeError, AssertionError, ... here
        msg = (str(e).splitlines() or [""])[0][:200]
        raise UserError(f"JAX could not start a backend (JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}): "
                        f"{type(e).__name__}{': ' + msg if msg else ''}") from None


def ignore_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(s, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
