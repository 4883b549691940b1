"""`gsweep run`: a sweep spec -> groups -> chunks of runs -> results dir, resumable at any point.

Work is planned as *units*: consecutive slices of one group's runs, each trained by that group's
compiled program from step 0 to the budget. A unit checkpoints every ``train.checkpoint_every``
step-chunks, appends its curve rows per step-chunk under ``parts/``, and leaves a record under
``units/`` when finished. The plan depends only on the spec and on which units are finished, so
a resumed sweep rebuilds the same units and continues the unfinished one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels
from gsweep.spec import ENGINE_ONLY, Run, SweepSpec, from_dict, load_spec

PARTS, UNITS, CKPT, LOCK = "parts", "units", "checkpoints", ".lock"


class Interrupted(Exception):
    pass


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
        except ValueError:
            raise UserError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4") from None
        if not (n >= 1 and 0 <= i < n):
            raise UserError(f"--shard {text!r}: need 0 <= I < N")
        return Shard(i, n)
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        tid, lo = int(env["SLURM_ARRAY_TASK_ID"]), int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        n = int(env["SLURM_ARRAY_TASK_COUNT"])
        return Shard(tid - lo, n)
    return None


def run_cost(run: Run) -> float:
    """Relative cost of a run: model-steps times a crude per-step size."""
    s = run.settings
    width = s.get("model.d_model", 128) * s.get("model.depth", 1) + s.get("model.d_mlp", 512)
    return float(s["train.steps"]) * width


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


# ----------------------------------------------------------------------------------------------
# the results dir: spec comparison and lock


def spec_diff(old: dict, new: dict, prefix: str = "") -> str:
    """One line per differing leaf: ``  train.lr: 0.001 -> 0.01``."""
    lines = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}{k}"
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            sub = spec_diff(a, b, key + ".")
            if sub:
                lines.append(sub)
        elif a != b:
            lines.append(f"  {key}: {a} -> {b}")
    return "\n".join(lines)


def check_existing(out: Path, spec: SweepSpec, fresh: bool, extend: bool, shard: Shard | None) -> str:
    """'new', 'resume' or 'extend' for this results dir; an error when the spec changed."""
    if not (out / store.SPEC).exists():
        if out.exists() and any(p.name not in (LOCK,) for p in out.iterdir()):
            raise UserError(f"{out}: exists and is not a gsweep results dir; choose another --out")
        return "new"
    if fresh:
        return "new"
    old = store.read_spec_yaml(out)
    new = spec.to_dict()
    meta = store.read_json(out / store.META) if (out / store.META).exists() else {}
    old_shard = meta.get("shard")
    new_shard = dataclasses.asdict(shard) if shard else None
    if old_shard != new_shard:
        raise UserError(f"{out}: holds shard {old_shard} but this run is shard {new_shard}; use another --out")
    if old == new:
        return "resume"
    if not extend:
        raise UserError(f"{out}: the spec differs from the one this results dir was made with:\n"
                        f"{spec_diff(old, new)}\nuse --extend (if it only adds runs), --fresh to start over, "
                        "or another --out")
    old_ids = {r.run_id for r in from_dict(old, str(out / store.SPEC)).runs()}
    new_ids = {r.run_id for r in spec.runs()}
    lost = old_ids - new_ids
    if lost:
        raise UserError(f"{out}: --extend only adds runs, but {len(lost)} finished run(s) are not in the new "
                        f"spec (changed keys?):\n{spec_diff(old, new)}")
    return "extend"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """``RESULTS_DIR/.lock``: one writer per results dir. A dead holder on this host is broken."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.held = False

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, json.JSONDecodeError):
                    holder = {}
                if holder.get("host") == me["host"] and holder.get("pid") and not _pid_alive(int(holder["pid"])):
                    print(f"gsweep: breaking stale lock of dead process {holder['pid']} on {holder['host']}",
                          file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                raise UserError(f"{self.path.parent}: another sweep is writing here (pid {holder.get('pid')} on "
                                f"host {holder.get('host')}, since {holder.get('since')}); wait for it or stop it") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise UserError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{out}: results dir is not writable ({e.strerror})") from None


# ----------------------------------------------------------------------------------------------
# progress


class Progress:
    """One line on stderr: group, steps, ETA and model-steps/s (redrawn in place on a terminal)."""

    def __init__(self, total_model_steps: int, enabled: bool = True):
        self.total = max(1, total_model_steps)
        self.done = 0
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.rate_done = 0
        self.rate_t0: float | None = None

    def update(self, label: str, step: int, steps: int, model_steps: int, final: bool = False) -> None:
        self.done += model_steps
        now = time.perf_counter()
        if self.rate_t0 is None:  # the first chunk includes compilation: rate from the second on
            self.rate_t0 = now
        else:
            self.rate_done += model_steps
        if not self.enabled or (not final and not self.tty and now - self.last < 2.0):
            return
        self.last = now
        rate = self.rate_done / max(now - self.rate_t0, 1e-9) if self.rate_done else 0.0
        frac = self.done / self.total
        eta = (self.total - self.done) / rate if rate else float("nan")
        bar = "█" * int(24 * frac) + "░" * (24 - int(24 * frac))
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "--:--:--"
        line = (f"{label} step {step}/{steps} {bar} {100 * frac:5.1f}%  ETA {eta_s}  "
                f"{rate:,.0f} model-steps/s")
        print(("\r" + line + " " * 4) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# tables


def unit_record_path(out: Path, unit_id: str) -> Path:
    return out / UNITS / f"{unit_id}.json"


def finished_runs(out: Path) -> dict[str, dict]:
    """run_id -> {status, steps_done, diverged_step} of every run in a finished unit."""
    res: dict[str, dict] = {}
    d = out / UNITS
    if d.exists():
        for f in sorted(d.glob("*.json")):
            rec = store.read_json(f)
            for rid, info in rec["runs"].items():
                res[rid] = info
    return res


def curve_rows(unit: Unit, steps: np.ndarray, host: dict, split_names: Sequence[str],
               diverged_at: np.ndarray) -> pd.DataFrame:
    """Long-format rows for the unit's real runs (padding dropped), cut at each run's divergence."""
    n, E, S = len(unit.runs), len(steps), len(split_names)
    if E == 0:
        return pd.DataFrame()
    rid = np.array([r.run_id for r in unit.runs], dtype=object)
    shape = (E, n, S)
    df = pd.DataFrame({
        "run_id": np.broadcast_to(rid[None, :, None], shape).ravel(),
        "step": np.broadcast_to(steps[:, None, None], shape).ravel().astype(np.int64),
        "split": np.broadcast_to(np.array(split_names, dtype=object)[None, None, :], shape).ravel(),
        "loss": host["loss"][:, :n].astype(np.float64).ravel(),
        "acc": host["acc"][:, :n].astype(np.float64).ravel(),
    })
    for k in ("weight_norm", "train_loss_mean", "train_loss_osc", "fourier_sparsity"):
        df[k] = np.broadcast_to(host[k][:, :n, None], shape).ravel().astype(np.float64)
    div = np.broadcast_to(diverged_at[None, :n, None], shape).ravel()
    keep = (div < 0) | (df["step"].to_numpy() < div)
    return df[keep].reset_index(drop=True)


def build_tables(out: Path, runs: Sequence[Run], spec: SweepSpec,
                 progress_of: dict[str, dict] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs.parquet and curves.parquet from the part files and unit records."""
    ids = {r.run_id for r in runs}
    parts = sorted((out / PARTS).glob("*.parquet")) if (out / PARTS).exists() else []
    frames = [pd.read_parquet(p) for p in parts]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["run_id", "step", "split", "loss", "acc", "weight_norm", "train_loss_mean", "train_loss_osc",
                 "fourier_sparsity"])
    curves = store.sort_curves(curves[curves["run_id"].isin(ids)])
    fin = finished_runs(out)
    rows = []
    for r in runs:
        info = fin.get(r.run_id) or (progress_of or {}).get(r.run_id) or {"status": "pending", "steps_done": 0,
                                                                            "diverged_step": None}
        settings = {k: v for k, v in r.settings.items() if k not in ENGINE_ONLY}
        rows.append({"run_id": r.run_id, "group_id": r.group_id, **settings, "status": info["status"],
                     "steps_done": int(info["steps_done"]), "diverged_step": info.get("diverged_step")})
    table = pd.DataFrame(rows)
    table["diverged_step"] = pd.array(table["diverged_step"].tolist(), dtype="Int64")
    a = spec.analysis
    labels = compute_labels(curves, table, a["threshold"], a["gap"], a["gap_mode"])
    table = pd.concat([table, labels], axis=1)
    return store.sort_runs(table), curves


def write_tables(out: Path, runs: Sequence[Run], spec: SweepSpec, progress_of=None) -> pd.DataFrame:
    table, curves = build_tables(out, runs, spec, progress_of)
    store.write_parquet(out / store.CURVES, curves)
    store.write_parquet(out / store.RUNS, table)
    return table


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
    """SIGINT/SIGTERM: finish the chunk in flight, checkpoint, write the tables, exit non-zero."""

    def __init__(self):
        self.caught: int | None = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.caught is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.caught = signum
        print(f"\ngsweep: {signal.Signals(signum).name} received: finishing the chunk in flight, then "
              "checkpointing", file=sys.stderr)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def run_sweep(spec: SweepSpec, out: Path, *, fresh: bool = False, extend: bool = False, shard: Shard | None = None,
              progress: bool = True, command: str = "", n_devices: int | None = None) -> SweepResult:
    """Train every run of ``spec`` (or of its shard) into ``out``; resumes what is there.

    ``n_devices`` limits the mesh to the first N devices (tests compare 1 device with several).
    """
    import jax

    from gsweep import checkpoint
    from gsweep.train.engine import TRACE_COUNT, GroupProgram, make_mesh, to_host
    from gsweep.train.memory import size_runs_per_chunk

    is_main = jax.process_index() == 0
    mode = check_existing(out, spec, fresh, extend, shard)  # raises before anything is written
    check_writable(out)
    lock = Lock(out)
    if is_main:
        lock.acquire()
    try:
        if mode == "new" and fresh and (out / store.SPEC).exists() and is_main:
            for p in list(out.iterdir()):
                if p.name != LOCK:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gsweep:fresh")
        enable_compilation_cache()
        runs_all = spec.runs()
        mine = shard_runs(runs_all, shard)
        fin = finished_runs(out)
        todo = [r for r in mine if r.run_id not in fin]
        mesh = make_mesh(jax.devices()[:n_devices] if n_devices else None)
        meta = {
            "name": spec.name, "status": "running", "started": _now(), "finished": None, "command": command,
            "host": socket.gethostname(), "pid": os.getpid(), "versions": versions(),
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "process_count": jax.process_count(),
            "precision": sorted({r.settings["train.precision"] for r in runs_all}),
            "swept_keys": spec.swept_keys, "n_runs": len(mine), "shard": dataclasses.asdict(shard) if shard else None,
            "mode": mode, "groups": {},
        }
        old_meta = store.read_json(out / store.META) if (out / store.META).exists() and mode != "new" else {}
        meta["history"] = old_meta.get("history", []) + [{"started": meta["started"], "mode": mode}]
        started = []

        def on_start():
            """Write spec and meta once the first unit has restored (or started) cleanly: a corrupt or
            foreign checkpoint is refused before anything in the results dir changes."""
            if is_main and not started:
                store.write_text(out / store.SPEC, spec.to_yaml())
                store.write_json(out / store.META, meta)
            started.append(True)

        if not todo:
            on_start()
        groups = group_runs(mine)
        pending_groups = {g: [r for r in rs if r.run_id not in fin] for g, rs in groups.items()}
        total = sum(r.settings["train.steps"] for r in todo)
        prog_bar = Progress(total, enabled=progress and is_main)
        in_progress: dict[str, dict] = {}
        status = "done"
        with _Signals() as sig:
            for gi, (gid, grp) in enumerate(groups.items()):
                if not pending_groups[gid]:
                    continue
                full_group = [r for r in runs_all if r.group_id == gid]  # fixes shapes for any shard/extension
                t_compile = time.perf_counter()
                prog = GroupProgram(gid, full_group, runs_per_chunk=mesh.devices.size, mesh=mesh,
                                    batching=grp[0].settings.get("train.batching", "auto"))
                sizing = size_runs_per_chunk(prog, len(grp), int(grp[0].settings["train.runs_per_chunk"]))
                prog.resize(sizing.runs_per_chunk)
                meta["groups"][gid] = {"runs": len(grp), "runs_per_chunk": prog.R, "chunk_steps": prog.K,
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
                                             in_progress, is_main, on_start)
                            if "compile_s" not in meta["groups"][gid]:
                                meta["groups"][gid]["compile_s"] = round(time.perf_counter() - t_compile, 2)
                            if st == "interrupted":
                                break
                        break
                    except Exception as e:  # noqa: BLE001 - only device out-of-memory is retried
                        if not is_oom(e) or prog.R <= mesh.devices.size:
                            raise
                        half = max(mesh.devices.size, prog.R // 2)
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
            table = write_tables(out, mine, spec, in_progress)
            meta.update(status=status, finished=_now())
            store.write_json(out / store.META, meta)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gsweep:end")
        if status == "interrupted":
            raise Interrupted(f"interrupted by {signal.Signals(sig.caught).name}; checkpoint and tables written. "
                              f"Resume with the same command: {command or 'gsweep run ... --out ' + str(out)}")
        return SweepResult(out, table, status)
    finally:
        lock.release()


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
                in_progress: dict, is_main: bool, on_start=lambda: None) -> str:
    oom_above = os.environ.get("GSWEEP_TEST_OOM_ABOVE")  # test-only: pretend R runs do not fit
    if oom_above and prog.R > int(oom_above):
        raise DeviceOOM(f"RESOURCE_EXHAUSTED: test hook: {prog.R} runs per chunk > {oom_above}")
    ckpt_dir = out / CKPT / unit.unit_id
    every = int(unit.runs[0].settings["train.checkpoint_every"])
    u = prog.unit_arrays(unit.runs)
    states = prog.init_states(u)
    start = 0
    record = {"unit_id": unit.unit_id, "group_id": unit.group_id, "run_ids": [r.run_id for r in unit.runs]}
    if checkpoint.latest_step(ckpt_dir) is not None:
        states, _, start = checkpoint.restore(ckpt_dir, states, record)
        print(f"gsweep: {label} resuming at step {min(start * prog.K, prog.steps)} from {ckpt_dir}",
              file=sys.stderr)
        bar.done += min(start * prog.K, prog.steps) * len(unit.runs)
    on_start()
    if is_main:  # rows written after the checkpoint are recomputed
        for p in (out / PARTS).glob(f"{unit.unit_id}-*.parquet"):
            if int(p.stem.rsplit("-", 1)[1]) >= start:
                p.unlink()
    diverged = np.full(len(unit.runs), -1)
    for c in range(start, prog.n_chunks):
        states, host, steps = prog.train_chunk(states, c, u)
        diverged = to_host(states.diverged_at)[: len(unit.runs)]
        if is_main:
            rows = curve_rows(unit, steps, host, prog.split_names, diverged)
            store.write_parquet(out / PARTS / f"{unit.unit_id}-{c:05d}.parquet", rows)
            _test_hook("after_part", c + 1)
        done_steps = min((c + 1) * prog.K, prog.steps)
        last = c == prog.n_chunks - 1
        if (c + 1) % every == 0 or last or sig.caught:
            checkpoint.save(ckpt_dir, c + 1, states, record)
        bar.update(label, done_steps, prog.steps, (done_steps - min(c * prog.K, prog.steps)) * len(unit.runs),
                   final=last)
        for r, d in zip(unit.runs, diverged, strict=True):
            in_progress[r.run_id] = _run_info(int(d), done_steps, finished=False)
        if sig.caught and not last:
            return "interrupted"
    if is_main:
        recs = {r.run_id: _run_info(int(d), prog.steps, finished=True) for r, d in zip(unit.runs, diverged, strict=True)}
        store.write_json(unit_record_path(out, unit.unit_id), {"unit_id": unit.unit_id, "group_id": unit.group_id,
                                                               "runs": recs})
    return "done"


def _run_info(diverged_at: int, steps_done: int, finished: bool) -> dict:
    if diverged_at >= 0:
        return {"status": "diverged", "steps_done": max(0, diverged_at - 1), "diverged_step": diverged_at}
    return {"status": "done" if finished else "running", "steps_done": steps_done, "diverged_step": None}


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
    spec = load_spec(args.sweep, args.set)  # every spec error before anything else
    if args.fresh and args.extend:
        raise UserError("--fresh and --extend contradict each other; pick one")
    shard = parse_shard(args.shard)
    if shard and (args.coordinator or args.distributed):
        raise UserError("--shard and jax.distributed are two ways to split a sweep; use one")
    out = Path(args.out) if args.out else Path("results") / spec.name
    init_distributed(args)
    cmd = "gsweep " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0] else ""
    try:
        res = run_sweep(spec, out, fresh=args.fresh, extend=args.extend, shard=shard, progress=not args.quiet,
                        command=cmd)
    except Interrupted as e:
        print(f"gsweep: {e}", file=sys.stderr)
        return 130
    import jax
    where = spec.analysis.get("snapshot_where")
    if where and jax.process_index() == 0 and res.runs is not None:
        from gsweep.inspect import snapshot_runs
        ids = snapshot_runs(out, res.runs, where, spec.analysis.get("snapshot_steps") or "log")
        print(f"{out}: parameter snapshots of {len(ids)} run(s) under {out}/replays/")
    if jax.process_index() == 0 and res.runs is not None:
        r = res.runs
        counts = r["phase"].value_counts(dropna=True).to_dict()
        div = int((r["status"] == "diverged").sum())
        print(f"{out}: {len(r)} runs; phases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
              + (f"; diverged {div}" if div else ""))
    return 0
