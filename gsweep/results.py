"""The one loader of a results dir: its tables, spec and meta, and the labelling in force (no JAX).

``load_results(dir)`` (``gsweep.load`` in a notebook) reads ``spec.yaml``, ``meta.json`` and
``runs.parquet``; ``curves.parquet`` is read on first use. With ``threshold``, ``gap`` or ``gap_mode``
differing from the spec's ``analysis`` block, the labels (``t_fit``, ``t_gen``, ``t_<split>``,
``delay``, ``phase``, ``final_*``) are recomputed from the curves
(:func:`gsweep.metrics.labels.compute_labels`); the files on disk are not changed. ``summarize``,
``analyze``, the plots and the report all read results through here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.metrics.labels import compute_labels
from gsweep.schema import ANALYSIS_SCHEMA
from gsweep.store import CURVES, RUNS, SPEC

ANALYSIS_DEFAULTS = {k: ANALYSIS_SCHEMA[k].default for k in ("threshold", "gap", "gap_mode")}
# runs.parquet columns that are not settings (labels and bookkeeping)
NON_SETTING = ("run_id", "group_id", "status", "steps_done", "diverged_step", "delay", "phase")


@dataclasses.dataclass
class Results:
    """A results dir, read: its spec (dict), meta (dict), runs table, the labelling in force, and
    (read on first use) its curves table."""

    path: Path
    spec: dict
    meta: dict
    runs: pd.DataFrame
    threshold: float
    gap: float
    gap_mode: str
    _curves: pd.DataFrame | None = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.meta.get("name") or self.path.name)

    @property
    def status(self) -> str:
        """meta.json's status: ``done``, ``running``, ``interrupted`` (``?`` when absent)."""
        return str(self.meta.get("status") or "?")

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

    @property
    def curves(self) -> pd.DataFrame:
        """``curves.parquet`` (read once, on first use), restricted to the runs of ``runs``."""
        if self._curves is None:
            p = self.path / CURVES
            if not p.exists():
                raise UserError(f"{p}: no such file (learning curves are needed here)")
            self._curves = store.read_parquet(p, store.CURVES_REQUIRED)  # damaged -> one-line error
            if len(self._curves) == 0 and "steps_done" in self.runs and \
                    (pd.to_numeric(self.runs["steps_done"], errors="coerce") > 0).any():
                raise UserError(f"{p}: holds no rows, yet {RUNS} lists runs that trained: damaged (`gsweep run` "
                                "with the same spec rebuilds it)")
        c = self._curves
        if len(c) and "run_id" in self.runs and not c["run_id"].isin(self.runs["run_id"]).all():
            c = c[c["run_id"].isin(self.runs["run_id"])].reset_index(drop=True)
        return c

    @property
    def splits(self) -> list[str]:
        """The splits of the curves: train, test, then the others sorted."""
        found = [c[len("final_"):-len("_acc")] for c in self.runs.columns
                 if c.startswith("final_") and c.endswith("_acc")]
        if not found and (self.path / CURVES).exists():
            found = list(dict.fromkeys(self.curves["split"].astype(str)))
        return sorted(found, key=lambda s: (s != "train", s != "test", s))

    def relabelled(self, threshold: float | None = None, gap: float | None = None,
                   gap_mode: str | None = None) -> Results:
        """These results with the labels recomputed at other thresholds (a copy; ``self`` unchanged).
        Returns ``self`` when nothing differs."""
        want = check_label_args(threshold, gap, gap_mode)
        if all(getattr(self, k) == v for k, v in want.items()):
            return self
        new = dataclasses.replace(self, **{k: (float(v) if k != "gap_mode" else v) for k, v in want.items()})
        relabel(new)
        return new


def run_curves(results_dir: str | Path, run_id: str) -> pd.DataFrame:
    """The curve rows of one run (read with a parquet filter; empty when there are no curves yet)."""
    p = Path(results_dir) / CURVES
    if not p.exists():
        return pd.DataFrame(columns=["run_id", "step", "split", "loss", "acc"])
    return store.read_parquet(p, filters=[("run_id", "==", str(run_id))]).reset_index(drop=True)


def check_label_args(threshold, gap, gap_mode) -> dict:
    """The given labelling arguments, checked (UserError naming the flag)."""
    if threshold is not None and not 0 < threshold <= 1:
        raise UserError(f"--threshold: an accuracy in (0, 1], got {threshold}")
    if threshold is not None and not math.isfinite(threshold):
        raise UserError(f"--threshold: an accuracy in (0, 1], got {threshold}")
    if gap is not None and not (gap > 0 and math.isfinite(gap)):
        raise UserError(f"--gap: must be > 0, got {gap}")
    if gap_mode is not None and gap_mode not in ("relative", "absolute"):
        raise UserError(f"--gap-mode: 'relative' or 'absolute', got {gap_mode!r}")
    return {k: v for k, v in {"threshold": threshold, "gap": gap, "gap_mode": gap_mode}.items() if v is not None}


def swept_keys(spec: dict, meta: dict, runs: pd.DataFrame) -> list[str]:
    """Swept dotted keys: meta.json's ``swept_keys``, else the spec's list-valued leaves, else the
    setting columns of ``runs`` that take more than one value. Includes ``seed`` when several."""
    keys = meta.get("swept_keys")
    if keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
        keys = None  # a damaged record: fall back on the spec and the table
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


def grid_values(spec: dict, key: str) -> list:
    """The product-grid values of ``key`` in a spec dict (a scalar gives one)."""
    block, leaf = key.split(".", 1)
    v = (spec.get(block) or {}).get(leaf)
    return list(v) if isinstance(v, list) else ([] if v is None else [v])


def load_results(results_dir: str | Path, threshold: float | None = None, gap: float | None = None,
                 gap_mode: str | None = None, cls: type[Results] = Results) -> Results:
    """Read ``results_dir``; recompute the labels from ``curves.parquet`` when any of ``threshold``,
    ``gap`` or ``gap_mode`` is given and differs from the spec's ``analysis`` block (or when
    ``runs.parquet`` has no labels). A one-line UserError for a dir that is not (yet) results."""
    path = Path(results_dir)
    if not path.exists():
        raise UserError(f"{path}: no such results dir")
    if not path.is_dir():
        raise UserError(f"{path}: not a results dir (a file; give the folder `gsweep run` wrote)")
    runs_path = path / RUNS
    spec = store.read_spec_yaml(path) if (path / SPEC).exists() else {}
    meta = store.read_meta(path)
    if not runs_path.exists():
        if not any(path.iterdir()):
            raise UserError(f"{path}: empty, no {RUNS} or {SPEC} yet (`gsweep run SWEEP.yaml --out {path}` writes them)")
        if not (path / SPEC).exists():
            raise UserError(f"{path}: not a results dir (no {SPEC} or {RUNS}; `gsweep ls` lists results dirs)")
        st = meta.get("status", "?")
        if st == "running":
            raise UserError(f"{path}: the sweep is still running and has written no {RUNS} yet "
                            "(the tables are written when it finishes or is interrupted)")
        raise UserError(f"{path}: no {RUNS} (status {st!r}; resume with `gsweep run` to write the tables)")
    runs = store.read_parquet(runs_path, store.RUNS_REQUIRED)  # damaged -> one-line error
    for col in ("run_id", "steps_done"):
        if col not in runs:
            raise UserError(f"{runs_path}: damaged (no column {col!r})")
    if len(runs) == 0:
        raise UserError(f"{runs_path}: holds no runs; nothing to show (rerun `gsweep run` to rebuild it)")
    dup = runs["run_id"].duplicated()
    if dup.any():
        raise UserError(f"{runs_path}: damaged (run {runs['run_id'][dup].iloc[0]} appears twice); `gsweep run` with "
                        "the same spec rebuilds it")
    for k in dict.fromkeys([*swept_keys(spec, meta, runs), "task.data_frac", "train.weight_decay", "train.lr"]):
        if k in runs and pd.api.types.is_float_dtype(runs[k]) and runs[k].isna().any():
            raise UserError(f"{runs_path}: damaged (the swept setting {k!r} is missing (NaN) for "
                            f"{int(runs[k].isna().sum())} run(s)); `gsweep run` with the same spec rebuilds it")
    analysis = {**ANALYSIS_DEFAULTS, **{k: v for k, v in (spec.get("analysis") or {}).items() if v is not None}}
    res = cls(path, spec, meta, runs, float(analysis["threshold"]), float(analysis["gap"]),
              str(analysis["gap_mode"]))
    want = check_label_args(threshold, gap, gap_mode)
    have_labels = "phase" in runs.columns and "t_gen" in runs.columns
    if any(getattr(res, k) != v for k, v in want.items()) or not have_labels:
        for k, v in want.items():
            setattr(res, k, float(v) if k != "gap_mode" else v)
        relabel(res)
    return res


def _is_label_column(c: str) -> bool:
    return "." not in c and (c.startswith(("t_", "final_", "relapses_")) or c in (
        "delay", "phase", "fit_eval_interval", "gen_eval_interval", "delay_ratio", "phase_resolved"))


def relabel(res: Results) -> None:
    """Recompute the label columns of ``res.runs`` from the curves with ``res``'s thresholds."""
    runs = res.runs
    if "status" not in runs:
        runs = runs.assign(status="done")
    labels = compute_labels(res.curves, runs, res.threshold, res.gap, res.gap_mode)
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
            raise UserError(f"{what} {k!r}: no such column in {res.path / RUNS}; valid: {valid}")


def is_diverged(runs: pd.DataFrame) -> np.ndarray:
    if "status" not in runs:
        return np.zeros(len(runs), dtype=bool)
    return (runs["status"].astype("string").fillna("") == "diverged").to_numpy(dtype=bool)
