#!/usr/bin/env python3
"""quick.yaml's training throughput on ONE CPU device and on gsweep's default (one per usable core),
in one run, interleaved, on this machine, with the ceiling the first allows the second.

    .venv/bin/python scripts/cpu_devices_bench.py                  # 32 runs x 400 steps, 2 rounds
    .venv/bin/python scripts/cpu_devices_bench.py --steps 100 --rounds 1 --seeds 1    # a smoke run

Each measurement is a whole ``gsweep run sweeps/quick.yaml`` in a subprocess (``--set seeds=S --set
train.steps=N --set train.eval_every=N/4``, a fresh results dir, and a fresh compilation cache unless
``--warm``), once with GSWEEP_CPU_DEVICES=1 and once without it (the default); rounds alternate the
two, so both see the same machine load. From each run's meta.json: the steady training throughput
(model-steps of one chunk of steps / the median wall time of the chunks after the first, which
compiles), the first chunk's and the sizing's seconds, and the whole process's wall time. It prints
one line per measurement, then the best of each setting and the ratio default / one device
(issue 25's goal on 2 cores: >= 1.8 steady). Nothing is written outside a temporary folder.

A third setting, one device pinned to ONE core (its affinity set to the first usable core, as
``taskset -c`` would), says why the ratio is what it is: a single device is free to use every core
through XLA's intra-op (Eigen) threads, so "one device" is already faster than one core. With C
cores, the default can be at most C x (one core) even if it scaled perfectly, so the ratio default /
one device can be at most C x (one core) / (one device): the script prints that ceiling and the
default's scaling over one core. ``--no-pinned`` leaves the third setting out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's gsweep


def one(out: Path, devices: int | None, args, cache: Path | None, pin: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GSWEEP_CPU_DEVICES"}
    if devices is not None:
        env["GSWEEP_CPU_DEVICES"] = str(devices)
    env["GSWEEP_CACHE_DIR"] = str(cache) if cache else "off"
    cmd = [sys.executable, "-m", "gsweep", "run", str(ROOT / "sweeps" / "quick.yaml"), "--out", str(out), "--quiet",
           "--set", f"seeds={args.seeds}", "--set", f"train.steps={args.steps}",
           "--set", f"train.eval_every={max(1, args.steps // 4)}"]
    t0 = time.perf_counter()
    core = min(os.sched_getaffinity(0)) if pin else None
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                       preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if pin else None)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"cpu_devices_bench: gsweep run failed ({p.returncode}): {p.stderr.strip()[-600:]}")
    meta = json.loads((out / "meta.json").read_text())
    (g,) = meta["groups"].values()
    steady = g.get("steady_chunk_s") or 0.0
    return {"devices": meta.get("run_devices"), "group_devices": g.get("devices"), "rule": meta.get("cpu_devices"),
            "runs": g["runs"], "runs_per_chunk": g["runs_per_chunk"], "chunk_steps": g["chunk_steps"],
            "steady_model_steps_per_s": g["runs"] * g["chunk_steps"] / steady if steady > 0 else float("nan"),
            "first_chunk_s": g.get("first_chunk_s"), "sizing_s": g.get("sizing_s"), "wall_s": wall,
            "load": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="train.steps (default 400; eval_every = steps/4)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds (default 2: quick.yaml's 32 runs)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-pinned", dest="pinned", action="store_false",
                    help="leave out the third setting (one device pinned to one core)")
    ap.add_argument("--warm", action="store_true", help="share one compilation cache (the wall time then "
                    "leaves most compiling out); default: a fresh cache per run, as on a fresh clone")
    args = ap.parse_args(argv)
    if args.steps < 8 or args.rounds < 1 or args.seeds < 1:
        ap.error("need --steps >= 8 (at least two chunks), --rounds >= 1, --seeds >= 1")
    from gsweep.devices import decide, usable_cores

    print(f"cpu_devices_bench: sweeps/quick.yaml, seeds={args.seeds}, {args.steps} steps; {usable_cores()} usable "
          f"core(s), default: {decide({k: v for k, v in os.environ.items() if k != 'GSWEEP_CPU_DEVICES'})[1]}; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    pinned = args.pinned and hasattr(os, "sched_setaffinity")
    settings = [("one device", 1, False), ("default", None, False)] + ([("one core", 1, True)] if pinned else [])
    res: dict[str, list[dict]] = {name: [] for name, _, _ in settings}
    with tempfile.TemporaryDirectory(prefix="gsweep-cpu-devices-") as tmp:
        shared = Path(tmp) / "cache" if args.warm else None
        for r in range(args.rounds):
            for name, n, pin in settings:
                cache = shared or Path(tmp) / f"cache-{name.replace(' ', '-')}-{r}"
                m = one(Path(tmp) / f"{name.replace(' ', '-')}-{r}", n, args, cache, pin)
                res[name].append(m)
                print(f"  round {r + 1} {name:>10}: {m['devices']} device(s) ({m['rule']}), {m['runs']} runs in "
                      f"chunks of {m['runs_per_chunk']} on {m['group_devices']} device(s): steady "
                      f"{m['steady_model_steps_per_s']:.1f} model-steps/s; first chunk {m['first_chunk_s']} s, "
                      f"sizing {m['sizing_s']} s; whole process {m['wall_s']:.1f} s; load {m['load']:.2f}",
                      flush=True)
    best = {k: max(v, key=lambda m: m["steady_model_steps_per_s"]) for k, v in res.items()}
    fastest = {k: min(m["wall_s"] for m in v) for k, v in res.items()}
    ratio = best["default"]["steady_model_steps_per_s"] / best["one device"]["steady_model_steps_per_s"]
    print(f"steady throughput, best of {args.rounds}: one device {best['one device']['steady_model_steps_per_s']:.1f}, "
          f"default ({best['default']['devices']} devices) {best['default']['steady_model_steps_per_s']:.1f} "
          f"model-steps/s: ratio {ratio:.2f} (goal on 2 cores: >= 1.8)")
    print(f"whole process, best of {args.rounds}: one device {fastest['one device']:.1f} s, default "
          f"{fastest['default']:.1f} s: ratio {fastest['one device'] / fastest['default']:.2f}")
    if pinned:
        cores = usable_cores()
        core1 = best["one core"]["steady_model_steps_per_s"]
        one_dev = best["one device"]["steady_model_steps_per_s"]
        print(f"one device pinned to one core, best of {args.rounds}: {core1:.1f} model-steps/s; one device on "
              f"{cores} cores is {one_dev / core1:.2f}x that (XLA's intra-op threads); the default is "
              f"{best['default']['steady_model_steps_per_s'] / core1:.2f}x one core on {cores} cores")
        print(f"ceiling of the ratio default / one device with perfect scaling over {cores} cores: "
              f"{cores} x {core1:.1f} / {one_dev:.1f} = {cores * core1 / one_dev:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
