"""`gsweep analyze` and `gsweep summarize` where the analysis breaks at small sizes: a split nobody
reaches, all runs in one phase, one run per cell, a single cell of a few runs, tied feature values,
degenerate folds. Each must give a clear message in the printed summary and in analysis.json: never a
traceback, never a NaN (or inf) printed as a number, never NaN in the JSON."""

import argparse
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from gsweep.analysis import predict
from gsweep.analysis.early_warning import fold_warning
from tests.test_analyze import make_results

NAN_WORD = re.compile(r"(?<![\w.])(nan|NaN|inf|-inf|None)(?![\w])")


def _analyze_cli(d, capsys, cli=False):
    """The printed summary and analysis.json; through the command when ``cli`` (1000 bootstrap draws),
    else the same library call with fewer draws (a fast suite)."""
    if cli:
        rc = predict.analyze_command(argparse.Namespace(results_dir=str(d), source="test", target=None,
                                                        window=0.1, threshold=None))
        assert rc == 0
        text = capsys.readouterr().out
    else:
        text = predict.format_summary(predict.analyze(d, n_boot=50))
    raw = max(d.glob("analysis-*.json"), key=lambda f: f.stat().st_mtime).read_text()
    assert "NaN" not in raw and "Infinity" not in raw  # strict JSON: undefined is null
    js = json.loads(raw)
    _no_nan_numbers(predict.format_summary(js))  # the report page prints analysis.json this way
    return text, js


def _no_nan_numbers(text):
    bad = [ln for ln in text.splitlines() if NAN_WORD.search(ln)]
    assert not bad, "NaN/None printed as a number:\n" + "\n".join(bad)


def _summarize_cli(d, capsys):
    from gsweep.cli import main
    rc = main(["summarize", str(d)])
    assert rc in (0, None)
    return capsys.readouterr().out


def test_split_nobody_reaches(tmp_path, capsys):
    d = make_results(tmp_path / "r", never_reason=True, seeds=3)
    text, js = _analyze_cli(d, capsys, cli=True)
    _no_nan_numbers(text)
    assert "recall n/a (no run reached hop2)" in text
    assert "Spearman undefined (0 run(s) reach both" in text
    assert "all 24 scored runs are negative" in text
    assert "hop2: never reached" in text
    assert js["overall"]["recall"] is None and js["overall"]["recall_reason"] == "no run reached hop2"
    assert js["stability"]["splits"]["hop2"]["reached"] == 0
    _no_nan_numbers(_summarize_cli(d, capsys))


def test_source_nobody_reaches(tmp_path, capsys):
    d = make_results(tmp_path / "r", p_grok=0.0, seeds=3)
    text, js = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    assert "precision n/a (no run reached test)" in text
    assert "P(hop2 | test) n/a (no run reached test) against P(hop2 | not test) = " in text
    assert js["overall"]["precision"] is None and js["overall"]["mcc"] is None
    assert "missed test" in js["overall"]["mcc_reason"]
    out = _summarize_cli(d, capsys)
    _no_nan_numbers(out)
    assert ">1000" in out  # KM median undefined within the budget, said as such


def test_all_runs_in_one_phase(tmp_path, capsys):
    d = make_results(tmp_path / "r", p_grok=1.0, p_reason=1.0, seeds=3)
    text, js = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    assert "MCC n/a (undefined: all 24 runs reached test; all 24 runs reached hop2)" in text
    assert "P(hop2 | test) = 24/24 = 1.00 [0.86, 1.00] against P(hop2 | not test) n/a (every run reached test)" in text
    assert "AUROC undefined for every predictor and the baseline: all 24 scored runs are positive" in text
    for lab in ("reasoned", "grokked"):
        for s in js["predictors"][lab]["scores"].values():
            assert s["auroc"] is None and "positive" in s["auroc_reason"]


def test_one_run_per_cell(tmp_path, capsys):
    d = make_results(tmp_path / "r", seeds=1, seed=1)
    text, js = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    assert "per cell: left out: every cell has 1 run(s)" in text
    assert "MCC n/a" not in text  # no table of undefined rows
    assert any("every cell has fewer than 3 runs" in n for n in js["notes"])
    assert all(r["mcc"] is None and r["spearman"]["value"] is None for r in js["per_cell"])
    _no_nan_numbers(_summarize_cli(d, capsys))


def test_one_run_at_all(tmp_path, capsys):
    d = make_results(tmp_path / "r", wds=(1.0,), fracs=(0.5,), seeds=1, p_grok=1.0, p_reason=1.0)
    text, js = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    assert js["n_runs"] == 1 and js["n_cells"] == 1
    assert "Spearman undefined (1 run(s) reach both test and hop2; need at least 3)" in text
    _no_nan_numbers(_summarize_cli(d, capsys))


def test_tied_feature_is_not_scored(tmp_path, capsys):
    # acc_gap is train acc - test acc at the window's end: the same (0.9) in every run here
    d = make_results(tmp_path / "r", seeds=3)
    text, js = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    s = js["predictors"]["grokked"]["scores"]["acc_gap"]
    assert s["auroc"] is None and "every rank tied" in s["auroc_reason"]
    assert re.search(r"acc_gap\s+n/a\s+the same value \(0\.9\) in all \d+ scored runs", text)
    assert js["predictors"]["grokked"]["scores"]["norm_fall"]["auroc"] is not None  # others still scored


def test_tied_onsets_give_a_reason(tmp_path):
    d = make_results(tmp_path / "r", seeds=4, p_grok=1.0, p_reason=1.0)
    runs = pd.read_parquet(d / "runs.parquet")
    curves = pd.read_parquet(d / "curves.parquet")
    # every run reaches test at 300 and hop2 at 400: every onset tied
    for split, t in (("test", 300), ("hop2", 400)):
        m = curves["split"] == split
        curves.loc[m, "acc"] = np.where(curves.loc[m, "step"] >= t, 1.0, 0.05)
    curves.to_parquet(d / "curves.parquet", index=False)
    runs.to_parquet(d / "runs.parquet", index=False)
    out = predict.analyze(d, threshold=0.95, n_boot=50)  # a threshold override recomputes the labels
    sp = out["overall"]["spearman"]
    assert not math.isfinite(sp["value"]) and "constant ranks" in sp["reason"]
    text = predict.format_summary(out)
    _no_nan_numbers(text)
    assert "Spearman undefined (an onset is the same step for every run reaching both" in text


def test_degenerate_folds_named():
    folds = np.array([0, 0, 1, 1, 2, 2])
    assert fold_warning(np.array([1, 0, 1, 0, 1, 1], dtype=bool), folds) is None  # both classes in each
    msg = fold_warning(np.array([1, 1, 0, 0, 1, 1], dtype=bool), folds)  # holding out fold 1: positives only
    y = np.array([1, 0, 1, 1, 1, 1], dtype=bool)
    assert msg.startswith("1 of 3 folds have one class only")
    assert fold_warning(y, np.zeros(6)).startswith("a single fold")
    assert fold_warning(np.ones(4, dtype=bool), np.arange(4)) is None  # one class overall: said elsewhere


def test_degenerate_folds_in_output(tmp_path, capsys):
    # two cells; the negatives of 'reasoned' all sit in one of them
    d = make_results(tmp_path / "r", wds=(1.0,), fracs=(0.3, 0.6), seeds=4, p_grok=1.0, p_reason=1.0)
    runs = pd.read_parquet(d / "runs.parquet")
    curves = pd.read_parquet(d / "curves.parquet")
    neg = runs.loc[runs["task.data_frac"] == 0.3, "run_id"]
    curves.loc[curves["run_id"].isin(neg[:2]) & (curves["split"] == "hop2"), "acc"] = 0.05
    curves.to_parquet(d / "curves.parquet", index=False)
    out = predict.analyze(d, threshold=0.98, n_boot=50)  # a new threshold: labels from the curves
    r = out["predictors"]["reasoned"]
    assert r["n_pos"] == 6 and "folds have one class only" in r["fold_warning"]
    text = predict.format_summary(out)
    _no_nan_numbers(text)
    assert "(degenerate folds: 1 of 2 folds have one class only" in text


@pytest.mark.parametrize("case", ["one_cell_three_runs", "two_cells"])
def test_small_sweeps_print_no_nan(tmp_path, capsys, case):
    kw = {"one_cell_three_runs": dict(wds=(1.0,), fracs=(0.5,), seeds=3),
          "two_cells": dict(wds=(1.0,), fracs=(0.3, 0.6), seeds=3)}[case]
    d = make_results(tmp_path / "r", **kw)
    text, _ = _analyze_cli(d, capsys)
    _no_nan_numbers(text)
    assert "too few to read" in text or "AUROC undefined" in text
    _no_nan_numbers(_summarize_cli(d, capsys))
