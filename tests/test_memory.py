"""Runs per chunk from the compiled program's memory analysis (gsweep.train.memory)."""

import json

import pandas as pd
import pytest

from gsweep.errors import UserError
from gsweep.spec import from_dict
from gsweep.train.engine import GroupProgram, make_mesh
from gsweep.train.memory import SHARE, parse_bytes, size_runs_per_chunk
from gsweep.train.sweep import run_sweep
from tests.conftest import tiny_spec_dict


class FakeProgram:
    """compiled_bytes(R) = fixed + per_run x R / n_dev (+ extra above a knee): no JAX."""

    def __init__(self, n_dev, fixed, per_run, knee=None, extra=0):
        self.n_dev, self.fixed, self.per_run, self.knee, self.extra = n_dev, fixed, per_run, knee, extra
        self.compiled = []

    def compiled_bytes(self, R):
        assert R % self.n_dev == 0
        self.compiled.append(R)
        r = R // self.n_dev
        return self.fixed + self.per_run * r + (self.extra if self.knee and r > self.knee else 0)


def test_the_whole_group_when_it_fits_with_one_compile():
    p = FakeProgram(4, 1000, 100)
    s = size_runs_per_chunk(p, 30, limit=(10**9, "test"))
    assert s.runs_per_chunk == 32 and p.compiled == [32]  # rounded up to the device count
    assert s.compiled_bytes == 1000 + 100 * 8


def test_a_smaller_budget_gives_a_smaller_multiple_of_the_device_count():
    p = FakeProgram(4, 1000, 100)
    big = size_runs_per_chunk(p, 400, limit=(10**9, "test")).runs_per_chunk
    lim = int((1000 + 100 * 20) / SHARE) + 1  # 20 runs per device fit
    s = size_runs_per_chunk(FakeProgram(4, 1000, 100), 400, limit=(lim, "test"))
    assert s.runs_per_chunk == 80 < big == 400
    assert s.per_run_bytes == 100 and s.fixed_bytes == 1000 and s.estimated_bytes == s.compiled_bytes == 3000
    tiny = size_runs_per_chunk(FakeProgram(4, 1000, 100), 400, limit=(10, "test"))
    assert tiny.runs_per_chunk == 4  # at least one run per device: the out-of-memory halving takes over


def test_the_confirming_compile_shrinks_r_when_the_estimate_was_low():
    p = FakeProgram(2, 1000, 100, knee=10, extra=500)  # nonlinear above 10 runs per device
    lim = int((1000 + 100 * 15) / SHARE) + 1
    s = size_runs_per_chunk(p, 100, limit=(lim, "test"))
    assert s.estimated_bytes <= s.budget_bytes and s.compiled_bytes <= s.budget_bytes
    assert s.runs_per_chunk % 2 == 0 and s.runs_per_chunk <= 20  # 10 runs per device before the knee
    first_choice = p.compiled[2]  # after the whole group and one run per device
    assert s.probes[first_choice] > s.budget_bytes and s.runs_per_chunk < first_choice


def test_a_requested_size_is_kept_and_measured():
    p = FakeProgram(4, 1000, 100)
    s = size_runs_per_chunk(p, 50, requested=6, limit=(10, "test"))
    assert s.runs_per_chunk == 8 and p.compiled == [8] and s.estimated_bytes is None


def test_parse_bytes():
    assert parse_bytes("2G") == 2 << 30 and parse_bytes("512M") == 512 << 20 and parse_bytes("3000") == 3000
    assert parse_bytes("1.5GiB") == int(1.5 * (1 << 30))
    with pytest.raises(UserError, match="GSWEEP_MEMORY_BUDGET"):
        parse_bytes("lots")


def test_compiled_bytes_grow_with_r_on_the_real_program():
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 1.0], "batching": "vmap"}, seeds=2))
    runs = spec.runs()
    prog = GroupProgram(runs[0].group_id, runs, 4, mesh=make_mesh(__import__("jax").devices()[:4]), batching="vmap")
    assert 0 < prog.compiled_bytes(4) < prog.compiled_bytes(8)


def test_budget_and_out_of_memory_halving_in_a_sweep(tmp_path, monkeypatch):
    """One device, map batching, 4 runs: the default budget takes all 4; a budget between the
    programs of 2 and 4 runs gives fewer; an out-of-memory error still halves; results equal."""
    spec = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 1.0]}, seeds=2))
    runs = spec.runs()

    def sweep(name):
        run_sweep(spec, tmp_path / name, progress=False, n_devices=1)
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        (g,) = meta["groups"].values()
        c = pd.read_parquet(tmp_path / name / "curves.parquet").sort_values(["run_id", "step", "split"])
        return g, c.reset_index(drop=True)

    g, c = sweep("all")
    assert g["runs_per_chunk"] == 4 and g["compiled_bytes"] > 0 and g["estimated_bytes"] > 0
    prog = GroupProgram(runs[0].group_id, runs, 1, mesh=make_mesh(__import__("jax").devices()[:1]))
    b2, b4 = prog.compiled_bytes(2), prog.compiled_bytes(4)
    monkeypatch.setenv("GSWEEP_MEMORY_BUDGET", str(int((b2 + b4) / 2 / SHARE)))
    g_small, c_small = sweep("budget")
    assert 2 <= g_small["runs_per_chunk"] < 4 and g_small["compiled_bytes"] <= (b2 + b4) / 2
    assert g_small["memory_limit_source"].startswith("GSWEEP_MEMORY_BUDGET")
    monkeypatch.delenv("GSWEEP_MEMORY_BUDGET")
    monkeypatch.setenv("GSWEEP_TEST_OOM_ABOVE", "2")
    g_oom, c_oom = sweep("oom")
    assert g_oom["oom_retries"] == 1 and g_oom["runs_per_chunk"] == 2
    pd.testing.assert_frame_equal(c, c_small, check_exact=True)  # map: bitwise across batch sizes
    pd.testing.assert_frame_equal(c, c_oom, check_exact=True)
