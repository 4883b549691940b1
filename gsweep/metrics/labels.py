"""Per-run labels from the learning curves (pandas only; no JAX), as DESIGN.md defines them.

``t_<split>``: the first evaluated step whose accuracy on that split is >= threshold; ``t_fit`` is
the train split's, ``t_gen`` the test split's. A step never reached is missing (censored at
``steps_done``), never zero. ``phase`` follows Liu et al. 2022: *comprehension* when both are
reached and t_gen < gap * t_fit (relative; absolute: t_gen - t_fit < gap), *grokking* when both are
reached otherwise, *memorization* when only train is reached, *confusion* when neither. A run that
generalises without fitting (test reached, train not) counts as comprehension. Diverged runs get no
phase.

Stability of what was reached, per split (every split, train included, under its split name):
``t_<split>_stable`` is the first evaluated step from which accuracy stays >= threshold at every
evaluation to the end of the run (missing when the last evaluation is below it); ``relapses_<split>``
counts the times accuracy fell back below the threshold after first reaching it (0 when never reached).
So the test split gives ``t_test_stable`` / ``relapses_test`` and the train split ``t_train_stable`` /
``relapses_train`` (the first-reach columns keep their short names ``t_fit`` / ``t_gen``).

Resolution of the labels: evaluations are discrete, so a first-reach step ``t`` says only that the
threshold was crossed in (previous evaluation, t]. ``fit_eval_interval`` / ``gen_eval_interval`` are the
steps from the previous evaluation to ``t_fit`` / ``t_gen`` (t itself when there was none before);
``delay_ratio`` is ``t_gen / t_fit``; ``phase_resolved`` is True when the phase (grokking or
comprehension) holds for every pair of crossing steps inside those intervals, False when the grid cannot
tell (e.g. ``t_fit`` at the first evaluation, 100, and ``t_gen`` = 800 with gap 10: the true ``t_fit``
may be 70 or 90), and missing when train or test was not reached. ``phase`` itself is unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PHASES = ("comprehension", "grokking", "memorization", "confusion")
FIT_SPLIT, GEN_SPLIT = "train", "test"


def label_column(split: str) -> str:
    return {FIT_SPLIT: "t_fit", GEN_SPLIT: "t_gen"}.get(split, f"t_{split}")


def first_reach(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """run_id x split -> first step with acc >= threshold (missing when never)."""
    hit = curves[curves["acc"] >= threshold]
    first = hit.groupby(["run_id", "split"], sort=True)["step"].min()
    return first.unstack("split")


def stable_from(curves: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(t_stable, relapses): run_id x split frames. ``t_stable`` is the first evaluated step after the
    last one below ``threshold`` (missing when the last evaluation is below); ``relapses`` counts the
    falls from >= threshold to below it (a NaN accuracy counts as below)."""
    c = curves.sort_values(["run_id", "split", "step"], kind="stable")
    above = (c["acc"] >= threshold).to_numpy()
    key = ["run_id", "split"]
    prev = c.assign(_above=above).groupby(key, sort=False)["_above"].shift(1, fill_value=False).to_numpy(dtype=bool)
    falls = c.assign(_fall=prev & ~above).groupby(key, sort=True)["_fall"].sum()
    last_below = c[~above].groupby(key, sort=True)["step"].max()
    lb = c[key].merge(last_below.rename("_lb").reset_index(), on=key, how="left")["_lb"].to_numpy(dtype=float)
    after = above & ~(c["step"].to_numpy(dtype=float) <= lb)  # NaN lb (never below): every row counts
    t_stable = c[after].groupby(key, sort=True)["step"].min()
    return t_stable.unstack("split"), falls.unstack("split")


def first_reach_interval(curves: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """run_id x split -> steps from the evaluation before the first reach to it (the step itself when it
    is the first evaluation after step 0 or the first of all)."""
    c = curves.sort_values(["run_id", "split", "step"], kind="stable")
    prev = c.groupby(["run_id", "split"], sort=False)["step"].shift(1).fillna(0).to_numpy(dtype=float)
    c = c.assign(_gap=c["step"].to_numpy(dtype=float) - prev)
    hit = c[c["acc"] >= threshold]
    first = hit.groupby(["run_id", "split"], sort=True).head(1).set_index(["run_id", "split"])["_gap"]
    return first.unstack("split")


def phase_resolved(t_fit, t_gen, d_fit, d_gen, gap: float, gap_mode: str):
    """Whether the grokking/comprehension call holds for every crossing step inside (t - d, t] of both
    onsets (None when train or test was not reached)."""
    if pd.isna(t_fit) or pd.isna(t_gen):
        return None
    f_lo, g_lo = float(t_fit) - float(d_fit), float(t_gen) - float(d_gen)
    if gap_mode == "relative":
        surely_late = g_lo >= gap * float(t_fit)
        surely_prompt = float(t_gen) < gap * f_lo
    else:
        surely_late = g_lo - float(t_fit) >= gap
        surely_prompt = float(t_gen) - f_lo < gap
    return bool(surely_late or surely_prompt)


def phase_of(t_fit: float, t_gen: float, gap: float, gap_mode: str) -> str:
    fit, gen = not pd.isna(t_fit), not pd.isna(t_gen)
    if fit and gen:
        late = (t_gen >= gap * t_fit) if gap_mode == "relative" else (t_gen - t_fit >= gap)
        return "grokking" if late else "comprehension"
    if gen:
        return "comprehension"
    return "memorization" if fit else "confusion"


def compute_labels(curves: pd.DataFrame, runs: pd.DataFrame, threshold: float = 0.99, gap: float = 10.0,
                   gap_mode: str = "relative") -> pd.DataFrame:
    """Label columns for each run of ``runs`` (needs run_id, status, steps_done) from ``curves``.

    Returns a frame indexed like ``runs`` with t_fit, t_gen, delay, t_<split>, t_<split>_stable,
    relapses_<split>, final_<split>_acc, final_<split>_loss and phase. Only curve rows at or before a run's steps_done count.
    """
    if gap_mode not in ("relative", "absolute"):
        raise ValueError(f"gap_mode must be 'relative' or 'absolute', got {gap_mode!r}")
    runs = runs.reset_index(drop=True)
    done = runs.set_index("run_id")["steps_done"]
    c = curves[curves["run_id"].isin(done.index)]
    c = c[c["step"] <= c["run_id"].map(done)]
    splits = list(dict.fromkeys(sorted(c["split"].unique(), key=lambda s: (s != FIT_SPLIT, s != GEN_SPLIT, s))))
    for s in (FIT_SPLIT, GEN_SPLIT):
        if s not in splits:
            splits.append(s)
    first = first_reach(c, threshold).reindex(index=runs["run_id"], columns=splits)
    out = pd.DataFrame(index=runs.index)
    for s in splits:
        out[label_column(s)] = pd.array(first[s].to_numpy(), dtype="Int64")
    out["delay"] = out["t_gen"] - out["t_fit"]
    stable, falls = stable_from(c, threshold)
    stable = stable.reindex(index=runs["run_id"], columns=splits)
    falls = falls.reindex(index=runs["run_id"], columns=splits)
    for s in splits:
        out[f"t_{s}_stable"] = pd.array(stable[s].to_numpy(), dtype="Int64")
        out[f"relapses_{s}"] = falls[s].fillna(0).to_numpy(dtype=np.int64)
    last = c.sort_values("step").groupby(["run_id", "split"]).tail(1).set_index(["run_id", "split"])
    for s in splits:
        for m in ("acc", "loss"):
            key = pd.MultiIndex.from_arrays([runs["run_id"], [s] * len(runs)])
            vals = last[m].reindex(key).to_numpy(dtype=float) if len(last) else np.full(len(runs), np.nan)
            out[f"final_{s}_{m}"] = vals
    phases = [None if st == "diverged" else phase_of(f, g, gap, gap_mode)
              for st, f, g in zip(runs["status"], out["t_fit"], out["t_gen"], strict=True)]
    out["phase"] = pd.array(phases, dtype="string")
    gaps = first_reach_interval(c, threshold).reindex(index=runs["run_id"], columns=[FIT_SPLIT, GEN_SPLIT])
    out["fit_eval_interval"] = pd.array(gaps[FIT_SPLIT].to_numpy(), dtype="Int64")
    out["gen_eval_interval"] = pd.array(gaps[GEN_SPLIT].to_numpy(), dtype="Int64")
    tf = out["t_fit"].to_numpy(dtype=float, na_value=np.nan)
    tg = out["t_gen"].to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["delay_ratio"] = np.where(tf > 0, tg / tf, np.nan)
    res = [None if st == "diverged" else phase_resolved(f, g, df, dg, gap, gap_mode)
           for st, f, g, df, dg in zip(runs["status"], out["t_fit"], out["t_gen"], out["fit_eval_interval"],
                                       out["gen_eval_interval"], strict=True)]
    out["phase_resolved"] = pd.array(res, dtype="boolean")
    return out
