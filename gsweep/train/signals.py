"""SIGINT/SIGTERM during a sweep: finish the chunk in flight, checkpoint, write the tables, exit 130/143.

:class:`Signals` is installed by ``run_sweep`` from the lock to the last write; the unit loop reads
``Signals.caught`` after each chunk. :class:`Interrupted` is what ``run_sweep`` raises after a clean
stop (its ``exit_code`` is the command's status), and :func:`ignore_signals` is called by the command
line on the way out so that a further signal cannot interrupt JAX's exit handlers."""

from __future__ import annotations

import os
import signal
import sys


class Interrupted(Exception):
    def __init__(self, msg: str, signum: int = signal.SIGINT):
        super().__init__(msg)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal's number)."""
        return 128 + self.signum


class Signals:
    """SIGINT/SIGTERM: finish the chunk in flight, checkpoint, write the tables, exit 130.

    A second signal stops at once, cleanly: the handler never raises into JAX (an exception thrown
    while XLA compiles or runs aborts the process); it calls ``on_hard`` (meta.json -> interrupted,
    the lock released) and leaves with status 130. The last checkpoint and the finished units stay,
    so the same command resumes."""

    def __init__(self):
        self.caught: int | None = None
        self.on_hard = None
        self._old = {}
        self._depth = 0

    def __enter__(self):
        self._depth += 1
        if self._depth > 1:  # already installed: it covers the whole sweep, tables and meta included
            return self
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.caught is not None:  # a second signal: stop now, cleanly
            print(f"\ngsweep: second {signal.Signals(signum).name}: stopping now; the last checkpoint is kept",
                  file=sys.stderr, flush=True)
            try:
                if self.on_hard is not None:
                    self.on_hard()
            finally:
                os._exit(128 + int(signum))
        self.caught = signum
        print(f"\ngsweep: {signal.Signals(signum).name} received: finishing the chunk in flight, then "
              "checkpointing (a second signal stops at once)", file=sys.stderr)

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth > 0:
            return
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


def ignore_signals() -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(s, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
