"""How many XLA CPU devices gsweep runs on: one per usable core, decided before JAX starts.

XLA:CPU gives a process one device by default, and XLA's intra-op threads barely help models as
small as gsweep's, so one core does the work while the others wait. gsweep therefore asks the host
platform for one device per core it may use (``os.sched_getaffinity``: the cores of a container, a
``taskset`` or a job scheduler's allocation, not the whole machine) and shards the run axis over
them with the ``map`` path (each device steps its share of the runs, one at a time, with the same
single-device program: bitwise equal results on any device count).

The count, in order of precedence:

1. ``GSWEEP_CPU_DEVICES=N`` (a positive integer): N devices, whatever XLA_FLAGS says;
2. the user's own ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``: left as it is;
3. the usable cores.

:func:`configure` writes it into ``XLA_FLAGS`` (and ``jax_num_cpu_devices`` when JAX is imported but
not started), so subprocesses inherit it; every entry point that trains calls it first (the command
line, :func:`gsweep.run`). The flag concerns the host platform only: on a GPU or TPU backend the run
axis is sharded over the accelerators (:func:`run_devices`), never over these CPU devices.
This module imports no JAX.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import MutableMapping, Sequence

ENV = "GSWEEP_CPU_DEVICES"
FLAG = "--xla_force_host_platform_device_count"
_FLAG_RE = re.compile(re.escape(FLAG) + r"(?:=(\S*))?")
_CHOSEN: list = []  # [count, why, XLA_FLAGS and GSWEEP_CPU_DEVICES after configure()] of this process


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on every OS
        return max(1, os.cpu_count() or 1)


def env_count(environ: MutableMapping[str, str] | None = None) -> int | None:
    """GSWEEP_CPU_DEVICES as a positive int, None when unset or empty; a one-line UserError otherwise."""
    environ = os.environ if environ is None else environ
    v = environ.get(ENV)
    if v is None or not v.strip():
        return None
    try:
        n = int(v.strip())
    except ValueError:
        n = 0
    if n < 1:
        from gsweep.errors import UserError
        raise UserError(f"{ENV}={v!r}: expected a positive whole number of CPU devices (e.g. 1 or 4)")
    return n


def flag_count(xla_flags: str) -> int | None:
    """The host device count a user wrote into XLA_FLAGS (the last one wins), else None."""
    found = _FLAG_RE.findall(xla_flags or "")
    if not found:
        return None
    try:
        return int(found[-1])
    except ValueError:
        return None


def decide(environ: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """(the host platform's device count, why): GSWEEP_CPU_DEVICES, else the user's XLA_FLAGS count,
    else one per usable core."""
    environ = os.environ if environ is None else environ
    n = env_count(environ)
    if n is not None:
        return n, f"{ENV}={n}"
    f = flag_count(environ.get("XLA_FLAGS", ""))
    if f is not None:
        return f, f"XLA_FLAGS {FLAG}={f}"
    c = usable_cores()
    return c, f"one per usable core ({c}, os.sched_getaffinity)"


def configure(environ: MutableMapping[str, str] | None = None) -> tuple[int, str]:
    """Set the host platform's device count before JAX initialises (see the module doc); returns
    :func:`decide`'s answer. Idempotent. When JAX's backends are already up (a notebook that ran JAX
    first) nothing can change any more: gsweep then uses the CPU devices that exist."""
    target = os.environ if environ is None else environ
    if environ is None and _CHOSEN and _CHOSEN[2] == target.get("XLA_FLAGS") and _CHOSEN[3] == target.get(ENV):
        return _CHOSEN[0], _CHOSEN[1]  # configured already (the flag in XLA_FLAGS is ours, not the user's)
    n, why = decide(target)
    if not why.startswith("XLA_FLAGS"):
        rest = _FLAG_RE.sub("", target.get("XLA_FLAGS", "")).split()
        target["XLA_FLAGS"] = " ".join([*rest, f"{FLAG}={n}"])
    jax = sys.modules.get("jax")
    if environ is None and jax is not None:
        try:
            from jax._src import xla_bridge
            if not xla_bridge.backends_are_initialized():
                jax.config.update("jax_num_cpu_devices", n)
        except Exception:  # noqa: BLE001 - another JAX: XLA_FLAGS alone, read when the CPU backend starts
            pass
    if environ is None:
        _CHOSEN[:] = [n, why, target.get("XLA_FLAGS"), target.get(ENV)]
    return n, why


def chosen() -> tuple[int, str]:
    """How this process's count was chosen: :func:`configure`'s answer when it ran, else :func:`decide`'s."""
    return (_CHOSEN[0], _CHOSEN[1]) if _CHOSEN else decide()


def run_devices(backend: str, devices: Sequence, process_count: int = 1,
                environ: MutableMapping[str, str] | None = None) -> list:
    """The devices the run axis is sharded over, from the default backend's ``devices``: on a GPU or
    TPU backend every accelerator (GSWEEP_CPU_DEVICES does not apply: one GPU is one device); on CPU
    the first GSWEEP_CPU_DEVICES of them when it is set (a process whose JAX started with more, as
    the tests' does), else all. In a multi-process run every process's devices are used."""
    devices = list(devices)
    if backend != "cpu" or process_count > 1:
        return devices
    n = env_count(environ)
    return devices[:n] if n else devices


def devices_used(n_runs: int, n_dev: int) -> int:
    """The fewest of ``n_dev`` devices that train ``n_runs`` runs in as few rounds as all of them do:
    ceil(n_runs / k) for k = ceil(n_runs / n_dev) runs per device. The padding rows of a chunk are
    then fewer than one device's share (< k), instead of up to n_dev - 1 devices of copies."""
    if n_runs <= 0 or n_dev <= 1:
        return 1
    k = -(-n_runs // n_dev)
    return -(-n_runs // k)
