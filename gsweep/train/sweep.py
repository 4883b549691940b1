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
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.spec import SweepSpec, load_spec
from gsweep.train.progress import Progress
from gsweep.train.resultsdir import (  # noqa: F401
    CKPT,
    LOCK,
    PARTS,
    UNITS,
    Lock,
    _now,
    check_existing,
    check_out_path,
    check_writable,
    clear_for_fresh,
    clear_stale_temps,
    merged_meta,
    spec_diff,
)
from gsweep.train.tables import (  # noqa: F401
    build_tables,
    curve_rows,
    finished_runs,
    part_path,
    remove_part,
    unit_record_path,
    verify_parts,
    write_part,
    write_tables,
)
from gsweep.train.units import Shard, Unit, group_runs, parse_shard, plan_units, run_cost, shard_runs  # noqa: F401


class Interrupted(Exception):
    pass


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

    def __enter__(self):
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
                os._exit(130)
        self.caught = signum
        print(f"\ngsweep: {signal.Signals(signum).name} received: finishing the chunk in flight, then "
              "checkpointing (a second signal stops at once)", file=sys.stderr)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


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
    verify_parts(out)  # a damaged unit record or part file is refused here, before anything changes
    check_writable(out)
    lock = Lock(out)
    if is_main:
        lock.acquire()
    try:
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
        meta = {
            "name": spec.name, "status": "running", "started": _now(), "finished": None, "command": command,
            "host": socket.gethostname(), "pid": os.getpid(), "versions": versions(),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "process_count": jax.process_count(),
            "run_devices": int(mesh.devices.size), "cpu_devices": cpu_devices_rule(),
            "precision": sorted({r.settings["train.precision"] for r in runs_all}),
            "swept_keys": spec.swept_keys, "n_runs": len(mine), "shard": dataclasses.asdict(shard) if shard else None,
            "mode": mode, "groups": {},
        }
        started = []

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

        with _Signals() as sig:
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
                        if not is_oom(e) or prog.R <= prog.n_dev:
                            raise
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
            table = write_tables(out, mine, spec, in_progress)
            meta.update(status=status, finished=_now())
            store.write_json(out / store.META, merged_meta(old_meta, meta))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gsweep:end")
        if status == "interrupted":
            raise Interrupted(f"interrupted by {signal.Signals(sig.caught).name}; checkpoint and tables written. "
                              f"Resume with the same command: {command or 'gsweep run ... --out ' + str(out)}")
        return SweepResult(out, table, status)
    finally:
        lock.release()


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


def _train_unit(out, unit: Unit, prog, checkpoint, to_host, bar: Progress, label: str, sig: _Signals,
                in_progress: dict, is_main: bool, on_start=lambda: None, rollback: bool = False) -> str:
    oom_above = os.environ.get("GSWEEP_TEST_OOM_ABOVE")  # test-only: pretend R runs do not fit
    if oom_above and prog.R > int(oom_above):
        raise DeviceOOM(f"RESOURCE_EXHAUSTED: test hook: {prog.R} runs per chunk > {oom_above}")
    from gsweep.train.engine import live_rows
    ckpt_dir = out / CKPT / unit.unit_id
    every = int(unit.runs[0].settings["train.checkpoint_every"])
    u = prog.unit_arrays(unit.runs)
    states = prog.init_states(u)
    start = 0
    record = {"unit_id": unit.unit_id, "group_id": unit.group_id, "run_ids": [r.run_id for r in unit.runs]}
    checkpoint.discard_uncommitted(ckpt_dir)
    if checkpoint.latest_step(ckpt_dir) is not None:
        states, _, start = checkpoint.restore(ckpt_dir, states, record, rollback=rollback)
        print(f"gsweep: {label} resuming at step {min(start * prog.K, prog.steps)} from {ckpt_dir}",
              file=sys.stderr)
        bar.done += min(start * prog.K, prog.steps) * len(unit.runs)
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
            write_part(part_path(out, unit.unit_id, c), rows_df)
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
        store.write_json(unit_record_path(out, unit.unit_id), {"unit_id": unit.unit_id, "group_id": unit.group_id,
                                                               "runs": recs})
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
    by --extend or another train.runs_per_chunk) are gsweep's own leftovers; remove them."""
    done = {f.stem for f in (out / UNITS).glob("*.json")} if (out / UNITS).exists() else set()
    if (out / PARTS).exists():
        for p in (out / PARTS).glob("*.parquet"):
            if p.stem.rsplit("-", 1)[0] not in done:
                remove_part(p)
    if (out / CKPT).exists():
        for d in (out / CKPT).iterdir():
            uid = d.name.split(".", 1)[0]
            if uid not in done and d.name.startswith("u"):
                shutil.rmtree(d) if d.is_dir() else d.unlink(missing_ok=True)


def init_distributed(args) -> None:
    import jax
    if args.coordinator or args.distributed:
        if args.coordinator and (args.num_processes is None or args.process_id is None):
            raise UserError("--coordinator needs --num-processes and --process-id")
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except Exception:  # noqa: BLE001 - older/newer jax: the default may already work
            pass
        if args.coordinator:
            jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
        else:
            jax.distributed.initialize()


def run_command(args) -> int:
    spec = load_spec(args.sweep, args.set, allow_large=getattr(args, "allow_large", False))  # every spec error first
    if args.fresh and args.extend:
        raise UserError("--fresh and --extend contradict each other; pick one")
    if args.fresh and getattr(args, "rollback", False):
        raise UserError("--fresh and --rollback contradict each other; pick one")
    shard = parse_shard(args.shard)
    if shard and (args.coordinator or args.distributed):
        raise UserError("--shard and jax.distributed are two ways to split a sweep; use one")
    out = Path(args.out) if args.out else Path("results") / spec.name
    check_out_path(out)
    init_distributed(args)
    cmd = "gsweep " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0] else ""
    try:
        res = run_sweep(spec, out, fresh=args.fresh, extend=args.extend, shard=shard, progress=not args.quiet,
                        command=cmd, rollback=getattr(args, "rollback", False))
    except Interrupted as e:
        print(f"gsweep: {e}", file=sys.stderr)
        return 130
    import jax
    where = spec.analysis.get("snapshot_where")
    if where and jax.process_index() == 0 and res.runs is not None:
        from gsweep.replay import snapshot_runs
        ids = snapshot_runs(out, res.runs, where, spec.analysis.get("snapshot_steps") or "log")
        print(f"{out}: parameter snapshots of {len(ids)} run(s) under {out}/replays/")
    if jax.process_index() == 0 and res.runs is not None:
        r = res.runs
        counts = r["phase"].value_counts(dropna=True).to_dict()
        div = int((r["status"] == "diverged").sum())
        print(f"{out}: {len(r)} runs; phases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; diverged {div}" if div else ""))
        follow_ups(out, phase_diagram=getattr(args, "phase_diagram", False), report=getattr(args, "report", False))
    return 0


def follow_ups(out: Path, phase_diagram: bool = False, report: bool = False) -> None:
    """``gsweep run --phase-diagram --report``: after the sweep, in this process, exactly what
    ``gsweep plot phase-diagram OUT`` and ``gsweep report OUT`` do (one interpreter start and one
    set of imports for the three, which is what ``make sweep`` runs)."""
    argvs = ([["plot", "phase-diagram", str(out)]] if phase_diagram else []) + ([["report", str(out)]] if report else [])
    if not argvs:
        return
    from gsweep.cli import build_parser
    for argv in argvs:
        a = build_parser().parse_args(argv)
        a.fn(a)
