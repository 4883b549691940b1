"""How the phase counts move with the labels' two choices: ``gsweep summarize --sensitivity``.

The phase of a run depends on the accuracy threshold (when t_fit and t_gen are read) and the gap (how
late t_gen must be to count as grokking). This recounts the phases from ``curves.parquet`` over
threshold x gap, and counts the runs whose grokking/comprehension call the evaluation grid cannot
resolve (:func:`gsweep.metrics.labels.phase_resolved`). Diverged runs are left out. No JAX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gsweep.metrics.labels import (
    FIT_SPLIT,
    GEN_SPLIT,
    PHASES,
    first_reach,
    first_reach_interval,
    phase_resolved,
)

THRESHOLDS = (0.8, 0.9, 0.95, 0.99)
GAPS = (2, 5, 10, 20)  # relative gaps: t_gen >= gap * t_fit
ABSOLUTE_FACTORS = (0.25, 0.5, 1, 2, 4)  # absolute gaps (steps): these multiples of the chosen gap


def sensitivity_grid(threshold: float, gap: float, gap_mode: str = "relative") -> tuple[tuple, tuple]:
    """(thresholds, gaps) to recount over, each including the chosen one. A relative gap is a factor,
    so the grid is :data:`GAPS`; an absolute gap is a number of steps, so the grid is the chosen gap
    times :data:`ABSOLUTE_FACTORS` (factors 2-20 read as steps would fall inside one evaluation)."""
    thresholds = tuple(sorted({*THRESHOLDS, float(threshold)}))
    if gap_mode == "relative":
        return thresholds, tuple(sorted({*GAPS, gap}))
    if gap_mode != "absolute":
        raise ValueError(f"gap_mode must be 'relative' or 'absolute', got {gap_mode!r}")
    gaps = (f * gap for f in ABSOLUTE_FACTORS)
    return thresholds, tuple(sorted({int(g) if float(g).is_integer() else g for g in gaps}))


def phase_sensitivity(curves: pd.DataFrame, runs: pd.DataFrame, thresholds=THRESHOLDS, gaps=GAPS,
                      gap_mode: str = "relative") -> pd.DataFrame:
    """One row per (threshold, gap): the runs (not diverged), the count of each phase, and
    ``unresolved``: grokking or comprehension runs whose call the evaluation grid cannot tell.
    The gaps are read in ``gap_mode``; :func:`sensitivity_grid` gives a grid around a chosen label."""
    runs = runs.reset_index(drop=True)
    if "status" in runs:
        runs = runs[~runs["status"].astype(str).eq("diverged")].reset_index(drop=True)
    done = runs.set_index("run_id")["steps_done"]
    c = curves[curves["run_id"].isin(done.index) & curves["split"].isin([FIT_SPLIT, GEN_SPLIT])]
    c = c[c["step"] <= c["run_id"].map(done)]
    rows = []
    for thr in thresholds:
        cols = [FIT_SPLIT, GEN_SPLIT]
        t = first_reach(c, thr).reindex(index=runs["run_id"], columns=cols)
        d = first_reach_interval(c, thr).reindex(index=runs["run_id"], columns=cols)
        tf, tg = t[FIT_SPLIT].to_numpy(dtype=float), t[GEN_SPLIT].to_numpy(dtype=float)
        fit, gen = np.isfinite(tf), np.isfinite(tg)
        for gap in gaps:
            late = (tg >= gap * tf) if gap_mode == "relative" else (tg - tf >= gap)
            ph = np.where(fit & gen, np.where(late, "grokking", "comprehension"),
                          np.where(gen, "comprehension", np.where(fit, "memorization", "confusion")))
            res = [phase_resolved(a, b, da, db, gap, gap_mode) for a, b, da, db in
                   zip(tf, tg, d[FIT_SPLIT].to_numpy(dtype=float), d[GEN_SPLIT].to_numpy(dtype=float), strict=True)]
            unresolved = sum(1 for r in res if r is False)
            rows.append({"threshold": thr, "gap": gap, "n": len(runs),
                         **{p: int((ph == p).sum()) for p in PHASES}, "unresolved": unresolved})
    return pd.DataFrame(rows)


def format_sensitivity(table: pd.DataFrame, gap_mode: str = "relative") -> str:
    head = ("phase counts over threshold x gap (" + ("t_gen >= gap * t_fit" if gap_mode == "relative"
            else "t_gen - t_fit >= gap") + " is grokking; 'unresolved': grokking or comprehension runs whose "
            "call the evaluation grid cannot tell)")
    return head + "\n" + table.to_string(index=False)
