"""`gsweep refine` and spec ``points:``: midpoints, boundary-only points, run ids, resume after SIGKILL."""

from __future__ import annotations

import itertools
import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from gsweep import store
from gsweep.refine import boundary_points, midpoint, refine
from gsweep.spec import SpecError, from_dict
from tests.conftest import tiny_spec_dict
from tests.test_resume import assert_same, gs, tables

# ----------------------------------------------------------------------------------------------
# midpoints


def test_midpoints_linear_log_zero_and_integers():
    assert midpoint(0.2, 0.4, False, [0.2, 0.4]) == pytest.approx(0.3)
    assert midpoint(0.1, 10.0, True, [0.1, 10.0]) == pytest.approx(1.0)
    # zero on a log axis: one grid step (ratio of the two smallest positives) below the smallest
    assert midpoint(0.0, 0.1, True, [0.0, 0.1, 1.0, 10.0]) == pytest.approx(0.1 / math.sqrt(10))
    assert midpoint(0.0, 0.5, True, [0.0, 0.5]) == pytest.approx(0.5 / math.sqrt(10))  # one positive: 10
    assert midpoint(2, 4, False, [2, 4]) == 3 and isinstance(midpoint(2, 4, False, [2, 4]), int)
    assert midpoint(2, 3, False, [2, 3]) is None  # nothing between
    assert midpoint(0.3, 0.1, False, [0.1, 0.3]) == pytest.approx(0.2)  # order does not matter


# ----------------------------------------------------------------------------------------------
# boundary points on a synthetic map (no training)

FRACS, WDS = [0.2, 0.4, 0.6, 0.8], [0.0, 0.1, 1.0, 10.0]
SPEC = {"task": {"data_frac": FRACS}, "train": {"weight_decay": WDS}}


def _phase(frac, wd):
    if wd == 0.0:
        return "memorization"
    if wd == 10.0:
        return "confusion"
    return "memorization" if frac < 0.5 else "grokking"  # boundary between 0.4 and 0.6 at wd 0.1, 1


def synthetic_runs(phase=_phase, seeds=2):
    rows = []
    for f, w, s in itertools.product(FRACS, WDS, range(seeds)):
        rows.append({"task.data_frac": f, "train.weight_decay": w, "seed": s, "status": "done",
                     "phase": phase(f, w), "final_test_acc": 0.9 if phase(f, w) == "grokking" else 0.1})
    return pd.DataFrame(rows)


def _as_set(points):
    return {(round(p["task.data_frac"], 9), round(p["train.weight_decay"], 9)) for p in points}


def test_refine_adds_only_boundary_points():
    pts = boundary_points(synthetic_runs(), SPEC, "task.data_frac", "train.weight_decay", [])
    r = lambda v: round(v, 9)  # noqa: E731
    want = {
        # along data fraction: memorization | grokking between 0.4 and 0.6 at wd 0.1 and 1
        (0.5, 0.1), (0.5, 1.0),
        # along weight decay: memorization (0) | grokking (0.1) at frac 0.6, 0.8 (0 sits a decade below 0.1)
        (0.6, r(0.1 / math.sqrt(10))), (0.8, r(0.1 / math.sqrt(10))),
        # grokking (1) | confusion (10) at frac 0.6, 0.8; memorization (1) | confusion (10) at 0.2, 0.4
        *((f, r(math.sqrt(10.0))) for f in FRACS),
    }
    assert _as_set(pts) == want
    # a uniform map has no boundary
    assert boundary_points(synthetic_runs(lambda f, w: "grokking"), SPEC, "task.data_frac",
                           "train.weight_decay", []) == []


def test_refine_by_metric_level_and_diverged_cells():
    runs = synthetic_runs()
    pts = boundary_points(runs, SPEC, "task.data_frac", "train.weight_decay", [], "final_test_acc", 0.5)
    assert _as_set(pts) == {(0.5, 0.1), (0.5, 1.0), (0.6, round(0.1 / math.sqrt(10), 9)),
                            (0.8, round(0.1 / math.sqrt(10), 9)), (0.6, round(math.sqrt(10), 9)),
                            (0.8, round(math.sqrt(10), 9))}
    # a cell whose runs all diverged takes no part: its edges are not boundaries
    runs.loc[(runs["task.data_frac"] == 0.6) & (runs["train.weight_decay"] == 1.0), "status"] = "diverged"
    pts = boundary_points(runs, SPEC, "task.data_frac", "train.weight_decay", [])
    assert (0.5, 1.0) not in _as_set(pts) and (0.6, round(math.sqrt(10), 9)) not in _as_set(pts)
    # the edge now spans 0.4 -> 0.8 at wd 1: its midpoint 0.6 is the diverged cell itself
    assert (0.6, 1.0) in _as_set(pts)


def test_refined_map_refines_between_nearest_points():
    """Round 2 on a refined set: neighbours are the nearest points along a row, not the grid's."""
    runs = synthetic_runs()
    runs = pd.concat([runs, pd.DataFrame([{"task.data_frac": 0.5, "train.weight_decay": 1.0, "seed": s,
                                           "status": "done", "phase": "grokking", "final_test_acc": 0.9}
                                          for s in range(2)])], ignore_index=True)
    pts = _as_set(boundary_points(runs, SPEC, "task.data_frac", "train.weight_decay", []))
    assert (0.45, 1.0) in pts and (0.5, 1.0) not in pts and (0.55, 1.0) not in pts


# ----------------------------------------------------------------------------------------------
# spec points


BASE = tiny_spec_dict(name="refine", task={"data_frac": [0.3, 0.9]},
                      train={"steps": 60, "eval_every": 20, "chunk_steps": 20, "weight_decay": [0.0, 1.0]},
                      seeds=2)


def test_points_add_runs_and_keep_grid_run_ids():
    grid = from_dict(BASE).runs()
    spec = from_dict({**BASE, "points": [{"task.data_frac": 0.6, "train.weight_decay": 0.5},
                                         {"task.data_frac": 0.3, "train.weight_decay": 1.0}]})  # 2nd: a grid point
    runs = spec.runs()
    assert [r.run_id for r in runs[: len(grid)]] == [r.run_id for r in grid]
    extra = runs[len(grid):]
    assert len(extra) == 2 and {r.seed for r in extra} == {0, 1}
    assert all(r["task.data_frac"] == 0.6 and r["train.weight_decay"] == 0.5 for r in extra)
    assert "points" not in from_dict(BASE).to_dict()  # a spec without points is written as before
    again = from_dict(yaml.safe_load(spec.to_yaml()))
    assert [r.run_id for r in again.runs()] == [r.run_id for r in runs]
    # a point that names one key takes every grid value of the others
    one = from_dict({**BASE, "points": [{"task.data_frac": 0.6}]}).runs()
    assert len(one) == len(grid) + 4


@pytest.mark.parametrize("points, msg", [
    ({"task.data_frac": 0.6}, "points: expected a list"),
    ([{"task.data_fraction": 0.6}], "unknown key 'task.data_fraction'"),
    ([{"train.weight_decay": [0.1, 0.2]}], "one value per key"),
    ([{"seed": 3}], "dotted keys of task, model or train"),
    ([{"task.data_frac": "half"}], "expected float"),
    ([{"task.data_frac": 1.5}], "task.data_frac"),
])
def test_bad_points_name_the_problem(points, msg):
    with pytest.raises(SpecError, match=msg):
        from_dict({**BASE, "points": points}, "s.yaml")


# ----------------------------------------------------------------------------------------------
# the command: train, refine, kill, resume


def _level(out: Path) -> float:
    """A level halfway between the lowest and highest cell median of final_test_acc."""
    r = pd.read_parquet(out / "runs.parquet")
    m = r.groupby(["task.data_frac", "train.weight_decay"])["final_test_acc"].median()
    assert m.max() > m.min(), m
    return float((m.max() + m.min()) / 2)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from gsweep.train.sweep import run_sweep
    tmp = tmp_path_factory.mktemp("refine-base")
    run_sweep(from_dict(BASE), tmp / "base", progress=False)
    return tmp / "base"


def _copy(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_refine_trains_boundary_points_and_resumes_after_sigkill(tmp_path, base_dir):
    level = _level(base_dir)
    base = pd.read_parquet(base_dir / "runs.parquet")
    args = ["--rounds", "1", "--metric", "final_test_acc", "--level", f"{level:.6f}", "--quiet"]

    full = _copy(base_dir, tmp_path / "full")
    res = refine(full, rounds=1, metric="final_test_acc", level=float(f"{level:.6f}"), progress=False)
    assert res["rounds"] == 1 and res["added_runs"] > 0
    runs = pd.read_parquet(full / "runs.parquet")
    new = runs[~runs["run_id"].isin(base["run_id"])]
    assert len(new) > 0 and (new["status"] != "pending").all()
    # every new run sits at the midpoint of an edge whose cell medians straddle the level
    med = base.groupby(["task.data_frac", "train.weight_decay"])["final_test_acc"].median()
    for (f, w), g in new.groupby(["task.data_frac", "train.weight_decay"]):
        assert len(g) == 2  # both seeds
        if f not in (0.3, 0.9):  # along data fraction
            assert f == pytest.approx(0.6)
            assert (med[(0.3, w)] >= level) != (med[(0.9, w)] >= level)
        else:  # along weight decay
            assert w == pytest.approx(0.5)
            assert (med[(f, 0.0)] >= level) != (med[(f, 1.0)] >= level)
    spec = yaml.safe_load((full / "spec.yaml").read_text())
    assert spec["refine"][0]["round"] == 1 and len(spec["points"]) == len(new) // 2
    kept = runs[runs["run_id"].isin(base["run_id"])].sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[base.columns], base.sort_values("run_id").reset_index(drop=True))

    # the same command again does nothing more: --rounds counts the rounds in the results dir
    res = refine(full, rounds=1, metric="final_test_acc", level=float(f"{level:.6f}"), progress=False)
    assert res["added_runs"] == 0 and res["rounds"] == 1
    assert len(pd.read_parquet(full / "runs.parquet")) == len(runs)

    cut = _copy(base_dir, tmp_path / "cut")
    p = gs("refine", cut, *args, env={"GSWEEP_TEST_KILL": "after_part:2"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    p2 = gs("refine", cut, *args)
    assert "resuming at step" in p2.stderr, p2.stderr
    assert_same(tables(full), tables(cut))
    assert yaml.safe_load((cut / "spec.yaml").read_text()) == spec


def test_refine_bad_input_before_any_work(tmp_path, base_dir, capsys):
    from gsweep.cli import main
    d = _copy(base_dir, tmp_path / "d")
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    for args, msg in ((["--metric", "final_test_acc"], "--metric and --level go together"),
                      (["--metric", "nope", "--level", "0.5"], "--metric 'nope'"),
                      (["--metric", "phase", "--level", "0.5"], "not a numeric column"),
                      (["--x", "task.nope"], "--x 'task.nope'"),
                      (["--rounds", "0"], "--rounds 0"),
                      (["--max-runs", "0"], "--max-runs 0")):
        assert main(["refine", str(d), *args]) == 2, args
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (args, err)
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    assert main(["refine", str(tmp_path / "nothing")]) == 2
    assert "not a results dir" in capsys.readouterr().err


def test_refined_phase_diagram_says_rounds(tmp_path):
    """A refined dir's phase diagram is drawn on real axes and says how many rounds it shows."""
    from gsweep.plot.phase_diagram import phase_diagram_data
    from gsweep.plot.refined import draw_refined, voronoi_raster
    from gsweep.results import load_results

    runs = synthetic_runs()
    runs["run_id"] = [f"r{i}" for i in range(len(runs))]
    runs["steps_done"] = 100
    runs["train.steps"] = 100
    runs["t_fit"], runs["t_gen"] = 10, pd.array([None] * len(runs), dtype="Int64")
    runs = pd.concat([runs, pd.DataFrame([{"task.data_frac": 0.5, "train.weight_decay": 1.0, "seed": s,
                                           "status": "done", "phase": "grokking", "final_test_acc": 0.9,
                                           "run_id": f"p{s}", "steps_done": 100, "train.steps": 100}
                                          for s in range(2)])], ignore_index=True)
    d = tmp_path / "res"
    d.mkdir()
    store.write_parquet(d / "runs.parquet", runs)
    spec = {"name": "syn", **{k: dict(v) for k, v in SPEC.items()}, "seeds": 2,
            "points": [{"task.data_frac": 0.5, "train.weight_decay": 1.0}],
            "refine": [{"round": 1, "points": 1}]}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    res = load_results(d)
    data = phase_diagram_data(res)
    fig = draw_refined(res, data)
    assert "1 round(s)" in fig._suptitle.get_text()
    # nearest-neighbour cells: a point owns the raster cells nearest to it, sized by its neighbours
    own = voronoi_raster(np.array([0.0, 1.0, 3.0]), np.array([0.0, 0.0, 0.0]), (-0.5, 3.5), (-1, 1), res=9)
    assert list(own[0]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
