"""``gsweep analyze``: does grokking predict emergent multi-step reasoning? (pandas/numpy/matplotlib only)

Two questions, over the runs of one results dir, overall and per grid cell (a cell is one setting of the
swept keys other than the seeds, so its runs differ only by seed):

1. *Association.* A joint table of runs by (grokked?, reasoning emerged?) where "grokked" means the run
   reached the accuracy threshold on the ``source`` split (default ``test``) within the steps it ran and
   "reasoning emerged" the same on the ``target`` split (default: the first clean multi-step split, e.g.
   ``hop2``); precision, recall, F1 and Matthews correlation of "grokked implies reasoning"; and the
   Spearman correlation of the two onset times over the runs that reach both, with a bootstrap interval.
   A run that never reaches a split is censored at its ``steps_done``: a negative for "eventually", and
   left out of the onset comparison (only observed onsets are compared; the counts of censored runs are
   reported beside it).
2. *Early warning.* Features computed from the first ``window`` of the step budget only
   (:mod:`gsweep.analysis.predictors`) are scored by AUROC and AUPRC against each eventual label, with
   cross-validation whose folds hold out whole grid cells: a feature's orientation and its alarm threshold
   are chosen on the training folds and scored on the held-out cells, so it cannot score by recognising
   the hyperparameters. Beside each, a baseline that sees only the swept hyperparameters (a logistic
   regression on their values, fitted on the same training folds), and that baseline plus the feature.
   Runs that already reached a label inside the window are left out of that label's scoring. The lead
   time is the number of steps from the window's end to the label's onset over the held-out runs that a
   training-fold threshold at a 10% false-positive rate flags.

Beside them, within cells (:mod:`~gsweep.analysis.within`): every multi-step target marked clean or
overlapping (sharing held-out parts with the source, as the task declares), with pooled Fisher,
Cochran-Mantel-Haenszel and within-cell permutation p-values; the delay question (grokking vs
comprehension, and t_gen / t_fit given t_gen); AUROC within cells and each feature against the baseline
by a paired bootstrap over cells; the folds redrawn with other seeds; a composition null
(:mod:`~gsweep.analysis.composition_null`); and Holm's correction over every p-value.

Outputs, named by source, target and threshold (:func:`output_names`), so analyses never overwrite each
other: ``analysis-SRC-TGT-tTHR.json``, ``predictors-SRC-TGT-tTHR.parquet`` (one row per run),
``plots/analyze-roc-SRC-TGT-tTHR.png``, ``plots/analyze-onset-SRC-TGT-tTHR.png`` and a printed summary.
The parts live beside this module: :mod:`~gsweep.analysis.association`,
:mod:`~gsweep.analysis.early_warning`, :mod:`~gsweep.analysis.analyze_output`; results are read by
:mod:`gsweep.results`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.analysis import stats
from gsweep.analysis.analyze_common import (  # noqa: F401 - re-exported
    BASELINE,
    FPR,
    MIN_CI_CLASS,
    N_BOOT,
    N_FOLDS,
    _float,
    _fmt_value,
    _jsonable,
    _median,
    _num,
)
from gsweep.analysis.analyze_output import format_summary, plot_onset, plot_roc  # noqa: F401 - re-exported
from gsweep.analysis.association import association  # noqa: F401 - re-exported
from gsweep.analysis.early_warning import (  # noqa: F401 - re-exported
    cv_feature,
    cv_logistic,
    hparam_design,
    score_label,
)
from gsweep.analysis.predictors import DESCRIPTIONS, NEEDS, PREDICTORS, early_warning, fourier_applicable
from gsweep.errors import UserError
from gsweep.metrics.labels import label_column
from gsweep.results import load_results, relabel, swept_keys

FIT, GEN = "train", "test"
NOT_MULTI_STEP = ("train", "test", "atomic")
LABELS = ("reasoned", "grokked")  # reasoned: target reached; grokked: source reached
SEED_LIKE = re.compile(r"(^|\.)(seed|\w+_seed)$")


# ----------------------------------------------------------------------------------------------
# splits and cells


def swept_cell_keys(spec: dict, meta: dict, runs: pd.DataFrame) -> list[str]:
    """The keys that define a grid cell: the swept keys (gsweep.results.swept_keys) without
    seeds (``seed``, ``task.data_seed``, any ``*_seed``) and without keys constant in ``runs``."""
    return [k for k in swept_keys(spec, meta, runs) if not SEED_LIKE.search(k) and runs[k].nunique(dropna=False) > 1]


def splits_of(curves: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    if len(curves):
        found = list(dict.fromkeys(curves["split"].astype(str)))
    else:
        found = [c[len("final_"):-len("_acc")] for c in runs.columns if c.startswith("final_") and c.endswith("_acc")]
    return sorted(found, key=lambda s: (s != FIT, s != GEN, s))


def multi_step_splits(splits: Sequence[str]) -> list[str]:
    """Splits other than train/test/atomic; those with a hop count in the name first, by hop count."""
    cand = [s for s in splits if s not in NOT_MULTI_STEP]

    def key(s):
        m = re.search(r"hop(\d+)", s)
        return (m is None, int(m.group(1)) if m else 0, s)

    return sorted(cand, key=key)


def choose_splits(splits: Sequence[str], source: str, target: str | None, where: str,
                  parts: dict | None = None) -> tuple[str, str]:
    """(source, target); the default target is the first multi-step split that shares no held-out part
    with the source (``parts``: the task's declaration), else the first multi-step split."""
    present = ", ".join(splits) or "none"
    if source not in splits:
        raise UserError(f"{where}: --source {source!r} is not a split of these runs; splits present: {present}")
    if target is None:
        multi = [s for s in multi_step_splits(splits) if s != source]
        if not multi:
            raise UserError(f"{where}: no multi-step split to predict (splits present: {present}); analyze needs "
                            "a task with multi-step splits such as hop2 (e.g. sweeps/chain.yaml), or --target SPLIT")
        from gsweep.analysis.within import target_status

        clean = [s for s in multi if target_status(parts, source, s)["status"] == "clean"]
        target = (clean or multi)[0]
    elif target not in splits:
        raise UserError(f"{where}: --target {target!r} is not a split of these runs; splits present: {present}")
    if target == source:
        raise UserError(f"{where}: --source and --target are both {source!r}; pick two different splits")
    return source, target


# ----------------------------------------------------------------------------------------------
# the analysis


def analyze(results_dir: str | Path, source: str = GEN, target: str | None = None, window: float = 0.1,
            threshold: float | None = None, fpr: float = FPR, n_folds: int = N_FOLDS, n_boot: int = N_BOOT,
            seed: int = 0, write: bool = True, plots: bool = True, where: str | None = None) -> dict[str, Any]:
    """Run the whole analysis on a results dir; returns the analysis.json content (also written).
    ``where`` (a ``--where`` filter over runs.parquet's columns) restricts it to the matching runs; its
    files then carry a short hash of the filter in their names."""
    if not (isinstance(window, (int, float)) and 0 < window < 1):
        raise UserError(f"--window {window!r}: a fraction of the step budget, strictly between 0 and 1")
    res = load_results(results_dir, threshold=threshold)  # relabelled when the threshold differs
    d, thr = res.path, res.threshold
    splits = splits_of(res.curves, res.runs)
    from gsweep.analysis import within

    parts = within.held_out_parts(res.task_name, splits)
    source, target = choose_splits(splits, source, target, str(d / "curves.parquet"), parts)
    if any(c not in res.runs for c in (label_column(source), label_column(target))):
        relabel(res)
    spec, meta, curves = res.spec, res.meta, res.curves
    runs = res.runs.reset_index(drop=True)
    if where:
        from gsweep import filters

        runs = filters.select(runs, where, "--where").reset_index(drop=True)
        if runs.empty:
            raise UserError(f"--where {where!r}: matches none of the {len(res.runs)} runs")
        curves = curves[curves["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    if "status" not in runs:
        runs["status"] = "done"
    diverged = runs["status"].astype(str).eq("diverged").to_numpy()
    notes: list[str] = []
    if diverged.any():
        notes.append(f"{int(diverged.sum())} diverged run(s) left out of everything")
    runs = runs[~diverged].reset_index(drop=True)
    if runs.empty:
        raise UserError(f"{d / 'runs.parquet'}: no run to analyze (all {int(diverged.sum())} diverged)")

    keys = swept_cell_keys(spec, meta, runs)
    if keys:
        cell = runs[keys].apply(lambda row: ", ".join(f"{k}={_fmt_value(v)}" for k, v in row.items()), axis=1)
    else:
        cell = pd.Series(["all"] * len(runs))
    cell = cell.astype(str).to_numpy()
    n_cells = len(np.unique(cell))
    if n_cells >= 2:
        folds = stats.grouped_folds(cell, n_folds, seed)
        fold_note = f"{len(np.unique(folds))} folds holding out whole cells (all seeds of a cell together)"
    else:
        folds = stats.grouped_folds(runs["run_id"].astype(str).to_numpy(), n_folds, seed)
        fold_note = (f"one cell only: {len(np.unique(folds))} folds over its seeds (no hyperparameter differs, "
                     "so none can leak; the hyperparameter baseline is chance)")
        notes.append(fold_note)

    budget = (_float(runs["train.steps"]) if "train.steps" in runs else _float(runs["steps_done"]))
    budget = np.where(np.isfinite(budget), budget, _float(runs["steps_done"]))
    wend = np.maximum(1, np.floor(window * budget))
    t_src = _float(runs[label_column(source)])
    t_tgt = _float(runs[label_column(target)])

    # ---- association, overall and per cell
    overall = association(t_src, t_tgt, source, target, groups=cell, n_boot=n_boot, seed=seed)
    per_cell = []
    for c in sorted(np.unique(cell)):
        m = cell == c
        row = {"cell": c, **{k: runs.loc[m, k].iloc[0] for k in keys}}
        a = association(t_src[m], t_tgt[m], source, target, n_boot=min(n_boot, 200), seed=seed)
        row.update(a)
        per_cell.append(row)
    if n_cells > 1 and max(r["n"] for r in per_cell) < 3:
        notes.append("every cell has fewer than 3 runs: per-cell MCC and Spearman are undefined (null in per_cell); "
                     "the overall numbers pool the cells")
    phase_table = None
    if source == GEN and "phase" in runs:
        ph = runs["phase"].astype("string").fillna("none").to_numpy()
        phase_table = {p: {"reached": int(((ph == p) & np.isfinite(t_tgt)).sum()),
                           "not_reached": int(((ph == p) & ~np.isfinite(t_tgt)).sum())}
                       for p in ("comprehension", "grokking", "memorization", "confusion") if (ph == p).any()}

    # ---- early-warning features
    ww = pd.Series(wend, index=runs["run_id"].astype(str).to_numpy())
    feats = early_warning(curves.assign(run_id=curves["run_id"].astype(str)), ww, FIT, GEN)
    feats = feats.reindex(ww.index)
    left_out: dict[str, str] = {}
    ok_f, msg = fourier_applicable(runs, np.isfinite(feats["fourier_sparsity"].to_numpy(dtype=float)))
    feats.loc[~ok_f, "fourier_sparsity"] = np.nan
    if msg:
        left_out["fourier_sparsity"] = msg
    for f, col in NEEDS.items():
        if f not in left_out and col not in curves:
            left_out[f] = f"{f} left out: curves.parquet has no {col!r} column"
    few = int(np.isnan(feats["norm_fall"].to_numpy(dtype=float)).sum()) if "weight_norm" in curves else 0
    if few:
        notes.append(f"{few} run(s) have fewer than 2 evaluations inside the window: their features are missing")
    features = [f for f in PREDICTORS if f not in left_out and np.isfinite(feats[f].to_numpy(dtype=float)).any()]
    for f in PREDICTORS:
        if f not in features and f not in left_out:
            left_out[f] = f"{f} left out: no run has a value inside the window"

    frame = pd.DataFrame({"run_id": runs["run_id"].astype(str).to_numpy(), "cell": cell})
    for k in keys:
        frame[k] = runs[k].to_numpy()
    if "seed" in runs and "seed" not in keys:
        frame["seed"] = runs["seed"].to_numpy()
    frame["status"] = runs["status"].astype(str).to_numpy()
    frame["steps_done"] = runs["steps_done"].to_numpy()
    frame["window_steps"] = wend.astype(np.int64)
    for f in PREDICTORS:
        frame[f] = feats[f].to_numpy(dtype=float)
    src_col, tgt_col = f"t_{source}", f"t_{target}"
    frame[src_col] = t_src
    frame[tgt_col] = t_tgt
    frame["grokked"] = np.isfinite(t_src)
    frame["reasoned"] = np.isfinite(t_tgt)
    frame["grokked_in_window"] = np.isfinite(t_src) & (t_src <= wend)
    frame["reasoned_in_window"] = np.isfinite(t_tgt) & (t_tgt <= wend)
    frame["fold"] = folds

    # ---- within cells: every candidate target, clean or overlapping, and the delay question
    n_perm = max(200, 2 * n_boot)
    cand = [target] + [s for s in multi_step_splits(splits) if s not in (source, target)]
    targets = within.targets_table(runs, splits, source, label_column(source), cand, parts, cell, label_column,
                                   n_perm=n_perm, seed=seed)
    delay = within.delay_block(runs, t_tgt, cell, n_perm=n_perm, seed=seed) if source == GEN else None
    from gsweep.analysis.composition_null import composition_null

    comp_null = composition_null(runs, res.task_name, splits)

    X, xnames = hparam_design(runs, keys)
    predictors_out, rocs = {}, {}
    for lab, tcol, split in (("reasoned", tgt_col, target), ("grokked", src_col, source)):
        res, roc = score_label(frame, lab, tcol, X, features, folds, cell, fpr=fpr, n_boot=n_boot, seed=seed)
        res["meaning"] = f"reached acc >= {thr:g} on {split!r} within the steps run (after the window)"
        res["fold_seeds"] = within.fold_seed_spread(frame, lab, tcol, X, features, cell)
        predictors_out[lab] = res
        rocs[lab] = roc
    n_cmp = sum(1 for lab in predictors_out.values() for s in lab["scores"].values()
                if s.get("auroc") is not None and math.isfinite(s["auroc"]))

    out = {
        "results_dir": str(d), "source": source, "target": target, "splits": splits,
        "threshold": thr, "window": window,
        "window_steps": {"min": int(wend.min()), "max": int(wend.max())},
        "false_positive_rate": fpr,
        "n_runs": int(len(runs)), "n_diverged_left_out": int(diverged.sum()),
        "cell_keys": keys, "n_cells": n_cells, "folds": fold_note, "hyperparameter_features": xnames,
        "overall": overall, "phase_table": phase_table, "per_cell": per_cell,
        "predictors": predictors_out, "features": {f: DESCRIPTIONS[f] for f in features},
        "left_out": left_out,
        "target_status": within.target_status(parts, source, target),
        "targets": targets, "delay": delay, "composition_null": comp_null,
        "n_aurocs": n_cmp,
        "notes": notes + [
            "correlation, not causation: grokking and reasoning may share causes (the hyperparameters) "
            "without one producing the other",
        ] + ([f"{n_cmp} AUROCs are reported: with many comparisons some will look good by chance; read the "
              "intervals, and treat a single predictor beating the baseline as a hypothesis"] if n_cmp > 1 else []) + [
            "censored runs (label not reached within steps_done) are negatives for 'eventually'; "
            "a longer budget could turn some into positives",
        ],
    }
    from gsweep.analysis.stability import stability_summary  # does reasoning, once it appears, stay?
    out["stability"] = stability_summary(runs, [source, target])
    out["comparisons"] = within.collect_pvalues(out)
    out["n_comparisons"] = len(out["comparisons"])
    out["correction"] = "Holm (statsmodels multipletests) over every p-value listed under comparisons"
    if where:
        out["where"] = where
    out["files"] = output_names(source, target, thr, where)
    if write:
        paths = write_outputs(d, out, frame, rocs, plots)
        out["written"] = paths
    return out


def output_names(source: str, target: str, threshold: float, where: str | None = None) -> dict[str, str]:
    """The files of one analysis, named by source, target and threshold (so no analysis overwrites
    another): analysis-SRC-TGT-tTHR.json, predictors-....parquet, plots/analyze-roc-....png, ...; with a
    ``--where`` filter, -wHASH (the first 8 hex digits of the filter's SHA-256) is appended."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{source}-{target}-t{threshold:g}")
    if where:
        import hashlib

        stem += "-w" + hashlib.sha256(where.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return {"analysis": f"analysis-{stem}.json", "predictors": f"predictors-{stem}.parquet",
            "roc": f"plots/analyze-roc-{stem}.png", "onset": f"plots/analyze-onset-{stem}.png"}


def write_outputs(d: Path, out: dict, frame: pd.DataFrame, rocs: dict, plots: bool = True) -> list[str]:
    paths = []
    names = out["files"]
    jpath = d / names["analysis"]
    store.write_text(jpath, json.dumps(_jsonable({k: v for k, v in out.items() if k != "written"}), indent=2) + "\n")
    paths.append(str(jpath))
    ppath = d / names["predictors"]
    fr = frame.copy()
    for c in (f"t_{out['source']}", f"t_{out['target']}"):
        fr[c] = pd.array([None if not np.isfinite(v) else int(v) for v in fr[c]], dtype="Int64")
    store.write_parquet(ppath, fr)
    paths.append(str(ppath))
    if plots:
        pdir = d / "plots"
        pdir.mkdir(exist_ok=True)
        paths.append(plot_roc(d / names["roc"], out, rocs))
        paths.append(plot_onset(d / names["onset"], out, frame))
    return paths


def analyze_command(args) -> int:
    window = getattr(args, "window", None)
    out = analyze(args.results_dir, source=getattr(args, "source", None) or GEN,
                  target=getattr(args, "target", None), window=0.1 if window is None else window,
                  threshold=getattr(args, "threshold", None), where=getattr(args, "where", None))
    print(format_summary(out))
    return 0
