"""`gsweep analyze` on synthetic results dirs whose answers are planted (no JAX, no training)."""

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from gsweep.analysis import predict, stats
from gsweep.analysis.predictors import early_warning
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels

STEPS = 1000
EVALS = [1, 2, 3, 5, 8, 13, 20, 30, 50, 75, 100] + list(range(150, STEPS + 1, 50))  # window 10% = step 100


def _step_at_or_after(t):
    return next(s for s in EVALS if s >= t)


def make_results(path, *, wds=(0.1, 0.3, 1.0, 3.0), fracs=(0.3, 0.6), seeds=10, op="add", splits=("hop2",),
                 p_grok=None, p_reason=0.8, early=0, never_reason=False, seed=0):
    """A results dir as the engine writes it, with planted structure:

    - a run groks (reaches test) with a cell-dependent probability; its t_gen is drawn on the eval grid
      after the window, and (with probability p_reason) it reaches hop2 exactly two evals after t_gen,
      so t_hop2 is a strictly increasing function of t_gen (Spearman 1);
    - weight_norm rises to a peak at step 30 and then falls by ~25% by step 100 in runs that will grok
      (planted predictor: norm_fall), and keeps rising in the others;
    - train_loss_osc, fourier_sparsity and the test-loss slope are pure noise;
    - ``early`` runs grok inside the window (t_gen = 75) and must be left out of the grokked scoring.
    """
    rng = np.random.default_rng(seed)
    wds, fracs = list(wds), list(fracs)
    rows, crows = [], []
    k = 0
    for wd in wds:
        for frac in fracs:
            for s in range(seeds):
                rid = f"r{k:04d}"
                k += 1
                pg = p_grok if p_grok is not None else 0.25 + 0.5 * (wds.index(wd) + fracs.index(frac)) / (
                    len(wds) + len(fracs) - 2 or 1)
                grok = rng.random() < pg
                t_fit = 50
                t_gen = t_h = None
                if grok:
                    t_gen = EVALS[rng.integers(EVALS.index(150), EVALS.index(800) + 1)]
                    if early > 0:
                        t_gen, early = 75, early - 1
                    if not never_reason and rng.random() < p_reason:
                        t_h = EVALS[EVALS.index(t_gen) + 2]
                rows.append({"run_id": rid, "group_id": "g0", "seed": s, "task.name": "modular", "task.op": op,
                             "task.p": 97, "task.data_frac": frac, "task.data_seed": 0, "model.depth": 1,
                             "train.weight_decay": wd, "train.lr": 1e-3, "train.steps": STEPS,
                             "train.eval_every": 50, "status": "done", "steps_done": STEPS})
                peak = 10 + rng.normal(0, 0.3)
                fall = (0.25 + rng.normal(0, 0.03)) if grok else 0.0
                slope = rng.normal(-0.3, 0.1)
                for step in EVALS:
                    if step <= 30:
                        wn = peak * (0.8 + 0.2 * step / 30)
                    else:
                        frac_t = min(1.0, (step - 30) / 70)
                        wn = peak * (1 - fall * frac_t) if grok else peak * (1 + 0.02 * frac_t)
                    metrics = {"weight_norm": wn, "train_loss_mean": 1.0, "train_loss_osc": rng.exponential(1.0),
                               "fourier_sparsity": rng.random()}
                    accs = {"train": 1.0 if step >= t_fit else 0.5 * step / t_fit,
                            "test": 1.0 if (t_gen is not None and step >= t_gen) else 0.1}
                    for sp in splits:
                        accs[sp] = 1.0 if (t_h is not None and step >= t_h) else 0.05
                    for sp, acc in accs.items():
                        loss = 4.0 * step ** slope if sp == "test" and acc < 1 else -math.log(max(acc, 1e-3)) + 0.01
                        crows.append({"run_id": rid, "step": step, "split": sp, "loss": loss, "acc": acc, **metrics})
    runs = pd.DataFrame(rows)
    runs["diverged_step"] = pd.array([None] * len(runs), dtype="Int64")
    curves = pd.DataFrame(crows)
    labels = compute_labels(curves, runs, 0.99, 10.0, "relative")
    runs = pd.concat([runs, labels], axis=1)
    path.mkdir(parents=True, exist_ok=True)
    runs.to_parquet(path / "runs.parquet", index=False)
    curves.to_parquet(path / "curves.parquet", index=False)
    swept = [k for k, v in (("task.data_frac", fracs), ("train.weight_decay", wds)) if len(v) > 1]
    swept += ["seed"] if seeds > 1 else []
    (path / "meta.json").write_text(json.dumps({"status": "done", "swept_keys": swept}))
    spec = {"name": "synthetic", "task": {"name": "modular", "p": 97, "op": op, "data_frac": fracs},
            "model": {"name": "transformer", "depth": 1}, "train": {"steps": STEPS, "weight_decay": wds},
            "analysis": {"threshold": 0.99, "gap": 10.0, "gap_mode": "relative"}, "seeds": list(range(seeds))}
    (path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return path


def run_analyze(d, **kw):
    kw.setdefault("n_boot", 200)
    return predict.analyze(d, **kw)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = make_results(tmp_path_factory.mktemp("syn") / "res", early=3)
    return d, run_analyze(d)


def test_outputs_written(synthetic):
    d, out = synthetic
    text = (d / out["files"]["analysis"]).read_text()
    assert "auroc" in text
    js = json.loads(text)  # valid JSON: NaN became null
    assert js["target"] == "hop2" and js["source"] == "test"
    pr = pd.read_parquet(d / out["files"]["predictors"])
    runs = pd.read_parquet(d / "runs.parquet")
    assert len(pr) == len(runs) and set(pr["run_id"]) == set(runs["run_id"])
    for col in ("run_id", "cell", "task.data_frac", "train.weight_decay", "norm_fall", "loss_osc",
                "test_loss_slope", "acc_gap", "fourier_sparsity", "t_test", "t_hop2", "grokked", "reasoned", "fold"):
        assert col in pr, col
    assert out["files"]["analysis"] == "analysis-test-hop2-t0.99.json"
    assert (d / out["files"]["roc"]).stat().st_size > 0
    assert (d / out["files"]["onset"]).stat().st_size > 0
    assert out["n_cells"] == 8 and out["cell_keys"] == ["task.data_frac", "train.weight_decay"]


def test_planted_predictor_near_one_random_near_half(synthetic):
    _, out = synthetic
    g = out["predictors"]["grokked"]["scores"]
    assert g["norm_fall"]["auroc"] > 0.95
    assert g["norm_fall"]["direction"] == "higher"
    assert g["norm_fall"]["auprc"] > 0.9
    for noise in ("loss_osc", "fourier_sparsity", "test_loss_slope"):
        assert abs(g[noise]["auroc"] - 0.5) < 0.2, (noise, g[noise]["auroc"])
    # the planted feature adds to the hyperparameters; a lead time is measured for its alarms
    assert g["norm_fall"]["auroc_with_hyperparameters"] > g["hyperparameters"]["auroc"]
    assert g["norm_fall"]["lead_steps_median"] > 0
    assert g["norm_fall"]["tpr_at_fpr"] > 0.5


def test_planted_monotone_onsets_give_spearman_one(synthetic):
    _, out = synthetic
    sp = out["overall"]["spearman"]
    assert sp["value"] == pytest.approx(1.0)
    assert sp["ci"][0] == pytest.approx(1.0) and sp["target_not_before_source"] == 1.0
    # grokked => reasoning: every reasoning run grokked, so recall 1; precision ~ p_reason
    o = out["overall"]
    assert o["recall"] == 1.0 and 0.6 < o["precision"] < 0.95 and o["mcc"] > 0.5
    assert o["joint"]["target_only"] == 0
    # P(reasoning | not grokked): the other side of the comparison, 0 here, with its interval
    j = o["joint"]
    assert o["p_target_given_not_source"] == 0.0 and j["neither"] > 0
    lo, hi = o["p_target_given_not_source_ci"]
    assert lo == 0.0 and 0.0 < hi < 1.0
    from gsweep.analysis.analyze_output import _conditional_line
    line = _conditional_line("test", "hop2", o)
    assert f"P(hop2 | not test) = 0/{j['neither']} = 0.00 [0.00, " in line
    assert f"P(hop2 | test) = {j['both']}/{j['both'] + j['source_only']} = " in line


def test_censoring_and_in_window_exclusion(synthetic):
    d, out = synthetic
    pr = pd.read_parquet(d / out["files"]["predictors"])
    o = out["overall"]
    n = out["n_runs"]
    assert o["censored"]["test"] == int((~pr["grokked"]).sum()) == n - o["joint"]["both"] - o["joint"]["source_only"]
    assert o["spearman"]["n_both"] == o["joint"]["both"]  # only observed onsets compared
    assert pr["t_test"].isna().sum() == o["censored"]["test"]  # censored stays missing, never zero
    g = out["predictors"]["grokked"]
    assert g["n_reached_in_window"] == 3 == int(pr["grokked_in_window"].sum())
    assert g["n_scored"] == n - 3
    assert g["n_censored"] == o["censored"]["test"]


def test_folds_never_split_a_cell(synthetic):
    d, out = synthetic
    pr = pd.read_parquet(d / out["files"]["predictors"])
    for cell, folds in pr.groupby("cell")["fold"]:
        assert folds.nunique() == 1, f"cell {cell} has seeds in folds {sorted(folds.unique())}"
    assert pr["fold"].nunique() == 5


@pytest.mark.parametrize("seed", range(4))
def test_grouped_folds_hold_out_whole_cells(seed):
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 13, size=200).astype(str)  # unequal cell sizes, shuffled order
    folds = stats.grouped_folds(cells, 5, seed=seed)
    for c in np.unique(cells):
        sides = np.unique(folds[cells == c])
        assert len(sides) == 1, f"cell {c} has seeds in folds {sides.tolist()}: train and test share it"
    assert stats.check_folds(cells, folds) == []
    # the checker catches a fold assignment that splits a cell
    bad = folds.copy()
    i = np.flatnonzero(cells == cells[0])
    bad[i[0]] = (bad[i[0]] + 1) % 5
    if len(i) > 1:
        assert cells[0] in stats.check_folds(cells, bad)


def test_hyperparameter_only_predictor_no_better_than_baseline():
    rng = np.random.default_rng(0)
    wds = np.logspace(-2, 1, 8)
    cell = np.repeat(np.arange(8), 10)
    wd = wds[cell]
    y = rng.random(len(cell)) < 1 / (1 + np.exp(-2 * np.log10(wd) - 0.5))
    x = np.log10(wd) + rng.normal(0, 1e-3, len(cell))  # the feature only encodes weight decay
    folds = stats.grouped_folds(cell, 5, seed=0)
    X, _ = predict.hparam_design(pd.DataFrame({"train.weight_decay": wd}), ["train.weight_decay"])
    a_feat = stats.auroc(y, predict.cv_feature(x, y, folds)["held"])
    a_base = stats.auroc(y, predict.cv_logistic(X, y, folds)["held"])
    assert a_base > 0.6
    assert a_feat <= a_base + 0.05
    # and through the whole pipeline's scorer: feature plus hyperparameters gains nothing either
    frame = pd.DataFrame({"f": x, "window_steps": 10, "t": np.where(y, 500.0, np.nan)})
    res, _ = predict.score_label(frame, "grokked", "t", X, ["f"], folds, cell, n_boot=50)
    s = res["scores"]
    assert s["f"]["auroc"] <= s["hyperparameters"]["auroc"] + 0.05
    assert s["f"]["auroc_with_hyperparameters"] <= s["hyperparameters"]["auroc"] + 0.05


def test_all_same_label_gives_null_with_reason(tmp_path):
    d = make_results(tmp_path / "r", never_reason=True, seeds=3)
    out = run_analyze(d)
    r = out["predictors"]["reasoned"]
    assert r["n_pos"] == 0
    for s in r["scores"].values():
        assert s["auroc"] is None or math.isnan(s["auroc"])
        assert "negative" in s["auroc_reason"]
    js = json.loads((d / out["files"]["analysis"]).read_text())
    assert js["predictors"]["reasoned"]["scores"]["norm_fall"]["auroc"] is None
    assert js["overall"]["mcc"] is None and "mcc_reason" in js["overall"]
    assert js["overall"]["spearman"]["value"] is None and js["overall"]["spearman"]["reason"]
    assert "AUROC" in predict.format_summary(out)


def test_single_cell_sweep(tmp_path):
    d = make_results(tmp_path / "r", wds=(1.0,), fracs=(0.5,), seeds=24, p_grok=0.5)
    out = run_analyze(d)
    assert out["n_cells"] == 1 and out["cell_keys"] == []
    assert "one cell only" in out["folds"]
    assert out["predictors"]["grokked"]["scores"]["hyperparameters"]["auroc"] == 0.5
    assert out["predictors"]["grokked"]["scores"]["norm_fall"]["auroc"] > 0.9
    assert len(out["per_cell"]) == 1


def test_no_multi_step_split_names_splits(tmp_path):
    d = make_results(tmp_path / "r", splits=(), seeds=2)
    with pytest.raises(UserError, match=r"splits present: train, test"):
        run_analyze(d)
    with pytest.raises(UserError, match=r"--target 'hop9'.*train, test"):
        run_analyze(d, target="hop9")


def test_target_choice_prefers_hop_count():
    assert predict.multi_step_splits(["train", "test", "test_ood", "hop3", "hop2_novel", "hop2", "atomic"]) == [
        "hop2", "hop2_novel", "hop3", "test_ood"]
    assert predict.choose_splits(["train", "test", "atomic", "hop2"], "test", None, "x") == ("test", "hop2")
    with pytest.raises(UserError, match="both 'hop2'"):
        predict.choose_splits(["train", "test", "hop2"], "hop2", "hop2", "x")
    with pytest.raises(UserError, match="no such results dir"):
        predict.analyze_command(argparse.Namespace(results_dir="/nonexistent", source="test", target=None,
                                                   window=0.1, threshold=None))
    with pytest.raises(UserError, match="--window 1.5"):
        predict.analyze("/nonexistent", window=1.5)


def test_multiplicative_op_leaves_fourier_out(tmp_path):
    d = make_results(tmp_path / "r", op="mul", seeds=3)
    out = run_analyze(d)
    assert "fourier_sparsity" in out["left_out"] and "discrete-log" in out["left_out"]["fourier_sparsity"]
    assert "fourier_sparsity" not in out["predictors"]["grokked"]["scores"]
    assert pd.read_parquet(d / out["files"]["predictors"])["fourier_sparsity"].isna().all()


def test_threshold_override_recomputes_labels(tmp_path):
    d = make_results(tmp_path / "r", seeds=3)
    out = run_analyze(d, threshold=0.08)  # test acc starts at 0.1: every run "generalises" at step 1
    assert out["threshold"] == 0.08
    g = out["predictors"]["grokked"]
    assert g["n_reached_in_window"] == out["n_runs"] and g["n_scored"] == 0
    assert g["scores"]["hyperparameters"]["auroc_reason"] == "no runs to score"


def test_early_warning_features_by_hand():
    curves = pd.DataFrame({
        "run_id": ["a"] * 8, "step": [1, 1, 4, 4, 16, 16, 64, 64],
        "split": ["train", "test"] * 4, "acc": [0.1, 0.1, 0.5, 0.2, 0.9, 0.2, 1.0, 0.3],
        "loss": [1.0, 1.0, 1.0, 0.5, 1.0, 0.25, 1.0, 0.125],
        "weight_norm": [10, 10, 12, 12, 9, 9, 1, 1], "train_loss_mean": 1.0,
        "train_loss_osc": [2, 2, 1, 1, 4, 4, 100, 100], "fourier_sparsity": [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.9, 0.9]})
    f = early_warning(curves, pd.Series({"a": 16}))
    row = f.loc["a"]
    assert row["norm_fall"] == pytest.approx(3 / 12)
    assert row["loss_osc"] == pytest.approx((2 * 1 + 1 * 3 + 4 * 12) / 16)  # step-weighted, window only
    assert row["acc_gap"] == pytest.approx(0.7)
    assert row["fourier_sparsity"] == pytest.approx(0.3)
    assert row["test_loss_slope"] == pytest.approx(-0.5)  # loss = step^-1/2 on 1, 4, 16


def test_command_prints_summary(tmp_path, capsys):
    d = make_results(tmp_path / "r", seeds=4)
    rc = predict.analyze_command(argparse.Namespace(results_dir=str(d), source="test", target=None, window=0.1,
                                                    threshold=None))
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUROC" in text and "hop2" in text and "censored" in text and "precision" in text


def test_fourier_applicability_by_operation():
    from gsweep.analysis.predictors import fourier_applicable
    runs = pd.DataFrame({"task.name": ["modular", "modular_chain", "modular", "modular", "khop"],
                         "task.op": ["add", "add", "sub|add", "mul", None]})
    ok, msg = fourier_applicable(runs)
    assert ok.tolist() == [True, True, True, False, False]
    assert "'mul'" in msg and "discrete-log" in msg and "'khop'" in msg
    ok, msg = fourier_applicable(runs.iloc[:3], recorded=np.array([True, False, True]))
    assert ok.tolist() == [True, False, True] and "without a recorded" in msg
    assert fourier_applicable(runs.iloc[:3])[1] is None
