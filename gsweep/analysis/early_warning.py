"""Early warning (``gsweep analyze``, part 2): a feature of the first window, or the hyperparameters,
scored by AUROC/AUPRC with folds that hold out whole grid cells."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from gsweep.analysis import stats
from gsweep.analysis.analyze_common import BASELINE, FPR, MIN_CI_CLASS, N_BOOT, _median

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


def fold_warning(y: np.ndarray, folds: np.ndarray) -> str | None:
    """Why the held-out scores of one label may be degenerate: a single fold (no training part), or
    folds whose training part holds one class only (no orientation, alarm threshold or baseline fit
    there). None when every fold's training part holds both classes (or no run is scored)."""
    y, folds = np.asarray(y, dtype=bool), np.asarray(folds)
    if not len(y) or y.all() or (~y).all():
        return None
    fs = np.unique(folds)
    if len(fs) < 2:
        return "a single fold: no training part to choose a direction or an alarm threshold on"
    bad = [f for f in fs if y[folds != f].all() or (~y[folds != f]).all()]
    if not bad:
        return None
    return (f"{len(bad)} of {len(fs)} folds have one class only in their training part: there a feature's "
            "direction defaults to 'higher', no alarm threshold is set and the baseline scores chance")


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
        # pairs of runs from the same cell only: what is left once the hyperparameters are held fixed
        block["auroc_within_cells"], block["n_cells_both_classes"] = stats.auroc_within(yy, out["held"], gg)
        block["_held"] = out["held"]
        if "signs" in out:
            s = np.asarray(out["signs"])
            block["direction"] = ("higher" if (s > 0).all() else "lower" if (s < 0).all()
                                  else f"mixed ({int((s > 0).sum())}/{len(s)} folds higher)")
            block["folds_one_class"] = out["folds_one_class"]
        rocs[name] = (yy, out["held"])
        return block

    warn = fold_warning(y_all[eligible], folds[eligible])
    if warn:
        res["fold_warning"] = warn
    bl = run(BASELINE, np.ones(len(frame), dtype=bool), lambda m, yy, ff: cv_logistic(X[m], yy, ff, fpr))
    bl["what"] = "logistic regression on the swept hyperparameters only (fitted on the training folds)"
    res["scores"][BASELINE] = bl
    for name in features:
        x = frame[name].to_numpy(dtype=float)
        has = np.isfinite(x)
        if not (has & eligible).any():
            res["scores"][name] = {"auroc": None, "auroc_reason": "no scored run has this feature"}
            continue
        xs = x[has & eligible]
        if len(np.unique(xs)) == 1 and 0 < int(y_all[has & eligible].sum()) < len(xs):
            res["scores"][name] = {"auroc": None, "n": int(len(xs)),
                                   "auroc_reason": f"the same value ({xs[0]:g}) in all {len(xs)} scored runs: "
                                                   "every rank tied, nothing to rank by"}
            continue
        blk = run(name, has, lambda m, yy, ff, x=x: cv_feature(x[m], yy, ff, fpr))
        blk["auroc_raw"] = stats.auroc(y_all[eligible & has], x[eligible & has])
        # the same baseline given the feature too: does the feature add to the hyperparameters?
        m = eligible & has
        Xf = np.c_[X[m], x[m]]
        comb = cv_logistic(Xf, y_all[m], folds[m], fpr)
        blk["auroc_with_hyperparameters"] = stats.auroc(y_all[m], comb["held"])
        base_same = cv_logistic(X[m], y_all[m], folds[m], fpr)["held"]
        blk["auroc_hyperparameters_same_runs"] = stats.auroc(y_all[m], base_same)
        if math.isfinite(blk["auroc"]) and len(np.unique(groups[m])) >= 2:
            # feature minus baseline on the same held-out runs, whole cells resampled for both at once
            vb = stats.paired_cell_bootstrap(y_all[m], blk["_held"], base_same, groups[m], n_boot=n_boot, seed=seed)
            vb["what"] = "AUROC(feature) - AUROC(hyperparameters) on the same runs; paired bootstrap over cells"
            blk["vs_baseline"] = vb
        res["scores"][name] = blk
    for blk in res["scores"].values():
        blk.pop("_held", None)
    return res, rocs
