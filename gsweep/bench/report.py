"""``gsweep bench``, the command: interleaves gsweep's chunks with the peers' runs, prints one line
per configuration and writes ``OUT/<UTC timestamp>.json``."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from gsweep.bench.measurement import EngineBench, _device_peak, matmul_peak
from gsweep.bench.peers import _pooled, resolve_peer, run_peer
from gsweep.bench.recipe import Plan, flop_counts, make_plan
from gsweep.errors import UserError

EVAL_CADENCE = 100  # the spec's default train.eval_every: eval_overhead_frac is quoted at this cadence

# The keys every configuration carries (issue 8); the test checks them.
CONFIG_KEYS = ("device_name", "precision", "runs", "model_steps_per_s", "ratio_vs_torch_loop",
               "ratio_vs_torch_vmap", "flops_per_model_step", "achieved_tflops", "peak_tflops", "compile_s",
               "peak_memory_bytes", "runs_per_chunk", "eval_overhead_frac")


# ---------------------------------------------------------------------------------------------
# the command


def _device_setup(device: str | None):
    """Pick the device (auto: the GPU when JAX sees one) before JAX starts its backends."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to the peer too
    import jax

    from gsweep.devices import run_devices

    if device == "cpu":
        try:
            jax.config.update("jax_platforms", "cpu")
        except Exception:  # noqa: BLE001 - backends already up: use the CPU devices anyway
            pass
        return "cpu", run_devices("cpu", jax.devices("cpu"))  # one per core (GSWEEP_CPU_DEVICES)
    backend = jax.default_backend()
    if backend in ("gpu", "cuda", "rocm"):
        return "gpu", jax.devices()
    if device == "gpu":
        raise UserError(f"--device gpu: JAX sees no GPU (backend {backend!r}); run on a GPU host, or use "
                        "--device cpu (scripts/gpu_bench.sh --quick tries the GPU script on CPU)")
    return "cpu", run_devices("cpu", jax.devices("cpu"))


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
    plan = make_plan(args, device, cores=_cores())
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
    from gsweep.devices import chosen
    how = f" for gsweep: {chosen()[1]}" if device == "cpu" else ""
    print(f"gsweep bench: {device_name}, jax {jax.__version__} ({jax.default_backend()}, {len(devices)} device(s)"
          f"{how}); "
          f"p={rc.p}, {rc.frac:.0%} of pairs, d_model {rc.d_model}, {rc.heads} heads, d_mlp {rc.d_mlp}; "
          f"load {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}", flush=True)

    configs: list[dict[str, Any]] = []
    peers_all: list[dict[str, Any]] = []
    for precision in plan.precisions:
        peak = matmul_peak(plan.matmul_n, plan.matmul_reps, precision, list(devices))
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
                for th in plan.threads(mode):
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
            each = "; ".join(f"{m} {'default' if th is None else th} thread(s) {v[r]['model_steps_per_s']:.4g}"
                             for (m, th), v in peer_runs.items())
            print(f"  [{precision}] round {r + 1}/{plan.rounds}: gsweep "
                  + ", ".join(f"R={k}: {v:.4g}" for k, v in gs_round.items())
                  + f" model-steps/s; torch {each}; load {os.getloadavg()[0]:.2f}", flush=True)
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
            _print_flops(configs[-1], len(devices))

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
                f"; gsweep on {len(devices)} CPU device(s) (one per core unless GSWEEP_CPU_DEVICES says "
                "otherwise); the PyTorch loop with OMP_NUM_THREADS=1 and with every core (OpenMP threads "
                "spin-wait, which a loaded machine punishes; the faster is the reference), the torch.func "
                "ensemble with every core" if device == "cpu" and not plan.quick else "")),
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
                      ("--batching", "batching"),
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


def _print_flops(cfg: dict[str, Any], n_dev: int) -> None:
    """The achieved FLOP/s beside the matmul peak measured in the same run."""
    ach, peak = cfg["achieved_tflops"], cfg["peak_tflops"]
    print(f"  [{cfg['precision']}] R={cfg['runs']}: achieved {ach * 1e3:.4g} GFLOP/s "
          f"({cfg['flops_per_model_step'] / 1e9:.4g} GFLOP per model-step x {cfg['model_steps_per_s']:.4g} "
          f"model-steps/s) = {100 * ach / peak:.0f}% of the {peak * 1e3:.4g} GFLOP/s matmul peak measured in "
          f"this run (one device {cfg['peak_tflops_one_device'] * 1e3:.4g}, all {n_dev} at once "
          f"{cfg['peak_tflops_all_devices'] * 1e3:.4g}); torch loop {cfg['torch_loop_model_steps_per_s']:.4g} "
          f"model-steps/s ({cfg['torch_loop']['threads']} thread(s)), torch.func ensemble "
          f"{cfg['torch_vmap_model_steps_per_s']:.4g} ({cfg['torch_vmap']['threads']} thread(s))", flush=True)


def _print_config(cfg: dict[str, Any]) -> None:
    head = " ".join(f"{k}={_fmt(cfg[k])}" for k in CONFIG_KEYS)
    print(f"configuration: {head}", flush=True)
