"""Test-only fault injection, read from GSWEEP_TEST_* environment variables; each hook does nothing
unless its variable is set. The tests use them to kill, signal or starve a real ``gsweep run`` at an
exact point (e.g. tests/test_resume.py, test_safety.py, test_memory.py).

- ``GSWEEP_TEST_KILL="EVENT:CHUNK"``: SIGKILL at that point (:func:`kill_at`; ``after_part`` = rows
  written, checkpoint not yet; ``gsweep.checkpoint`` reads ``in_checkpoint`` itself).
- ``GSWEEP_TEST_SIGNAL="EVENT:NAME[:N]"``: send signal NAME N times at EVENT (:func:`signal_at`).
- ``GSWEEP_TEST_OOM_ABOVE=R``: a unit trained with more than R runs per chunk raises a device
  out-of-memory error (:func:`oom_above`)."""

from __future__ import annotations

import os
import signal

from gsweep.train.memory import DeviceOOM


def kill_at(event: str, chunk: int) -> None:
    """Test-only fault injection: GSWEEP_TEST_KILL="EVENT:CHUNK" SIGKILLs this process at that
    point (EVENT: after_part = rows written, checkpoint not yet)."""
    spec = os.environ.get("GSWEEP_TEST_KILL")
    if spec and spec == f"{event}:{chunk}":
        os.kill(os.getpid(), signal.SIGKILL)


def signal_at(event: str) -> None:
    """Test-only fault injection: GSWEEP_TEST_SIGNAL="EVENT:NAME[:N]" sends this process signal NAME
    (INT or TERM) N times (default 1) at EVENT (tables: as the tables are about to be written)."""
    spec = os.environ.get("GSWEEP_TEST_SIGNAL", "").split(":")
    if len(spec) >= 2 and spec[0] == event:
        for _ in range(int(spec[2]) if len(spec) > 2 else 1):
            os.kill(os.getpid(), getattr(signal, "SIG" + spec[1]))


def oom_above(runs_per_chunk: int) -> None:
    """Test-only: GSWEEP_TEST_OOM_ABOVE=N pretends that more than N runs per chunk do not fit."""
    oom_above = os.environ.get("GSWEEP_TEST_OOM_ABOVE")
    if oom_above and runs_per_chunk > int(oom_above):
        raise DeviceOOM(f"RESOURCE_EXHAUSTED: test hook: {runs_per_chunk} runs per chunk > {oom_above}")
