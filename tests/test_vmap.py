"""The batched path (``train.batching: vmap``: jit(shard_map(scan(vmap)))) that accelerators take,
run end to end on 4 fake CPU devices (tests/conftest.py) through its public switch.

Tolerance against the exact ``map`` path: accuracies equal (every evaluation on ci-tiny), losses
within rtol 1e-2 / atol 1e-5 (observed: at most 0.4%; batched matmuls reorder float32 sums: last-bit differences, which
training amplifies a little over 300 steps). Resumed = uninterrupted is exact (same program)."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest

from gsweep.spec import from_dict, load_spec
from gsweep.train.engine import TRACE_COUNT
from gsweep.train.sweep import run_sweep
from tests.conftest import ROOT, gsweep_cmd, tiny_spec_dict

LOSS_RTOL, LOSS_ATOL = 1e-2, 1e-5  # observed on ci-tiny: at most 0.4% (test loss late in training)


def _tables(out):
    c = pd.read_parquet(out / "curves.parquet").sort_values(["run_id", "step", "split"]).reset_index(drop=True)
    r = pd.read_parquet(out / "runs.parquet").sort_values("run_id").reset_index(drop=True)
    return r, c


def _sweep(spec, out, n_devices=None):
    for g in {r.group_id for r in spec.runs()}:
        TRACE_COUNT.pop(g, None)
    run_sweep(spec, out, progress=False, n_devices=n_devices)
    meta = json.loads((out / "meta.json").read_text())
    return (*_tables(out), meta)


@pytest.fixture(scope="module")
def ci_tiny(tmp_path_factory):
    import jax
    assert len(jax.devices()) == 4, "conftest asks for 4 fake CPU devices"
    tmp = tmp_path_factory.mktemp("vmap")
    # map on one device: it is bitwise the same on 1 and 4 (test_engine), and compiles once, not per device
    return {m: _sweep(load_spec(ROOT / "sweeps/ci-tiny.yaml", [f"train.batching={m}"]), tmp / m,
                      n_devices=1 if m == "map" else 4) for m in ("map", "vmap")}


def test_vmap_curves_equal_map_on_ci_tiny(ci_tiny):
    rm, cm, mm = ci_tiny["map"]
    rv, cv, mv = ci_tiny["vmap"]
    assert [g["batching"] for g in mm["groups"].values()] == ["map"]
    assert [g["batching"] for g in mv["groups"].values()] == ["vmap"]
    assert list(rm["run_id"]) == list(rv["run_id"]) and len(rm) == 8  # batching is kept out of run ids
    assert "train.batching" not in rv.columns
    assert len(cm) == len(cv) and (cm[["run_id", "step", "split"]] == cv[["run_id", "step", "split"]]).all().all()
    np.testing.assert_array_equal(cv["acc"].to_numpy(), cm["acc"].to_numpy())
    np.testing.assert_allclose(cv["loss"], cm["loss"], rtol=LOSS_RTOL, atol=LOSS_ATOL)
    pd.testing.assert_series_equal(rv["phase"], rm["phase"])


def test_vmap_traces_once_per_group(ci_tiny):
    _, _, meta = ci_tiny["vmap"]
    (g,) = meta["groups"].values()
    # 8 runs in one chunk of runs, 6 chunks of steps: one trace, shared by sizing and training
    assert g["traces"] == 1 and g["runs_per_chunk"] == 8
    assert g["compiled_bytes"] > 0 and g["estimated_bytes"] > 0


def test_sigkill_then_resume_equals_uninterrupted_vmap(tmp_path):
    env = {**os.environ, "GSWEEP_CPU_DEVICES": "4"}  # the sharded batched program
    args = ("run", ROOT / "sweeps/ci-tiny.yaml", "--quiet", "--set", "train.batching=vmap")
    full = tmp_path / "full"
    p = subprocess.run(gsweep_cmd(*args, "--out", full), cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    cut = tmp_path / "cut"
    proc = subprocess.Popen(gsweep_cmd(*args, "--out", cut), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ck = cut / "checkpoints"
        if ck.exists() and any(ck.iterdir()) and len(list((cut / "parts").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "runs.parquet").exists() or len(pd.read_parquet(cut / "runs.parquet")) == 0 \
        or not (pd.read_parquet(cut / "runs.parquet")["status"] == "done").all()
    p2 = subprocess.run(gsweep_cmd(*args, "--out", cut), cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert "resuming at step" in p2.stderr
    (ra, ca), (rb, cb) = _tables(full), _tables(cut)
    pd.testing.assert_frame_equal(ca, cb, check_exact=True)
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)


def test_two_groups_padding_and_a_diverging_run_on_vmap(tmp_path):
    """Depth 1 and 2 (two compiled groups), 2 runs each padded to the 4 devices, one of them at
    lr 1e9: it diverges alone, and the sane runs equal the map path's."""
    d = tiny_spec_dict(model={"depth": [1, 2]}, train={"lr": [0.003, 1e9]}, seeds=1)
    res = {}
    for m in ("map", "vmap"):
        d["train"]["batching"] = m
        res[m] = _sweep(from_dict(d), tmp_path / m, n_devices=1 if m == "map" else 4)
    rv, cv, mv = res["vmap"]
    rm, cm, _ = res["map"]
    assert len(mv["groups"]) == 2
    for g in mv["groups"].values():
        assert g["runs"] == 2 and g["runs_per_chunk"] == 4  # padded to the device count
        assert g["traces"] == 1 and g["batching"] == "vmap"
    assert len(rv) == 4 and rv["run_id"].is_unique  # padding never reaches the results
    wild = rv[rv["train.lr"] == 1e9]
    assert (wild["status"] == "diverged").all() and len(wild) == 2
    assert np.isfinite(cv["loss"]).all()
    sane = rv[rv["train.lr"] == 0.003]
    assert (sane["status"] == "done").all()
    for rid in sane["run_id"]:
        a = cv[cv["run_id"] == rid].reset_index(drop=True)
        b = cm[cm["run_id"] == rid].reset_index(drop=True)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a["acc"], b["acc"])
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=LOSS_RTOL, atol=LOSS_ATOL)
