"""The phase diagram of a refined results dir (its spec has ``points:``, from `gsweep refine`).

A refined set of points is not a product grid: drawing it as equal squares on an index grid would
stretch the refined region and leave holes. Here every cell is drawn where it lies on real axes
(log-scaled where the grid is log-spaced; zero on a log axis sits one grid step below the smallest
positive value, as `gsweep refine` places it): each point owns the region of the plane nearer to it
than to any other point (its Voronoi cell, in axis units scaled to the axis range), so a point's
cell is sized by its neighbours. A dot marks each point (where its runs are); the title says how
many rounds of refinement the map shows and how many points they added. Colours and texts are those
of the ordinary phase diagram (:func:`gsweep.plot.phase_diagram.phase_diagram_data`).
"""

from __future__ import annotations

import math

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np

from gsweep.plot import common

RES = 400  # raster cells per axis


def axis_transform(values: list, log: bool):
    """value -> axis coordinate (log10 on log axes, zero one grid step below the smallest positive)."""
    if not log:
        return lambda v: float(v)
    pos = sorted({float(v) for v in values if float(v) > 0})
    step = math.log10(pos[1] / pos[0]) if len(pos) >= 2 else 1.0
    zero = math.log10(pos[0]) - step if pos else 0.0
    return lambda v: zero if float(v) <= 0 else math.log10(float(v))


def voronoi_raster(px: np.ndarray, py: np.ndarray, xlim: tuple, ylim: tuple, res: int = RES) -> np.ndarray:
    """res x res indices of the nearest point (distances in units of each axis's range)."""
    sx = (xlim[1] - xlim[0]) or 1.0
    sy = (ylim[1] - ylim[0]) or 1.0
    gx = np.linspace(xlim[0], xlim[1], res)
    gy = np.linspace(ylim[0], ylim[1], res)
    dx = (gx[None, :, None] - px[None, None, :]) / sx
    dy = (gy[:, None, None] - py[None, None, :]) / sy
    return np.argmin(dx ** 2 + dy ** 2, axis=2)


def _limits(coords: list[float]) -> tuple[float, float]:
    u = sorted(set(coords))
    if len(u) == 1:
        return u[0] - 0.5, u[0] + 0.5
    return u[0] - (u[1] - u[0]) / 2, u[-1] + (u[-1] - u[-2]) / 2


def _ticks(values: list, tf, limit: int = 9) -> tuple[list[float], list[str]]:
    vals = common.sorted_values(values)
    if len(vals) > limit:  # thin evenly, keeping both ends
        idx = sorted({round(i * (len(vals) - 1) / (limit - 1)) for i in range(limit)})
        vals = [vals[i] for i in idx]
    return [tf(v) for v in vals], [common.fmt_value(v) for v in vals]


def draw_refined(res, d):
    """The figure for ``d`` (a PhaseDiagramData of a refined results dir), one panel per facet value."""
    from gsweep.plot.phase_diagram import add_key
    from gsweep.results import grid_values

    spec = res.spec or {}
    notes = spec.get("refine") or []
    n_points = len(spec.get("points") or [])
    xgrid = grid_values(spec, d.x) if d.x else []
    ygrid = grid_values(spec, d.y) if d.y else []
    xlog = bool(d.x) and common.is_log_spaced(xgrid if len(xgrid) > 1 else d.x_values)
    ylog = bool(d.y) and common.is_log_spaced(ygrid if len(ygrid) > 1 else d.y_values)
    tx = axis_transform(d.x_values, xlog) if d.x else (lambda v: 0.0)
    ty = axis_transform(d.y_values, ylog) if d.y else (lambda v: 0.0)
    nf = len(d.facet_values)
    ncols = min(nf, 3)
    nrows = math.ceil(nf / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols + 2.2, 4.2 * nrows + 1.3), squeeze=False,
                             layout="constrained")
    xs_all = [tx(v) for v in d.x_values]
    ys_all = [ty(v) for v in d.y_values]
    xlim, ylim = _limits(xs_all), _limits(ys_all)
    for i, fval in enumerate(d.facet_values):
        ax = axes[i // ncols][i % ncols]
        sel = d.cells
        for k, v in zip(d.facets, fval, strict=True):
            sel = sel[sel[k] == v]
        sel = sel.reset_index(drop=True)
        px = np.array([tx(v) for v in sel[d.x]] if d.x else np.zeros(len(sel)), dtype=float)
        py = np.array([ty(v) for v in sel[d.y]] if d.y else np.zeros(len(sel)), dtype=float)
        if len(sel):
            owner = voronoi_raster(px, py, xlim, ylim)
            rgb = np.array([mcolors.to_rgb(c) for c in sel["color"]])[owner]
            ax.imshow(rgb, origin="lower", extent=(*xlim, *ylim), aspect="auto", interpolation="nearest")
            # cell borders: where the owner changes
            edge = np.zeros_like(owner, dtype=bool)
            edge[:, 1:] |= owner[:, 1:] != owner[:, :-1]
            edge[1:, :] |= owner[1:, :] != owner[:-1, :]
            ax.imshow(np.where(edge[..., None], np.array([1.0, 1.0, 1.0, 0.8]), np.zeros(4)), origin="lower",
                      extent=(*xlim, *ylim), aspect="auto", interpolation="nearest")
            censored = sel["censored"].fillna(False).astype(bool).to_numpy() if "censored" in sel else \
                np.zeros(len(sel), bool)
            ax.scatter(px[~censored], py[~censored], s=9, c="black", zorder=3)
            ax.scatter(px[censored], py[censored], s=22, c="black", marker="x", zorder=3)
            if len(sel) <= 40:
                for xx, yy, t, c in zip(px, py, sel["text"], sel["color"], strict=True):
                    ax.annotate(str(t).replace("\n", " "), (xx, yy), xytext=(0, 5), textcoords="offset points",
                                ha="center", fontsize=6, color=common.text_color(c))
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        xt, xl = _ticks(d.x_values, tx) if d.x else ([0.0], [""])
        yt, yl = _ticks(d.y_values, ty) if d.y else ([0.0], [""])
        ax.set_xticks(xt, xl, rotation=45 if len(xt) > 5 else 0, fontsize=8)
        ax.set_yticks(yt, yl, fontsize=8)
        ax.set_xlabel(common.key_label(d.x) + (" (log scale)" if xlog else "") if d.x else "")
        if i % ncols == 0:
            ax.set_ylabel(common.key_label(d.y) + (" (log scale)" if ylog else "") if d.y else "all runs")
        if d.facets:
            ax.set_title(", ".join(f"{common.key_label(k)} = {common.fmt_value(v)}"
                                   for k, v in zip(d.facets, fval, strict=True)), fontsize=10)
    for j in range(nf, nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    add_key(fig, axes, d, res)
    zero = " (0 drawn one grid step below the smallest positive value)" if (
        (xlog and 0 in [float(v) for v in d.x_values]) or (ylog and 0 in [float(v) for v in d.y_values])) else ""
    shown = _points_with_runs(spec.get("points") or [], res.runs)
    flight = f" ({n_points - shown} of them still without runs)" if shown < n_points else ""
    how = (f"refined: {len(notes)} round(s) of gsweep refine added {n_points} point(s) to the grid{flight}; "
           f"each point's cell is its nearest-neighbour region on these axes{zero}; dots: the points, x: censored")
    fig.suptitle(f"{res.name}: {common.metric_label(d.metric, res.threshold)}\n{common.subtitle(res)}\n{how}",
                 fontsize=9)
    return fig


def _points_with_runs(points: list, runs) -> int:
    """How many of the spec's points have runs in runs.parquet (a round in flight has none yet)."""
    n = 0
    for p in points:
        m = np.ones(len(runs), dtype=bool)
        for k, v in p.items():
            m &= runs[k].to_numpy() == v if k in runs else False
        n += bool(m.any())
    return n


def refined_command(res, args) -> int:
    """`gsweep plot phase-diagram` on a refined results dir."""
    from gsweep.plot.phase_diagram import phase_diagram_data

    d = phase_diagram_data(res, getattr(args, "x", None), getattr(args, "y", None), getattr(args, "facet", None),
                           getattr(args, "metric", None) or "phase")
    if d.pooled:
        common.note(f"cells pool the runs over {', '.join(d.pooled)} (not an axis or facet)")
    n = len((res.spec or {}).get("refine") or [])
    common.note(f"refined map: {n} round(s) of refinement, {len((res.spec or {}).get('points') or [])} added "
                "point(s), drawn on real axes (each point's cell sized by its neighbours)")
    fig = draw_refined(res, d)
    common.save(fig, common.output_path(res, getattr(args, "out", None), f"phase-diagram-{d.metric}.png"))
    return 0
