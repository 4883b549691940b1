"""``gsweep analyze``: does grokking predict emergent multi-step reasoning? (pandas/numpy/matplotlib only)

Two questions, over the runs of one results dir, overall and per grid cell (a cell is one setting of the
swept keys other than the seeds, so its runs differ only by seed):

1. *Association.* A joint table of runs by (grokked?, reasoning emerged?) where "grokked" means the run
   reached the accuracy threshold on the ``source`` split (default ``test``) within the steps it ran and
   "reasoning emerged" the same on the ``target`` split (default: the first multi-step split, e.g.
   ``hop2``); precision, recall, F1 and Matthews correlation of "grokked implies reasoning"; and the
   Spearman correlation of the two onset times over the runs that reach both, with a bootstrap interval.
   A run that never reaches a split is censored at its ``steps_done``: a negative for "eventually", and
   left out of the onset comparison (only observed onsets are compared; the counts of censored runs are
   reported beside it).
2. *Early warning.* Features computed from the first ``window`` of the step budget only
   (:mod:`gsweep.analysis.predictors`) are scored by AUROC and AUPRC against each eventual label, with
   cross-validation whose folds hold out whole grid cells: a feature's orientation and its alarm threshold
   are chosen on the training folds and scored on the held-out cells, so it cannot score by recognising
   the hyperparameters. Beside each, a baseline that sees only the swept hyperparameters (a logistic
   regression on their values, fitted on the same training folds), and that baseline plus the feature.
   Runs that already reached a label inside the window are left out of that label's scoring. The lead
   time is the number of steps from the window's end to the label's onset over the held-out runs that a
   training-fold threshold at a 10% false-positive rate flags.

Outputs: ``analysis.json``, ``predictors.parquet`` (one row per run), ``plots/analyze-roc.png``,
``plots/analyze-onset.png`` and a printed summary.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.analysis import stats
from gsweep.analysis.predictors import DESCRIPTIONS, NEEDS, PREDICTORS, early_warning, fourier_applicable
from gsweep.analysis.survival import wilson_interval
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels, label_column

FIT, GEN = "train", "test"
NOT_MULTI_STEP = ("train", "test", "atomic")
LABELS = ("reasoned", "grokked")  # reasoned: target reached; grokked: source reached
FPR = 0.10
N_FOLDS = 5
N_BOOT = 1000
MIN_CI_CLASS = 5  # fewest positives (and negatives) for an AUROC interval; fewest runs for a Spearman one
SEED_LIKE = re.compile(r"(^|\.)(seed|\w+_seed)$")
BASELINE = "hyperparameters"


# ----------------------------------------------------------------------------------------------
# loading


def load_results(results_dir: str | Path) -> dict[str, Any]:
    """spec (dict), meta (dict), runs and curves (DataFrames) of a results dir; UserError if absent."""
    d = Path(results_dir)
    runs, curves, spec, meta = store.load_results(d)
    for col in ("run_id", "steps_done"):
        if col not in runs:
            raise UserError(f"{d / store.RUNS}: no column {col!r}")
    for col in ("run_id", "step", "split", "acc"):
        if col not in curves:
            raise UserError(f"{d / store.CURVES}: no column {col!r}")
    return {"dir": d, "spec": spec or {}, "meta": meta or {}, "runs": runs, "curves": curves}


def swept_cell_keys(spec: dict, meta: dict, runs: pd.DataFrame) -> list[str]:
    """The keys that define a grid cell: the swept keys (gsweep.analysis.summary.swept_keys) without
    seeds (``seed``, ``task.data_seed``, any ``*_seed``) and without keys constant in ``runs``."""
    from gsweep.analysis.summary import swept_keys
    return [k for k in swept_keys(spec, meta, runs) if not SEED_LIKE.search(k) and runs[k].nunique(dropna=False) > 1]


def splits_of(curves: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    if len(curves):
        found = list(dict.fromkeys(curves["split"].astype(str)))
    else:
        found = [c[len("final_"):-len("_acc")] for c in runs.columns if c.startswith("final_") and c.endswith("_acc")]
    return sorted(found, key=lambda s: (s != FIT, s != GEN, s))


def multi_step_splits(splits: Sequence[str]) -> list[str]:
    """Splits other than train/test/atomic; those with a hop count in the name first, by hop count."""
    cand = [s for s in splits if s not in NOT_MULTI_STEP]

    def key(s):
        m = re.search(r"hop(\d+)", s)
        return (m is None, int(m.group(1)) if m else 0, s)

    return sorted(cand, key=key)


def choose_splits(splits: Sequence[str], source: str, target: str | None, where: str) -> tuple[str, str]:
    present = ", ".join(splits) or "none"
    if source not in splits:
        raise UserError(f"{where}: --source {source!r} is not a split of these runs; splits present: {present}")
    if target is None:
        multi = [s for s in multi_step_splits(splits) if s != source]
        if not multi:
            raise UserError(f"{where}: no multi-step split to predict (splits present: {present}); analyze needs "
                            "a task with multi-step splits such as hop2 (e.g. sweeps/chain.yaml), or --target SPLIT")
        target = multi[0]
    elif target not in splits:
        raise UserError(f"{where}: --target {target!r} is not a split of these runs; splits present: {present}")
    if target == source:
        raise UserError(f"{where}: --source and --target are both {source!r}; pick two different splits")
    return source, target


# ----------------------------------------------------------------------------------------------
# helpers


def _float(a) -> np.ndarray:
    """Any numeric-ish column (Int64 with <NA>, object) -> float array with NaN for missing."""
    return pd.to_numeric(pd.Series(a), errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _num(v):
    """float or None (JSON null) for NaN/inf."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return _num(o)
    if o is pd.NA or o is None:
        return None
    return o


def _median(a) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else None


# ----------------------------------------------------------------------------------------------
# association: joint table, implication scores, onset correlation


def association(src: np.ndarray, tgt: np.ndarray, source: str, target: str,
                groups: np.ndarray | None = None, n_boot: int = N_BOOT, seed: int = 0,
                min_boot_n: int = MIN_CI_CLASS) -> dict[str, Any]:
    """Joint table and scores of "reached source => reached target", and Spearman of the onsets.

    ``src``/``tgt``: onset steps (NaN = not reached within steps_done, i.e. censored). ``groups``: cell per
    run; when given and at least 5 cells have runs reaching both, the bootstrap resamples whole cells.
    No interval under ``min_boot_n`` runs reaching both.
    """
    src, tgt = np.asarray(src, dtype=float), np.asarray(tgt, dtype=float)
    g_src, g_tgt = np.isfinite(src), np.isfinite(tgt)
    n = len(src)
    conf = stats.confusion(g_src, g_tgt)
    tp, fp, fn, tn = conf["tp"], conf["fp"], conf["fn"], conf["tn"]
    out: dict[str, Any] = {
        "n": n,
        "joint": {"both": tp, "source_only": fp, "target_only": fn, "neither": tn,
                  "rows": f"reached {source}", "columns": f"reached {target}"},
        "censored": {source: int((~g_src).sum()), target: int((~g_tgt).sum()),
                     "note": "censored = not reached within steps_done: a negative for 'eventually', "
                             "left out of the onset comparison"},
    }
    prec = tp / (tp + fp) if tp + fp else math.nan
    rec = tp / (tp + fn) if tp + fn else math.nan
    out["precision"] = prec
    out["precision_ci"] = list(wilson_interval(tp, tp + fp))
    if not math.isfinite(prec):
        out["precision_reason"] = f"no run reached {source}"
    out["recall"] = rec
    out["recall_ci"] = list(wilson_interval(tp, tp + fn))
    if not math.isfinite(rec):
        out["recall_reason"] = f"no run reached {target}"
    if math.isfinite(prec) and math.isfinite(rec) and prec + rec > 0:
        out["f1"] = 2 * prec * rec / (prec + rec)
    else:
        out["f1"] = math.nan
        out["f1_reason"] = out.get("precision_reason") or out.get("recall_reason") or "precision and recall are 0"
    out["mcc"] = stats.mcc(tp, fp, fn, tn)
    if not math.isfinite(out["mcc"]):
        sides = []
        if tp + fp == 0 or tn + fn == 0:
            sides.append(f"all {n} runs {'reached' if tn + fn == 0 else 'missed'} {source}")
        if tp + fn == 0 or tn + fp == 0:
            sides.append(f"all {n} runs {'reached' if tn + fp == 0 else 'missed'} {target}")
        out["mcc_reason"] = "undefined: " + "; ".join(sides or ["no runs"])
    out["base_rate"] = (tp + fn) / n if n else math.nan  # P(target), what precision is to beat

    both = g_src & g_tgt
    xs, ys = src[both], tgt[both]
    sp: dict[str, Any] = {"n_both": int(both.sum()), "value": stats.spearman(xs, ys)}
    if math.isfinite(sp["value"]) and both.sum() < min_boot_n:
        sp["ci"] = [math.nan, math.nan]
        sp["ci_reason"] = f"no interval under {min_boot_n} runs reaching both"
    elif not math.isfinite(sp["value"]):
        if both.sum() < 3:
            sp["reason"] = f"{int(both.sum())} run(s) reach both {source} and {target}; need at least 3"
        else:
            sp["reason"] = "an onset is the same step for every run reaching both (constant ranks)"
        sp["ci"] = [math.nan, math.nan]
    else:
        gb = None
        if groups is not None and len(np.unique(np.asarray(groups)[both])) >= 5:
            gb = np.asarray(groups)[both]
        lo, hi, nb = stats.bootstrap_ci(lambda i: stats.spearman(xs[i], ys[i]), len(xs), groups=gb,
                                        n_boot=n_boot, seed=seed)
        sp["ci"] = [lo, hi]
        sp["bootstrap"] = {"resampled": "cells" if gb is not None else "runs", "n_boot": n_boot, "n_defined": nb}
    sp["median_" + source] = _median(xs)
    sp["median_" + target] = _median(ys)
    sp["target_not_before_source"] = float(np.mean(ys >= xs)) if both.any() else math.nan
    sp["note"] = "over runs reaching both splits: observed onsets only (censored runs left out)"
    out["spearman"] = sp
    return out


# ----------------------------------------------------------------------------------------------
# early warning: cross-validated scores with folds that hold out whole cells


def hparam_design(runs: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Design matrix of the swept hyperparameters: numbers (log10 when positive over a decade or more),
    standardised, with their squares (phase diagrams are not monotone in weight decay or data fraction);
    anything else one-hot."""
    cols, names = [], []
    for k in keys:
        v = runs[k]
        num = pd.to_numeric(v, errors="coerce") if not pd.api.types.is_bool_dtype(v) else None
        if num is not None and num.notna().all():
            a = num.to_numpy(dtype=float)
            if (a > 0).all() and a.max() / a.min() >= 10:
                a, nm = np.log10(a), f"log10 {k}"
            else:
                nm = k
            sd = a.std()
            z = (a - a.mean()) / (sd if sd > 0 else 1.0)
            cols.append(z)
            names.append(nm)
            if len(np.unique(a)) >= 3:
                cols.append(z * z)
                names.append(f"({nm})^2")
        else:
            s = v.astype(str).to_numpy()
            for u in sorted(set(s)):
                cols.append((s == u).astype(float))
                names.append(f"{k}={u}")
    X = np.column_stack(cols) if cols else np.zeros((len(runs), 0))
    return X, names


def _standardise(Xtr: np.ndarray, Xte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = Xtr.mean(axis=0) if len(Xtr) else np.zeros(Xtr.shape[1])
    sd = Xtr.std(axis=0) if len(Xtr) else np.ones(Xtr.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    return (Xtr - mu) / sd, (Xte - mu) / sd


def cv_feature(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fpr: float = FPR) -> dict[str, Any]:
    """Held-out scores of a single feature: per fold, its sign (which way predicts the label) and an alarm
    threshold at false-positive rate ``fpr`` are chosen on the other folds and applied to this one.

    Returns held (oriented held-out scores), flagged (alarm raised), and the per-fold signs.
    """
    x, y, folds = np.asarray(x, dtype=float), np.asarray(y, dtype=bool), np.asarray(folds)
    held = np.full(len(x), np.nan)
    flagged = np.zeros(len(x), dtype=bool)
    signs, undefined = [], 0
    for f in np.unique(folds):
        te = folds == f
        tr = ~te
        a = stats.auroc(y[tr], x[tr])
        if not math.isfinite(a):
            undefined += 1
            sign = 1.0
        else:
            sign = -1.0 if a < 0.5 else 1.0
        signs.append(sign)
        held[te] = sign * x[te]
        tau = stats.threshold_at_fpr(sign * x[tr][~y[tr]], fpr)
        flagged[te] = held[te] > tau if not math.isnan(tau) else False
    return {"held": held, "flagged": flagged, "signs": signs, "folds_one_class": undefined}


def cv_logistic(X: np.ndarray, y: np.ndarray, folds: np.ndarray, fpr: float = FPR, l2: float = 1.0) -> dict:
    """Held-out logits of a logistic regression fitted on the training folds (and alarms at ``fpr``)."""
    y, folds = np.asarray(y, dtype=bool), np.asarray(folds)
    held = np.full(len(y), np.nan)
    flagged = np.zeros(len(y), dtype=bool)
    for f in np.unique(folds):
        te = folds == f
        tr = ~te
        if X.shape[1] == 0 or tr.sum() == 0 or y[tr].all() or (~y[tr]).all():
            held[te] = 0.0  # nothing to learn: a constant score (chance)
            s_tr = np.zeros(int(tr.sum()))
        else:
            Xtr, Xte = _standardise(X[tr], X[te])
            w = stats.logistic_fit(Xtr, y[tr], l2=l2)
            held[te] = stats.logistic_score(w, Xte)
            s_tr = stats.logistic_score(w, Xtr)
        tau = stats.threshold_at_fpr(s_tr[~y[tr]], fpr)
        flagged[te] = held[te] > tau if not math.isnan(tau) else False
    return {"held": held, "flagged": flagged}


def _score_block(y, held, flagged, lead, groups, n_boot, seed) -> dict[str, Any]:
    """AUROC (with a cell-bootstrap interval), AUPRC, the alarm's held-out TPR/FPR and lead times."""
    y = np.asarray(y, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    d: dict[str, Any] = {"n": len(y), "n_pos": n_pos, "auroc": stats.auroc(y, held), "auprc": stats.auprc(y, held),
                         "auprc_chance": n_pos / len(y) if len(y) else math.nan}
    if not math.isfinite(d["auroc"]):
        d["auroc_reason"] = ("no runs to score" if not len(y) else
                             f"all {len(y)} scored runs are {'positive' if n_neg == 0 else 'negative'}")
        d["auroc_ci"] = [math.nan, math.nan]
    elif min(n_pos, n_neg) < MIN_CI_CLASS:
        d["auroc_ci"] = [math.nan, math.nan]
        d["auroc_ci_reason"] = f"no interval with fewer than {MIN_CI_CLASS} positive and {MIN_CI_CLASS} negative runs"
    else:
        g = np.asarray(groups)
        lo, hi, _ = stats.bootstrap_ci(lambda i: stats.auroc(y[i], held[i]), len(y),
                                       groups=g if len(np.unique(g)) >= 5 else None, n_boot=n_boot, seed=seed)
        d["auroc_ci"] = [lo, hi]
    if not math.isfinite(d["auprc"]):
        d["auprc_reason"] = d.get("auroc_reason", "no positive runs")
    d["tpr_at_fpr"] = float(flagged[y].mean()) if n_pos else math.nan
    d["fpr_heldout"] = float(flagged[~y].mean()) if n_neg else math.nan
    hits = flagged & y
    d["n_flagged_pos"] = int(hits.sum())
    if lead is not None:
        d["lead_steps_median"] = _median(lead[hits])
        d["lead_steps_iqr"] = ([float(q) for q in np.quantile(lead[hits], [0.25, 0.75])] if hits.any()
                               else [math.nan, math.nan])
    return d


def score_label(frame: pd.DataFrame, label: str, t_col: str, X: np.ndarray, features: Sequence[str],
                folds: np.ndarray, groups: np.ndarray, fpr: float = FPR, n_boot: int = N_BOOT,
                seed: int = 0) -> tuple[dict[str, Any], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Score every feature of ``frame`` and the hyperparameter baseline against the eventual ``label``.

    frame: one row per run with the features, ``window_steps`` and the onset column ``t_col`` (NaN =
    censored). Runs whose onset lies inside the window are left out. Returns the scores and, per
    scorer, its held-out (y, score) pairs for ROC plots.
    """
    t = frame[t_col].to_numpy(dtype=float)
    wend = frame["window_steps"].to_numpy(dtype=float)
    in_window = np.isfinite(t) & (t <= wend)
    eligible = ~in_window
    y_all = np.isfinite(t)
    lead_all = t - wend
    res: dict[str, Any] = {"onset_column": t_col, "n_runs": len(frame), "n_reached_in_window": int(in_window.sum()),
                           "n_scored": int(eligible.sum()), "n_pos": int((y_all & eligible).sum()),
                           "n_censored": int((~y_all).sum()), "scores": {}}
    rocs = {}

    def run(name, mask, scorer):
        m = eligible & mask
        yy, ff, gg = y_all[m], folds[m], groups[m]
        out = scorer(m, yy, ff)
        block = _score_block(yy, out["held"], out["flagged"], lead_all[m], gg, n_boot, seed)
        if "signs" in out:
            s = np.asarray(out["signs"])
            block["direction"] = ("higher" if (s > 0).all() else "lower" if (s < 0).all()
                                  else f"mixed ({int((s > 0).sum())}/{len(s)} folds higher)")
            block["folds_one_class"] = out["folds_one_class"]
        rocs[name] = (yy, out["held"])
        return block

    bl = run(BASELINE, np.ones(len(frame), dtype=bool), lambda m, yy, ff: cv_logistic(X[m], yy, ff, fpr))
    bl["what"] = "logistic regression on the swept hyperparameters only (fitted on the training folds)"
    res["scores"][BASELINE] = bl
    for name in features:
        x = frame[name].to_numpy(dtype=float)
        has = np.isfinite(x)
        if not (has & eligible).any():
            res["scores"][name] = {"auroc": None, "auroc_reason": "no scored run has this feature"}
            continue
        blk = run(name, has, lambda m, yy, ff, x=x: cv_feature(x[m], yy, ff, fpr))
        blk["auroc_raw"] = stats.auroc(y_all[eligible & has], x[eligible & has])
        # the same baseline given the feature too: does the feature add to the hyperparameters?
        m = eligible & has
        Xf = np.c_[X[m], x[m]]
        comb = cv_logistic(Xf, y_all[m], folds[m], fpr)
        blk["auroc_with_hyperparameters"] = stats.auroc(y_all[m], comb["held"])
        blk["auroc_hyperparameters_same_runs"] = stats.auroc(y_all[m], cv_logistic(X[m], y_all[m], folds[m], fpr)["held"])
        res["scores"][name] = blk
    return res, rocs


# ----------------------------------------------------------------------------------------------
# the analysis


def analyze(results_dir: str | Path, source: str = GEN, target: str | None = None, window: float = 0.1,
            threshold: float | None = None, fpr: float = FPR, n_folds: int = N_FOLDS, n_boot: int = N_BOOT,
            seed: int = 0, write: bool = True, plots: bool = True) -> dict[str, Any]:
    """Run the whole analysis on a results dir; returns the analysis.json content (also written)."""
    if not (isinstance(window, (int, float)) and 0 < window < 1):
        raise UserError(f"--window {window!r}: a fraction of the step budget, strictly between 0 and 1")
    r = load_results(results_dir)
    d, spec, meta, runs, curves = r["dir"], r["spec"], r["meta"], r["runs"], r["curves"]
    an = spec.get("analysis") or {}
    spec_thr = float(an.get("threshold") or 0.99)  # a damaged spec.yaml may hold null
    thr = spec_thr if threshold is None else float(threshold)
    if not 0 < thr <= 1:
        raise UserError(f"--threshold {thr}: an accuracy in (0, 1]")
    splits = splits_of(curves, runs)
    source, target = choose_splits(splits, source, target, str(d / "curves.parquet"))

    runs = runs.reset_index(drop=True)
    if "status" not in runs:
        runs["status"] = "done"
    need = [label_column(source), label_column(target)]
    if thr != spec_thr or any(c not in runs for c in need):
        lab = compute_labels(curves, runs, thr, float(an.get("gap", 10.0)), str(an.get("gap_mode", "relative")))
        for c in lab.columns:
            runs[c] = lab[c]
    diverged = runs["status"].astype(str).eq("diverged").to_numpy()
    notes: list[str] = []
    if diverged.any():
        notes.append(f"{int(diverged.sum())} diverged run(s) left out of everything")
    runs = runs[~diverged].reset_index(drop=True)
    if runs.empty:
        raise UserError(f"{d / 'runs.parquet'}: no run to analyze (all {int(diverged.sum())} diverged)")

    keys = swept_cell_keys(spec, meta, runs)
    if keys:
        cell = runs[keys].apply(lambda row: ", ".join(f"{k}={_fmt_value(v)}" for k, v in row.items()), axis=1)
    else:
        cell = pd.Series(["all"] * len(runs))
    cell = cell.astype(str).to_numpy()
    n_cells = len(np.unique(cell))
    if n_cells >= 2:
        folds = stats.grouped_folds(cell, n_folds, seed)
        fold_note = f"{len(np.unique(folds))} folds holding out whole cells (all seeds of a cell together)"
    else:
        folds = stats.grouped_folds(runs["run_id"].astype(str).to_numpy(), n_folds, seed)
        fold_note = (f"one cell only: {len(np.unique(folds))} folds over its seeds (no hyperparameter differs, "
                     "so none can leak; the hyperparameter baseline is chance)")
        notes.append(fold_note)

    budget = (_float(runs["train.steps"]) if "train.steps" in runs else _float(runs["steps_done"]))
    budget = np.where(np.isfinite(budget), budget, _float(runs["steps_done"]))
    wend = np.maximum(1, np.floor(window * budget))
    t_src = _float(runs[label_column(source)])
    t_tgt = _float(runs[label_column(target)])

    # ---- association, overall and per cell
    overall = association(t_src, t_tgt, source, target, groups=cell, n_boot=n_boot, seed=seed)
    per_cell = []
    for c in sorted(np.unique(cell)):
        m = cell == c
        row = {"cell": c, **{k: runs.loc[m, k].iloc[0] for k in keys}}
        a = association(t_src[m], t_tgt[m], source, target, n_boot=min(n_boot, 200), seed=seed)
        row.update(a)
        per_cell.append(row)
    phase_table = None
    if source == GEN and "phase" in runs:
        ph = runs["phase"].astype("string").fillna("none").to_numpy()
        phase_table = {p: {"reached": int(((ph == p) & np.isfinite(t_tgt)).sum()),
                           "not_reached": int(((ph == p) & ~np.isfinite(t_tgt)).sum())}
                       for p in ("comprehension", "grokking", "memorization", "confusion") if (ph == p).any()}

    # ---- early-warning features
    ww = pd.Series(wend, index=runs["run_id"].astype(str).to_numpy())
    feats = early_warning(curves.assign(run_id=curves["run_id"].astype(str)), ww, FIT, GEN)
    feats = feats.reindex(ww.index)
    left_out: dict[str, str] = {}
    ok_f, msg = fourier_applicable(runs, np.isfinite(feats["fourier_sparsity"].to_numpy(dtype=float)))
    feats.loc[~ok_f, "fourier_sparsity"] = np.nan
    if msg:
        left_out["fourier_sparsity"] = msg
    for f, col in NEEDS.items():
        if f not in left_out and col not in curves:
            left_out[f] = f"{f} left out: curves.parquet has no {col!r} column"
    few = int(np.isnan(feats["norm_fall"].to_numpy(dtype=float)).sum()) if "weight_norm" in curves else 0
    if few:
        notes.append(f"{few} run(s) have fewer than 2 evaluations inside the window: their features are missing")
    features = [f for f in PREDICTORS if f not in left_out and np.isfinite(feats[f].to_numpy(dtype=float)).any()]
    for f in PREDICTORS:
        if f not in features and f not in left_out:
            left_out[f] = f"{f} left out: no run has a value inside the window"

    frame = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy(), "cell": cell})
    for k in keys:
        frame[k] = runs[k].to_numpy()
    if "seed" in runs and "seed" not in keys:
        frame["seed"] = runs["seed"].to_numpy()
    frame["status"] = runs["status"].astype(str).to_numpy()
    frame["steps_done"] = runs["steps_done"].to_numpy()
    frame["window_steps"] = wend.astype(np.int64)
    for f in PREDICTORS:
        frame[f] = feats[f].to_numpy(dtype=float)
    src_col, tgt_col = f"t_{source}", f"t_{target}"
    frame[src_col] = t_src
    frame[tgt_col] = t_tgt
    frame["grokked"] = np.isfinite(t_src)
    frame["reasoned"] = np.isfinite(t_tgt)
    frame["grokked_in_window"] = np.isfinite(t_src) & (t_src <= wend)
    frame["reasoned_in_window"] = np.isfinite(t_tgt) & (t_tgt <= wend)
    frame["fold"] = folds

    X, xnames = hparam_design(runs, keys)
    predictors_out, rocs = {}, {}
    for lab, tcol, split in (("reasoned", tgt_col, target), ("grokked", src_col, source)):
        res, roc = score_label(frame, lab, tcol, X, features, folds, cell, fpr=fpr, n_boot=n_boot, seed=seed)
        res["meaning"] = f"reached acc >= {thr:g} on {split!r} within the steps run (after the window)"
        predictors_out[lab] = res
        rocs[lab] = roc
    n_cmp = sum(1 for lab in predictors_out.values() for s in lab["scores"].values()
                if s.get("auroc") is not None and math.isfinite(s["auroc"]))

    out = {
        "results_dir": str(d), "source": source, "target": target, "splits": splits,
        "threshold": thr, "window": window,
        "window_steps": {"min": int(wend.min()), "max": int(wend.max())},
        "false_positive_rate": fpr,
        "n_runs": int(len(runs)), "n_diverged_left_out": int(diverged.sum()),
        "cell_keys": keys, "n_cells": n_cells, "folds": fold_note, "hyperparameter_features": xnames,
        "overall": overall, "phase_table": phase_table, "per_cell": per_cell,
        "predictors": predictors_out, "features": {f: DESCRIPTIONS[f] for f in features},
        "left_out": left_out,
        "n_comparisons": n_cmp,
        "notes": notes + [
            "correlation, not causation: grokking and reasoning may share causes (the hyperparameters) "
            "without one producing the other",
        ] + ([f"{n_cmp} AUROCs are reported: with many comparisons some will look good by chance; read the "
              "intervals, and treat a single predictor beating the baseline as a hypothesis"] if n_cmp > 1 else []) + [
            "censored runs (label not reached within steps_done) are negatives for 'eventually'; "
            "a longer budget could turn some into positives",
        ],
    }
    if write:
        paths = write_outputs(d, out, frame, rocs, plots)
        out["written"] = paths
    return out


def write_outputs(d: Path, out: dict, frame: pd.DataFrame, rocs: dict, plots: bool = True) -> list[str]:
    paths = []
    jpath = d / "analysis.json"
    store.write_text(jpath, json.dumps(_jsonable({k: v for k, v in out.items() if k != "written"}), indent=2) + "\n")
    paths.append(str(jpath))
    ppath = d / "predictors.parquet"
    fr = frame.copy()
    for c in (f"t_{out['source']}", f"t_{out['target']}"):
        fr[c] = pd.array([None if not np.isfinite(v) else int(v) for v in fr[c]], dtype="Int64")
    store.write_parquet(ppath, fr)
    paths.append(str(ppath))
    if plots:
        pdir = d / "plots"
        pdir.mkdir(exist_ok=True)
        paths.append(plot_roc(pdir / "analyze-roc.png", out, rocs))
        paths.append(plot_onset(pdir / "analyze-onset.png", out, frame))
    return paths


# ----------------------------------------------------------------------------------------------
# plots (matplotlib's object API: no pyplot state, any backend)


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_roc(path: Path, out: dict, rocs: dict) -> str:
    labs = list(rocs)
    fig = _figure(5.2 * len(labs), 4.8)
    for i, lab in enumerate(labs):
        ax = fig.add_subplot(1, len(labs), i + 1)
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        res = out["predictors"][lab]
        drawn = 0
        for name, (y, s) in rocs[lab].items():
            fpr, tpr = stats.roc_curve(y, s)
            if not len(fpr):
                continue
            a = res["scores"][name]["auroc"]
            style = dict(color="k", lw=2, ls=":") if name == BASELINE else dict(lw=1.5)
            ax.plot(fpr, tpr, label=f"{name} (AUROC {a:.2f})", **style)
            drawn += 1
        if not drawn:
            reason = res["scores"][BASELINE].get("auroc_reason", "undefined")
            ax.text(0.5, 0.5, f"AUROC undefined:\n{reason}", ha="center", va="center", fontsize=9, wrap=True)
        split = out["target"] if lab == "reasoned" else out["source"]
        ax.set_title(f"{lab}: reaches {split} (held-out cells)\n{res['n_scored']} runs, {res['n_pos']} positive",
                     fontsize=10)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if drawn:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"early warning from the first {out['window']:.0%} of training", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def plot_onset(path: Path, out: dict, frame: pd.DataFrame) -> str:
    src, tgt = out["source"], out["target"]
    xs, ys = frame[f"t_{src}"].to_numpy(dtype=float), frame[f"t_{tgt}"].to_numpy(dtype=float)
    done = frame["steps_done"].to_numpy(dtype=float)
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    gx, gy = np.isfinite(xs), np.isfinite(ys)
    groups = [
        (gx & gy, xs, ys, dict(marker="o", color="C0"), "reached both"),
        (gx & ~gy, xs, done, dict(marker="^", facecolors="none", edgecolors="C3"), f"{tgt} censored (at steps_done)"),
        (~gx & gy, done, ys, dict(marker=">", facecolors="none", edgecolors="C2"), f"{src} censored (at steps_done)"),
        (~gx & ~gy, done, done, dict(marker="x", color="0.5"), "both censored"),
    ]
    allv = np.r_[xs[gx], ys[gy], done]
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = (allv.min(), allv.max()) if allv.size else (1.0, 10.0)
    for m, x, y, style, label in groups:
        if m.any():
            jitter = np.exp(np.random.default_rng(0).normal(0, 0.02, m.sum())) if label == "both censored" else 1
            ax.scatter(x[m] * jitter, y[m], s=22, alpha=0.75, label=f"{label} ({int(m.sum())})", **style)
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=1, ls="--", label="same step")
    wmax = out["window_steps"]["max"]
    ax.axvline(wmax, color="0.8", lw=1, ls=":")
    ax.axhline(wmax, color="0.8", lw=1, ls=":", label=f"window end ({wmax} steps)")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label_column(src)}: first step with {src} acc >= {out['threshold']:g}")
    ax.set_ylabel(f"{label_column(tgt)}: first step with {tgt} acc >= {out['threshold']:g}")
    sp = out["overall"]["spearman"]
    if sp["value"] is not None and math.isfinite(sp["value"]):
        ci = f" [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]" if "bootstrap" in sp else ""
        title = f"Spearman {sp['value']:.2f}{ci} over {sp['n_both']} runs reaching both"
    else:
        title = f"Spearman undefined: {sp.get('reason', '')}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


# ----------------------------------------------------------------------------------------------
# printed summary


def _f(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def format_summary(out: dict, max_cells: int = 20) -> str:
    src, tgt = out["source"], out["target"]
    o = out["overall"]
    j = o["joint"]
    L = []
    ws = out["window_steps"]
    wtxt = f"{ws['min']}" if ws["min"] == ws["max"] else f"{ws['min']}-{ws['max']}"
    L.append(f"gsweep analyze {out['results_dir']}: does generalising on {src!r} predict reaching {tgt!r}?")
    L.append(f"  {out['n_runs']} runs in {out['n_cells']} cell(s)"
             f" (cells: {', '.join(out['cell_keys']) or 'none swept'}; seeds grouped)"
             + (f", {out['n_diverged_left_out']} diverged left out" if out["n_diverged_left_out"] else "")
             + f"; threshold {out['threshold']:g}; window {out['window']:.0%} = {wtxt} steps")
    L.append("")
    w = max(len(src), len(tgt)) + 16
    L.append(f"  {'':<{w}}{'reached ' + tgt:>18}{'not reached':>14}")
    L.append(f"  {'reached ' + src:<{w}}{j['both']:>18}{j['source_only']:>14}")
    L.append(f"  {'not reached ' + src:<{w}}{j['target_only']:>18}{j['neither']:>14}")
    pr = o["precision_ci"]
    ptxt = (f"precision {_f(o['precision'])} [{_f(pr[0])}, {_f(pr[1])}]" if "precision_reason" not in o
            else f"precision n/a ({o['precision_reason']})")
    rtxt = f"recall {_f(o['recall'])}" if "recall_reason" not in o else f"recall n/a ({o['recall_reason']})"
    L.append(f"  grokked => reasoning: {ptxt} (base rate {_f(o['base_rate'])}), {rtxt}, F1 {_f(o['f1'])}, "
             f"MCC {_f(o['mcc'])}" + (f" ({o['mcc_reason']})" if "mcc_reason" in o else ""))
    sp = o["spearman"]
    if sp["value"] is not None and math.isfinite(sp["value"]):
        ci = (f"[{_f(sp['ci'][0])}, {_f(sp['ci'][1])}]" if "bootstrap" in sp else "(no interval)")
        how = f" (bootstrap over {sp['bootstrap']['resampled']})" if "bootstrap" in sp else ""
        L.append(f"  onsets: Spearman({label_column(src)}, {label_column(tgt)}) = {_f(sp['value'])} {ci} "
                 f"over {sp['n_both']} runs reaching both{how}; {tgt} not before {src} in "
                 f"{_f(100 * sp['target_not_before_source'], 0)}% of them")
    else:
        L.append(f"  onsets: Spearman undefined ({sp['reason']})")
    cz = o["censored"]
    L.append(f"  censored (not reached within steps_done): {src} {cz[src]}, {tgt} {cz[tgt]} runs; negatives for "
             "'eventually', left out of the onset comparison")
    if out.get("phase_table"):
        L.append("  by phase (reached " + tgt + " / runs): " + ", ".join(
            f"{p} {v['reached']}/{v['reached'] + v['not_reached']}" for p, v in out["phase_table"].items()))
    L.append("")
    L.append(f"  early warning from the first {out['window']:.0%}: AUROC / AUPRC on held-out cells "
             f"({out['folds']}); alarm threshold at FPR {out['false_positive_rate']:.0%} chosen on training folds")
    for lab, res in out["predictors"].items():
        split = tgt if lab == "reasoned" else src
        L.append(f"  {lab} (reaches {split}): {res['n_scored']} runs scored, {res['n_pos']} positive, "
                 f"{res['n_reached_in_window']} reached inside the window (left out), {res['n_censored']} censored")
        if 0 < res["n_pos"] < res["n_scored"] and min(res["n_pos"], res["n_scored"] - res["n_pos"]) < MIN_CI_CLASS:
            L.append(f"    (too few to read: no intervals under {MIN_CI_CLASS} positive and {MIN_CI_CLASS} negative runs)")
        if res["n_pos"] == 0 or res["n_pos"] == res["n_scored"]:
            why = res["scores"][BASELINE].get("auroc_reason", "one class only")
            L.append(f"    AUROC undefined for every predictor and the baseline: {why}")
            continue
        L.append(f"    {'predictor':<18}{'AUROC':>7} {'[95% CI]':<14}{'AUPRC':>7}{'(chance)':>9}{'TPR@FPR':>9}"
                 f"{'lead (steps)':>14}{'+hparams':>10}  direction")
        for name, s in res["scores"].items():
            if s.get("auroc") is None or not math.isfinite(s["auroc"]):
                L.append(f"    {name:<18}{'n/a':>7}  {s.get('auroc_reason', '')}")
                continue
            ci = s["auroc_ci"]
            cit = f"[{_f(ci[0])}, {_f(ci[1])}]" if ci[0] is not None and math.isfinite(ci[0]) else ""
            lead = s.get("lead_steps_median")
            plus = s.get("auroc_with_hyperparameters")
            L.append(f"    {name:<18}{_f(s['auroc']):>7} {cit:<14}{_f(s['auprc']):>7}{_f(s['auprc_chance']):>9}"
                     f"{_f(s['tpr_at_fpr']):>9}{(_f(lead, 0) if lead is not None else '-'):>14}"
                     f"{(_f(plus) if plus is not None else '-'):>10}  {s.get('direction', '')}")
    for msg in out["left_out"].values():
        L.append(f"  note: {msg}")
    if out["n_cells"] > 1:
        L.append("")
        L.append(f"  per cell ({min(out['n_cells'], max_cells)} of {out['n_cells']}): runs, both / {src} only / "
                 f"{tgt} only / neither, MCC, Spearman")
        for row in out["per_cell"][:max_cells]:
            jj = row["joint"]
            L.append(f"    {row['cell']}: {row['n']}, {jj['both']}/{jj['source_only']}/{jj['target_only']}/"
                     f"{jj['neither']}, MCC {_f(row['mcc'])}, Spearman {_f(row['spearman']['value'])}")
        if out["n_cells"] > max_cells:
            L.append(f"    ... {out['n_cells'] - max_cells} more in analysis.json")
    L.append("")
    for n in out["notes"]:
        L.append(f"  caveat: {n}")
    if out.get("written"):
        L.append("  wrote " + ", ".join(out["written"]))
    return "\n".join(L)


def analyze_command(args) -> int:
    window = getattr(args, "window", None)
    out = analyze(args.results_dir, source=getattr(args, "source", None) or GEN,
                  target=getattr(args, "target", None), window=0.1 if window is None else window,
                  threshold=getattr(args, "threshold", None))
    print(format_summary(out))
    return 0
