"""Shared pieces of the `gsweep plot` figures: loading, output paths, words for keys and metrics,
axis spacing, and ``--where`` queries. matplotlib runs headless (Agg); no JAX anywhere here."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gsweep.errors import UserError  # noqa: E402
from gsweep.results import Results, load_results  # noqa: E402

SUFFIXES = (".png", ".svg", ".pdf")

KEY_WORDS = {
    "task.data_frac": "training data fraction",
    "task.data_seed": "data split seed",
    "task.p": "modulus p",
    "task.name": "task",
    "train.weight_decay": "weight decay",
    "train.lr": "learning rate",
    "train.steps": "step budget",
    "train.batch_size": "batch size",
    "train.warmup": "warm-up steps",
    "train.b1": "Adam beta1",
    "train.b2": "Adam beta2",
    "model.depth": "depth (blocks)",
    "model.d_model": "model width",
    "model.heads": "attention heads",
    "model.d_mlp": "MLP width",
    "model.init_scale": "initialisation scale",
    "model.name": "model",
    "seed": "seed",
}

SHORT_WORDS = {"task.data_frac": "frac", "train.weight_decay": "wd", "model.depth": "depth", "train.lr": "lr",
               "model.init_scale": "init", "model.d_model": "width", "seed": "seed"}


def load(args) -> Results:
    """The results dir of a plot command, relabelled when --threshold / --gap / --gap-mode are given."""
    return load_results(args.results_dir, getattr(args, "threshold", None), getattr(args, "gap", None),
                        getattr(args, "gap_mode", None))


def output_path(res: Results, out: str | None, default_name: str) -> Path:
    """``RESULTS_DIR/plots/<default_name>`` unless ``out`` names a file (.png, .svg or .pdf);
    an ``out`` without a suffix is a folder to write ``default_name`` into."""
    if out is None:
        path = res.path / "plots" / default_name
    else:
        path = Path(out)
        if path.suffix == "" or path.is_dir():
            path = path / default_name
        elif path.suffix.lower() not in SUFFIXES:
            raise UserError(f"--out {out}: the suffix picks the format; use one of {', '.join(SUFFIXES)}")
        own = path.parent.resolve() == (res.path / "plots").resolve()  # the results dir's own plots/
        if not own and not Path(out).parent.is_dir():  # a typo must not create a tree of folders
            raise UserError(f"--out {out}: no such folder {Path(out).parent}; create it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=130, bbox_inches="tight", format=path.suffix.lower().lstrip("."))
    plt.close(fig)
    print(f"wrote {path}")
    return path


def note(msg: str) -> None:
    print(f"gsweep plot: {msg}", file=sys.stderr)


def key_label(key: str | None) -> str:
    if key is None:
        return ""
    return KEY_WORDS.get(key, key)


def short_label(key: str) -> str:
    return SHORT_WORDS.get(key, key.split(".")[-1])


def fmt_value(v) -> str:
    """A setting value for ticks and legends: 0.001, 0.3, 1e-05, 2."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "nan"
        return f"{float(v):.4g}"
    return str(v)


def fmt_steps(v: float) -> str:
    """A step count in a few characters: 300, 1200, 15k, 1.5M."""
    v = float(v)
    if abs(v) < 10_000:
        return f"{v:.0f}"
    if abs(v) < 1_000_000:
        return f"{v / 1000:.0f}k"
    return f"{v / 1e6:.1f}M".replace(".0M", "M")


def is_step_metric(metric: str) -> bool:
    """Columns that count steps (log colour scale; censored when not reached)."""
    return (metric.startswith("t_") and "." not in metric) or metric in ("delay", "steps_done", "diverged_step")


def metric_label(metric: str, threshold: float) -> str:
    """A metric in words."""
    if metric == "phase":
        return "phase (majority over seeds)"
    if metric.startswith("share:"):
        return f"share of runs in phase {metric[len('share:'):]} (text: share, runs/labelled runs)"
    if metric == "t_fit":
        return f"steps to fit (train accuracy >= {threshold:g})"
    if metric == "t_gen":
        return f"steps to generalise (test accuracy >= {threshold:g})"
    if metric == "delay":
        return "delay from fit to generalisation (steps)"
    if metric.startswith("t_") and "." not in metric:
        return f"steps to reach accuracy {threshold:g} on {metric[2:]}"
    m = re.fullmatch(r"final_(.+)_(acc|loss)", metric)
    if m:
        return f"final {m.group(1)} {'accuracy' if m.group(2) == 'acc' else 'loss'}"
    return metric.replace("_", " ")


def numeric_values(values) -> bool:
    try:
        np.asarray(list(values), dtype=float)
    except (TypeError, ValueError):
        return False
    return not any(isinstance(v, (str, bool, np.bool_)) for v in values)


def sorted_values(values) -> list:
    vals = list(pd.unique(pd.Series(list(values)).dropna()))
    if numeric_values(vals):
        return sorted(vals, key=float)
    return sorted(vals, key=str)


def is_log_spaced(values) -> bool:
    """Positive values (zero aside) spanning more than a decade, more even in log than linear steps."""
    if not numeric_values(values):
        return False
    v = np.array(sorted({float(x) for x in values if float(x) != 0.0}))
    if v.size < 2 or v[0] <= 0:
        return False
    if v[-1] / v[0] < 10 - 1e-9:
        return False
    if v.size == 2:
        return True
    lin, lg = np.diff(v), np.diff(np.log(v))
    return bool(np.std(lg) / np.mean(lg) < np.std(lin) / np.mean(lin))


def positions(values: list, gap_for_zero: bool) -> np.ndarray:
    """Cell centres for sorted grid values: 0, 1, 2, ...; a zero on a log axis sits apart (+0.4)."""
    pos = np.arange(len(values), dtype=float)
    if gap_for_zero and len(values) > 1 and numeric_values(values) and float(values[0]) == 0.0:
        pos[1:] += 0.4
    return pos


def query_runs(runs: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """Rows of ``runs`` matching a ``--where`` filter (:mod:`gsweep.filters`: comparisons,
    and/or/not, ``in [...]``; parsed, never evaluated; dotted names need no backquotes)."""
    if not where:
        return runs
    from gsweep.filters import select  # parsed into a whitelisted form, never evaluated as code
    sel = select(runs, where, "--where")
    if len(sel) == 0:
        raise UserError(f"--where {where!r}: no run matches (of {len(runs)} runs)")
    return sel


def cell_label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{short_label(k)}={fmt_value(v)}" for k, v in zip(keys, values, strict=True))


def text_color(rgba) -> str:
    """Black or white text, whichever reads on the given background."""
    r, g, b = matplotlib.colors.to_rgb(rgba)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def subtitle(res: Results, runs: pd.DataFrame | None = None) -> str:
    runs = res.runs if runs is None else runs
    budget = res.budget
    b = f"{budget:,} steps" if budget is not None else "? steps"
    seeds = runs["seed"].nunique() if "seed" in runs else 1
    return (f"task {res.task_name}, budget {b}, {len(runs)} run{'s' if len(runs) != 1 else ''} "
            f"({seeds} seed{'s' if seeds != 1 else ''}), "
            f"threshold {res.threshold:g}, gap {res.gap:g}{'x' if res.gap_mode == 'relative' else ' steps'}")
