"""Orbax checkpoints of one chunk of runs: the whole stacked RunState and where it stands.

Each chunk of runs (a *unit*) has its own folder ``checkpoints/<unit_id>/`` managed by an orbax
CheckpointManager that keeps the latest step only. The saved item holds the state pytree (params,
optimizer state, keys, hyperparameters, accumulators) and a JSON record naming the unit, its group
and its runs, so a checkpoint from another sweep is refused rather than silently loaded.
Orbax writes into a temporary folder and renames it when complete, so a kill during a save leaves
the previous checkpoint as the latest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jax

from gsweep.errors import UserError

logging.getLogger("absl").setLevel(logging.WARNING)


def _ocp():
    import orbax.checkpoint as ocp
    return ocp


def manager(path: Path):
    ocp = _ocp()
    opts = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False,
                                        create=True)
    return ocp.CheckpointManager(Path(path).absolute(), options=opts)


def latest_step(path: Path) -> int | None:
    path = Path(path)
    if not path.exists():
        return None
    try:
        return manager(path).latest_step()
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: unreadable checkpoint folder ({e}); start over with --fresh") from e


def save(path: Path, chunk: int, state: Any, record: dict) -> None:
    """Save ``state`` as checkpoint number ``chunk`` (the number of step-chunks done)."""
    ocp = _ocp()
    mgr = manager(path)
    if os.environ.get("GSWEEP_TEST_KILL") == f"in_checkpoint:{chunk}":
        _kill_when_writing(Path(path), chunk)
    mgr.save(chunk, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            record=ocp.args.JsonSave(record)), force=True)
    mgr.wait_until_finished()
    mgr.close()


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


def restore(path: Path, target: Any, expect: dict) -> tuple[Any, dict, int]:
    """The latest checkpoint under ``path`` restored onto ``target``'s shapes and shardings.

    ``expect`` holds the record fields that must match (unit id, group id, run ids).
    """
    ocp = _ocp()
    mgr = manager(path)
    step = mgr.latest_step()
    if step is None:
        raise UserError(f"{path}: no checkpoint to restore")
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
    return out["state"], record, int(step)
