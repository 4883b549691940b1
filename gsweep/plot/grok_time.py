"""`gsweep plot grok-time`: steps to generalise against data fraction, a line per weight decay (and
per depth or any other swept key), as in Power et al. 2022 and Nanda et al. 2023.

Each point of a line is the Kaplan–Meier median of ``t_gen`` over the cell's runs, censored at
``steps_done``: filled where defined, an open upward triangle at the budget where censoring leaves it
undefined (more than half the runs never generalised). Each run is drawn faintly behind: a dot at
its ``t_gen``, or an open marker at its ``steps_done`` when it never got there. Diverged runs are
left out. A dashed line marks the step budget.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from gsweep.analysis.survival import km_median
from gsweep.plot import common
from gsweep.results import Results, is_diverged

LINESTYLES = ("-", "--", ":", "-.")
METRIC = "t_gen"


def grok_time_axes(res: Results) -> tuple[str, list[str]]:
    """(x key, line keys): x is the data fraction when swept (else the first swept key); a line per
    value of every other swept key but seed, weight decay first."""
    swept = [k for k in res.swept_keys if k != "seed"]
    if "task.data_frac" in swept or not swept:
        x = "task.data_frac"
    else:
        x = swept[0]
    lines = [k for k in swept if k != x]
    lines.sort(key=lambda k: (k != "train.weight_decay", swept.index(k)))
    return x, lines


def grok_time_data(res: Results) -> tuple[str, list[str], pd.DataFrame, pd.DataFrame]:
    """(x, line keys, points, runs): ``points`` has one row per (line..., x) with median (NaN when
    censored), censored, bound, n, reached; ``runs`` has x, the line keys, t (t_gen or steps_done)
    and reached per non-diverged run."""
    x, lines = grok_time_axes(res)
    runs = res.runs.reset_index(drop=True)
    runs = runs[~is_diverged(runs)]
    if x not in runs:
        runs = runs.assign(**{x: 0.0})
    t = pd.to_numeric(runs[METRIC]).to_numpy(dtype=float, na_value=np.nan)
    done = pd.to_numeric(runs["steps_done"]).to_numpy(dtype=float)
    reached = ~np.isnan(t)
    per_run = runs[[x] + lines].copy()
    per_run["t"] = np.where(reached, t, done)
    per_run["reached"] = reached
    rows = []
    for key, g in per_run.groupby(lines + [x], sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        med = km_median(g["t"].to_numpy(), g["reached"].to_numpy())
        rows.append({**dict(zip(lines + [x], key, strict=True)), "median": np.nan if med is None else med,
                     "censored": med is None, "bound": float(g["t"].max()), "n": len(g),
                     "reached": int(g["reached"].sum())})
    return x, lines, pd.DataFrame(rows), per_run


def draw_grok_time(res: Results):
    """The grok-time figure (a matplotlib Figure)."""
    x, lines, pts, per_run = grok_time_data(res)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    xs = common.sorted_values(per_run[x]) if len(per_run) else []
    numeric = common.numeric_values(xs)
    # log-spaced values (a zero among them included) sit evenly, like a log axis with 0 set apart
    spaced = not numeric or common.is_log_spaced(xs)
    if spaced:
        pos = common.positions(xs, gap_for_zero=True)
        xmap = lambda v: float(pos[xs.index(v)])  # noqa: E731
    else:
        xmap = lambda v: float(v)  # noqa: E731
    color_key = lines[0] if lines else None
    style_keys = lines[1:]
    cvals = common.sorted_values(per_run[color_key]) if color_key else [None]
    svals = list(itertools.product(*[common.sorted_values(per_run[k]) for k in style_keys])) or [()]
    cmap = plt.get_cmap("viridis")
    budget = res.budget
    line_groups = pts.groupby(lines, sort=True, dropna=False) if lines else [((), pts)]
    rng = np.random.default_rng(0)
    for key, g in line_groups:
        key = key if isinstance(key, tuple) else (key,)
        ci = cvals.index(key[0]) if color_key else 0
        col = cmap(0.1 + 0.8 * ci / max(1, len(cvals) - 1)) if len(cvals) > 1 else "C0"
        si = svals.index(tuple(key[1:])) if style_keys else 0
        ls = LINESTYLES[si % len(LINESTYLES)]
        g = g.sort_values(x, key=lambda s: s.map(xmap))
        gx = g[x].map(xmap).to_numpy(dtype=float)
        y = np.where(g["censored"], g["bound"], g["median"]).astype(float)
        label = common.cell_label(lines, key) if lines else "median over runs"
        ok = ~g["censored"].to_numpy(dtype=bool)
        # solid through defined medians; a faint dotted line where it runs through censored ones
        ax.plot(gx, y, color=col, ls=":", lw=0.9, alpha=0.6)
        ax.plot(gx, np.where(ok, y, np.nan), color=col, ls=ls, lw=1.8, label=label)
        ax.plot(gx[ok], y[ok], "o", color=col, ms=6)
        ax.plot(gx[~ok], y[~ok], "^", mfc="none", mec=col, mew=1.5, ms=8)
        # the runs behind the line
        sel = per_run
        for k, v in zip(lines, key, strict=True):
            sel = sel[sel[k] == v]
        rx = sel[x].map(xmap).to_numpy(dtype=float)
        span = (max(map(xmap, xs)) - min(map(xmap, xs))) if len(xs) > 1 else 1.0
        rx = rx + rng.uniform(-0.012, 0.012, size=rx.size) * span
        r = sel["reached"].to_numpy(dtype=bool)
        ax.scatter(rx[r], sel["t"].to_numpy()[r], s=10, color=col, alpha=0.35, lw=0)
        ax.scatter(rx[~r], sel["t"].to_numpy()[~r], s=18, facecolors="none", edgecolors=col, alpha=0.5, lw=0.8)
    if budget:
        ax.axhline(budget, color="black", ls="--", lw=0.8)
        ax.annotate(f"budget {budget:,} steps", (1.0, budget), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=8)
    ypos = per_run["t"].to_numpy(dtype=float)
    if (ypos > 0).all() and len(ypos):
        ax.set_yscale("log")
        fmt = FuncFormatter(lambda v, _: common.fmt_steps(v))
        ax.yaxis.set_major_formatter(fmt)
        lo, hi = float(ypos.min()), float(max(ypos.max(), budget or 0))
        ax.set_ylim(lo / 1.4, hi * 1.4)
        if hi / lo < 30:
            ax.yaxis.set_minor_formatter(fmt)
    if spaced:
        ax.set_xticks(pos, [common.fmt_value(v) for v in xs])
        if len(xs):
            ax.set_xlim(pos[0] - 0.4, pos[-1] + 0.4)
    ax.set_xlabel(common.key_label(x) + (" (log scale)" if spaced and numeric else ""))
    ax.set_ylabel(f"steps to generalise (test acc >= {res.threshold:g})")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], marker="o", color="grey", ls="none", label="median (Kaplan-Meier)"),
                Line2D([], [], marker="^", mfc="none", mec="grey", ls="none",
                       label="median not reached (censored)"),
                Line2D([], [], marker="o", mfc="none", mec="grey", ls="none", ms=4,
                       label="a run that never generalised\n(at its steps_done)")]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False, fontsize=8)
    fig.suptitle(f"{res.name}: steps to generalise against {common.key_label(x)}\n{common.subtitle(res)}",
                 fontsize=11)
    return fig


def grok_time_command(res: Results, args) -> int:
    fig = draw_grok_time(res)
    common.save(fig, common.output_path(res, getattr(args, "out", None), "grok-time.png"))
    return 0
