"""Per-cell summaries of a results dir: P(grokking), Kaplan–Meier medians, phase counts (no JAX).

``gsweep summarize RESULTS_DIR [--by KEY ...] [--format table|csv|json] [--threshold X] [--gap G]
[--gap-mode M]`` groups the runs of ``runs.parquet`` into *cells* (by default every swept key but
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
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gsweep import store
from gsweep.analysis.survival import censored_durations, km_median, wilson_interval
from gsweep.errors import UserError
from gsweep.metrics.labels import PHASES, compute_labels
from gsweep.schema import ANALYSIS_SCHEMA

ANALYSIS_DEFAULTS = {k: ANALYSIS_SCHEMA[k].default for k in ("threshold", "gap", "gap_mode")}
# runs.parquet columns that are not settings (labels and bookkeeping)
NON_SETTING = ("run_id", "group_id", "status", "steps_done", "diverged_step", "delay", "phase")


# ----------------------------------------------------------------------------------------------
# loading


@dataclasses.dataclass
class Results:
    """A results dir, read: its spec (dict), meta (dict), runs table and the labelling in force."""

    path: Path
    spec: dict
    meta: dict
    runs: pd.DataFrame
    threshold: float
    gap: float
    gap_mode: str
    _curves: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.path.name)

    @property
    def task_name(self) -> str:
        task = self.spec.get("task") or {}
        name = task.get("name")
        if name is None and "task.name" in self.runs:
            vals = sorted(self.runs["task.name"].dropna().astype(str).unique())
            name = vals if len(vals) > 1 else (vals[0] if vals else None)
        if isinstance(name, (list, tuple)):
            return ", ".join(map(str, name))
        return str(name) if name is not None else "?"

    @property
    def budget(self) -> int | None:
        """The step budget (the largest ``train.steps``; else the largest ``steps_done``)."""
        for col in ("train.steps", "steps_done"):
            if col in self.runs and self.runs[col].notna().any():
                return int(pd.to_numeric(self.runs[col], errors="coerce").max())
        steps = (self.spec.get("train") or {}).get("steps")
        if isinstance(steps, list):
            return int(max(steps))
        return int(steps) if steps is not None else None

    @property
    def swept_keys(self) -> list[str]:
        return swept_keys(self.spec, self.meta, self.runs)

    def curves(self) -> pd.DataFrame:
        if self._curves is None:
            p = self.path / "curves.parquet"
            if not p.exists():
                raise UserError(f"{p}: no such file (learning curves are needed here)")
            self._curves = store.read_parquet(p, store.CURVES_REQUIRED)  # damaged -> one-line error
        return self._curves

    def setting_columns(self) -> list[str]:
        return [c for c in self.runs.columns if "." in c or c == "seed"]


def swept_keys(spec: dict, meta: dict, runs: pd.DataFrame) -> list[str]:
    """Swept dotted keys: meta.json's ``swept_keys``, else the spec's list-valued leaves, else the
    setting columns of ``runs`` that take more than one value. Includes ``seed`` when several."""
    keys = meta.get("swept_keys")
    if keys is None and spec:
        keys = [f"{b}.{k}" for b in ("task", "model", "train") for k, v in (spec.get(b) or {}).items()
                if isinstance(v, list) and len(v) > 1]
        seeds = spec.get("seeds")
        if (isinstance(seeds, list) and len(seeds) > 1) or (isinstance(seeds, int) and seeds > 1):
            keys.append("seed")
    if keys is None:
        cols = [c for c in runs.columns if "." in c or c == "seed"]
        keys = [c for c in cols if runs[c].nunique(dropna=False) > 1]
    return [k for k in keys if k in runs.columns]


def load_results(results_dir: str | Path, threshold: float | None = None, gap: float | None = None,
                 gap_mode: str | None = None) -> Results:
    """Read ``results_dir``; recompute the labels from ``curves.parquet`` when any of ``threshold``,
    ``gap`` or ``gap_mode`` is given and differs from the spec's ``analysis`` block."""
    path = Path(results_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such results dir")
    runs_path = path / "runs.parquet"
    if not runs_path.exists():
        raise UserError(f"{runs_path}: no such file (has `gsweep run` written results here?)")
    spec: dict = {}
    if (path / "spec.yaml").exists():
        try:
            spec = yaml.safe_load((path / "spec.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path / 'spec.yaml'}: malformed YAML: {e}") from None
        if not isinstance(spec, dict):
            raise UserError(f"{path / 'spec.yaml'}: damaged (not a mapping)")
    meta: dict = {}
    if (path / "meta.json").exists():
        try:
            meta = json.loads((path / "meta.json").read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{path / 'meta.json'}: malformed JSON: {e}") from None
        if not isinstance(meta, dict):
            raise UserError(f"{path / 'meta.json'}: damaged (not a JSON object)")
    runs = store.read_parquet(runs_path, store.RUNS_REQUIRED)  # damaged -> one-line error
    if len(runs) == 0:
        raise UserError(f"{runs_path}: holds no runs; nothing to show (rerun `gsweep run` to rebuild it)")
    analysis = {**ANALYSIS_DEFAULTS, **{k: v for k, v in (spec.get("analysis") or {}).items() if v is not None}}
    res = Results(path, spec, meta, runs, float(analysis["threshold"]), float(analysis["gap"]),
                  str(analysis["gap_mode"]))
    want = {"threshold": threshold, "gap": gap, "gap_mode": gap_mode}
    want = {k: v for k, v in want.items() if v is not None}
    if threshold is not None and not 0 < threshold <= 1:
        raise UserError(f"--threshold: an accuracy in (0, 1], got {threshold}")
    if gap is not None and gap <= 0:
        raise UserError(f"--gap: must be > 0, got {gap}")
    if gap_mode is not None and gap_mode not in ("relative", "absolute"):
        raise UserError(f"--gap-mode: 'relative' or 'absolute', got {gap_mode!r}")
    have_labels = "phase" in runs.columns and "t_gen" in runs.columns
    if any(getattr(res, k) != v for k, v in want.items()) or not have_labels:
        for k, v in want.items():
            setattr(res, k, float(v) if k != "gap_mode" else v)
        relabel(res)
    return res


def _is_label_column(c: str) -> bool:
    return "." not in c and (c.startswith("t_") or c.startswith("final_") or c in ("delay", "phase"))


def relabel(res: Results) -> None:
    """Recompute the label columns of ``res.runs`` from the curves with ``res``'s thresholds."""
    runs = res.runs
    for col in ("run_id", "steps_done"):
        if col not in runs:
            raise UserError(f"{res.path / 'runs.parquet'}: no {col!r} column; cannot relabel")
    if "status" not in runs:
        runs = runs.assign(status="done")
    labels = compute_labels(res.curves(), runs, res.threshold, res.gap, res.gap_mode)
    base = runs.reset_index(drop=True).drop(columns=[c for c in runs.columns if _is_label_column(c)])
    res.runs = pd.concat([base, labels], axis=1)


# ----------------------------------------------------------------------------------------------
# cells


def default_cell_keys(res: Results) -> list[str]:
    return [k for k in res.swept_keys if k != "seed"]


def check_columns(res: Results, keys: list[str], what: str) -> None:
    """UserError naming a missing column and listing the valid ones."""
    for k in keys:
        if k not in res.runs.columns:
            valid = ", ".join(res.runs.columns)
            raise UserError(f"{what} {k!r}: no such column in {res.path / 'runs.parquet'}; valid: {valid}")


def is_diverged(runs: pd.DataFrame) -> np.ndarray:
    if "status" not in runs:
        return np.zeros(len(runs), dtype=bool)
    return (runs["status"].astype("string").fillna("") == "diverged").to_numpy(dtype=bool)


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
    if fmt == "json":
        out = {"results_dir": str(res.path), "name": res.name, "task": res.task_name, "budget": res.budget,
               "threshold": res.threshold, "gap": res.gap, "gap_mode": res.gap_mode, "by": keys,
               "n_runs": int(len(res.runs)), "cells": cells}
        json.dump(out, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
    elif fmt == "csv":
        summary_frame(cells, text=True).to_csv(sys.stdout, index=False)
    elif fmt == "table":
        print(_table_text(res, keys, cells))
    else:
        raise UserError(f"--format: table, csv or json, got {fmt!r}")
    return 0
