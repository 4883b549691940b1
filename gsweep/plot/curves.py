"""`gsweep plot curves`: accuracy and loss against step (log step axis), per selected cell the median
over its seeds with the interquartile band. ``--where`` selects runs with a pandas query over
runs.parquet (dotted keys work without backquotes); ``--split`` picks the splits (default train
and test). One column of panels per split: accuracy above, loss below."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gsweep.errors import UserError
from gsweep.plot import common
from gsweep.results import Results, default_cell_keys

MAX_LEGEND = 16


def curve_bands(curves: pd.DataFrame, run_ids, split: str, metric: str) -> pd.DataFrame:
    """step -> median, q25, q75 and n over the runs ``run_ids`` on ``split`` (steps > 0 only)."""
    c = curves[(curves["split"] == split) & curves["run_id"].isin(list(run_ids)) & (curves["step"] > 0)]
    if c.empty:
        return pd.DataFrame(columns=["step", "median", "q25", "q75", "n"])
    wide = c.pivot_table(index="step", columns="run_id", values=metric, aggfunc="last").sort_index()
    a = np.array(wide.to_numpy(dtype=float), copy=True)
    a[~np.isfinite(a)] = np.nan
    with np.errstate(all="ignore"):
        n = np.sum(~np.isnan(a), axis=1)
        keep = n > 0
        a = a[keep]
        out = pd.DataFrame({"step": wide.index.to_numpy()[keep],
                            "median": np.nanmedian(a, axis=1),
                            "q25": np.nanpercentile(a, 25, axis=1),
                            "q75": np.nanpercentile(a, 75, axis=1),
                            "n": n[keep]})
    return out


def select_cells(res: Results, where: str | None) -> tuple[list[str], list[tuple[tuple, list[str]]]]:
    """(the keys that tell the selected cells apart, [(values, run_ids)] per cell)."""
    runs = common.query_runs(res.runs, where)
    keys = [k for k in default_cell_keys(res) if runs[k].nunique(dropna=False) > 1]
    if not keys:
        return [], [((), list(runs["run_id"]))]
    cells = []
    for key, g in runs.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        cells.append((key, list(g["run_id"])))
    return keys, cells


def draw_curves(res: Results, where: str | None = None, split: list[str] | None = None):
    """(figure, default file name) of the learning curves of the cells ``where`` selects."""
    keys, cells = select_cells(res, where)
    curves = res.curves
    have = list(pd.unique(curves["split"]))
    splits = list(dict.fromkeys(split or [s for s in ("train", "test") if s in have] or have[:2]))
    for s in splits:
        if s not in have:
            raise UserError(f"--split {s!r}: no such split in {res.path / 'curves.parquet'}; "
                            f"valid: {', '.join(map(str, have))}")
    if len(cells) > MAX_LEGEND:
        common.note(f"{len(cells)} cells on one figure; narrow them with --where, e.g. "
                    f"--where 'train.weight_decay == 1.0'")
    cmap = plt.get_cmap("tab10" if len(cells) <= 10 else "viridis")
    colors = [cmap(i if len(cells) <= 10 else i / max(1, len(cells) - 1)) for i in range(len(cells))]
    fig, axes = plt.subplots(2, len(splits), figsize=(4.6 * len(splits) + 2.2, 6.4), squeeze=False, sharex=True)
    for j, split in enumerate(splits):
        for row, metric in enumerate(("acc", "loss")):
            ax = axes[row][j]
            for (vals, ids), col in zip(cells, colors, strict=True):
                b = curve_bands(curves, ids, split, metric)
                if b.empty:
                    continue
                label = (common.cell_label(keys, vals) if keys else "all selected runs") + f" ({len(ids)} runs)"
                ax.plot(b["step"], b["median"], color=col, lw=1.6, label=label)
                if len(ids) > 1:
                    ax.fill_between(b["step"], b["q25"], b["q75"], color=col, alpha=0.2, lw=0)
            ax.set_xscale("log")
            if metric == "acc":
                ax.axhline(res.threshold, color="black", ls=":", lw=0.8)
                ax.set_ylim(-0.02, 1.02)
                ax.set_title(f"{split}", fontsize=10)
                if j == 0:
                    ax.set_ylabel("accuracy")
            else:
                lo = curves.loc[(curves["split"] == split) & (curves["loss"] > 0), "loss"]
                if len(lo):
                    ax.set_yscale("log")
                if j == 0:
                    ax.set_ylabel("loss")
                ax.set_xlabel("step (log scale)")
            ax.grid(True, which="major", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles and len(handles) <= MAX_LEGEND:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8,
                   title="cell: median over runs,\nband: interquartile range")
    sel_runs = res.runs[res.runs["run_id"].isin([i for _, ids in cells for i in ids])]
    title = f"{res.name}: learning curves" + (f" where {where}" if where else "")
    fig.suptitle(f"{title}\n{common.subtitle(res, sel_runs)}; dotted: threshold", fontsize=11)
    fig.tight_layout()
    name = "curves.png"
    if where:
        slug = re.sub(r"[^A-Za-z0-9.=_-]+", "_", where).strip("_")[:60]
        name = f"curves-{slug}.png"
    return fig, name


def curves_command(res: Results, args) -> int:
    fig, name = draw_curves(res, getattr(args, "where", None), getattr(args, "split", None))
    common.save(fig, common.output_path(res, getattr(args, "out", None), name))
    return 0
