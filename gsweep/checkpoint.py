"""Orbax checkpoints of one chunk of runs: the whole stacked RunState and where it stands.

Each chunk of runs (a *unit*) has its own folder ``checkpoints/<unit_id>/`` managed by an orbax
CheckpointManager that keeps the latest two steps (the previous one is what ``--rollback`` restores).
Every saved step's files are checksummed (sha256) into ``checkpoints/<unit_id>.sha256.json``, written
atomically after the data: a step without a recorded checksum is an unfinished save and is skipped,
and a step whose files do not match is refused with an error naming the file. The saved item holds the state pytree (params,
optimizer state, keys, hyperparameters, accumulators) and a JSON record naming the unit, its group
and its runs, so a checkpoint from another sweep is refused rather than silently loaded.
Orbax writes into a temporary folder and renames it when complete, so a kill during a save leaves
the previous checkpoint as the latest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jax

from gsweep import store
from gsweep.errors import UserError

logging.getLogger("absl").setLevel(logging.WARNING)
KEEP = 2


def _ocp():
    import orbax.checkpoint as ocp
    return ocp


def manager(path: Path):
    ocp = _ocp()
    opts = ocp.CheckpointManagerOptions(max_to_keep=KEEP, enable_async_checkpointing=False,
                                        create=True)
    return ocp.CheckpointManager(Path(path).absolute(), options=opts)


def sums_path(path: Path) -> Path:
    path = Path(path)
    return path.parent / f"{path.name}.sha256.json"


def _read_sums(path: Path) -> dict | None:
    """{step: {relative file: sha256}}; None for a checkpoint folder written before checksums."""
    sp = sums_path(path)
    if not sp.exists():
        return None
    d = store.read_json(sp)
    if not isinstance(d, dict):
        raise UserError(f"{sp}: damaged checksum record; start over with --fresh")
    return d


def _file_sums(step_dir: Path) -> dict[str, str]:
    return {str(f.relative_to(step_dir)): store.sha256_file(f) for f in sorted(step_dir.rglob("*")) if f.is_file()}


def _steps(path: Path) -> list[int]:
    try:
        mgr = manager(path)
        steps = sorted(mgr.all_steps())
        mgr.close()
        return steps
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: unreadable checkpoint folder ({type(e).__name__}); start over with --fresh") from e


def committed_steps(path: Path) -> list[int]:
    """Steps whose save finished (checksums recorded), oldest first."""
    path = Path(path)
    if not path.exists():
        return []
    steps = _steps(path)
    sums = _read_sums(path)
    if sums is None:  # written before checksums: orbax's own finished steps
        return steps
    return [s for s in steps if str(s) in sums]


def discard_uncommitted(path: Path) -> None:
    """Remove steps whose save a kill interrupted before their checksums were recorded."""
    path = Path(path)
    if not path.exists() or not sums_path(path).exists() or jax.process_index() != 0:
        return
    ok = set(committed_steps(path))
    for s in _steps(path):
        if s not in ok:
            shutil.rmtree(path / str(s), ignore_errors=True)


def unverified(path: Path) -> bool:
    """A checkpoint folder with steps but no checksum record (written before checksums, or its record
    deleted): nothing in it can be verified, so it is not restored."""
    path = Path(path)
    return path.is_dir() and not sums_path(path).exists() and bool(_steps(path))


def clear(path: Path) -> None:
    """Remove a unit's checkpoints (its own folder, verified as orbax's, and its record) to start it over."""
    from gsweep.train.resultsdir import owned_checkpoint
    path = Path(path)
    if jax.process_index() != 0:
        return
    if path.exists():
        if not owned_checkpoint(path):
            raise UserError(f"{path}: holds files gsweep did not write; move them away (or --fresh)")
        shutil.rmtree(path)
    if sums_path(path).is_file() and not sums_path(path).is_symlink():
        sums_path(path).unlink()


def latest_step(path: Path) -> int | None:
    steps = committed_steps(path)
    return steps[-1] if steps else None


def verify(path: Path, step: int) -> str | None:
    """None when every file of ``step`` matches its recorded checksum, else the first bad file."""
    sums = _read_sums(path)
    if sums is None:
        return None
    want = sums.get(str(step)) or {}
    step_dir = Path(path) / str(step)
    have = _file_sums(step_dir) if step_dir.is_dir() else {}
    for name in sorted(set(want) | set(have)):
        if want.get(name) != have.get(name):
            return str(step_dir / name)
    return None


def save(path: Path, chunk: int, state: Any, record: dict) -> None:
    """Save ``state`` as checkpoint number ``chunk`` (the number of step-chunks done)."""
    ocp = _ocp()
    if jax.process_index() == 0 and not sums_path(path).exists():
        store.write_json(sums_path(path), {})  # checksum era: a step is committed by its record
    mgr = manager(path)
    if os.environ.get("GSWEEP_TEST_KILL") == f"in_checkpoint:{chunk}":
        _kill_when_writing(Path(path), chunk)
    mgr.save(chunk, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            record=ocp.args.JsonSave(record)), force=True)
    mgr.wait_until_finished()
    kept = set(mgr.all_steps())
    mgr.close()
    if jax.process_index() == 0:  # the checksum record commits the step
        sums = _read_sums(path) or {}
        sums = {k: v for k, v in sums.items() if k.isdigit() and int(k) in kept}
        sums[str(chunk)] = _file_sums(Path(path) / str(chunk))
        store.write_json(sums_path(path), sums)


def _kill_when_writing(path: Path, chunk: int) -> None:
    """Test-only fault injection: SIGKILL this process as soon as orbax's temporary folder for
    checkpoint ``chunk`` appears, i.e. while the checkpoint is being written."""
    import signal
    import threading
    import time

    def watch():
        while True:
            time.sleep(0.0005)
            if any(p.name.startswith(f"{chunk}.") and "tmp" in p.name for p in path.iterdir()):
                print(f"GSWEEP_TEST: killed while writing checkpoint {chunk}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

    path.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=watch, daemon=True).start()


def restore(path: Path, target: Any, expect: dict, rollback: bool = False,
            max_step: int | None = None) -> tuple[Any, dict, int]:
    """The latest checkpoint under ``path`` restored onto ``target``'s shapes and shardings, after its
    files are checked against their recorded checksums.

    ``expect`` holds the record fields that must match (unit id, group id, run ids). A damaged latest
    step is an error naming the file; with ``rollback`` the newest step that verifies is restored
    instead (the sweep then recomputes from there: the same numbers, later).
    """
    ocp = _ocp()
    steps = committed_steps(path)
    if max_step is not None:  # later steps are beyond the unit's part files: they are redone
        later = [s for s in steps if s > max_step]
        steps = [s for s in steps if s <= max_step]
        if later and steps and jax.process_index() == 0:
            for s in _steps(path):
                if s > steps[-1]:
                    shutil.rmtree(Path(path) / str(s), ignore_errors=True)
    if not steps:
        raise UserError(f"{path}: no checkpoint to restore")
    step, bad = steps[-1], verify(path, steps[-1])
    if bad is not None:
        good = [s for s in steps[:-1] if verify(path, s) is None]
        if not rollback:
            offer = (f"`gsweep run ... --rollback` restores the previous good checkpoint (step-chunk {good[-1]})"
                     if good else "no earlier good checkpoint is kept")
            raise UserError(f"{bad}: damaged checkpoint (checksum mismatch); {offer}, or --fresh starts over")
        if not good:
            raise UserError(f"{bad}: damaged checkpoint (checksum mismatch) and no earlier good one; "
                            "--fresh starts over")
        print(f"gsweep: {bad}: damaged; rolling back to checkpoint {good[-1]}", file=sys.stderr)
        step = good[-1]
        for s in _steps(path):  # later saves reuse these numbers
            if s > step and jax.process_index() == 0:
                shutil.rmtree(Path(path) / str(s), ignore_errors=True)
    # A checkpoint written before a per-run key or a state field was added lacks it: the saved
    # fields are restored, the rest (and the hyperparameters: the runs' settings, which the record
    # checks) come from ``target``.
    full = target
    saved = _saved_tree(Path(path) / str(step)) if dataclasses.is_dataclass(target) else None
    older = saved is not None and (set(saved) < {f.name for f in dataclasses.fields(target)}
                                   or set(saved.get("hyper", {})) < set(getattr(target, "hyper", {})))
    if older:
        target = {k: getattr(full, k) for k in saved}
        if "hyper" in target:
            target["hyper"] = {k: v for k, v in full.hyper.items() if k in saved["hyper"]}
    mgr = manager(path)
    rows = _saved_rows(path, step)
    refit = rows is not None and rows != _rows(target)
    if refit:  # saved on another device count: another padding of the chunk (the real runs come first)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct((rows, *x.shape[1:]), x.dtype,
                                                               sharding=_replicated(x.sharding)), target)
    else:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                        record=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax raises many kinds
        raise UserError(f"{path}: corrupt or foreign checkpoint ({type(e).__name__}: {str(e)[:200]}); "
                        "start over with --fresh") from e
    finally:
        mgr.close()
    record = dict(out["record"])
    for k, v in expect.items():
        if record.get(k) != v:
            raise UserError(f"{path}: checkpoint belongs to another sweep ({k} differs); start over with --fresh")
    state = _refit_rows(out["state"], target, len(expect.get("run_ids") or ())) if refit else out["state"]
    state = full.replace(**{**state, "hyper": full.hyper}) if older else state
    return state, record, int(step)


def _rows(tree: Any) -> int | None:
    """The run axis (leading) length of a state pytree."""
    leaves = jax.tree.leaves(tree)
    return int(leaves[0].shape[0]) if leaves and leaves[0].ndim else None


def _saved_rows(path: Path, step: int) -> int | None:
    """The run axis length of checkpoint ``step`` (R of the chunk it was saved from), from orbax's
    metadata; None where it cannot be read (then the target's shapes are used as they are)."""
    try:
        md = _ocp().StandardCheckpointer().metadata((Path(path) / str(step) / "state").absolute())
        tree = getattr(md, "item_metadata", md)
        shapes = [x.shape for x in jax.tree.leaves(tree, is_leaf=lambda x: hasattr(x, "shape"))
                  if hasattr(x, "shape") and len(x.shape)]
        return int(shapes[0][0]) if shapes else None
    except Exception:  # noqa: BLE001 - an older orbax: no refit, the restore checks the shapes itself
        return None


def _replicated(sharding):
    from jax.sharding import NamedSharding, PartitionSpec
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec())
    return sharding


def _refit_rows(saved: Any, target: Any, n_real: int) -> Any:
    """``target`` (the new chunk's initial state, its shapes and shardings) with its first rows, the
    unit's ``n_real`` runs and as many padding rows as both have, taken from ``saved`` (a checkpoint
    of the same unit at another R: another device count pads the chunk to another multiple). Padding
    rows are copies that no result reads."""
    import numpy as np

    from gsweep.train.engine import put_global, to_host

    def fit(s, t):
        s_host, t_host = np.asarray(to_host(s)), np.array(to_host(t))
        k = min(len(s_host), len(t_host))
        if k < n_real:
            raise UserError(f"checkpoint holds {k} rows for a unit of {n_real} runs; start over with --fresh")
        t_host[:k] = s_host[:k]
        return put_global(t_host, t.sharding)

    return jax.tree.map(fit, saved, target)


def _saved_tree(step_dir: Path) -> dict | None:
    """The saved state's tree of fields (from orbax's metadata); None when unreadable."""
    try:
        md = _ocp().StandardCheckpointHandler().metadata(step_dir / "state")
        tree = getattr(md, "tree", md)
        return {k: tree[k] for k in tree}
    except Exception:  # noqa: BLE001 - no metadata: restore as saved, orbax names any mismatch
        return None
