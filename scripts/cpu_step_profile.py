#!/usr/bin/env python3
"""Where one model-step's time goes on this CPU: a per-op profile of the bench's training chunk.

    .venv/bin/python scripts/cpu_step_profile.py            # the standard recipe (p = 59), one core
    .venv/bin/python scripts/cpu_step_profile.py --quick    # the CI-sized recipe, seconds

It builds the same program as ``gsweep bench --device cpu`` (one group of R runs, K steps a chunk,
precision highest) on ONE XLA CPU device pinned to one core (``--all-cores``: unpinned, so XLA may use
its intra-op threads), compiles and warms it, then traces one chunk without an evaluation with XLA's
per-op trace events (``--xla_cpu_enable_xprof_traceme=true``, set here before JAX starts) and prints
milliseconds per model-step: in all, in matmuls (dots and the fusions that hold one) and in the rest,
and the slowest instructions with their shapes and the model code they come from. The traced chunk
is also timed untraced (best of two), so the tracing overhead shows. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's gsweep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the CI-sized recipe (p = 13, d_model 32)")
    ap.add_argument("--p", type=int, default=None, help="the modulus (default: the bench's, 59)")
    ap.add_argument("--runs", type=int, default=2, help="R, runs in the group (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="K, steps a chunk (default: the bench's, 25)")
    ap.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.top < 1:
        ap.error("--runs and --top must be positive")
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["GSWEEP_CPU_DEVICES"] = "1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    from gsweep import devices
    devices.configure()
    import jax

    from gsweep.bench.hlo_profile import breakdown, hlo_ops, op_times, trace_events
    from gsweep.bench.measurement import EngineBench
    from gsweep.bench.recipe import make_plan

    ns = argparse.Namespace(quick=args.quick, steps=args.steps, models=[args.runs], p=args.p, precision=None,
                            batching=None)
    plan = dataclasses.replace(make_plan(ns, "cpu", cores=1), rounds=1, pairs=3)  # warm-up, 2 timed, traced
    eb = EngineBench(plan, "highest", args.runs, jax.devices()[:1])
    eb.warm_up()  # compiles; runs the evaluation branch once
    untraced, _ = eb.time_pairs(2)
    fn, fargs = eb._chunk_args()
    ops = hlo_ops(fn.lower(*fargs).compile().as_text())  # a compilation-cache hit
    with tempfile.TemporaryDirectory(prefix="gsweep-profile-") as tmp:
        with jax.profiler.trace(tmp):
            t0 = time.perf_counter()
            eb._chunk()  # chunk 2k: no evaluation
            traced_s = time.perf_counter() - t0
        us, n = op_times(trace_events(tmp), ops)
    ms = eb.R * eb.K
    b = breakdown(ops, us, n, ms, top=args.top)
    rc = plan.recipe
    cores = "one core" if not args.all_cores else f"{len(os.sched_getaffinity(0))} cores"
    print(f"cpu_step_profile: p={rc.p}, d_model {rc.d_model}, {rc.heads} heads, d_mlp {rc.d_mlp}; R={eb.R} runs x "
          f"K={eb.K} steps on one XLA CPU device, {cores}; load {os.getloadavg()[0]:.2f}")
    print(f"chunk: {1e3 * min(untraced) / ms:.2f} ms per model-step untraced (best of {len(untraced)}), {1e3 * traced_s / ms:.2f} traced; "
          f"HLO ops {b['ms_per_model_step']:.2f} ms: matmuls {b['matmul_ms']:.2f} ms "
          f"({100 * b['matmul_share']:.0f}%), the rest {b['other_ms']:.2f} ms")
    for r in b["top"]:
        print(f"  {r['ms_per_model_step']:7.3f} ms {100 * r['share']:5.1f}%  {r['kind']:6s} {r['op']:28s} "
              f"{r['shape']:24s} {r['source'].split('closed_call/')[-1][-56:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
