"""`gsweep plot phase-diagram`: the phase (or any runs.parquet column) over two swept keys.

Each cell of the grid is one point of the sweep; its runs are the seeds (and any swept key that is
neither an axis nor a facet, pooled). With ``--metric phase`` the cell takes the colour of the
majority phase over its runs and shows the share of runs that agree (``2/3``); ties go to the
earlier phase in the order comprehension, grokking, memorization, confusion and say ``tie``. With any other
column the colour is a continuous scale (log for step counts); for step counts the cell's value is
the Kaplan–Meier median over its runs, censored at ``steps_done``, and a cell whose median is not
reached within the budget is drawn grey and hatched with ``>N`` in it, never as a number.
Diverged runs are left out of the cell's statistics and counted in its text. With
``--metric share:PHASE`` (any phase) the colour is the share of the cell's labelled runs in that phase,
on a fixed 0-1 scale, and the text is that share with its count (``0.33\n1/3``): a minority phase that
the majority map hides stays visible.

:func:`phase_diagram_data` returns everything the figure shows (one row per cell, with its colour
and text), so tests and notebooks can check the map without reading pixels.
"""

from __future__ import annotations

import dataclasses
import math

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from gsweep.analysis.survival import km_median
from gsweep.errors import UserError
from gsweep.metrics.labels import PHASES
from gsweep.plot import common
from gsweep.results import Results, check_columns, is_diverged

PHASE_COLORS = {
    "comprehension": "#2ca02c",  # green
    "grokking": "#ff7f0e",       # orange
    "memorization": "#1f77b4",   # blue
    "confusion": "#b0b0b0",      # grey
}
DIVERGED_COLOR = "#404040"
CENSORED_COLOR = "#e6e6e6"
CMAP = "viridis"


@dataclasses.dataclass
class PhaseDiagramData:
    """What a phase diagram shows. ``cells``: one row per (facet..., y, x) cell present in the runs,
    with n_runs, n_diverged, n; for phase: phase, agree, share and one count column per phase; for
    other metrics: value, censored, bound, reached; and for both: color (hex) and text."""

    metric: str
    x: str | None
    y: str | None
    facets: list[str]
    pooled: list[str]
    x_values: list
    y_values: list
    facet_values: list[tuple]
    x_log: bool
    y_log: bool
    cells: pd.DataFrame
    norm: mcolors.Normalize | None
    step_metric: bool


def choose_axes(res: Results, x: str | None, y: str | None, facet: str | None
                ) -> tuple[str | None, str | None, list[str], list[str]]:
    """(x, y, facet keys, pooled keys). Defaults: y weight decay and x data fraction when swept, else
    the next swept keys (x falls back to the unswept data fraction, y to a single row); facets:
    every other swept key but seed (or ``facet`` alone, pooling the rest)."""
    for flag, key in (("--x", x), ("--y", y), ("--facet", facet)):
        if key:
            check_columns(res, [key], flag)
    swept = [k for k in res.swept_keys if k != "seed"]
    if y is None and "train.weight_decay" in swept and x != "train.weight_decay":
        y = "train.weight_decay"
    if x is None:
        rest = [k for k in swept if k not in (y, facet)]
        if "task.data_frac" in rest:
            x = "task.data_frac"
        elif rest:
            x = rest[0]
        elif "task.data_frac" in res.runs and y != "task.data_frac":
            x = "task.data_frac"  # not swept: one column, the y axis still reads as usual
    if y is None:
        rest = [k for k in swept if k not in (x, facet)]
        y = rest[0] if rest else None
    if x is not None and x == y:
        raise UserError(f"--x and --y are both {x!r}; pick two different keys")
    used = {x, y}
    if facet is not None:
        if facet in used:
            raise UserError(f"--facet {facet!r} is already an axis")
        facets = [facet]
        pooled = [k for k in swept if k not in used and k != facet]
    else:
        facets = [k for k in swept if k not in used]
        pooled = []
    return x, y, facets, pooled


def _majority(counts: dict[str, int]) -> str:
    best = max(counts.values())
    return next(p for p in PHASES if counts[p] == best)


def _cell_value(g: pd.DataFrame, metric: str) -> dict:
    """The value a non-phase cell shows: KM median for step counts (censored), else the median."""
    n = len(g)
    if n == 0:
        return {"value": math.nan, "censored": False, "bound": math.nan, "reached": 0}
    steps_done = pd.to_numeric(g["steps_done"]).to_numpy(dtype=float)
    if metric.startswith("t_") and "." not in metric:
        t = pd.to_numeric(g[metric]).to_numpy(dtype=float, na_value=np.nan)
        obs = ~np.isnan(t)
        med = km_median(np.where(obs, t, steps_done), obs)
        return {"value": math.nan if med is None else med, "censored": med is None,
                "bound": float(steps_done.max()) if med is None else math.nan, "reached": int(obs.sum())}
    if metric == "delay" and "t_fit" in g and "t_gen" in g:
        fit = pd.to_numeric(g["t_fit"]).to_numpy(dtype=float, na_value=np.nan)
        gen = pd.to_numeric(g["t_gen"]).to_numpy(dtype=float, na_value=np.nan)
        has_fit = ~np.isnan(fit)
        obs = has_fit & ~np.isnan(gen)
        # a run that fit but never generalised: delay > steps_done - t_fit; one that never fit: unknown
        dur = np.where(obs, gen - fit, np.where(has_fit, steps_done - fit, np.nan))
        med = km_median(dur[has_fit], obs[has_fit]) if has_fit.any() else None
        bound = float(np.nanmax(dur[has_fit])) if has_fit.any() else math.nan
        return {"value": math.nan if med is None else med, "censored": med is None,
                "bound": bound if med is None else math.nan, "reached": int(obs.sum())}
    v = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(v)
    if not ok.any():
        return {"value": math.nan, "censored": True, "bound": math.nan, "reached": 0}
    return {"value": float(np.median(v[ok])), "censored": False, "bound": math.nan, "reached": int(ok.sum())}


def _norm(values: np.ndarray, step_metric: bool) -> mcolors.Normalize:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return mcolors.Normalize(0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    if step_metric and lo > 0:
        if hi <= lo:
            lo, hi = lo / 2, hi * 2
        return mcolors.LogNorm(lo, hi)
    if step_metric:
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        return mcolors.SymLogNorm(linthresh=max(1.0, min(abs(x) for x in v if x != 0) if (v != 0).any() else 1.0),
                                  vmin=lo, vmax=hi)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return mcolors.Normalize(lo, hi)


def _value_text(v: float, metric: str, step_metric: bool) -> str:
    if step_metric:
        return common.fmt_steps(v)
    if metric.endswith("_acc"):
        return f"{v:.2f}"
    return f"{v:.3g}"


def phase_diagram_data(res: Results, x: str | None = None, y: str | None = None, facet: str | None = None,
                       metric: str = "phase") -> PhaseDiagramData:
    """Cells, colours and texts of a phase diagram (see the module docstring)."""
    metric = metric or "phase"
    share_of = metric[len("share:"):] if metric.startswith("share:") else None
    if share_of is not None and share_of not in PHASES:
        raise UserError(f"--metric {metric!r}: share:PHASE takes one of {', '.join(PHASES)}")
    check_columns(res, ["phase" if share_of else metric], "--metric")
    x, y, facets, pooled = choose_axes(res, x, y, facet)
    runs = res.runs.reset_index(drop=True)
    if metric != "phase" and share_of is None and not (pd.api.types.is_numeric_dtype(runs[metric]) or is_step_metric_col(metric)):
        raise UserError(f"--metric {metric!r}: not a numeric column of runs.parquet; use 'phase' or a number "
                        f"column such as t_gen, delay, final_test_acc")
    div = is_diverged(runs)
    keys = facets + [k for k in (y, x) if k]
    step_metric = metric != "phase" and common.is_step_metric(metric)
    rows = []
    groups = runs.groupby(keys, sort=True, dropna=False) if keys else [((), runs)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key, strict=True))
        gdiv = div[g.index.to_numpy()]
        ok = g[~gdiv]
        row.update(n_runs=len(g), n_diverged=int(gdiv.sum()), n=len(ok))
        if metric == "phase":
            ph = ok["phase"].astype("string")
            counts = {p: int((ph == p).sum()) for p in PHASES}
            n_lab = sum(counts.values())
            row.update(counts)
            if n_lab:
                maj = _majority(counts)
                tie = sum(c == counts[maj] for c in counts.values()) > 1
                row.update(phase=maj, agree=counts[maj], share=counts[maj] / n_lab, tie=tie,
                           color=PHASE_COLORS[maj], text=f"{counts[maj]}/{n_lab}" + (" tie" if tie else ""))
            else:
                row.update(phase="diverged" if len(g) else None, agree=0, share=math.nan, tie=False,
                           color=DIVERGED_COLOR, text="diverged")
            if n_lab and row["n_diverged"]:
                row["text"] += f"\n+{row['n_diverged']} div."
        elif share_of is not None:
            ph = ok["phase"].astype("string")
            k, n_lab = int((ph == share_of).sum()), int(ph.notna().sum())
            row.update(value=k / n_lab if n_lab else math.nan, censored=False, bound=math.nan, reached=k,
                       n_labelled=n_lab)
            if len(ok) == 0:
                row.update(text="diverged", color=DIVERGED_COLOR)
        else:
            row.update(_cell_value(ok, metric))
            if len(ok) == 0:
                row.update(censored=False, text="diverged", color=DIVERGED_COLOR)
        rows.append(row)
    cells = pd.DataFrame(rows)
    norm = None
    if metric != "phase":
        if metric.endswith("_acc") or share_of is not None:
            norm = mcolors.Normalize(0.0, 1.0)  # accuracies and shares on one scale, comparable across sweeps
        else:
            norm = _norm(cells["value"].to_numpy(dtype=float), step_metric)
        cmap = plt.get_cmap(CMAP)
        colors, texts = [], []
        for _, r in cells.iterrows():
            if r["n"] == 0:
                colors.append(DIVERGED_COLOR)
                texts.append("diverged")
            elif r["censored"]:
                colors.append(CENSORED_COLOR)
                b = r["bound"]
                texts.append(f">{common.fmt_steps(b)}" if step_metric and np.isfinite(b)
                             else ("no fit" if metric == "delay" else "n/a"))
            else:
                colors.append(mcolors.to_hex(cmap(norm(r["value"]))))
                t = _value_text(float(r["value"]), metric, step_metric)
                if share_of is not None:
                    t = f"{r['value']:.2f}\n{int(r['reached'])}/{int(r['n_labelled'])}"
                if step_metric and r["reached"] < r["n"]:
                    t += f"\n({r['reached']}/{r['n']})"
                texts.append(t)
            if r["n_diverged"] and r["n"]:
                texts[-1] += f"\n+{r['n_diverged']} div."
        cells["color"], cells["text"] = colors, texts
    xs = common.sorted_values(runs[x]) if x else [None]
    ys = common.sorted_values(runs[y]) if y else [None]
    fv = [tuple(t) for t in runs[facets].drop_duplicates().sort_values(facets).itertuples(index=False)] \
        if facets else [()]
    return PhaseDiagramData(metric, x, y, facets, pooled, xs, ys, fv,
                            bool(x and common.is_log_spaced(xs)), bool(y and common.is_log_spaced(ys)),
                            cells, norm, step_metric)


def is_step_metric_col(metric: str) -> bool:
    return common.is_step_metric(metric)


def _axis_ticks(values: list, log: bool) -> tuple[np.ndarray, list[str]]:
    pos = common.positions(values, gap_for_zero=log)
    return pos, [common.fmt_value(v) for v in values]


def draw(res: Results, d: PhaseDiagramData):
    """The figure for ``d`` (one panel per facet value)."""
    nf = len(d.facet_values)
    ncols = min(nf, 4)
    nrows = math.ceil(nf / ncols)
    w = max(3.2, 0.9 * len(d.x_values) + 1.6)
    h = max(2.6, 0.55 * len(d.y_values) + 1.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 2.2, h * nrows + 1.3), squeeze=False,
                             layout="constrained")
    xpos, xlab = _axis_ticks(d.x_values, d.x_log)
    ypos, ylab = _axis_ticks(d.y_values, d.y_log)
    small = len(d.x_values) > 8 or len(d.y_values) > 10
    for i, fval in enumerate(d.facet_values):
        ax = axes[i // ncols][i % ncols]
        sel = d.cells
        for k, v in zip(d.facets, fval, strict=True):
            sel = sel[sel[k] == v]
        for _, r in sel.iterrows():
            xi = d.x_values.index(r[d.x]) if d.x else 0
            yi = d.y_values.index(r[d.y]) if d.y else 0
            censored = d.metric != "phase" and bool(r.get("censored", False))
            ax.add_patch(Rectangle((xpos[xi] - 0.5, ypos[yi] - 0.5), 1, 1, facecolor=r["color"],
                                   edgecolor="white", linewidth=1.5, hatch="///" if censored else None))
            ax.text(xpos[xi], ypos[yi], r["text"], ha="center", va="center",
                    fontsize=6 if small else 9, color=common.text_color(r["color"]))
        ax.set_xlim(xpos[0] - 0.5, xpos[-1] + 0.5)
        ax.set_ylim(ypos[0] - 0.5, ypos[-1] + 0.5)
        ax.set_xticks(xpos, xlab, rotation=45 if len(d.x_values) > 6 else 0)
        ax.set_yticks(ypos, ylab if d.y else [""])
        ax.set_xlabel(common.key_label(d.x) + (" (log scale)" if d.x_log else ""))
        if i % ncols == 0:
            ax.set_ylabel(common.key_label(d.y) + (" (log scale)" if d.y_log else "") if d.y else "all runs")
        if d.facets:
            ax.set_title(", ".join(f"{common.key_label(k)} = {common.fmt_value(v)}"
                                   for k, v in zip(d.facets, fval, strict=True)), fontsize=10)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(length=0)
    for j in range(nf, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)

    budget = res.budget
    cb = add_key(fig, axes, d, res)
    if cb is not None and d.step_metric:
        fmt = FuncFormatter(lambda v, _: common.fmt_steps(v))
        cb.ax.yaxis.set_major_formatter(fmt)
        if isinstance(d.norm, mcolors.LogNorm) and d.norm.vmax / d.norm.vmin < 30:
            cb.ax.yaxis.set_minor_formatter(fmt)
    if d.metric != "phase" and d.cells.get("censored", pd.Series(dtype=bool)).fillna(False).astype(bool).any():
        what = f"not reached within {budget:,} steps" if d.step_metric and budget else "no value"
        fig.legend(handles=[Patch(facecolor=CENSORED_COLOR, hatch="///", edgecolor="#888888",
                                  label=f"censored: median {what}")],
                   loc="outside lower center", frameon=False)
    title = f"{res.name}: {common.metric_label(d.metric, res.threshold)}"
    sub = common.subtitle(res)
    if d.pooled:
        sub += f"\npooled over {', '.join(common.key_label(k) for k in d.pooled)}"
    fig.suptitle(f"{title}\n{sub}", fontsize=11)
    return fig


def phase_diagram_command(res: Results, args) -> int:
    d = phase_diagram_data(res, getattr(args, "x", None), getattr(args, "y", None), getattr(args, "facet", None),
                           getattr(args, "metric", None) or "phase")
    if d.pooled:
        common.note(f"cells pool the runs over {', '.join(d.pooled)} (not an axis or facet)")
    if d.metric != "phase" and not has_values(d):
        common.note(f"no cell has a value of {d.metric}: every cell is drawn censored (no colour scale)")
    fig = draw(res, d)
    common.save(fig, common.output_path(res, getattr(args, "out", None), f"phase-diagram-{d.metric.replace(':', '-')}.png"))
    return 0


def has_values(d) -> bool:
    """Whether any cell of a metric map has a finite value to colour."""
    return bool(np.isfinite(pd.to_numeric(d.cells["value"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)).any())


def add_key(fig, axes, d, res):
    """The phase legend (metric 'phase') or the metric's colorbar (returned) beside ``axes``."""
    if d.metric == "phase":
        handles = [Patch(facecolor=PHASE_COLORS[p], label=p) for p in PHASES]
        if (d.cells["phase"] == "diverged").any():
            handles.append(Patch(facecolor=DIVERGED_COLOR, label="all runs diverged"))
        fig.legend(handles=handles, loc="outside right center", frameon=False,
                   title="phase\n(text: runs agreeing\nwith the majority)")
        return None
    if not has_values(d):  # every cell censored: a colour scale would show made-up ticks
        return None
    sm = plt.cm.ScalarMappable(norm=d.norm, cmap=CMAP)
    cb = fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.9)
    label = common.metric_label(d.metric, res.threshold)
    if d.metric.startswith("share:"):
        cb.set_label(label, fontsize=9)
        return cb
    cb.set_label(("median " if not d.step_metric else "Kaplan-Meier median, ") + label, fontsize=9)
    return cb
