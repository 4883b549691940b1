"""The engine: batched equals alone, one compile per group, 1 device equals 4, divergence isolated."""

import numpy as np
import pandas as pd
import pytest

from gsweep.spec import from_dict
from gsweep.train.engine import TRACE_COUNT, eval_schedule
from gsweep.train.sweep import run_sweep
from tests.conftest import tiny_spec_dict

CURVE_KEY = ["run_id", "step", "split"]


def _run(tmp_path, name, d, **kw):
    spec = from_dict(d, f"{name}.yaml")
    res = run_sweep(spec, tmp_path / name, progress=False, **kw)
    curves = pd.read_parquet(tmp_path / name / "curves.parquet").sort_values(CURVE_KEY).reset_index(drop=True)
    return spec, res.runs, curves


def test_eval_schedule_is_dense_early_and_ends_at_budget():
    s = eval_schedule(1000, 100, 8)
    assert list(s[:4]) == [1, 2, 3, 5]
    assert 100 in s and 1000 in s and s[-1] == 1000
    assert list(eval_schedule(250, 100, 0)) == [100, 200, 250]


def test_batched_runs_match_runs_alone(tmp_path):
    grid = tiny_spec_dict(task={"data_frac": [0.3, 0.7]}, train={"lr": [0.001, 0.01], "weight_decay": [0.0, 1.0]},
                          seeds=1)
    grid["train"]["lr"] = [0.001, 0.01]
    _, runs, curves = _run(tmp_path, "grid", grid, n_devices=1)
    assert len(runs) == 8
    picks = [(0.3, 0.001, 0.0), (0.7, 0.01, 1.0)]
    for frac, lr, wd in picks:
        alone = tiny_spec_dict(task={"data_frac": frac}, train={"lr": lr, "weight_decay": wd})
        _, r1, c1 = _run(tmp_path, f"alone-{frac}-{lr}-{wd}", alone, n_devices=1)
        rid = r1["run_id"].iloc[0]
        assert rid in set(runs["run_id"]), "the same settings must give the same run id"
        c = curves[curves["run_id"] == rid].reset_index(drop=True)
        assert len(c) == len(c1) > 0
        np.testing.assert_allclose(c["loss"], c1["loss"], rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(c["acc"], c1["acc"], atol=1e-6)
        np.testing.assert_allclose(c["weight_norm"], c1["weight_norm"], rtol=1e-5)


def test_one_compile_per_group_across_chunks(tmp_path):
    d = tiny_spec_dict(train={"weight_decay": [0.0, 0.5, 1.0], "runs_per_chunk": 1, "chunk_steps": 20}, seeds=2)
    spec = from_dict(d)
    gid = spec.runs()[0].group_id
    TRACE_COUNT.pop(gid, None)
    res = run_sweep(spec, tmp_path / "r", progress=False, n_devices=1)
    assert len(res.runs) == 6
    # 6 chunks of runs x 3 chunks of steps, one trace
    assert TRACE_COUNT[gid] == 1


def test_four_devices_equal_one(tmp_path):
    import jax
    assert len(jax.devices()) == 4, "conftest asks for 4 fake CPU devices"
    d = tiny_spec_dict(task={"data_frac": [0.3, 0.6]}, train={"weight_decay": [0.0, 1.0]}, seeds=2)
    _, r1, c1 = _run(tmp_path, "one", d, n_devices=1)
    _, r4, c4 = _run(tmp_path, "four", d, n_devices=4)
    pd.testing.assert_frame_equal(c1, c4, check_exact=False, rtol=1e-5)
    pd.testing.assert_frame_equal(r1, r4, check_exact=False, rtol=1e-5)


def test_diverging_run_is_flagged_and_isolated(tmp_path):
    sane = tiny_spec_dict(train={"lr": [0.001, 0.003, 0.01]}, seeds=1)
    wild = tiny_spec_dict(train={"lr": [0.001, 0.003, 1e9]}, seeds=1)
    _, rs, cs = _run(tmp_path, "sane", sane, n_devices=1)
    _, rw, cw = _run(tmp_path, "wild", wild, n_devices=1)
    bad = rw[rw["train.lr"] == 1e9].iloc[0]
    assert bad["status"] == "diverged" and not pd.isna(bad["diverged_step"])
    assert pd.isna(bad["phase"])
    # curves of the diverged run stop before divergence; nothing non-finite is written
    assert np.isfinite(cw[cw["run_id"] == bad["run_id"]]["loss"]).all()
    # the other runs are bit-identical to the sweep where that run is sane
    for lr in (0.001, 0.003):
        rid = rw[rw["train.lr"] == lr]["run_id"].iloc[0]
        a = cw[cw["run_id"] == rid].reset_index(drop=True)
        b = cs[cs["run_id"] == rid].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (rs["status"] == "done").all()


@pytest.mark.parametrize("batch", [0, 8])
def test_minibatch_and_full_batch_train(tmp_path, batch):
    d = tiny_spec_dict(train={"batch_size": batch, "steps": 40, "eval_every": 20})
    _, runs, curves = _run(tmp_path, f"b{batch}", d, n_devices=1)
    first = curves[(curves["split"] == "train")].groupby("step")["loss"].mean()
    assert first.iloc[-1] < first.iloc[0], "training lowers the train loss"
