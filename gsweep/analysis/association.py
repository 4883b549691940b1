"""Association of two onsets over runs: joint table, implication scores and the Spearman correlation
of the onsets, censored runs counted as negatives for 'eventually' (``gsweep analyze``, part 1)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gsweep.analysis import stats
from gsweep.analysis.analyze_common import MIN_CI_CLASS, N_BOOT, _median
from gsweep.analysis.survival import wilson_interval

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
    # P(target | source) is the precision; P(target | not source) is what it is compared with
    out["p_target_given_not_source"] = fn / (fn + tn) if fn + tn else math.nan
    out["p_target_given_not_source_ci"] = list(wilson_interval(fn, fn + tn))
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
