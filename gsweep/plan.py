"""``gsweep plan SWEEP.yaml``: what a sweep will cost on this machine's device, before it runs.

Per group of the sweep: its runs, the runs per chunk that ``gsweep run`` will choose (the same
sizing from the compiled chunk program, :mod:`gsweep.train.memory`), the compiled program's bytes
per device, the model-steps, and a wall-time estimate from a short probe: the group's program is
compiled at ``probe_steps`` steps per chunk and three chunks are run on this device (the first
compiles; the second has no evaluation and gives the seconds per step; the third ends with one
evaluation, and the difference gives the seconds per evaluation). Under ``vmap`` batching the probe
runs the chosen runs per chunk; under ``map`` (runs one after another on a device) it runs one run
per device and scales linearly. The estimate is

    compile + chunks of runs x (R / R_probe) x (steps x s_per_step + evaluations x s_per_eval)

and leaves out checkpoint writes, table writing and the first steps' warm-up.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

from gsweep.spec import Run, SweepSpec
from gsweep.train.memory import SHARE


@dataclasses.dataclass
class GroupPlan:
    group_id: str
    runs: int
    runs_per_chunk: int
    batching: str
    compiled_bytes: int
    model_steps: int
    evals_per_run: int
    probe_runs: int
    s_per_step: float  # one step of probe_runs runs
    s_per_eval: float  # one evaluation of probe_runs runs
    compile_s: float
    estimate_s: float
    probe_s: float
    sizing: dict[str, Any]


def format_duration(s: float) -> str:
    """12.3 -> '12 s', 372 -> '6 min 12 s', 7300 -> '2 h 1 min'."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def _probe_runs(runs: Sequence[Run], n: int, k: int) -> list[Run]:
    """n runs of the group (repeated if the group is smaller) reshaped to a 3k-step probe: an
    evaluation every k steps, k steps per chunk."""
    over = {"train.steps": 3 * k, "train.eval_every": k, "train.early_evals": 0, "train.chunk_steps": k}
    picked = [runs[i % len(runs)] for i in range(n)]
    return [dataclasses.replace(r, settings={**r.settings, **over}) for r in picked]


def plan_group(group_id: str, runs: Sequence[Run], mesh, probe_steps: int = 5) -> GroupPlan:
    import jax

    from gsweep.train.engine import GroupProgram, eval_schedule
    from gsweep.train.memory import size_runs_per_chunk

    t0 = time.perf_counter()
    rep = runs[0].settings
    prog = GroupProgram(group_id, runs, runs_per_chunk=mesh.devices.size, mesh=mesh,
                        batching=rep.get("train.batching", "auto"))
    sizing = size_runs_per_chunk(prog, len(runs), int(rep["train.runs_per_chunk"]))
    R, n_dev = sizing.runs_per_chunk, prog.n_dev
    steps = int(rep["train.steps"])
    n_evals = len(eval_schedule(steps, int(rep["train.eval_every"]), int(rep["train.early_evals"])))

    k = max(1, min(probe_steps, steps))
    r_probe = R if prog.batching == "vmap" else n_dev
    probe = GroupProgram(f"{group_id}-probe", _probe_runs(runs, r_probe, k), runs_per_chunk=r_probe, mesh=mesh,
                         batching=prog.batching)
    probe.flags_CxK[1] = False  # chunk 1: no evaluation (chunks 0 and 2 end with one)
    u = probe.unit_arrays(_probe_runs(runs, r_probe, k))
    st = jax.block_until_ready(probe.init_states(u))
    times = []
    for c in range(3):
        t = time.perf_counter()
        st, _, _ = probe.train_chunk(st, c, u)  # metrics come back to the host: synced
        jax.block_until_ready(st)
        times.append(time.perf_counter() - t)
    s_step = times[1] / k
    s_eval = max(0.0, times[2] - times[1])
    compile_s = max(0.0, times[0] - times[2])
    chunks = math.ceil(len(runs) / R)
    est = compile_s + chunks * (R / r_probe) * (steps * s_step + n_evals * s_eval)
    return GroupPlan(group_id, len(runs), R, prog.batching, sizing.compiled_bytes, len(runs) * steps, n_evals,
                     r_probe, s_step, s_eval, compile_s, est, time.perf_counter() - t0, sizing.meta())


def plan_sweep(spec: SweepSpec, probe_steps: int = 5, n_devices: int | None = None) -> list[GroupPlan]:
    """A :class:`GroupPlan` per group of ``spec``, probed on this machine's devices."""
    import jax

    from gsweep.train.engine import make_mesh
    from gsweep.train.sweep import enable_compilation_cache, group_runs

    enable_compilation_cache()
    mesh = make_mesh(jax.devices()[:n_devices] if n_devices else None)
    return [plan_group(gid, grp, mesh, probe_steps) for gid, grp in group_runs(spec.runs()).items()]


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def render(spec: SweepSpec, plans: Sequence[GroupPlan], device: str, probe_wall_s: float,
           probe_steps: int = 5) -> str:
    head = ("group", "runs", "runs/chunk", "batching", "compiled/chunk", "model-steps", "s/step (probe)",
            "compile", "estimate")
    rows = [(p.group_id, str(p.runs), str(p.runs_per_chunk), p.batching, _mib(p.compiled_bytes),
             f"{p.model_steps:,}", f"{p.s_per_step:.3g} ({p.probe_runs} runs)", format_duration(p.compile_s),
             format_duration(p.estimate_s)) for p in plans]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r))  # noqa: E731
    src = plans[0].sizing["memory_limit_source"] if plans else ""
    budget = plans[0].sizing["memory_budget_bytes"] if plans else 0
    total = sum(p.estimate_s for p in plans)
    out = [f"gsweep plan: sweep {spec.name!r} on {device}", line(head), *map(line, rows),
           f"total: {sum(p.runs for p in plans)} runs in {len(plans)} group(s), "
           f"{sum(p.model_steps for p in plans):,} model-steps, estimated {format_duration(total)}",
           f"memory: each chunk program compiled to fit {_mib(budget)} per device ({SHARE:.0%} of {src})",
           (f"how: each group's program compiled and run for 3 chunks of {probe_steps} "
            "steps on this device (the first compiles, the second times the steps, the third adds one "
            "evaluation); map batching probed at one run per device and scaled linearly; checkpoint and "
            "table writes not counted") if plans else "",
           f"probe took {format_duration(probe_wall_s)}"]
    return "\n".join(out)


def plan_command(args) -> int:
    from gsweep.errors import UserError
    from gsweep.spec import load_spec

    spec = load_spec(args.sweep, args.set)  # every spec error before anything else
    if args.probe_steps < 1:
        raise UserError(f"--probe-steps must be at least 1, got {args.probe_steps}")
    import jax

    t0 = time.perf_counter()
    plans = plan_sweep(spec, probe_steps=args.probe_steps)
    dev = jax.devices()[0]
    device = f"{len(jax.devices())} x {dev.device_kind} ({jax.default_backend()})"
    print(render(spec, plans, device, time.perf_counter() - t0, args.probe_steps))
    return 0
