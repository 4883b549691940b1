"""How many runs one compiled call trains: sized from the compiled chunk program, not from a model formula.

The chunk program of a group is compiled (not run) for the whole group (R = its size, rounded up to
the device count; at most 4096); XLA's memory analysis (arguments + outputs - donated + temporaries,
per device) decides. If it fits in ``SHARE`` of the memory limit, that is R, at the cost of the one
compile training needs anyway (the same program: the call that trains finds it compiled). If not,
the program is compiled at one run per device too: the two sizes give the fixed bytes and the bytes
of each further run, the largest R that is a multiple of the device count and fits is chosen, and
compiled once more to confirm (shrunk in proportion until it fits). Nothing here knows the model: any model, task or optimizer
that the engine can compile is sized the same way.

The memory limit: ``GSWEEP_MEMORY_BUDGET`` (bytes, or with a K/M/G/T suffix) when set; else the
device's ``bytes_limit`` (GPU, TPU); else, on CPU, half the host's RAM shared by the local devices.
A device that still runs out of memory is handled by the caller (``run_sweep`` halves R and retries;
:func:`is_oom` tells such an error). A group that does not fit even at one run per device is refused
before it runs (:func:`check_fits`). :func:`compile_seconds` is a group's compile time for meta.json.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence

import numpy as np

SHARE = 0.85  # of the memory limit: room for XLA's workspace, the pool and host transfers
MAX_RUNS_PER_CHUNK = 4096
BUDGET_ENV = "GSWEEP_MEMORY_BUDGET"
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclasses.dataclass
class Sizing:
    """The choice of runs per chunk and how it was made (recorded in meta.json per group)."""

    runs_per_chunk: int
    compiled_bytes: int  # per device, of the program at runs_per_chunk
    estimated_bytes: int | None  # per device, fixed + R/n_dev x per run, before the confirming compile
    per_run_bytes: int | None
    fixed_bytes: int | None
    budget_bytes: int  # SHARE x the limit
    limit_bytes: int
    limit_source: str
    probes: dict[int, int]  # R -> compiled bytes per device
    sizing_s: float

    def meta(self) -> dict:
        return {"runs_per_chunk": self.runs_per_chunk, "compiled_bytes": self.compiled_bytes,
                "estimated_bytes": self.estimated_bytes, "per_run_bytes": self.per_run_bytes,
                "memory_budget_bytes": self.budget_bytes, "memory_limit_source": self.limit_source,
                "sizing_s": round(self.sizing_s, 2)}


def parse_bytes(text: str) -> int:
    """'2G', '512M', '3000000' -> bytes; a one-line error naming the setting otherwise."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _SUFFIX and not t[-1:].isdigit() else ""
    try:
        v = float(t[: len(t) - len(unit)]) * _SUFFIX[unit]
    except ValueError:
        v = -1
    if not (v > 0 and math.isfinite(v) and v < 2.0 ** 62):
        from gsweep.errors import UserError
        raise UserError(f"{BUDGET_ENV}={text!r}: not a size in bytes (e.g. 2G, 512M, 3000000)")
    return int(v)


def memory_limit() -> tuple[int, str]:
    """(bytes one device may use, where the figure comes from)."""
    env = os.environ.get(BUDGET_ENV)
    if env:
        return parse_bytes(env), f"{BUDGET_ENV}={env}"
    import jax

    dev = jax.local_devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001 - not every backend reports
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]), f"{dev.device_kind} bytes_limit"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    n = max(1, len(jax.local_devices()))
    return int(total // 2 // n), f"half the host RAM over {n} device(s)"


def _round_up(n: int, k: int) -> int:
    return int(math.ceil(n / k) * k)


def size_runs_per_chunk(prog, n_runs: int, requested: int = 0, limit: tuple[int, str] | None = None,
                        share: float = SHARE) -> Sizing:
    """Runs per chunk for ``prog`` (a GroupProgram) over ``n_runs`` runs; ``requested`` > 0 (the spec's
    train.runs_per_chunk) fixes it, and only its compiled size is measured."""
    t0 = time.perf_counter()
    n_dev = prog.n_dev
    limit_bytes, source = limit or memory_limit()
    budget = int(limit_bytes * share)
    probes: dict[int, int] = {}

    def compiled(R: int) -> int:
        if R not in probes:
            probes[R] = prog.compiled_bytes(R)
        return probes[R]

    if requested:
        R = _round_up(min(requested, max(1, n_runs)), n_dev)
        return Sizing(R, compiled(R), None, None, None, budget, limit_bytes, source, probes,
                      time.perf_counter() - t0)
    r_max = _round_up(max(1, min(n_runs, MAX_RUNS_PER_CHUNK)), n_dev) // n_dev  # runs per device
    b_max = compiled(r_max * n_dev)
    if b_max <= budget or r_max == 1:  # the whole group fits: one compile, the one training uses
        return Sizing(r_max * n_dev, b_max, b_max, None, None, budget, limit_bytes, source, probes,
                      time.perf_counter() - t0)
    b1 = compiled(n_dev)  # one run per device: with b_max, the fixed bytes and the bytes of each run
    per_run = max(1, math.ceil((b_max - b1) / (r_max - 1)))
    fixed = b1 - per_run
    r = max(1, min(r_max, (budget - fixed) // per_run))
    estimated = fixed + r * per_run
    while True:  # confirm at the chosen R; shrink in proportion while it does not fit
        b = compiled(r * n_dev)
        if b <= budget or r == 1:
            break
        r = max(1, min(r - 1, int(r * budget / b)))
    return Sizing(r * n_dev, b, estimated, per_run, fixed, budget, limit_bytes, source, probes,
                  time.perf_counter() - t0)


def check_fits(gid: str, sizing, n_dev: int) -> None:
    """A group whose program, by its own memory analysis, needs more than the device holds even at one
    run per device is refused before it runs (a one-line error, not an allocation failure)."""
    smallest = sizing.probes.get(n_dev, sizing.compiled_bytes if sizing.runs_per_chunk <= n_dev else None)
    if smallest is not None and smallest > sizing.limit_bytes:
        def size(b: int) -> str:
            return f"{b / 2**30:,.1f} GiB" if b >= 2**30 else f"{b / 2**20:,.3g} MiB"
        from gsweep.errors import UserError
        raise UserError(f"group {gid}: its compiled program needs {size(smallest)} per device even with "
                        f"one run per device, more than the {size(sizing.limit_bytes)} available "
                        f"({sizing.limit_source}); reduce the task size (task.p), the model, or train.batch_size")


def compile_seconds(chunk_times: Sequence[float], sizing_s: float) -> dict:
    """A group's compile time: the sizing compiles plus the first chunk call's excess over a steady
    one (the median of the later calls; the first call alone when there is only one)."""
    steady = float(np.median(chunk_times[1:])) if len(chunk_times) > 1 else 0.0
    return {"compile_s": round(sizing_s + max(0.0, chunk_times[0] - steady), 2),
            "first_chunk_s": round(chunk_times[0], 2), "steady_chunk_s": round(steady, 2)}


class DeviceOOM(RuntimeError):
    pass


def is_oom(e: BaseException) -> bool:
    """A device out-of-memory error from XLA (or the test hook's stand-in)."""
    text = f"{type(e).__name__}: {e}"
    return isinstance(e, DeviceOOM) or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text \
        or "out of memory" in text
