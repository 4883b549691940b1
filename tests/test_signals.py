"""gsweep.train.signals: the handler run_sweep installs, its nesting, and the exit codes; and the
test-only out-of-memory hook (gsweep.train.testhooks) that tests/test_memory.py relies on."""

import os
import signal

import pytest

from gsweep.train.signals import Interrupted, Signals, ignore_signals


def test_exit_codes_are_128_plus_the_signal():
    assert Interrupted("x").exit_code == 130
    assert Interrupted("x", signal.SIGTERM).exit_code == 143


def test_a_first_signal_is_caught_and_the_old_handlers_come_back_after_the_outermost_exit():
    before = signal.getsignal(signal.SIGTERM)
    sig = Signals()
    sig.__enter__()
    with sig:  # nested: still installed after the inner exit
        pass
    assert signal.getsignal(signal.SIGTERM) == sig._handle
    os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before the next bytecode
    assert sig.caught == signal.SIGTERM
    sig.__exit__()
    assert signal.getsignal(signal.SIGTERM) == before


def test_ignore_signals_sets_sig_ign():
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ignore_signals()
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_oom_hook_raises_an_error_that_is_oom(monkeypatch):
    from gsweep.train import testhooks
    from gsweep.train.memory import is_oom
    monkeypatch.setenv("GSWEEP_TEST_OOM_ABOVE", "2")
    testhooks.oom_above(2)  # at the limit: nothing
    with pytest.raises(Exception) as e:
        testhooks.oom_above(3)
    assert is_oom(e.value)
    assert not is_oom(RuntimeError("an ordinary failure"))
