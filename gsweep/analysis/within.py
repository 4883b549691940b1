"""Within-cell answers for ``gsweep analyze`` (no JAX): clean vs overlapping targets, association tests
that hold the hyperparameters fixed, the delay question, and the count of comparisons.

- *Clean or overlapping.* A task declares per split the held-out components its examples depend on
  (:meth:`gsweep.tasks.base.Task.held_out_parts`). A target sharing one with the source overlaps it:
  part of what it measures is the source (``hop2_novel`` chains pass through the held-out pairs that
  ``test`` measures), so "source predicts target" is partly true by construction.
- *Within cells.* The pooled 2x2 table mixes cells: a hyperparameter that drives both splits makes
  them associated across cells even when, at fixed hyperparameters, they are not. The
  Cochran-Mantel-Haenszel test (:func:`gsweep.analysis.stats.cmh`) and a permutation test that permutes
  the target's labels inside each cell (:func:`gsweep.analysis.stats.within_cell_permutation`) only use
  the seed-to-seed variation inside cells. Fisher's exact test on the pooled table is printed beside.
- *Does the delay matter?* Among runs that generalise, grokking (t_gen >= gap * t_fit) against
  comprehension, within cells; and the delay ratio t_gen / t_fit against the target's onset with
  t_gen partialled out (an OLS of log t_target on log t_gen and log ratio).
- *Comparisons.* Every p-value is collected; Holm's correction is applied over all of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from gsweep.analysis import stats

OVERLAP_MESSAGE = "overlapping target: part of what it measures is the source"


def held_out_parts(task_name: str | None, splits) -> dict[str, frozenset] | None:
    """The task's declaration for these recorded splits (None when the task is unknown or declares none)."""
    try:
        from gsweep.tasks import get_task  # numpy only: the task registry imports no JAX

        return get_task(str(task_name)).held_out_parts(tuple(splits))
    except KeyError:
        return None


def target_status(parts: dict | None, source: str, target: str) -> dict[str, Any]:
    """``{"status": clean|overlapping|undeclared, "shared": [...], "message": ...}``."""
    if parts is None or source not in parts or target not in parts:
        return {"status": "undeclared", "shared": [],
                "message": "the task does not declare which held-out parts this split depends on"}
    shared = sorted(parts[source] & parts[target])
    if shared:
        return {"status": "overlapping", "shared": shared,
                "message": f"{OVERLAP_MESSAGE} (both depend on the {', '.join(shared)})"}
    return {"status": "clean", "shared": [], "message": f"clean: no held-out part shared with {source!r}"}


def association_tests(x: np.ndarray, y: np.ndarray, cells: np.ndarray, n_perm: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Pooled Fisher, CMH and within-cell permutation p-values of x -> y (booleans per run)."""
    x, y = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    n_s, n_ns = int(x.sum()), int((~x).sum())
    out: dict[str, Any] = {
        "n": int(len(x)),
        "p_target_given_source": float(y[x].mean()) if n_s else math.nan,
        "p_target_given_not_source": float(y[~x].mean()) if n_ns else math.nan,
        "counts": {"both": int((x & y).sum()), "source_only": int((x & ~y).sum()),
                   "target_only": int((~x & y).sum()), "neither": int((~x & ~y).sum())},
    }
    if n_s and n_ns and y.any() and (~y).any():
        orr, p = stats.fisher(x, y)
        out["pooled_fisher"] = {"odds_ratio": orr, "p": p}
    else:
        out["pooled_fisher"] = {"odds_ratio": math.nan, "p": math.nan,
                                "reason": "one side of the table is empty (every run in one class)"}
    c = stats.cmh(x, y, cells)
    out["cmh"] = c
    perm = stats.within_cell_permutation(x, y, cells, n_perm=n_perm, seed=seed)
    out["permutation"] = perm
    if c["n_strata"] == 0:
        reason = ("no cell has runs on both sides of both splits: the seeds never disagree inside a cell, so "
                  "there is no within-cell variation to test")
        out["cmh"]["reason"] = reason
        out["permutation"]["reason"] = reason
    out["n_informative_cells"] = c["n_strata"]
    return out


def targets_table(runs: pd.DataFrame, splits, source: str, src_col: str, targets, parts, cells,
                  label_column, n_perm: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per candidate target: its clean/overlapping status and the association tests."""
    x = np.isfinite(pd.to_numeric(runs[src_col]).to_numpy(dtype=float, na_value=np.nan))
    rows = []
    for t in targets:
        col = label_column(t)
        if col not in runs:
            continue
        y = np.isfinite(pd.to_numeric(runs[col]).to_numpy(dtype=float, na_value=np.nan))
        row = {"target": t, **target_status(parts, source, t)}
        row.update(association_tests(x, y, cells, n_perm=n_perm, seed=seed))
        rows.append(row)
    return rows


def delay_block(runs: pd.DataFrame, t_tgt: np.ndarray, cells: np.ndarray, n_perm: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """Does the delay matter? Among runs that generalised (t_gen observed): the target's rate for
    grokking vs comprehension runs (pooled, CMH, within-cell permutation), and the OLS of log t_target on
    log t_gen and log(t_gen / t_fit) over runs reaching the target with both onsets observed."""
    out: dict[str, Any] = {}
    if "phase" not in runs or "t_gen" not in runs:
        return {"reason": "no phase / t_gen columns"}
    t_gen = pd.to_numeric(runs["t_gen"]).to_numpy(dtype=float, na_value=np.nan)
    t_fit = pd.to_numeric(runs["t_fit"]).to_numpy(dtype=float, na_value=np.nan)
    ph = runs["phase"].astype("string").fillna("none").to_numpy()
    gen = np.isfinite(t_gen) & np.isin(ph, ["grokking", "comprehension"])
    out["n_generalised"] = int(gen.sum())
    out["n_grokking"] = int((gen & (ph == "grokking")).sum())
    out["n_comprehension"] = int((gen & (ph == "comprehension")).sum())
    if "phase_resolved" in runs:
        res = runs["phase_resolved"].astype("boolean").to_numpy(dtype=object)
        out["n_unresolved"] = int(sum(1 for i in np.flatnonzero(gen) if res[i] is False))
    reached = np.isfinite(t_tgt)
    if out["n_grokking"] and out["n_comprehension"]:
        out["grokking_vs_comprehension"] = association_tests(ph[gen] == "grokking", reached[gen], cells[gen],
                                                             n_perm=n_perm, seed=seed)
    else:
        out["grokking_vs_comprehension"] = {
            "reason": f"{out['n_grokking']} grokking and {out['n_comprehension']} comprehension runs among the "
                      f"{out['n_generalised']} that generalised: no comparison"}
    both = gen & reached & np.isfinite(t_fit) & (t_fit > 0)
    cont: dict[str, Any] = {"n": int(both.sum())}
    if both.sum() >= 5:
        import statsmodels.api as sm

        lt, lg, lr = np.log(t_tgt[both]), np.log(t_gen[both]), np.log(t_gen[both] / t_fit[both])
        if np.ptp(lr) > 0 and np.ptp(lg) > 0 and np.linalg.matrix_rank(np.c_[np.ones(len(lg)), lg, lr]) == 3:
            fit = sm.OLS(lt, sm.add_constant(np.c_[lg, lr])).fit()
            cont.update(coef_log_ratio=float(fit.params[2]), p=float(fit.pvalues[2]),
                        ci=[float(v) for v in fit.conf_int()[2]], coef_log_t_gen=float(fit.params[1]))
        else:
            cont.update(p=math.nan, reason="the delay ratio or t_gen is constant (or collinear) over these runs")
    else:
        cont.update(p=math.nan, reason=f"{int(both.sum())} run(s) generalised and reached the target; need 5")
    out["ratio_vs_onset"] = cont
    return out


def fold_seed_spread(frame: pd.DataFrame, label: str, t_col: str, X: np.ndarray, features, cells: np.ndarray,
                     seeds=(1, 2, 3, 4)) -> dict[str, list[float]]:
    """Held-out AUROC of each scorer with the cell-to-fold assignment drawn with other seeds (the folds
    are a random partition of cells: how much does the number depend on it?)."""
    from gsweep.analysis.analyze_common import BASELINE
    from gsweep.analysis.early_warning import cv_feature, cv_logistic

    t = frame[t_col].to_numpy(dtype=float)
    eligible = ~(np.isfinite(t) & (t <= frame["window_steps"].to_numpy(dtype=float)))
    y = np.isfinite(t)
    out: dict[str, list[float]] = {BASELINE: []}
    if len(np.unique(cells)) < 2:
        return {}
    for s in seeds:
        folds = stats.grouped_folds(cells, 5, s)
        m = eligible
        out[BASELINE].append(stats.auroc(y[m], cv_logistic(X[m], y[m], folds[m])["held"]))
        for f in features:
            x = frame[f].to_numpy(dtype=float)
            mm = eligible & np.isfinite(x)
            if mm.sum() < 2:
                continue
            out.setdefault(f, []).append(stats.auroc(y[mm], cv_feature(x[mm], y[mm], folds[mm])["held"]))
    return out


def collect_pvalues(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Every p-value the analysis reports, named, with Holm's correction over all of them (NaN ones are
    not comparisons and are left out of the count)."""
    rows = []
    for r in out.get("targets", []):
        for test in ("pooled_fisher", "cmh", "permutation"):
            rows.append({"name": f"{out['source']} -> {r['target']} ({r['status']}): {test}", "p": r[test]["p"]})
    d = out.get("delay") or {}
    g = d.get("grokking_vs_comprehension") or {}
    for test in ("pooled_fisher", "cmh", "permutation"):
        if test in g:
            rows.append({"name": f"delay: grokking vs comprehension -> {out['target']}: {test}", "p": g[test]["p"]})
    if "ratio_vs_onset" in d:
        rows.append({"name": f"delay: log(t_gen/t_fit) -> log t_{out['target']} given t_gen (OLS)",
                     "p": d["ratio_vs_onset"].get("p", math.nan)})
    for lab, res in (out.get("predictors") or {}).items():
        for name, s in res.get("scores", {}).items():
            vb = s.get("vs_baseline")
            if vb:
                rows.append({"name": f"{lab}: {name} vs hyperparameters (paired cell bootstrap)", "p": vb["p"]})
    rows = [r for r in rows if r["p"] is not None and math.isfinite(r["p"])]
    adj = stats.holm([r["p"] for r in rows])
    for r, a in zip(rows, adj, strict=True):
        r["p_holm"] = a
    return rows
