"""Per-cell summaries of a results dir: P(grokking), Kaplan–Meier medians, phase counts (no JAX).

``gsweep summarize RESULTS_DIR [--by KEY ...] [--format table|csv|json] [--threshold X] [--gap G]
[--gap-mode M] [--sensitivity]`` groups the runs of ``runs.parquet`` into *cells* (by default every swept key but
``seed``, so a cell is one point of the grid and its runs are the seeds) and reports per cell:

- ``n_runs``; ``n_diverged`` (counted apart: diverged runs have no phase and are left out of every
  statistic below); ``n`` = the runs that did not diverge;
- ``n_grokking`` and ``p_grokking`` = n_grokking / n with its Wilson 95% interval;
- ``t_fit_median``, ``t_gen_median`` (and ``t_<split>_median`` for other splits): Kaplan–Meier
  medians where a run that never reached the threshold counts as censored at its ``steps_done``
  (neither dropped nor zero). When censoring leaves a median undefined it prints as ``>steps``
  (``>2000``) in the table and CSV, and is ``null`` with ``<col>_censored: true`` in JSON;
- the count of each phase.

Labels come from ``runs.parquet``; with ``--threshold``/``--gap``/``--gap-mode`` they are recomputed
from ``curves.parquet`` (:func:`gsweep.metrics.labels.compute_labels`), no retraining needed.
``--sensitivity`` adds the phase counts over threshold {0.8, 0.9, 0.95, 0.99} x gap {2, 5, 10, 20}
(:mod:`gsweep.analysis.sensitivity`; with ``--format csv`` it is left out).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import pandas as pd

from gsweep.analysis.survival import censored_durations, km_median, wilson_interval
from gsweep.errors import UserError
from gsweep.metrics.labels import PHASES
from gsweep.results import (
    Results,
    check_columns,
    default_cell_keys,
    is_diverged,
    load_results,
)


def step_columns(runs: pd.DataFrame) -> list[str]:
    """The first-reach step columns: t_fit, t_gen, then t_<split> for the other splits."""
    cols = [c for c in ("t_fit", "t_gen") if c in runs]
    return cols + sorted(c for c in runs.columns if c.startswith("t_") and "." not in c and c not in cols)


def _plain(v: Any) -> Any:
    """numpy/pandas scalars -> plain Python of the same kind (NaN/<NA> -> None), for JSON."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    return v


def _steps(v: float | None) -> int | float | None:
    """A step count: an int when integral."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v) if float(v).is_integer() else float(v)


def km_cell_median(group: pd.DataFrame, col: str) -> tuple[float | None, int]:
    """KM median of ``col`` over ``group``'s runs, censored at steps_done; and the censoring bound
    (the largest steps_done) to print as ``>N`` when the median is undefined."""
    if len(group) == 0:
        return None, 0
    dur, obs = censored_durations(group[col], group["steps_done"])
    return km_median(dur, obs), int(pd.to_numeric(group["steps_done"]).max())


def summarize(res: Results, by: list[str] | None = None) -> list[dict]:
    """One dict per cell (see the module docstring for the fields), in sorted key order."""
    keys = list(by) if by else default_cell_keys(res)
    check_columns(res, keys, "--by")
    runs = res.runs.reset_index(drop=True)
    div = is_diverged(runs)
    tcols = step_columns(runs)
    cells = []
    groups = runs.groupby(keys, sort=True, dropna=False) if keys else [((), runs)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        gdiv = div[g.index.to_numpy()]
        ok = g[~gdiv]
        phases = ok["phase"].astype("string") if "phase" in ok else pd.Series([], dtype="string")
        counts = {p: int((phases == p).sum()) for p in PHASES}
        n = len(ok)
        k = counts["grokking"]
        lo, hi = wilson_interval(k, n)
        cell: dict[str, Any] = {
            "cell": {kk: _plain(v) for kk, v in zip(keys, key, strict=True)},
            "n_runs": int(len(g)),
            "n_diverged": int(gdiv.sum()),
            "n": int(n),
            "n_grokking": int(k),
            "p_grokking": (k / n) if n else None,
            "p_grokking_ci95": [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi],
        }
        for col in tcols:
            med, bound = km_cell_median(ok, col)
            cell[f"{col}_median"] = _steps(med)
            cell[f"{col}_median_censored"] = bool(med is None and n > 0)
            cell[f"{col}_reached"] = int(ok[col].notna().sum())
            if med is None:
                cell[f"{col}_median_bound"] = bound
        cell["phases"] = counts
        cell["steps_done_max"] = int(pd.to_numeric(g["steps_done"]).max()) if len(g) else 0
        cells.append(cell)
    return cells


def fmt_steps(v: Any) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def median_text(cell: dict, col: str) -> str:
    """A KM median as text: the number, ``>steps`` when censoring leaves it undefined, '' when no runs."""
    v = cell.get(f"{col}_median")
    if v is not None:
        return fmt_steps(v)
    if cell.get(f"{col}_median_censored"):
        return f">{fmt_steps(cell[f'{col}_median_bound'])}"
    return ""


def summary_frame(cells: list[dict], text: bool) -> pd.DataFrame:
    """The cells as a flat table (medians as text such as ``>2000`` when ``text``)."""
    rows = []
    for c in cells:
        row = dict(c["cell"])
        row.update(n_runs=c["n_runs"], n_diverged=c["n_diverged"], n_grokking=c["n_grokking"],
                   p_grokking=c["p_grokking"], p_grokking_lo=c["p_grokking_ci95"][0],
                   p_grokking_hi=c["p_grokking_ci95"][1])
        for k in c:
            if k.endswith("_median") and not k.endswith("_median_censored"):
                col = k[: -len("_median")]
                row[k] = median_text(c, col) if text else c[k]
        for p in PHASES:
            row[p] = c["phases"][p]
        rows.append(row)
    return pd.DataFrame(rows)


def _table_text(res: Results, keys: list[str], cells: list[dict]) -> str:
    def p_text(c):
        if c["p_grokking"] is None:
            return "-"
        lo, hi = c["p_grokking_ci95"]
        return f"{c['p_grokking']:.2f} [{lo:.2f}, {hi:.2f}]"

    rows = []
    tcols = [k[: -len("_median")] for k in (cells[0] if cells else {}) if k.endswith("_median")]
    for c in cells:
        row = {k: c["cell"][k] for k in keys}
        row["runs"] = c["n_runs"]
        row["diverged"] = c["n_diverged"]
        row["P(grok) [95% CI]"] = p_text(c)
        for col in tcols:
            row[f"{col} med"] = median_text(c, col) or "-"
        for p in PHASES:
            row[p] = c["phases"][p]
        rows.append(row)
    head = (f"{res.name}: task {res.task_name}, budget {res.budget} steps; threshold {res.threshold:g}, "
            f"gap {res.gap:g} ({res.gap_mode}); cells by {', '.join(keys) or '(all runs)'}\n"
            f"medians: Kaplan-Meier, runs that never reached the threshold censored at steps_done "
            f"('>N': undefined within N steps); diverged runs counted apart")
    if not rows:
        return head + "\n(no runs)"
    return head + "\n" + pd.DataFrame(rows).to_string(index=False)


def summarize_command(args) -> int:
    res = load_results(args.results_dir, getattr(args, "threshold", None), getattr(args, "gap", None),
                       getattr(args, "gap_mode", None))
    keys = list(getattr(args, "by", None) or default_cell_keys(res))
    cells = summarize(res, keys)
    fmt = getattr(args, "format", None) or "table"
    sens = None
    if getattr(args, "sensitivity", False):
        from gsweep.analysis.sensitivity import format_sensitivity, phase_sensitivity, sensitivity_grid
        thresholds, gaps = sensitivity_grid(res.threshold, res.gap, res.gap_mode)
        sens = phase_sensitivity(res.curves, res.runs, thresholds, gaps, gap_mode=res.gap_mode)
    if fmt == "json":
        out = {"results_dir": str(res.path), "name": res.name, "task": res.task_name, "budget": res.budget,
               "threshold": res.threshold, "gap": res.gap, "gap_mode": res.gap_mode, "by": keys,
               "n_runs": int(len(res.runs)), "cells": cells}
        if sens is not None:
            out["sensitivity"] = sens.to_dict(orient="records")
        json.dump(out, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
    elif fmt == "csv":
        summary_frame(cells, text=True).to_csv(sys.stdout, index=False)
    elif fmt == "table":
        print(_table_text(res, keys, cells))
        if sens is not None:
            print("\n" + format_sensitivity(sens, res.gap_mode))
    else:
        raise UserError(f"--format: table, csv or json, got {fmt!r}")
    return 0
