"""The PyTorch side of the bench: gsweep's own peer (``torch_peer.py`` beside this file, or --peer
PATH), run as a subprocess per measurement so both sides see the same machine load."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from gsweep.bench.recipe import Plan
from gsweep.errors import UserError

DEFAULT_PEER = Path(__file__).resolve().parent / "torch_peer.py"


def resolve_peer(path: str | None) -> Path:
    peer = Path(path).expanduser().resolve() if path else DEFAULT_PEER.resolve()
    if not peer.is_file():
        how = ("give the peer's path with --peer PATH" if path else
               f"the default is {DEFAULT_PEER} (part of gsweep); reinstall gsweep or give another with --peer PATH")
        raise UserError(f"PyTorch peer not found: {peer}: {how}")
    return peer


def run_peer(python: str, peer: Path, mode: str, plan: Plan, precision: str, threads: int | None,
             peer_device: str) -> dict[str, Any]:
    rc = plan.recipe
    models, steps = (plan.loop_models, plan.loop_steps) if mode == "loop" else (plan.vmap_models, plan.vmap_steps)
    cmd = [python, str(peer), "--mode", mode, "--models", str(models), "--steps", str(steps), "--p", str(rc.p),
           "--frac", str(rc.frac), "--lr", str(rc.lr), "--wd", str(rc.weight_decay), "--d-model", str(rc.d_model),
           "--heads", str(rc.heads), "--d-mlp", str(rc.d_mlp), "--device", peer_device]
    if rc.depth != 1:
        cmd += ["--depth", str(rc.depth)]
    if precision == "tf32":
        cmd.append("--tf32")
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    shown = (f"OMP_NUM_THREADS={threads} " if threads is not None else "") + shlex.join(cmd)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=plan.peer_timeout_s)
    except subprocess.TimeoutExpired as e:
        raise UserError(f"the PyTorch peer ran past {plan.peer_timeout_s} s: {shown}") from e
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        hint = (" (PyTorch is missing: install the bench extra, `pip install -e '.[bench]'` or `make bench`)"
                if "No module named 'torch'" in (proc.stderr or "") else "")
        raise UserError(f"the PyTorch peer failed{hint}: {shown}: " + " | ".join(tail))
    out = json.loads(lines[-1])
    out.update(command=shown, wall_s=wall, threads="default" if threads is None else threads,
               loadavg_after=list(os.getloadavg()))
    return out


def _pooled(results: list[dict]) -> float:
    """Model-steps per second over several peer runs: total steps / total time."""
    steps = sum(r["models"] * r["steps"] for r in results)
    secs = sum(r["s_per_model_step"] * r["models"] * r["steps"] for r in results)
    return steps / secs
