"""``gsweep plan SWEEP.yaml``: what a sweep will cost on this machine's device, before it runs.

Per group of the sweep: its runs, the runs per chunk that ``gsweep run`` will choose, the chunk
program's bytes per device, the model-steps, and a wall-time estimate from a short probe. One
program per group is compiled for the probe and run on this device: the group's step and
evaluation at ``probe_steps`` steps per call (default 1), on the group's widest training set (the
width every chunk of the group is padded to), under ``vmap`` at the chosen runs per chunk, under
``map`` (runs one after another on a device) for one run on one device, scaled linearly. The
calls: one with an evaluation first (it pays the first call's one-time costs), then calls without
one, repeated for about ``TIME_BUDGET_S`` (at least one) for the seconds per step, then, where it
is cheap or matters to the estimate, calls with one for the seconds per evaluation (else the first
call bounds it from above). The probe's runs start from one run's parameters drawn on the host
(:func:`host_params`; the optimizer state and bookkeeping from
:func:`gsweep.train.step.state_from_params`): timing needs shapes and finite values, and drawing
them under jit is a compile of its own. The estimate is

    compile + chunks of runs x (R / R_probe) x (steps x s_per_step + evaluations x s_per_eval)

and leaves out checkpoint writes, table writing and the first steps' warm-up. The devices are those
``gsweep run`` uses (on CPU one per usable core, :mod:`gsweep.devices`; a ``map`` group on the fewest
of them that take as few runs each), R/R_probe is then the runs one device trains one after another,
and the padding rows (chunks are multiples of the devices) are counted and reported.

Runs per chunk: under ``vmap`` sized exactly as ``gsweep run`` sizes them
(:func:`gsweep.train.memory.size_runs_per_chunk`, compiling the group's chunk program). Under
``map`` the bytes at R are estimated without compiling the chunk program a second time: its
arguments exactly (from their shapes: every run's state, data and masks, the example pool), the
donated state it returns aliased, and the probe program's temporaries and metric buffers (scaled
to R runs and the group's evaluations per chunk). When that estimate is within half the budget,
``gsweep run``'s sizing (which takes the whole group whenever it fits) takes the whole group too;
otherwise plan falls back to that exact sizing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from gsweep.spec import Run, SweepSpec
from gsweep.train.memory import SHARE

TIME_BUDGET_S = 0.5  # seconds of repeated calls per measured quantity (at least one call each)
MAX_CALLS = 50  # per measured quantity
EVAL_SHARE = 0.05  # refine the evaluation's seconds when its bound is above this share of the steps'


@dataclasses.dataclass
class GroupPlan:
    group_id: str
    runs: int
    runs_per_chunk: int
    batching: str
    compiled_bytes: int  # per device, of the chunk program at runs_per_chunk (estimated: bytes_exact False)
    model_steps: int
    evals_per_run: int
    probe_runs: int
    s_per_step: float  # one step of probe_runs runs
    s_per_eval: float  # one evaluation of probe_runs runs
    compile_s: float
    estimate_s: float
    probe_s: float
    sizing: dict[str, Any]
    bytes_exact: bool = True  # compiled_bytes from the compiled chunk program (else estimated, see module doc)
    probe_width: int = 0  # training examples per run in the probe (the group's widest training set)
    probe_calls: int = 0
    devices: int = 1  # devices the group's runs are sharded over (map: the fewest as fast as all)

    @property
    def padding_rows(self) -> int:
        """Rows computed for no run: every chunk of runs is padded to runs_per_chunk (a multiple of
        the devices) with copies."""
        return math.ceil(self.runs / self.runs_per_chunk) * self.runs_per_chunk - self.runs


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


def _probe_run(run: Run, k: int) -> Run:
    """``run`` reshaped to a short probe: k steps per compiled call, evaluated at the end of a call."""
    over = {"train.steps": 3 * k, "train.eval_every": k, "train.early_evals": 0, "train.chunk_steps": k}
    return dataclasses.replace(run, settings={**run.settings, **over})


def _nbytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in _leaves(tree))


def _leaves(tree):
    import jax
    return jax.tree.leaves(tree)


def widest_run(prog, runs: Sequence[Run]) -> Run:
    """The run with the most training examples: its width is the group's (every run is padded to it)."""
    return max(runs, key=lambda r: int(prog.masks_of(r)["train"].sum()))


def map_argument_bytes(prog, R: int, probe, r_probe: int, probe_args) -> int:
    """Bytes per device of the arguments of ``prog``'s chunk program at R runs (``map`` batching),
    exactly, from the probe program's (``probe_args``, from ``chunk_program``: the same model, task,
    training width and example pool; R's runs per device instead of the probe's, the group's steps
    per call instead of the probe's)."""
    if probe.M != prog.M or probe.data.n != prog.data.n:
        raise ValueError("the probe must have the group's training width and example pool")
    states, step0, flags, pool_x, pool_y, idx, w, masks = probe_args  # chunk_program's order
    per_row = _nbytes((states, idx, w, masks)) // (r_probe // probe.n_dev)
    return _nbytes((step0, pool_x, pool_y)) + _nbytes(flags) // probe.K * prog.K + R // prog.n_dev * per_row


def estimate_map_bytes(prog, R: int, probe, r_probe: int, probe_args, probe_mem) -> int:
    """Bytes per device of ``prog``'s chunk program at R runs (``map`` batching), without compiling
    it: its arguments exactly (:func:`map_argument_bytes`), the donated state it returns aliased;
    from the probe program's memory analysis ``probe_mem`` (one run per device), its temporaries
    (plus the copy of one run's inputs that a device stepping several runs keeps) and its outputs
    beyond the state (the metric buffers), scaled to R's runs per device and the group's
    evaluations per chunk."""
    rows, p_rows = R // prog.n_dev, r_probe // probe.n_dev
    args = map_argument_bytes(prog, R, probe, r_probe, probe_args)
    extra_out = probe_mem.output_size_in_bytes - probe_mem.alias_size_in_bytes
    bufs = extra_out * rows / p_rows * max(1.0, prog.E / probe.E)
    # a device holding several runs steps one at a time, sliced out of its inputs: XLA keeps that
    # run's copy among the temporaries (measured: about one run's inputs more than at one run)
    one_run = (map_argument_bytes(prog, 2 * prog.n_dev, probe, r_probe, probe_args)
               - map_argument_bytes(prog, prog.n_dev, probe, r_probe, probe_args)) if rows > p_rows else 0
    return int(args + bufs + probe_mem.temp_size_in_bytes + one_run)


def _map_sizing(prog, n_runs: int, requested: int, probe, r_probe: int, probe_args, probe_mem, limit=None):
    """(Sizing, exact): ``gsweep run``'s choice for a ``map`` group, from the estimate where it is
    within half the budget (run then takes the whole group, or the requested R), else exactly."""
    from gsweep.train.memory import MAX_RUNS_PER_CHUNK, Sizing, memory_limit, size_runs_per_chunk

    t0 = time.perf_counter()
    limit_bytes, source = limit or memory_limit()
    budget = int(limit_bytes * SHARE)
    n_dev = prog.n_dev
    R = min(requested, max(1, n_runs)) if requested else max(1, min(n_runs, MAX_RUNS_PER_CHUNK))
    R = int(math.ceil(R / n_dev) * n_dev)
    est = estimate_map_bytes(prog, R, probe, r_probe, probe_args, probe_mem)
    if est > budget / 2:
        return size_runs_per_chunk(prog, n_runs, requested, (limit_bytes, source)), True
    return Sizing(R, est, est, None, None, budget, limit_bytes, source, {}, time.perf_counter() - t0), False


def host_params(abstract_params, seed: int = 0):
    """One run's parameters of the given shapes, drawn on the host: N(0, 1/fan_in) for matrices
    (fan_in: the first axis), zeros for vectors. Timing needs the shapes and finite values only;
    drawing them under jit would cost a compile of its own."""
    import jax

    rng = np.random.default_rng(seed)

    def draw(a):
        if len(a.shape) < 2:
            return np.zeros(a.shape, a.dtype)
        return (rng.standard_normal(a.shape) / math.sqrt(a.shape[0])).astype(a.dtype)

    return jax.tree.map(draw, abstract_params)


def _time_probe(probe, compiled, abstract_states, k: int, steps: int, n_evals: int) -> tuple[float, float, int]:
    """(seconds per step, seconds per evaluation, calls) of the compiled probe program, from a state
    of the shapes ``abstract_states`` (the program's first argument)."""
    import jax

    from gsweep.train.engine import put_global
    from gsweep.train.step import state_from_params

    u = probe.unit_arrays(probe._runs[:1])  # padded to the probe's R with copies
    # one run's parameters (without the leading run axis), shared by the probe's runs
    params = host_params(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), abstract_states.params))
    if probe.batching == "map":  # the program of one device, on its shard
        dev = probe._local_devices()[0]
        local = lambda x: next(s.data for s in x.addressable_shards if s.device == dev)  # noqa: E731
        keys, hyper = local(u.keys_Rx2), jax.tree.map(local, u.hyper)
        params = jax.device_put(params, dev)
        data = tuple(map(local, (probe.pool_x, probe.pool_y, u.train_idx_RxM, u.train_w_RxM, u.masks_RxSxN)))
        put = lambda a: jax.device_put(a, dev)  # noqa: E731
        out_sh = None
    else:
        keys, hyper = u.keys_Rx2, u.hyper
        params = jax.tree.map(lambda a: put_global(a, probe.rep_sh), params)
        data = (probe.pool_x, probe.pool_y, u.train_idx_RxM, u.train_w_RxM, u.masks_RxSxN)
        put = lambda a: put_global(a, probe.rep_sh)  # noqa: E731
        out_sh = probe.run_sh
    init = jax.jit(jax.vmap(lambda p, key, h: state_from_params(p, key, h, probe.step_cfg), in_axes=(None, 0, 0)),
                   out_shardings=out_sh)
    state = [init(params, keys, hyper)]
    step0 = put(np.asarray(0, np.int32))
    no_eval, with_eval = put(np.zeros(k, bool)), put(np.arange(k) == k - 1)

    def call(flags) -> float:
        t = time.perf_counter()
        out = compiled(state[0], step0, flags, *data)  # the state is donated
        jax.block_until_ready(out)
        state[0] = out[0]
        return time.perf_counter() - t

    def repeat(flags) -> list[float]:
        ts = [call(flags)]
        while sum(ts) < TIME_BUDGET_S and len(ts) < MAX_CALLS:
            ts.append(call(flags))
        return ts

    first = call(with_eval)  # the first call's one-time costs (allocation, both branches) land here
    step_t = repeat(no_eval)
    s_step = statistics.median(step_t) / k
    s_eval = max(0.0, first - k * s_step)  # an upper bound
    calls = 1 + len(step_t)
    if sum(step_t) < 2 * TIME_BUDGET_S or n_evals * s_eval > EVAL_SHARE * steps * s_step:
        eval_t = repeat(with_eval)
        s_eval = max(0.0, statistics.median(eval_t) - k * s_step)
        calls += len(eval_t)
    return s_step, s_eval, calls


def plan_group(group_id: str, runs: Sequence[Run], mesh, probe_steps: int = 1, threshold: float = 0.99,
               limit: tuple[int, str] | None = None) -> GroupPlan:
    from gsweep.train.engine import GroupProgram, eval_schedule, group_mesh
    from gsweep.train.memory import size_runs_per_chunk

    t0 = time.perf_counter()
    rep = runs[0].settings
    mesh = group_mesh(mesh, len(runs), rep.get("train.batching", "auto"))  # as gsweep run shards the group
    prog = GroupProgram(group_id, runs, runs_per_chunk=mesh.devices.size, mesh=mesh,
                        batching=rep.get("train.batching", "auto"), threshold=threshold)
    n_dev, requested = prog.n_dev, int(rep["train.runs_per_chunk"])
    steps = int(rep["train.steps"])
    n_evals = len(eval_schedule(steps, int(rep["train.eval_every"]), int(rep["train.early_evals"])))
    k = max(1, min(probe_steps, steps))

    sizing, exact = None, True
    if prog.batching == "vmap":  # the probe runs at the chosen R: size first, exactly as gsweep run
        sizing = size_runs_per_chunk(prog, len(runs), requested, limit)
        r_probe = sizing.runs_per_chunk
    else:
        r_probe = n_dev  # one run per device; one device's program is timed
    probe = GroupProgram(f"{group_id}-probe", [_probe_run(widest_run(prog, runs), k)], runs_per_chunk=r_probe,
                         mesh=mesh, batching=prog.batching, threshold=threshold)
    t = time.perf_counter()
    fn, args = probe.chunk_program(r_probe)
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    if sizing is None:
        mem = compiled.memory_analysis()
        if mem is None:  # no memory analysis on this backend: size as gsweep run does (it raises)
            sizing = size_runs_per_chunk(prog, len(runs), requested, limit)
        else:
            sizing, exact = _map_sizing(prog, len(runs), requested, probe, r_probe, args, mem, limit)
    R = sizing.runs_per_chunk
    try:
        s_step, s_eval, calls = _time_probe(probe, compiled, args[0], k, steps, n_evals)
    except Exception as e:  # noqa: BLE001 - only a device out-of-memory is turned into a one-line error
        from gsweep.errors import UserError
        from gsweep.train.memory import is_oom
        if not is_oom(e):
            raise
        raise UserError(f"group {group_id}: even one run per device does not fit in this device's memory "
                        f"({str(e).splitlines()[0][:160]}); plan it on the accelerator it is meant for, or "
                        "reduce the task size, the model or train.batch_size") from None
    chunks = math.ceil(len(runs) / R)
    est = compile_s + chunks * (R / r_probe) * (steps * s_step + n_evals * s_eval)
    return GroupPlan(group_id, len(runs), R, prog.batching, sizing.compiled_bytes, len(runs) * steps, n_evals,
                     r_probe, s_step, s_eval, compile_s, est, time.perf_counter() - t0, sizing.meta(),
                     bytes_exact=exact, probe_width=probe.M, probe_calls=calls, devices=n_dev)


def plan_sweep(spec: SweepSpec, probe_steps: int = 1, n_devices: int | None = None,
               limit: tuple[int, str] | None = None) -> list[GroupPlan]:
    """A :class:`GroupPlan` per group of ``spec``, probed on this machine's devices."""
    import jax

    from gsweep.train.engine import make_mesh
    from gsweep.train.environment import enable_compilation_cache
    from gsweep.train.units import group_runs

    enable_compilation_cache()
    mesh = make_mesh(jax.devices()[:n_devices] if n_devices else None)
    thr = float(spec.analysis["threshold"])
    return [plan_group(gid, grp, mesh, probe_steps, thr, limit) for gid, grp in group_runs(spec.runs()).items()]


def _mib(b: int) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def render(spec: SweepSpec, plans: Sequence[GroupPlan], device: str, probe_wall_s: float,
           probe_steps: int = 1) -> str:
    head = ("group", "runs", "devices", "runs/chunk", "padding", "batching", "compiled/chunk", "model-steps",
            "s/step (probe)", "compile", "estimate")
    rows = [(p.group_id, str(p.runs), str(p.devices), str(p.runs_per_chunk), str(p.padding_rows), p.batching,
             ("" if p.bytes_exact else "~") + _mib(p.compiled_bytes), f"{p.model_steps:,}",
             f"{p.s_per_step:.3g} ({p.probe_runs} runs)", format_duration(p.compile_s),
             format_duration(p.estimate_s)) for p in plans]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r))  # noqa: E731
    src = plans[0].sizing["memory_limit_source"] if plans else ""
    budget = plans[0].sizing["memory_budget_bytes"] if plans else 0
    total = sum(p.estimate_s for p in plans)
    out = [f"gsweep plan: sweep {spec.name!r} on {device}", line(head), *map(line, rows),
           f"total: {sum(p.runs for p in plans)} runs in {len(plans)} group(s), "
           f"{sum(p.model_steps for p in plans):,} model-steps, estimated {format_duration(total)}",
           padding_line(plans),
           f"memory: each chunk program sized to fit {_mib(budget)} per device ({SHARE:.0%} of {src})"
           + ("; ~: estimated from the arguments' shapes and the probe program's temporaries (under half "
              "the budget: gsweep run takes the whole group)" if any(not p.bytes_exact for p in plans) else "")]
    if plans:
        out.append(f"how: per group one program compiled and called on this device, {probe_steps} step(s) per "
                   "call on the group's widest training set: a first call with an evaluation, then calls "
                   f"without (about {TIME_BUDGET_S:g} s, at least one) for s/step and, where cheap or it "
                   "matters, with one for s/evaluation; map batching probed at one run on one device and "
                   "scaled linearly to the runs of each device (the devices run in parallel); checkpoint and "
                   "table writes not counted")
    out.append(f"probe took {format_duration(probe_wall_s)}")
    return "\n".join(out)


def padding_line(plans: Sequence[GroupPlan]) -> str:
    """The padding: rows of the chunks that train no run, in all and as a share of the rows."""
    pad = sum(p.padding_rows for p in plans)
    rows = sum(p.runs + p.padding_rows for p in plans)
    return (f"padding: {pad} of {rows} chunk rows train no run ({100 * pad / max(1, rows):.1f}%): a chunk is a "
            "multiple of its devices, and a map group uses the fewest devices that take as few runs each as "
            "all of them (fewer padding rows than one device's runs)")


def plan_command(args) -> int:
    from gsweep.errors import UserError
    from gsweep.spec import load_spec

    spec = load_spec(args.sweep, args.set)  # every spec error before anything else
    if args.probe_steps < 1:
        raise UserError(f"--probe-steps must be at least 1, got {args.probe_steps}")
    import jax

    t0 = time.perf_counter()
    from gsweep.devices import chosen
    from gsweep.train.engine import make_mesh

    plans = plan_sweep(spec, probe_steps=args.probe_steps)
    n = make_mesh().devices.size
    device = f"{n} x {jax.devices()[0].device_kind} ({jax.default_backend()})"
    if jax.default_backend() == "cpu":
        device += f", CPU devices: {chosen()[1]}"
    print(render(spec, plans, device, time.perf_counter() - t0, args.probe_steps))
    return 0
