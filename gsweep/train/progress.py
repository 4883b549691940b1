"""The progress line of `gsweep run` on stderr."""

from __future__ import annotations

import sys
import time

import numpy as np


class Progress:
    """One line on stderr: group, steps, ETA and model-steps/s (redrawn in place on a terminal)."""

    def __init__(self, total_model_steps: int, enabled: bool = True):
        self.total = max(1, total_model_steps)
        self.done = 0
        self.t0 = time.perf_counter()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.rate_done = 0
        self.rate_t0: float | None = None

    def update(self, label: str, step: int, steps: int, model_steps: int, final: bool = False) -> None:
        self.done += model_steps
        now = time.perf_counter()
        if self.rate_t0 is None:  # the first chunk includes compilation: rate from the second on
            self.rate_t0 = now
        else:
            self.rate_done += model_steps
        if not self.enabled or (not final and not self.tty and now - self.last < 2.0):
            return
        self.last = now
        rate = self.rate_done / max(now - self.rate_t0, 1e-9) if self.rate_done else 0.0
        frac = self.done / self.total
        eta = (self.total - self.done) / rate if rate else float("nan")
        bar = "█" * int(24 * frac) + "░" * (24 - int(24 * frac))
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if np.isfinite(eta) else "--:--:--"
        line = (f"{label} step {step}/{steps} {bar} {100 * frac:5.1f}%  ETA {eta_s}  "
                f"{rate:,.0f} model-steps/s")
        print(("\r" + line + " " * 4) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)

