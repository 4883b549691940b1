"""Early-warning features of a run, computed only from the evaluations inside the first ``window`` steps.

Each feature is one number per run, read from ``curves.parquet`` (see the results contract):

- ``norm_fall``: the fall of the global parameter norm from its peak, relative to the peak,
  (max w - w_last) / max w, over the window. Weight decay shrinking the norm after an early rise is the
  "cleanup" that precedes generalisation in Nanda et al. 2023 and Liu et al. 2023 (Omnigrok).
- ``loss_osc``: the energy of train-loss oscillations, the step-weighted mean of ``train_loss_osc``
  (mean squared second difference of log train loss per interval) over the window: the slingshot
  instabilities of Thilak et al. 2022.
- ``test_loss_slope``: the least-squares slope of log test loss against log step over the second half
  of the window on the log-step axis (steps >= sqrt(window)). Log-log because the evaluations are
  log-spaced early and losses fall as power laws; the late half so that the first few steps, where every
  run's loss leaves chance, do not dominate. Negative = falling.
- ``acc_gap``: train accuracy minus test accuracy at the last evaluation inside the window.
- ``fourier_sparsity``: the embedding's Fourier sparsity at the last evaluation inside the window
  (Nanda et al. 2023's progress measure), for additive modular tasks only (``task.op`` add or sub:
  modular arithmetic and chains of it): the Fourier basis over residues is the right one for those;
  multiplicative operations would need the discrete-log reindexing of the residues and are left out.

A feature needs at least two evaluations inside the window (three for the slope); otherwise it is NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PREDICTORS = ("norm_fall", "loss_osc", "test_loss_slope", "acc_gap", "fourier_sparsity")
DESCRIPTIONS = {
    "norm_fall": "parameter-norm fall from its peak (relative)",
    "loss_osc": "train-loss oscillation energy (step-weighted mean)",
    "test_loss_slope": "slope of log test loss on log step (late half of the window)",
    "acc_gap": "train minus test accuracy at the window's end",
    "fourier_sparsity": "embedding Fourier sparsity at the window's end",
}
ADDITIVE_OPS = ("add", "sub")
NEEDS = {"norm_fall": "weight_norm", "loss_osc": "train_loss_osc", "fourier_sparsity": "fourier_sparsity"}


def fourier_applicable(runs: pd.DataFrame, recorded: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
    """Which runs get a Fourier-sparsity feature, and a message about the runs left out (None if none).

    A run qualifies when its operation is additive (``task.op`` add, sub, or a mix of only those: modular
    arithmetic and chains of it) and the engine recorded the sparsity for it (``recorded``: a finite
    value inside the window; the engine records it for tasks whose first p tokens are the residues).
    """
    n = len(runs)
    def col(key, missing):
        if key not in runs:
            return np.full(n, missing, dtype=object)
        return np.array([missing if pd.isna(v) else str(v) for v in runs[key]], dtype=object)

    name, op = col("task.name", "?"), col("task.op", "")
    has_op = op != ""
    additive = np.array([all(p.strip() in ADDITIVE_OPS for p in o.split("|")) for o in op], dtype=bool) & has_op
    rec = np.ones(n, dtype=bool) if recorded is None else np.asarray(recorded, dtype=bool)
    ok = additive & rec
    if ok.all():
        return ok, None
    parts = []
    no_op = ~has_op
    if no_op.any():
        parts.append(f"{int(no_op.sum())} run(s) of task {', '.join(map(repr, sorted(set(name[no_op]))))} "
                     "(no modular operation: no residue Fourier basis)")
    mult = has_op & ~additive
    if mult.any():
        parts.append(f"{int(mult.sum())} run(s) with task.op {', '.join(map(repr, sorted(set(op[mult]))))} "
                     "(multiplicative or nonlinear: the Fourier basis needs the discrete-log reindexing of the "
                     "residues, not implemented)")
    norec = additive & ~rec
    if norec.any():
        parts.append(f"{int(norec.sum())} additive run(s) without a recorded fourier_sparsity inside the window "
                     f"(task {', '.join(map(repr, sorted(set(name[norec]))))})")
    return ok, "fourier_sparsity left out for " + "; ".join(parts)


def early_warning(curves: pd.DataFrame, window_steps: pd.Series, fit_split: str = "train",
                  gen_split: str = "test") -> pd.DataFrame:
    """One row per run_id of ``window_steps`` (run_id -> last step of the window) with the PREDICTORS.

    Only curve rows with 0 < step <= the run's window end are read. Missing metric columns give NaN.
    """
    w = window_steps.astype(float)
    out = pd.DataFrame(index=pd.Index(w.index, name="run_id"), columns=list(PREDICTORS), dtype=float)
    c = curves[curves["run_id"].isin(w.index)]
    c = c[(c["step"] > 0) & (c["step"].to_numpy(dtype=float) <= c["run_id"].map(w).to_numpy(dtype=float))]
    if c.empty:
        return out

    # per-run metrics are repeated on each split row of a step: read them once (from the fit split)
    per = c[c["split"] == fit_split] if (c["split"] == fit_split).any() else c.drop_duplicates(["run_id", "step"])
    per = per.sort_values(["run_id", "step"])
    g = per.groupby("run_id", sort=False)
    n_evals = g["step"].count()
    enough = n_evals[n_evals >= 2].index

    if "weight_norm" in per:
        peak = g["weight_norm"].max()
        last = g["weight_norm"].last()
        fall = (peak - last) / peak.where(peak > 0)
        out.loc[enough, "norm_fall"] = fall.reindex(enough).to_numpy(dtype=float)

    if "train_loss_osc" in per:
        dt = per["step"] - g["step"].shift(1).fillna(0)
        osc = per["train_loss_osc"].astype(float)
        ok = np.isfinite(osc)
        wsum = (dt * osc).where(ok).groupby(per["run_id"]).sum()
        wtot = dt.where(ok).groupby(per["run_id"]).sum()
        mean = wsum / wtot.where(wtot > 0)
        out.loc[enough, "loss_osc"] = mean.reindex(enough).to_numpy(dtype=float)

    if "fourier_sparsity" in per:
        out.loc[enough, "fourier_sparsity"] = g["fourier_sparsity"].last().reindex(enough).to_numpy(dtype=float)

    # train - test accuracy at the last step inside the window where both were evaluated
    acc = c[c["split"].isin([fit_split, gen_split])].pivot_table(index=["run_id", "step"], columns="split",
                                                                 values="acc", aggfunc="last")
    if fit_split in acc and gen_split in acc:
        acc = acc.dropna().reset_index().sort_values(["run_id", "step"])
        lastacc = acc.groupby("run_id").last()
        gap = lastacc[fit_split] - lastacc[gen_split]
        out.loc[enough, "acc_gap"] = gap.reindex(enough).to_numpy(dtype=float)

    # slope of log test loss on log step over the late half (log axis) of the window
    t = c[(c["split"] == gen_split) & (c["loss"] > 0)][["run_id", "step", "loss"]].copy()
    if not t.empty:
        t["x"] = np.log(t["step"].to_numpy(dtype=float))
        t["y"] = np.log(t["loss"].to_numpy(dtype=float))
        half = np.sqrt(t["run_id"].map(w).to_numpy(dtype=float))
        late = t[t["step"].to_numpy(dtype=float) >= half]
        n_late = late.groupby("run_id")["x"].count()
        use_all = n_late.index[n_late < 3].union(pd.Index(t["run_id"].unique()).difference(n_late.index))
        pts = pd.concat([late[~late["run_id"].isin(use_all)], t[t["run_id"].isin(use_all)]])
        out["test_loss_slope"] = _ols_slope(pts).reindex(out.index).to_numpy(dtype=float)
    return out


def _ols_slope(pts: pd.DataFrame) -> pd.Series:
    """Least-squares slope of y on x per run_id; NaN under 3 points or with constant x."""
    p = pts.assign(xx=pts["x"] * pts["x"], xy=pts["x"] * pts["y"])
    s = p.groupby("run_id")[["x", "y", "xx", "xy"]].sum()
    n = p.groupby("run_id")["x"].count()
    den = n * s["xx"] - s["x"] ** 2
    slope = (n * s["xy"] - s["x"] * s["y"]) / den.where(den > 1e-12)
    return slope.where(n >= 3)
