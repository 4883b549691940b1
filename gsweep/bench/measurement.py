"""gsweep's side of the bench: a group of R runs compiled once and timed chunk by chunk, the device's
matmul peak, XLA's memory and cost analyses."""

from __future__ import annotations

import time
from typing import Any

from gsweep.bench.recipe import Plan

# ---------------------------------------------------------------------------------------------
# measurements


def _sync(x):
    import jax
    return jax.block_until_ready(x)


def matmul_peak(n: int, reps: int, precision: str, devices) -> dict[str, Any]:
    """TFLOP/s of n×n×n matmuls at the bench's precision: on the first of gsweep's devices alone, and
    on every one of them at once (one matmul stream per device, as gsweep's runs are spread); the
    peak is the higher (on CPU, one device's matmul may already use several cores)."""
    import jax
    import jax.numpy as jnp

    devices = list(devices) if isinstance(devices, list | tuple) else [devices]
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a0 = jax.random.normal(ka, (n, n), jnp.float32)
    b0 = jax.random.normal(kb, (n, n), jnp.float32)
    if precision == "bf16":
        a0, b0 = a0.astype(jnp.bfloat16), b0.astype(jnp.bfloat16)
        f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    else:
        prec = jax.lax.Precision.HIGHEST if precision == "highest" else jax.lax.Precision.DEFAULT
        f = jax.jit(lambda x, y: jnp.dot(x, y, precision=prec))
    ab = [(jax.device_put(a0, d), jax.device_put(b0, d)) for d in devices]

    def timed(pairs) -> float:
        for _ in range(2):
            _sync([f(a, b) for a, b in pairs])
        t0 = time.perf_counter()
        outs = [f(a, b) for _ in range(reps) for a, b in pairs]  # dispatched asynchronously: concurrent
        _sync(outs)
        return 2 * n**3 * reps * len(pairs) / (time.perf_counter() - t0) / 1e12

    one = timed(ab[:1])
    every = timed(ab) if len(ab) > 1 else one
    return {"peak_tflops": max(one, every), "peak_tflops_one_device": one, "peak_tflops_all_devices": every,
            "matmul": (f"{n}x{n}x{n} {precision}, {reps} timed after 2 warm-ups, on one device and on each of "
                       f"the {len(ab)} device(s) at once; the peak is the higher")}


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
                                 batching=plan.batching)
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


def _device_peak(dev) -> int | None:
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001
        return None
    v = stats.get("peak_bytes_in_use")
    return int(v) if v is not None else None
