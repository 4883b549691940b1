"""``gsweep bench``: gsweep's engine against the PyTorch peers, on one device, in one run.

For each configuration (precision × runs per chunk) it measures, with the same recipe on both sides:

- gsweep's steady-state model-steps/s (R runs per compiled chunk of K steps; every chunk ends with
  the one metrics transfer that ``GroupProgram.train_chunk`` makes, so each timing is synced),
- the compile time (the first chunk minus a steady chunk),
- the evaluation overhead (chunks that end with an evaluation against chunks that do not, in one
  compiled program: the evaluation predicate is data, so both kinds run the same executable),
- the FLOPs and bytes of one model-step (counted analytically, and by XLA's cost analysis),
- a square matmul at the same precision, for the peak,
- the compiled program's memory (XLA's memory analysis) and the device's high-water mark,
- the PyTorch peer (``--peer``, ``../shared/bench/torch_reference.py`` by default) as a plain
  training loop and as a torch.func ensemble, run as subprocesses interleaved with gsweep's timings
  (rounds), so both sides see the same machine load.

Everything is printed and written to ``OUT/<UTC timestamp>.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gsweep.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEER = PROJECT_ROOT.parent / "shared" / "bench" / "torch_reference.py"
EVAL_CADENCE = 100  # the spec's default train.eval_every: eval_overhead_frac is quoted at this cadence

# The keys every configuration carries (issue 8); the test checks them.
CONFIG_KEYS = ("device_name", "precision", "runs", "model_steps_per_s", "ratio_vs_torch_loop",
               "ratio_vs_torch_vmap", "flops_per_model_step", "achieved_tflops", "peak_tflops", "compile_s",
               "peak_memory_bytes", "runs_per_chunk", "eval_overhead_frac")


# ---------------------------------------------------------------------------------------------
# plan


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The model and task both sides train (the standard grokking recipe unless --quick)."""

    p: int
    frac: float = 0.3
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    depth: int = 1
    lr: float = 1e-3
    weight_decay: float = 1.0
    b1: float = 0.9
    b2: float = 0.98


@dataclasses.dataclass(frozen=True)
class Plan:
    device: str  # 'cpu' | 'gpu'
    quick: bool
    recipe: Recipe
    precisions: tuple[str, ...]
    runs: tuple[int, ...]  # R per configuration
    chunk_steps: int  # K
    rounds: int  # gsweep/peer interleavings
    pairs: int  # (no-eval chunk, eval chunk) pairs timed per round and configuration
    loop_models: int
    loop_steps: int
    vmap_models: int
    vmap_steps: int
    torch_threads: tuple[int | None, ...]  # peer thread settings tried on CPU (None: torch's default)
    matmul_n: int
    matmul_reps: int
    peer_timeout_s: int


def make_plan(args, device: str) -> Plan:
    quick = bool(getattr(args, "quick", False))
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    models = tuple(getattr(args, "models", None) or ())
    if any(m < 1 for m in models):
        raise UserError(f"--models must be positive, got {list(models)}")
    p = getattr(args, "p", None)
    if p is not None and p < 2:
        raise UserError(f"--p must be at least 2, got {p}")
    precisions = tuple(dict.fromkeys(getattr(args, "precision", None) or ()))
    if quick:
        recipe = Recipe(p=p or 13, d_model=32, heads=2, d_mlp=64)
        plan = Plan(device, True, recipe, precisions or ("highest",), models or (2,), steps or 5, rounds=1,
                    pairs=1, loop_models=1, loop_steps=steps or 5, vmap_models=2, vmap_steps=steps or 3,
                    torch_threads=(None,), matmul_n=256, matmul_reps=3, peer_timeout_s=300)
    elif device == "gpu":
        recipe = Recipe(p=p or 113)
        plan = Plan(device, False, recipe, precisions or ("tf32", "highest"), models or (256, 512, 1024),
                    steps or 10, rounds=2, pairs=1, loop_models=2, loop_steps=steps or 300, vmap_models=256,
                    vmap_steps=steps or 20, torch_threads=(None,), matmul_n=4096, matmul_reps=50,
                    peer_timeout_s=900)
    else:
        recipe = Recipe(p=p or 59)
        # torch's OpenMP threads spin-wait: on a loaded 2-core machine one thread can be several times
        # faster than the default, so both are run and the faster one is the reference.
        plan = Plan(device, False, recipe, precisions or ("highest",), models or (4,), steps or 25, rounds=2,
                    pairs=2, loop_models=1, loop_steps=steps or 30, vmap_models=4, vmap_steps=steps or 20,
                    torch_threads=(None, 1), matmul_n=1024, matmul_reps=5, peer_timeout_s=900)
    return plan


def resolve_peer(path: str | None) -> Path:
    peer = Path(path).expanduser().resolve() if path else DEFAULT_PEER.resolve()
    if not peer.is_file():
        how = ("give the peer's path with --peer PATH" if path else
               f"the default is {DEFAULT_PEER} (../shared/bench beside the project); give another with --peer PATH")
        raise UserError(f"PyTorch peer not found: {peer}: {how}")
    return peer


# ---------------------------------------------------------------------------------------------
# counting


def param_count(recipe: Recipe, vocab: int, n_classes: int, seq: int) -> int:
    d, dm = recipe.d_model, recipe.d_mlp
    per_block = d * 3 * d + d * d + d * dm + dm + dm * d + d
    return vocab * d + seq * d + recipe.depth * per_block + d * n_classes


def matmul_macs(recipe: Recipe, vocab: int, n_classes: int, seq: int, batch: int, *, tabulate: bool,
                last_only: bool) -> dict[str, int]:
    """Multiply-accumulates of one forward pass, by matmul. ``tabulate``: the first block's
    projections computed once per (position, token) and gathered (gsweep's model when the vocabulary
    is smaller than the batch); ``last_only``: the last block computes its query, attention output
    and MLP at the answer position alone (gsweep). The PyTorch peer does neither."""
    d, dm, T, B, V = recipe.d_model, recipe.d_mlp, seq, batch, vocab
    tab = tabulate and V < B
    macs: dict[str, int] = {}
    for i in range(recipe.depth):
        last = last_only and i == recipe.depth - 1
        Q = 1 if last else T  # positions computed after the keys and values
        rows = T * V if (i == 0 and tab) else B * T
        q_rows = (V if last else T * V) if (i == 0 and tab) else B * Q
        macs[f"block{i}.kv"] = rows * d * 2 * d
        macs[f"block{i}.q"] = q_rows * d * d
        macs[f"block{i}.scores"] = B * Q * T * d  # H heads × (Q × T × d/H)
        macs[f"block{i}.att_v"] = B * Q * T * d
        macs[f"block{i}.out"] = B * Q * d * d
        macs[f"block{i}.mlp"] = 2 * B * Q * d * dm
    macs["unembed"] = B * d * n_classes
    return macs


def flop_counts(recipe: Recipe, vocab: int, n_classes: int, seq: int, batch: int, pool: int) -> dict[str, Any]:
    """FLOPs and bytes of one model-step of the recipe, counted three ways (see docs/performance.md)."""
    gs = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=True, last_only=True)
    lo = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=False, last_only=True)
    peer = matmul_macs(recipe, vocab, n_classes, seq, batch, tabulate=False, last_only=False)
    n_par = param_count(recipe, vocab, n_classes, seq)
    evals = matmul_macs(recipe, vocab, n_classes, seq, pool, tabulate=True, last_only=True)
    return {
        "flops_per_model_step": 6 * sum(gs.values()),
        "flops_counting": ("matmul FLOPs of what gsweep computes, forward + backward = 3 x forward "
                           "(each matmul's backward is two matmuls of its size: input and weight gradients), "
                           "2 FLOPs per multiply-add; first block's projections tabulated per (position, "
                           "token), last block at the answer position only; elementwise ops, softmax and "
                           "AdamW (~20 FLOPs/parameter) not counted"),
        "flops_per_model_step_last_position_only": 6 * sum(lo.values()),
        "flops_per_model_step_peer": 6 * sum(peer.values()),
        "flops_per_model_step_6nd": 6 * n_par * batch * seq,
        "params": n_par,
        "tokens_per_step": batch * seq,
        "batch": batch,
        "forward_macs_by_matmul": gs,
        "flops_per_eval": 2 * sum(evals.values()),
        "optimizer_bytes_per_model_step": 4 * 8 * n_par,
        "optimizer_bytes_counting": ("float32 AdamW: read params, grads, m, v; write params, m, v; write grads "
                                     "in the backward pass = 8 x 4 bytes per parameter"),
    }


# ---------------------------------------------------------------------------------------------
# measurements


def _sync(x):
    import jax
    return jax.block_until_ready(x)


def matmul_peak(n: int, reps: int, precision: str, device) -> dict[str, Any]:
    """TFLOP/s of an n×n×n matmul at the bench's precision, on the bench's device."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32), device)
    b = jax.device_put(jax.random.normal(kb, (n, n), jnp.float32), device)
    if precision == "bf16":
        a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    else:
        prec = jax.lax.Precision.HIGHEST if precision == "highest" else jax.lax.Precision.DEFAULT
        f = jax.jit(lambda x, y: jnp.dot(x, y, precision=prec))
    for _ in range(2):
        _sync(f(a, b))
    t0 = time.perf_counter()
    outs = [f(a, b) for _ in range(reps)]
    _sync(outs)
    dt = time.perf_counter() - t0
    return {"peak_tflops": 2 * n**3 * reps / dt / 1e12, "matmul": f"{n}x{n}x{n} {precision}, {reps} timed after 2 warm-ups"}


class EngineBench:
    """One gsweep group of R runs, compiled once; chunks alternate without and with an evaluation."""

    def __init__(self, plan: Plan, precision: str, R: int, devices):
        from gsweep.spec import from_dict
        from gsweep.train.engine import GroupProgram, make_mesh

        rc, K = plan.recipe, plan.chunk_steps
        self.K = K
        n_dev = len(devices)
        self.R = -(-R // n_dev) * n_dev  # every run real: no padding copies counted as runs
        # chunk 0 (no eval) compiles, chunk 1 (eval) warms the eval branch; then timed pairs
        self.n_pairs = 1 + plan.rounds * plan.pairs
        steps = 2 * K * self.n_pairs
        spec = {"name": "bench",
                "task": {"name": "modular", "p": rc.p, "data_frac": rc.frac},
                "model": {"name": "transformer", "depth": rc.depth, "d_model": rc.d_model, "heads": rc.heads,
                          "d_mlp": rc.d_mlp},
                "train": {"steps": steps, "eval_every": 2 * K, "early_evals": 0, "chunk_steps": K,
                          "precision": precision, "lr": rc.lr, "b1": rc.b1, "b2": rc.b2,
                          "weight_decay": [rc.weight_decay * (1.0 + 1e-6 * i) for i in range(self.R)]}}
        runs = from_dict(spec, "<bench>").runs()
        assert len(runs) == self.R, (len(runs), self.R)
        t0 = time.perf_counter()
        self.prog = GroupProgram(runs[0].group_id, runs, runs_per_chunk=self.R, mesh=make_mesh(devices),
                                 batching="auto")
        self.u = self.prog.unit_arrays(runs)
        self.state = _sync(self.prog.init_states(self.u))
        self.setup_s = time.perf_counter() - t0
        self.next_chunk = 0
        self.t_noeval: list[float] = []
        self.t_eval: list[float] = []
        self.t_first = float("nan")
        self.memory: dict[str, Any] = {}

    def _chunk(self) -> float:
        c = self.next_chunk
        if c >= self.prog.n_chunks:
            raise RuntimeError("bench ran out of chunks")
        t0 = time.perf_counter()
        self.state, host, steps = self.prog.train_chunk(self.state, c, self.u)  # metrics to host: synced
        _sync(self.state)
        dt = time.perf_counter() - t0
        self.next_chunk += 1
        assert (len(steps) == 1) == (c % 2 == 1), (c, steps)
        return dt

    def warm_up(self) -> None:
        self.t_first = self._chunk()  # compiles
        self.memory = self._memory_analysis()
        self._chunk()  # first run of the evaluation branch

    def time_pairs(self, n: int) -> tuple[list[float], list[float]]:
        tn, te = [], []
        for _ in range(n):
            tn.append(self._chunk())
            te.append(self._chunk())
        self.t_noeval += tn
        self.t_eval += te
        return tn, te

    def _chunk_args(self):
        import jax
        import numpy as np

        from gsweep.train.engine import put_global

        p = self.prog
        flags = put_global(p.flags_CxK[0], p.rep_sh)
        step0 = put_global(np.asarray(0, np.int32), p.rep_sh)
        args = (self.state, step0, flags, p.pool_x, p.pool_y, self.u.train_idx_RxM, self.u.train_w_RxM,
                self.u.masks_RxSxN)
        if p.batching != "map":
            return p._spmd, args
        dev = next(d for d in p.mesh.devices.flat if d.process_index == jax.process_index())
        local = jax.tree.map(lambda x: next(s.data for s in x.addressable_shards if s.device == dev), args)
        return p._local, local

    def _memory_analysis(self) -> dict[str, Any]:
        """XLA's memory analysis of the compiled chunk program of one device (the same arguments as
        the call that compiled it, so this is a compilation-cache hit)."""
        out: dict[str, Any] = {}
        try:
            fn, args = self._chunk_args()
            t0 = time.perf_counter()
            compiled = fn.lower(*args).compile()
            out["lookup_s"] = time.perf_counter() - t0
            m = compiled.memory_analysis()
            if m is not None:
                arg, outp = int(m.argument_size_in_bytes), int(m.output_size_in_bytes)
                alias, temp = int(m.alias_size_in_bytes), int(m.temp_size_in_bytes)
                out.update(argument_bytes=arg, output_bytes=outp, alias_bytes=alias, temp_bytes=temp,
                           total_bytes=arg + outp - alias + temp)
        except Exception as e:  # noqa: BLE001 - a missing analysis is reported, never fatal
            out["error"] = f"{type(e).__name__}: {e}"
        return out

    def xla_step_cost(self) -> dict[str, Any]:
        """XLA's cost analysis of ONE run's training step, compiled alone (loops in the chunk
        program would be counted once per body, so the chunk's own analysis is not per step)."""
        import jax

        from gsweep.train.step import train_step

        p = self.prog
        try:
            st0 = jax.tree.map(lambda x: x[0], self.state)
            idx0, w0 = self.u.train_idx_RxM[0], self.u.train_w_RxM[0]
            f = jax.jit(lambda s, px, py, i, w: train_step(p.model, p.step_cfg, s, jax.numpy.int32(0), px, py, i, w))
            ca = f.lower(st0, p.pool_x, p.pool_y, idx0, w0).compile().cost_analysis()
            if isinstance(ca, list | tuple):
                ca = ca[0] if ca else {}
            ca = dict(ca or {})
            return {"flops_per_model_step_xla": float(ca["flops"]) if "flops" in ca else None,
                    "bytes_per_model_step_xla": float(ca["bytes accessed"]) if "bytes accessed" in ca else None}
        except Exception as e:  # noqa: BLE001
            return {"flops_per_model_step_xla": None, "bytes_per_model_step_xla": None,
                    "xla_cost_error": f"{type(e).__name__}: {e}"}

    def close(self) -> None:
        del self.state, self.u, self.prog


def run_peer(python: str, peer: Path, mode: str, plan: Plan, precision: str, threads: int | None,
             peer_device: str) -> dict[str, Any]:
    rc = plan.recipe
    models, steps = (plan.loop_models, plan.loop_steps) if mode == "loop" else (plan.vmap_models, plan.vmap_steps)
    cmd = [python, str(peer), "--mode", mode, "--models", str(models), "--steps", str(steps), "--p", str(rc.p),
           "--frac", str(rc.frac), "--lr", str(rc.lr), "--wd", str(rc.weight_decay), "--d-model", str(rc.d_model),
           "--heads", str(rc.heads), "--d-mlp", str(rc.d_mlp), "--device", peer_device]
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


# ---------------------------------------------------------------------------------------------
# the command


def _device_setup(device: str | None):
    """Pick the device (auto: the GPU when JAX sees one) before JAX starts its backends."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to the peer too
    import jax

    if device == "cpu":
        try:
            jax.config.update("jax_platforms", "cpu")
        except Exception:  # noqa: BLE001 - backends already up: use the CPU devices anyway
            pass
        return "cpu", jax.devices("cpu")
    backend = jax.default_backend()
    if backend in ("gpu", "cuda", "rocm"):
        return "gpu", jax.devices()
    if device == "gpu":
        raise UserError(f"--device gpu: JAX sees no GPU (backend {backend!r}); run on a GPU host, or use "
                        "--device cpu (scripts/gpu_bench.sh --quick tries the GPU script on CPU)")
    return "cpu", jax.devices("cpu")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every OS
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, Any]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("gsweep", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def bench_command(args) -> int:
    peer = resolve_peer(getattr(args, "peer", None))
    device, devices = _device_setup(getattr(args, "device", None))
    plan = make_plan(args, device)
    import jax

    from gsweep.tasks import get_task

    dev0 = devices[0]
    device_name = (f"{cpu_model()} ({_cores()} cores)" if device == "cpu"
                   else str(dev0.device_kind))
    peer_device = "cpu" if device == "cpu" else "cuda"
    python = sys.executable
    rc = plan.recipe
    data = get_task("modular").build({"name": "modular", "p": rc.p, "op": "add", "data_frac": rc.frac})
    from gsweep.tasks.base import take_fraction
    batch = take_fraction(data.n, rc.frac)
    counts = flop_counts(rc, data.vocab_size, data.n_classes, data.seq_len, batch, data.n)

    load_start = list(os.getloadavg())
    started = _dt.datetime.now(_dt.timezone.utc)
    print(f"gsweep bench: {device_name}, jax {jax.__version__} ({jax.default_backend()}, {len(devices)} device(s)); "
          f"p={rc.p}, {rc.frac:.0%} of pairs, d_model {rc.d_model}, {rc.heads} heads, d_mlp {rc.d_mlp}; "
          f"load {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)

    configs: list[dict[str, Any]] = []
    peers_all: list[dict[str, Any]] = []
    for precision in plan.precisions:
        peak = matmul_peak(plan.matmul_n, plan.matmul_reps, precision, dev0)
        benches: list[EngineBench] = []
        for R in sorted(set(plan.runs)):
            if any(b.R == -(-R // len(devices)) * len(devices) for b in benches):
                continue  # the same R once rounded up to the device count
            b = EngineBench(plan, precision, R, devices)
            b.warm_up()
            b.dev_peak = _device_peak(dev0)
            benches.append(b)
            print(f"  [{precision}] R={b.R}: first chunk {b.t_first:.2f} s", flush=True)
        peer_runs: dict[tuple[str, Any], list[dict]] = {}
        per_round: list[dict[str, Any]] = []
        for r in range(plan.rounds):
            gs_round = {}
            for b in benches:
                tn, _ = b.time_pairs(plan.pairs)
                gs_round[b.R] = b.R * b.K * len(tn) / sum(tn)
            round_peer: dict[str, dict] = {}
            for mode in ("loop", "vmap"):
                for th in plan.torch_threads:
                    res = run_peer(python, peer, mode, plan, precision, th, peer_device)
                    res.update(round=r, precision_requested=precision)
                    peer_runs.setdefault((mode, th), []).append(res)
                    peers_all.append(res)
                    best = round_peer.get(mode)
                    if best is None or res["model_steps_per_s"] > best["model_steps_per_s"]:
                        round_peer[mode] = res
            per_round.append({"round": r, "loadavg": list(os.getloadavg()),
                              "gsweep_model_steps_per_s": {str(k): v for k, v in gs_round.items()},
                              "torch_loop_model_steps_per_s": round_peer["loop"]["model_steps_per_s"],
                              "torch_vmap_model_steps_per_s": round_peer["vmap"]["model_steps_per_s"]})
            print(f"  [{precision}] round {r + 1}/{plan.rounds}: gsweep "
                  + ", ".join(f"R={k}: {v:.4g}" for k, v in gs_round.items())
                  + f" model-steps/s; torch loop {round_peer['loop']['model_steps_per_s']:.4g}, "
                  f"vmap {round_peer['vmap']['model_steps_per_s']:.4g}; load {os.getloadavg()[0]:.2f}", flush=True)
        peer_summary = {}
        for mode in ("loop", "vmap"):
            variants = {th: _pooled(v) for (m, th), v in peer_runs.items() if m == mode}
            th_best = max(variants, key=variants.get)
            peer_summary[mode] = {
                "model_steps_per_s": variants[th_best],
                "threads": "default" if th_best is None else th_best,
                "by_threads": {("default" if th is None else str(th)): v for th, v in variants.items()},
                "models": plan.loop_models if mode == "loop" else plan.vmap_models,
                "steps": plan.loop_steps if mode == "loop" else plan.vmap_steps,
            }
        for b in benches:
            configs.append(_config(b, plan, precision, device_name, peak, counts, peer_summary, per_round))
            b.close()
            _print_config(configs[-1])

    finished = _dt.datetime.now(_dt.timezone.utc)
    doc = {
        "gsweep_bench": 1,
        "created": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "command": _command_line(args),
        "argv": sys.argv,
        "machine": {
            "device": device, "device_name": device_name, "device_kind": str(dev0.device_kind),
            "jax_backend": jax.default_backend(), "jax_devices": len(devices),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_affinity": _cores(),
            "platform": platform.platform(), "hostname": platform.node(),
            "versions": {**_versions(), "torch": next((p.get("torch") for p in peers_all), None)},
            "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
        },
        "plan": {**dataclasses.asdict(plan), "recipe": dataclasses.asdict(rc), "pool": data.n, "train_examples": batch,
                 "peer": str(peer), "peer_device": peer_device},
        "configurations": configs,
        "peer_runs": peers_all,
        "peer_commands": [p["command"] for p in peers_all],
        "method": {
            "model_steps_per_s": ("gsweep: runs x K / wall time of steady chunks of K steps that contain no "
                                  "evaluation, summed over every timed chunk (each chunk ends with the one "
                                  "metrics transfer to the host, so it is synced); the peers: their own "
                                  "timing of training steps only (no evaluation), pooled over rounds"),
            "interleaving": (f"{plan.rounds} round(s); each times every configuration's chunks and then runs the "
                             "peers, so both sides see the same machine load"),
            "ratio": ("gsweep model_steps_per_s / the peer's" + (
                "; the peer runs with torch's default threads and with OMP_NUM_THREADS=1 (OpenMP threads "
                "spin-wait, which a loaded machine punishes), and the faster is the reference"
                if len(plan.torch_threads) > 1 else "")),
            "compile_s": "wall time of the first chunk (trace + compile + run) minus the median steady chunk",
            "eval_overhead_frac": (f"one compiled program whose chunks alternate without and with one evaluation "
                                   f"of every pool example (the predicate is data): eval_s = median(chunk with "
                                   f"eval) - median(chunk without), step_s = median(chunk without) / K; "
                                   f"eval_overhead_frac = eval_s / (eval_s + {EVAL_CADENCE} step_s), i.e. at "
                                   f"the spec's default eval_every = {EVAL_CADENCE}; "
                                   "eval_overhead_frac_per_chunk is the same at one evaluation per K steps; "
                                   "eval_s_raw is the unclamped difference (below the timing noise when it is "
                                   "negative or near 0), and eval_overhead_frac_flops the same fraction counted "
                                   "in matmul FLOPs (forward over the pool vs training steps). The per-chunk "
                                   "metrics transfer is in both kinds of chunk"),
            "peak_memory_bytes": ("XLA's memory analysis of the compiled per-device chunk program: arguments + "
                                  "outputs - donated (aliased) + temporaries; device_peak_bytes_in_use is the "
                                  "device's high-water mark so far in this process, where the backend reports "
                                  "it (GPU), and covers every configuration measured before it too"),
            "peak_tflops": "a square matmul at the configuration's precision, timed in the same run on the same device",
            "achieved_tflops": "flops_per_model_step x model_steps_per_s / 1e12",
        },
    }
    out_dir = Path(getattr(args, "out", None) or "results/bench")
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"{stamp}.json"
    i = 1
    while path.exists():
        path = out_dir / f"{stamp}-{i}.json"
        i += 1
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    print(f"wrote {path}")
    return 0


def _command_line(args) -> str:
    """The bench command as given (flags in the CLI's spelling)."""
    parts = ["gsweep", "bench"]
    for flag, key in (("--device", "device"), ("--peer", "peer"), ("--steps", "steps"), ("--p", "p"),
                      ("--out", "out")):
        v = getattr(args, key, None)
        if v is not None and not (key == "out" and v == "results/bench"):
            parts += [flag, str(v)]
    for flag, key in (("--models", "models"), ("--precision", "precision")):
        v = getattr(args, key, None)
        if v:
            parts += [flag, *map(str, v)]
    if getattr(args, "quick", False):
        parts.append("--quick")
    return shlex.join(parts)


def _json_default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
    except ImportError:
        pass
    return str(o)


def _device_peak(dev) -> int | None:
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001
        return None
    v = stats.get("peak_bytes_in_use")
    return int(v) if v is not None else None


def _config(b: EngineBench, plan: Plan, precision: str, device_name: str, peak: dict, counts: dict,
            peers: dict, per_round: list[dict]) -> dict[str, Any]:
    tn, te = b.t_noeval, b.t_eval
    steps_per_s = b.R * b.K * len(tn) / sum(tn)
    med_n, med_e = statistics.median(tn), statistics.median(te)
    eval_s = max(0.0, med_e - med_n)
    step_s = med_n / b.K
    xla = b.xla_step_cost()
    flops = counts["flops_per_model_step"]
    loop, vmap = peers["loop"]["model_steps_per_s"], peers["vmap"]["model_steps_per_s"]
    cfg: dict[str, Any] = {
        "device_name": device_name,
        "precision": precision,
        "runs": b.R,
        "runs_per_chunk": b.prog.R,
        "batching": b.prog.batching,
        "chunk_steps": b.K,
        "model_steps_per_s": steps_per_s,
        "s_per_model_step": 1.0 / steps_per_s,
        "ratio_vs_torch_loop": steps_per_s / loop,
        "ratio_vs_torch_vmap": steps_per_s / vmap,
        "torch_loop_model_steps_per_s": loop,
        "torch_vmap_model_steps_per_s": vmap,
        "torch_loop": peers["loop"],
        "torch_vmap": peers["vmap"],
        "peer_precision": {"highest": "float32 (exact)", "tf32": "float32 with --tf32",
                           "bf16": "float32 (exact): the peer has no bf16 mode"}[precision],
        "ratio_vs_torch_loop_per_round": [
            r["gsweep_model_steps_per_s"][str(b.R)] / r["torch_loop_model_steps_per_s"] for r in per_round],
        "flops_per_model_step": flops,
        "flops_counting": counts["flops_counting"],
        **{k: counts[k] for k in ("flops_per_model_step_last_position_only", "flops_per_model_step_peer",
                                  "flops_per_model_step_6nd", "params", "tokens_per_step", "flops_per_eval",
                                  "optimizer_bytes_per_model_step")},
        **xla,
        "achieved_tflops": flops * steps_per_s / 1e12,
        "achieved_tflops_6nd": counts["flops_per_model_step_6nd"] * steps_per_s / 1e12,
        **peak,
        "compile_s": max(0.0, b.t_first - med_n),
        "first_chunk_s": b.t_first,
        "setup_s": b.setup_s,
        "peak_memory_bytes": b.memory.get("total_bytes"),
        "compiled_memory": b.memory,
        "device_peak_bytes_in_use": b.dev_peak,
        "eval_overhead_frac": eval_s / (eval_s + EVAL_CADENCE * step_s) if step_s > 0 else None,
        "eval_overhead_frac_per_chunk": eval_s / med_e if med_e > 0 else None,
        "eval_s": eval_s,
        "eval_s_raw": med_e - med_n,
        "eval_overhead_frac_flops": counts["flops_per_eval"] / (counts["flops_per_eval"] + EVAL_CADENCE * flops),
        "eval_cadence_steps": EVAL_CADENCE,
        "chunk_s_no_eval": tn,
        "chunk_s_with_eval": te,
        "rounds": per_round,
    }
    return cfg


def _print_config(cfg: dict[str, Any]) -> None:
    head = " ".join(f"{k}={_fmt(cfg[k])}" for k in CONFIG_KEYS)
    print(f"configuration: {head}", flush=True)
