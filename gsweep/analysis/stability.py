"""Does what emerged stay? The stability part of `gsweep analyze` (pandas only; no JAX).

Reads the stability labels of ``runs.parquet`` (:mod:`gsweep.metrics.labels`): per split, of the
runs that reached the threshold at some evaluation, how many stayed at or above it to the end of
the run (``t_<split>_stable`` present), how many relapsed at least once (``relapses_<split>`` > 0),
how many ended below it (reached, then lost), and the median steps from first reaching to staying
(``t_<split>_stable - t_<split>``, over the runs that stayed). A run whose stable step is its last
evaluation (``t_<split>_stable`` = ``steps_done``: the engine always evaluates the last step) counts as
stayed on one evaluation alone, with none after it to confirm: those are counted apart
(``stayed_last_eval_only``). Diverged runs are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from gsweep.metrics.labels import label_column


def stability_summary(runs: pd.DataFrame, splits: Sequence[str]) -> dict:
    """``{"splits": {split: {reached, stayed, stayed_last_eval_only, relapsed, lost, relapses_total,
    median_steps_to_stable, max_relapses}}}`` for each split with stability columns in ``runs``
    (``stayed_last_eval_only`` is None when ``runs`` has no ``steps_done``)."""
    if "status" in runs:
        runs = runs[~runs["status"].astype(str).eq("diverged")]
    out: dict = {"n_runs": int(len(runs)), "splits": {}}
    for s in dict.fromkeys(splits):
        first, stable, rel = label_column(s), f"t_{s}_stable", f"relapses_{s}"
        if not all(c in runs for c in (first, stable, rel)):
            continue
        t0 = pd.to_numeric(runs[first]).to_numpy(dtype=float, na_value=np.nan)
        ts = pd.to_numeric(runs[stable]).to_numpy(dtype=float, na_value=np.nan)
        r = pd.to_numeric(runs[rel]).fillna(0).to_numpy(dtype=float)
        reached = np.isfinite(t0)
        stayed = reached & np.isfinite(ts)
        lag = ts[stayed] - t0[stayed]
        if "steps_done" in runs:
            done = pd.to_numeric(runs["steps_done"]).to_numpy(dtype=float, na_value=np.nan)
            last_only: int | None = int((stayed & (ts >= done)).sum())
        else:
            last_only = None
        out["splits"][s] = {
            "reached": int(reached.sum()), "stayed": int(stayed.sum()), "stayed_last_eval_only": last_only,
            "relapsed": int((reached & (r > 0)).sum()), "lost": int((reached & ~stayed).sum()),
            "relapses_total": int(r[reached].sum()), "max_relapses": int(r[reached].max()) if reached.any() else 0,
            "median_steps_to_stable": float(np.median(lag)) if len(lag) else None,
        }
    return out


def format_stability(s: dict | None) -> str:
    """The report's lines: does it stay once it appears?"""
    if not s or not s.get("splits"):
        return ""
    lines = ["  stability: once a split reaches the threshold, does it stay to the end of the run?"]
    for split, v in s["splits"].items():
        if not v["reached"]:
            lines.append(f"    {split}: never reached")
            continue
        lag = v["median_steps_to_stable"]
        last = v.get("stayed_last_eval_only")
        last_txt = (f" ({last} of them only at the last evaluation: nothing after it to confirm)"
                    if last else "")
        lines.append(
            f"    {split}: stayed in {v['stayed']} of {v['reached']} runs that reached it{last_txt}; relapsed at least once "
            f"in {v['relapsed']} ({v['relapses_total']} falls, at most {v['max_relapses']} in one run); "
            f"ended below in {v['lost']}"
            + (f"; median {lag:g} steps from first reaching to staying" if lag is not None else ""))
    return "\n".join(lines)
