"""Stability labels (t_<split>_stable, relapses_<split>) on synthetic curves with known answers,
and the analyze section built on them (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gsweep.analysis.stability import format_stability, stability_summary
from gsweep.metrics.labels import compute_labels

STEPS = [10, 20, 30, 40, 50, 60]


def _curves(spec: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    rows = []
    for rid, splits in spec.items():
        for split, accs in splits.items():
            for step, a in zip(STEPS, accs, strict=False):
                rows.append({"run_id": rid, "step": step, "split": split, "loss": 1.0 - a, "acc": a})
    return pd.DataFrame(rows)


def _runs(ids, steps_done=60, status="done"):
    return pd.DataFrame({"run_id": list(ids), "status": status, "steps_done": steps_done})


CURVES = {
    # test: reaches at 30, stays: stable 30, no relapse
    "steady": {"train": [0.5, 1, 1, 1, 1, 1], "test": [0.1, 0.5, 0.99, 1, 1, 1]},
    # test: reaches at 20, falls at 30, back at 40, falls at 50, back at 60: stable 60, 2 relapses
    "flicker": {"train": [1, 1, 1, 1, 1, 1], "test": [0.1, 0.995, 0.9, 0.99, 0.5, 1.0]},
    # test: reaches at 20, falls at 40 and stays below: never stable, 1 relapse (t_gen still 20)
    "lost": {"train": [1, 1, 1, 1, 1, 1], "test": [0.1, 1, 1, 0.6, 0.6, 0.6]},
    # test: never reaches: no stable step, 0 relapses; train relapses once (NaN counts as below)
    "never": {"train": [1, 1, float("nan"), 1, 1, 1], "test": [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]},
}


def test_stability_labels_on_synthetic_curves():
    lab = compute_labels(_curves(CURVES), _runs(CURVES), threshold=0.99).set_index(pd.Index(list(CURVES)))
    assert lab.loc["steady", "t_test_stable"] == 30 and lab.loc["steady", "relapses_test"] == 0
    assert lab.loc["flicker", "t_gen"] == 20
    assert lab.loc["flicker", "t_test_stable"] == 60 and lab.loc["flicker", "relapses_test"] == 2
    assert lab.loc["lost", "t_gen"] == 20
    assert pd.isna(lab.loc["lost", "t_test_stable"]) and lab.loc["lost", "relapses_test"] == 1
    assert pd.isna(lab.loc["never", "t_test_stable"]) and lab.loc["never", "relapses_test"] == 0
    assert lab.loc["never", "t_train_stable"] == 40 and lab.loc["never", "relapses_train"] == 1
    assert lab.loc["steady", "t_train_stable"] == 20 and lab.loc["steady", "relapses_train"] == 0
    assert str(lab["t_test_stable"].dtype) == "Int64" and lab["relapses_test"].dtype == np.int64
    # t_stable is never before first reach
    both = lab.dropna(subset=["t_test_stable"])
    assert (both["t_test_stable"] >= both["t_gen"]).all()


def test_stability_respects_steps_done_and_threshold():
    runs = _runs(["flicker"], steps_done=40)  # curves past steps_done do not count
    lab = compute_labels(_curves({"flicker": CURVES["flicker"]}), runs, threshold=0.99)
    assert lab.loc[0, "t_test_stable"] == 40 and lab.loc[0, "relapses_test"] == 1
    lab = compute_labels(_curves({"flicker": CURVES["flicker"]}), _runs(["flicker"]), threshold=0.5)
    assert lab.loc[0, "t_test_stable"] == 20 and lab.loc[0, "relapses_test"] == 0


def test_stability_without_curves_is_missing_not_zero():
    empty = pd.DataFrame(columns=["run_id", "step", "split", "loss", "acc"])
    lab = compute_labels(empty, _runs(["a"], steps_done=0, status="pending"))
    assert pd.isna(lab.loc[0, "t_test_stable"]) and lab.loc[0, "relapses_test"] == 0


def test_stability_summary_counts_and_text():
    lab = compute_labels(_curves(CURVES), _runs(CURVES), threshold=0.99)
    runs = pd.concat([_runs(CURVES), lab], axis=1)
    s = stability_summary(runs, ["test", "train"])
    t = s["splits"]["test"]
    assert (t["reached"], t["stayed"], t["relapsed"], t["lost"]) == (3, 2, 2, 1)
    assert t["relapses_total"] == 3
    assert t["median_steps_to_stable"] == 20.0  # steady 30 - 30 = 0, flicker 60 - 20 = 40
    text = format_stability(s)
    assert "test" in text and "2 of 3" in text


def test_stability_counts_runs_held_only_at_the_last_evaluation():
    # flicker's stable step is 60, its last evaluation (steps_done 60): stayed on one evaluation alone;
    # steady's is 30, confirmed by three more
    lab = compute_labels(_curves(CURVES), _runs(CURVES), threshold=0.99)
    runs = pd.concat([_runs(CURVES), lab], axis=1)
    t = stability_summary(runs, ["test"])["splits"]["test"]
    assert t["stayed"] == 2 and t["stayed_last_eval_only"] == 1
    assert "(1 of them only at the last evaluation" in format_stability({"splits": {"test": t}})
    # a longer run whose later evaluations confirm it: not counted
    longer = runs.assign(steps_done=70)
    assert stability_summary(longer, ["test"])["splits"]["test"]["stayed_last_eval_only"] == 0
    # without steps_done the count is unknown (None), and the text says nothing about it
    t2 = stability_summary(runs.drop(columns="steps_done"), ["test"])["splits"]["test"]
    assert t2["stayed_last_eval_only"] is None and "last evaluation" not in format_stability({"splits": {"test": t2}})
