"""train.stop_when_generalized: a stopped run's labels equal the run trained to the budget, a run
that has not generalised is never stopped, curves end at the stop step, and run ids of specs
without the key are unchanged."""

import jax.numpy as jnp
import numpy as np
import pandas as pd

from gsweep.spec import from_dict
from gsweep.train.step import RunState, StepConfig, update_stop
from gsweep.train.sweep import run_sweep
from tests.conftest import tiny_spec_dict

CURVE_KEY = ["run_id", "step", "split"]
STOP = 30  # steps every split must stay at or above the threshold
SETTINGS = ["task.data_frac", "train.weight_decay", "seed"]


def _spec(stop: int, batching: str = "map") -> dict:
    # p = 11, lr 0.01: at data fraction 0.9 test accuracy passes the threshold (0.7 here: the stop
    # reads analysis.threshold, whatever it is) well within the budget, so the run stops; at 0.3 it
    # does not (it trains to the end)
    return tiny_spec_dict(task={"p": 11, "data_frac": [0.3, 0.9]},
                          train={"steps": 240, "eval_every": 10, "early_evals": 2, "lr": 0.01,
                                 "weight_decay": [0.0, 1.0], "batching": batching,
                                 **({"stop_when_generalized": stop} if stop else {})},
                          analysis={"threshold": 0.7})


def _run(tmp_path, name, d):
    res = run_sweep(from_dict(d, f"{name}.yaml"), tmp_path / name, progress=False, n_devices=1)
    curves = pd.read_parquet(tmp_path / name / "curves.parquet")
    return res.runs.set_index(SETTINGS).sort_index(), curves


def _labels(runs: pd.DataFrame) -> list[str]:
    return ["delay", "phase", *[c for c in runs.columns if c.startswith("t_") and not c.endswith("_stable")]]


def test_stopped_runs_keep_the_labels_of_the_full_run(tmp_path):
    full, c_full = _run(tmp_path, "full", _spec(0))
    steps = 240
    assert (full["status"] == "done").all() and (full["steps_done"] == steps).all()
    never = full["t_gen"].isna()
    assert never.any() and (~never).any(), "the grid must hold runs that generalise and runs that do not"
    for batching in ("map", "vmap"):
        stop, c_stop = _run(tmp_path, f"stop-{batching}", _spec(STOP, batching))
        stopped = stop["status"] == "stopped"
        assert stopped.any(), "the setting must stop a run that generalised early"
        assert (stop.loc[stopped, "steps_done"] < steps).all()
        # the labels that decide the map are those of the run trained to the budget
        for col in _labels(full):
            pd.testing.assert_series_equal(stop[col], full[col], check_names=False)
        for key, row in stop[stopped].iterrows():
            # stopped only after every split stayed >= threshold for STOP steps
            assert row["steps_done"] - max(row["t_fit"], row["t_gen"]) >= STOP
            cs = c_stop[c_stop["run_id"] == row["run_id"]].sort_values(["step", "split"]).reset_index(drop=True)
            assert cs["step"].max() == row["steps_done"], "curves end at the stop step"
            fid = full.loc[key, "run_id"]
            cf = c_full[(c_full["run_id"] == fid) & (c_full["step"] <= row["steps_done"])]
            cf = cf.sort_values(["step", "split"]).reset_index(drop=True)
            assert len(cf) == len(cs)
            if batching == "map":  # the same program up to the stop: bitwise
                np.testing.assert_array_equal(cs["loss"], cf["loss"])
                np.testing.assert_array_equal(cs["acc"], cf["acc"])
            else:
                np.testing.assert_allclose(cs["loss"], cf["loss"], rtol=2e-4, atol=1e-6)
        # runs that did not generalise within the budget are never stopped
        assert (stop.loc[never, "status"] == "done").all() and (stop.loc[never, "steps_done"] == steps).all()


def _state(**kw) -> RunState:
    base = dict(params={}, opt_state=(), filter_state=(), key=jnp.zeros(2, jnp.uint32), hyper={},
                diverged_at=jnp.int32(-1), loss_sum=jnp.float32(0), osc_sum=jnp.float32(0), n_loss=jnp.int32(0),
                n_osc=jnp.int32(0), prev1=jnp.float32(0), prev2=jnp.float32(0),
                stopped_at=jnp.int32(-1), streak_from=jnp.int32(-1))
    base.update({k: jnp.int32(v) for k, v in kw.items()})
    return RunState(**base)


def test_stop_waits_for_every_split_for_n_steps():
    cfg = StepConfig(batch_size=0, fourier_p=None, stop_after=200, threshold=0.99)
    st = _state()
    trace = []
    # (evaluated step, accuracies per split)
    for at, acc in [(100, [1.0, 0.5]), (200, [1.0, 0.995]), (300, [1.0, 0.98]), (400, [1.0, 1.0]),
                    (500, [1.0, np.nan]), (600, [1.0, 1.0]), (700, [1.0, 1.0]), (800, [1.0, 1.0])]:
        st = update_stop(cfg, st, {"acc": jnp.asarray(acc, jnp.float32)}, jnp.int32(at - 1))
        trace.append((int(st.streak_from), int(st.stopped_at)))
    # a relapse (300) and an empty split's NaN (500) break the streak; 600..800 spans 200 steps
    assert trace == [(-1, -1), (200, -1), (-1, -1), (400, -1), (-1, -1), (600, -1), (600, -1), (600, 800)]
    # once stopped it stays stopped; a diverged run is never stopped
    assert int(update_stop(cfg, st, {"acc": jnp.zeros(2)}, jnp.int32(899)).stopped_at) == 800
    d = _state(diverged_at=50, streak_from=100)
    assert int(update_stop(cfg, d, {"acc": jnp.ones(2)}, jnp.int32(999)).stopped_at) == -1
    # off: nothing changes (and the state holds no stop fields)
    off = StepConfig(batch_size=0, fourier_p=None)
    st_off = _state().replace(stopped_at=(), streak_from=())
    assert update_stop(off, st_off, {"acc": jnp.ones(2)}, jnp.int32(10)) is st_off


def test_run_ids_without_the_key_are_unchanged():
    d = tiny_spec_dict(train={"weight_decay": [0.0, 1.0]}, seeds=2)
    base = from_dict(d).runs()
    explicit = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 1.0], "stop_when_generalized": 0},
                                        seeds=2)).runs()
    on = from_dict(tiny_spec_dict(train={"weight_decay": [0.0, 1.0], "stop_when_generalized": 50},
                                  seeds=2)).runs()
    assert [r.run_id for r in base] == [r.run_id for r in explicit]
    assert [r.group_id for r in base] == [r.group_id for r in explicit]
    # on, it changes steps_done and curves: part of the run id and of the compiled program
    assert not {r.run_id for r in base} & {r.run_id for r in on}
    assert {r.group_id for r in base}.isdisjoint({r.group_id for r in on})


# -- the batched path: a chunk whose runs have mostly stopped continues at a smaller width --------

def _narrowing_spec() -> dict:
    # 8 runs; at data fraction 0.9 four of them stop by step 120 (of 240): from there the chunk of 8
    # continues at width 4 (one device)
    d = _spec(STOP, "vmap")
    d["task"]["data_frac"], d["train"]["weight_decay"], d["seeds"] = [0.3, 0.9], [0.3, 1.0], 2
    d["train"]["checkpoint_every"] = 1
    return d


def test_narrow_width_halves_and_holds_the_live_runs():
    from gsweep.train.engine import live_rows, narrow_width
    assert [narrow_width(k, 8, 1) for k in range(9)] == [1, 1, 2, 4, 4, 8, 8, 8, 8]
    assert [narrow_width(k, 12, 4) for k in (0, 4, 5, 8, 9, 12)] == [4, 4, 8, 8, 12, 12]
    assert narrow_width(3, 4, 4) == 4  # never below the device count
    stopped = np.array([80, -1, 90, -1, -1, -1, 120, 100])
    diverged = np.array([-1, -1, -1, -1, 30, -1, -1, -1])
    # 3 real runs still training (1, 3, 5), then one decided row to fill width 4; padding rows
    # (>= n = 7) never count as live
    assert live_rows(stopped, diverged, 7, 8, 1).tolist() == [1, 3, 5, 0]


def test_batched_stop_narrows_the_chunk_with_bounded_compiles(tmp_path):
    import json

    from gsweep.train.engine import TRACE_COUNT
    TRACE_COUNT.clear()
    d = _narrowing_spec()
    runs, _ = _run(tmp_path, "narrow", d)
    (g,) = json.loads((tmp_path / "narrow" / "meta.json").read_text())["groups"].values()
    R, steps = g["runs_per_chunk"], d["train"]["steps"]
    assert R == 8 and min(g["widths"]) < R, g
    # one compiled program per width, and only halvings of R: at most log2(R) + 1 of them
    assert g["traces"] == len(g["widths"]) <= 4
    assert g["row_steps"] < R * steps  # the freed rows were not computed
    # the runs still training after the narrowing are those of the full-width batched run
    d_full = _narrowing_spec()
    del d_full["train"]["stop_when_generalized"]
    full, _ = _run(tmp_path, "wide", d_full)
    for col in _labels(full):
        pd.testing.assert_series_equal(runs[col], full[col], check_names=False)
    assert (runs["status"] == "stopped").sum() >= 4
    # on 4 devices the rows are sharded: the narrowed chunk (width 4, one row per device) agrees too
    res4 = run_sweep(from_dict(d, "narrow4.yaml"), tmp_path / "narrow4", progress=False, n_devices=4)
    (g4,) = json.loads((tmp_path / "narrow4" / "meta.json").read_text())["groups"].values()
    assert g4["widths"] == [8, 4], g4
    r4 = res4.runs.set_index(SETTINGS).sort_index()
    for col in _labels(full):
        pd.testing.assert_series_equal(r4[col], full[col], check_names=False)


def test_sigkill_after_narrowing_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL after the chunk narrowed (rows of step-chunk 6 written, its checkpoint not yet), then
    the same command: the resumed unit narrows again at once and ends bitwise equal."""
    import os
    import signal
    import subprocess

    import yaml

    from tests.conftest import ROOT, gsweep_cmd
    f = tmp_path / "narrow.yaml"
    f.write_text(yaml.safe_dump(_narrowing_spec()))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    outs = {}
    for name, hook in (("whole", None), ("cut", "after_part:6")):
        out = tmp_path / name
        e = {**env, "GSWEEP_TEST_KILL": hook} if hook else env
        p = subprocess.run(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, env=e, capture_output=True,
                           text=True, timeout=600)
        if hook:
            assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
            p = subprocess.run(gsweep_cmd("run", f, "--out", out, "--quiet"), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
            assert "resuming at step 150" in p.stderr, p.stderr[-2000:]
        assert p.returncode == 0, p.stderr[-2000:]
        outs[name] = out
    import json
    g = next(iter(json.loads((outs["whole"] / "meta.json").read_text())["groups"].values()))
    assert min(g["widths"]) < g["runs_per_chunk"], "the uninterrupted run must have narrowed before the kill"
    for table, key in (("runs.parquet", ["run_id"]), ("curves.parquet", CURVE_KEY)):
        a = pd.read_parquet(outs["whole"] / table).sort_values(key).reset_index(drop=True)
        b = pd.read_parquet(outs["cut"] / table).sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
