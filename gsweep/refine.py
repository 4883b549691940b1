"""`gsweep refine`: add runs where the map is uncertain, and train them into the same results dir.

``gsweep refine RESULTS_DIR [--x KEY] [--y KEY] [--rounds N] [--max-runs N] [--metric M --level L]``

The map is the set of *cells* of ``runs.parquet``: one per distinct (x, y, other swept keys but seed)
with its seeds as runs. Two cells are *neighbours* when they differ only in x (or only in y) and no
cell lies between them on that axis (so a product grid has its usual neighbours, and a refined set
its nearest points along each row and column). An edge between neighbours is a *boundary* when the
majority phases of the two cells differ (ties go to the earlier phase in the order comprehension,
grokking, memorization, confusion, as in the phase diagram), or, with ``--metric`` and ``--level``,
when the cell medians lie on either side of the level (one >= level, the other below; a step column
such as ``t_gen`` counts a run that never reached it as later than any level). Cells whose runs all
diverged take no part. Each boundary edge gets one new point at its midpoint: arithmetic on linear
axes, geometric on log-spaced ones (log-spacing as the phase diagram decides it, from the grid's
values in the spec), rounded to 12 significant digits; on an integer key the midpoint is rounded and
an edge with nothing between its ends is left alone. **Zero on a log axis**: zero sits one step below
the smallest positive value, the step being the ratio between the two smallest positive values on
that axis (10 when there is one), so the midpoint of 0 and ``a`` is ``a / sqrt(step)``.

The new points go into the results dir's spec under ``points:`` (each point names x, y and the other
swept keys; every seed runs it) and the round into ``refine:`` (criterion, axes, points and runs
added), and the runs are trained by :func:`gsweep.train.sweep.run_sweep` with ``extend=True``: the
same run ids, chunks, checkpoints and tables as any sweep. ``--rounds N`` refines until the results
dir holds N rounds (rounds already in its spec count), so re-running the same command after a kill
finishes the round in flight and goes on, like ``gsweep run``. ``--max-runs N`` caps the runs added
by this command (the longest edges first). ``--plan FILE`` writes the next round's spec to FILE and
trains nothing (train it with ``gsweep run FILE --out RESULTS_DIR --extend``, or shard it).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.errors import UserError
from gsweep.metrics.labels import PHASES

DEFAULT_Y, DEFAULT_X = "train.weight_decay", "task.data_frac"


# ----------------------------------------------------------------------------------------------
# axes and midpoints


def is_log_axis(spec: dict, runs: pd.DataFrame, key: str) -> bool:
    """Log-spaced as the phase diagram decides it, on the grid's values (else the runs' values)."""
    from gsweep.plot.common import is_log_spaced
    from gsweep.results import grid_values
    vals = grid_values(spec, key)
    return is_log_spaced(vals if len(vals) > 1 else runs[key].dropna().unique().tolist())


def zero_step(values: Sequence[float]) -> float:
    """The ratio that places zero below the smallest positive value on a log axis."""
    pos = sorted({float(v) for v in values if float(v) > 0})
    return pos[1] / pos[0] if len(pos) >= 2 else 10.0


def midpoint(a: Any, b: Any, log: bool, axis_values: Sequence[float]) -> Any | None:
    """The value halfway between ``a`` and ``b`` (see the module docstring); None when none lies
    strictly between them (integers one apart)."""
    lo, hi = sorted((float(a), float(b)))
    if log and lo == 0.0 and hi > 0:
        m = hi / math.sqrt(zero_step(axis_values))
    elif log and lo > 0:
        m = math.sqrt(lo * hi)
    else:
        m = (lo + hi) / 2
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        m = int(round(m))
        return m if lo < m < hi else None
    m = float(f"{m:.12g}")
    return m if lo < m < hi else None


# ----------------------------------------------------------------------------------------------
# the map and its boundaries


def _majority(phases: pd.Series) -> str | None:
    counts = {p: int((phases == p).sum()) for p in PHASES}
    best = max(counts.values())
    return next(p for p in PHASES if counts[p] == best) if best else None


def cell_table(runs: pd.DataFrame, keys: list[str], metric: str | None) -> pd.DataFrame:
    """One row per cell (``keys``): its value — majority phase, or the median of ``metric``."""
    ok = runs[~runs["status"].astype(str).eq("diverged")] if "status" in runs else runs
    rows = []
    for k, g in ok.groupby(keys, sort=True, dropna=False):
        k = k if isinstance(k, tuple) else (k,)
        row = dict(zip(keys, k, strict=True))
        if metric is None:
            row["value"] = _majority(g["phase"].astype("string"))
        else:
            v = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            if metric.startswith("t_") and "." not in metric:
                v = np.where(np.isnan(v), np.inf, v)  # never reached: later than any level
            v = v[~np.isnan(v)]
            row["value"] = float(np.median(v)) if len(v) else None
        row["n"] = len(g)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "value", "n"])


def boundary_points(runs: pd.DataFrame, spec: dict, x: str, y: str | None, facets: list[str],
                    metric: str | None = None, level: float | None = None) -> list[dict]:
    """New points (dicts of dotted keys -> values) at the midpoints of every boundary edge, longest
    edges (in axis units: log10 on log axes) first."""
    from gsweep.results import grid_values
    keys = [*facets, *([y] if y else []), x]
    cells = cell_table(runs, keys, metric)
    cells = cells[cells["value"].notna()]

    def differs(a, b) -> bool:
        if metric is None:
            return a != b
        return (a >= level) != (b >= level)

    found: dict[tuple, tuple[float, dict]] = {}
    for axis in [x] + ([y] if y else []):
        log = is_log_axis(spec, runs, axis)
        allv = sorted(set(runs[axis].dropna().tolist()) | set(grid_values(spec, axis)), key=float)
        fixed = [k for k in keys if k != axis]
        groups = cells.groupby(fixed, sort=True, dropna=False) if fixed else [((), cells)]
        for _, line in groups:
            line = line.sort_values(axis, key=lambda s: s.astype(float))
            recs = line.to_dict("records")
            for a, b in zip(recs, recs[1:], strict=False):
                if not differs(a["value"], b["value"]):
                    continue
                m = midpoint(a[axis], b[axis], log, allv)
                if m is None:
                    continue
                point = {k: a[k] for k in fixed}
                point[axis] = m
                point = {k: _plain(v) for k, v in sorted(point.items())}
                lo, hi = float(a[axis]), float(b[axis])
                span = (math.log10(hi / lo) if lo > 0 else math.log10(zero_step(allv))) if log else (hi - lo)
                span /= _axis_range(allv, log)
                key = tuple(point.items())
                if key not in found or found[key][0] < span:
                    found[key] = (span, point)
    return [p for _, p in sorted(found.values(), key=lambda t: (-t[0], sorted(t[1].items())))]


def _axis_range(values: Sequence[float], log: bool) -> float:
    v = [float(x) for x in values]
    if log:
        pos = [x for x in v if x > 0]
        r = math.log10(max(pos) / min(pos)) if len(pos) > 1 else 1.0
        return r + (math.log10(zero_step(v)) if 0.0 in v else 0.0) or 1.0
    return (max(v) - min(v)) or 1.0


def _plain(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


# ----------------------------------------------------------------------------------------------
# the command


def choose_refine_axes(swept: list[str], x: str | None, y: str | None) -> tuple[str, str | None, list[str]]:
    """(x, y, facets): defaults as the phase diagram's (x data fraction, y weight decay when swept)."""
    for flag, k in (("--x", x), ("--y", y)):
        if k is not None and (k == "seed" or "." not in str(k)):
            raise UserError(f"{flag} {k!r}: refine adds runs between values of a swept setting (block.key, e.g. "
                            "task.data_frac); the seed is not a map axis")
    swept = [k for k in swept if k != "seed"]
    if y is None and DEFAULT_Y in swept and x != DEFAULT_Y:
        y = DEFAULT_Y
    if x is None:
        rest = [k for k in swept if k != y]
        x = DEFAULT_X if DEFAULT_X in rest else (rest[0] if rest else None)
    if x is None:
        raise UserError("refine: nothing is swept but the seed; there is no map to refine")
    if y is None:
        rest = [k for k in swept if k != x]
        y = rest[0] if rest else None
    if x == y:
        raise UserError(f"--x and --y are both {x!r}; pick two different keys")
    return x, y, [k for k in swept if k not in (x, y)]


def _check_args(runs: pd.DataFrame, x: str, y: str | None, metric: str | None, level: float | None,
                rounds: int, max_runs: int | None, where: Path) -> None:
    if (metric is None) != (level is None):
        raise UserError("--metric and --level go together (e.g. --metric final_test_acc --level 0.5)")
    if rounds < 1:
        raise UserError(f"--rounds {rounds}: at least 1")
    if max_runs is not None and max_runs < 1:
        raise UserError(f"--max-runs {max_runs}: at least 1")
    for flag, k in (("--x", x), ("--y", y)):
        if k is None:
            continue
        if k not in runs:
            raise UserError(f"{flag} {k!r}: not a column of {where / store.RUNS}")
        if not pd.api.types.is_numeric_dtype(runs[k]) or pd.api.types.is_bool_dtype(runs[k]):
            raise UserError(f"{flag} {k!r}: not a numeric key; refine places midpoints on numeric axes")
    if metric is not None:
        if metric not in runs:
            raise UserError(f"--metric {metric!r}: not a column of {where / store.RUNS}")
        if not pd.api.types.is_numeric_dtype(runs[metric]):
            raise UserError(f"--metric {metric!r}: not a numeric column (e.g. final_test_acc, t_gen)")
        if not math.isfinite(level):
            raise UserError(f"--level {level}: must be a finite number")


def _pending(spec, out: Path) -> int:
    from gsweep.train.tables import finished_runs
    fin = finished_runs(out)
    return sum(1 for r in spec.runs() if r.run_id not in fin)


def next_round(out: Path, raw: dict, x: str | None = None, y: str | None = None, metric: str | None = None,
               level: float | None = None, max_runs: int | None = None) -> tuple[dict, list[dict], int]:
    """(the next round's spec dict, its new points, runs they add) from the results dir's tables."""
    from gsweep.results import swept_keys
    from gsweep.spec import from_dict

    runs = store.read_parquet(out / store.RUNS)
    meta = store.read_json(out / store.META) if (out / store.META).exists() else {}
    x, y, facets = choose_refine_axes(swept_keys(raw, meta, runs), x, y)
    spec = from_dict(raw, str(out / store.SPEC))
    have = {r.run_id for r in spec.runs()}
    cand = boundary_points(runs, raw, x, y, facets, metric, level)
    pts, added = [], 0
    for p in cand:
        trial = from_dict({**raw, "points": [*(raw.get("points") or []), *pts, p]}, str(out / store.SPEC))
        n = len({r.run_id for r in trial.runs()} - have) - added
        if n <= 0 or (max_runs is not None and added + n > max_runs):
            continue
        pts.append(p)
        added += n
    note = {"round": len(raw.get("refine") or []) + 1,
            "by": "phase" if metric is None else f"{metric} at {level:g}",
            "x": x, "y": y, "points": len(pts), "runs": added, "boundary_edges": len(cand)}
    new = {**raw, "points": [*(raw.get("points") or []), *pts], "refine": [*(raw.get("refine") or []), note]}
    return new, pts, added


def refine(out: str | Path, x: str | None = None, y: str | None = None, rounds: int = 1,
           max_runs: int | None = None, metric: str | None = None, level: float | None = None,
           plan: str | Path | None = None, progress: bool = True, command: str = "") -> dict:
    """Refine ``out`` until it holds ``rounds`` rounds; returns {rounds, added_points, added_runs, runs}.
    An interrupt (SIGINT/SIGTERM) raises :class:`gsweep.train.signals.Interrupted` after checkpointing."""
    from gsweep.results import swept_keys
    from gsweep.spec import from_dict

    out = Path(out)
    if plan is not None:
        from gsweep.train.resultsdir import check_not_a_record
        check_not_a_record(Path(plan), "--plan")
    raw = store.read_spec_yaml(out)
    if not (out / store.RUNS).exists():
        raise UserError(f"{out}: no {store.RUNS} yet; run the sweep first (gsweep run)")
    runs0 = store.read_parquet(out / store.RUNS)
    meta = store.read_json(out / store.META) if (out / store.META).exists() else {}
    sx, sy, _ = choose_refine_axes(swept_keys(raw, meta, runs0), x, y)
    _check_args(runs0, sx, sy, metric, level, rounds, max_runs, out)
    spec = from_dict(raw, str(out / store.SPEC))  # a spec error names the file before any work
    total_pts = total_runs = 0
    remaining = max_runs
    done = len(raw.get("refine") or [])
    if plan is None and _pending(spec, out):
        _train(spec, out, progress, command)  # finish what is there first (a killed round included)
    if done >= rounds:
        print(f"{out}: already refined {done} round(s); --rounds {done + 1} adds another", file=sys.stderr)
    while done < rounds:
        raw, pts, n = next_round(out, raw, x, y, metric, level, remaining)
        if not pts:
            print(f"{out}: round {done + 1}: no boundary left to refine"
                  + (f" within --max-runs {max_runs}" if max_runs else ""), file=sys.stderr)
            break
        spec = from_dict(raw, str(out / store.SPEC))
        note = raw["refine"][-1]
        print(f"{out}: round {note['round']}: {note['boundary_edges']} boundary edge(s) by {note['by']} over "
              f"{note['x']} x {note['y']}; adding {len(pts)} point(s), {n} run(s)", file=sys.stderr)
        if plan is not None:
            store.write_text(Path(plan), spec.to_yaml())
            print(f"wrote {plan}: train it with  gsweep run {plan} --out {out} --extend", file=sys.stderr)
            return {"rounds": done, "added_points": len(pts), "added_runs": n, "runs": None}
        _train(spec, out, progress, command)
        total_pts += len(pts)
        total_runs += n
        remaining = None if max_runs is None else max_runs - total_runs
        done += 1
    n_runs = len(store.read_parquet(out / store.RUNS))
    return {"rounds": done, "added_points": total_pts, "added_runs": total_runs, "runs": n_runs}


def _train(spec, out: Path, progress: bool, command: str) -> None:
    from gsweep.train.sweep import run_sweep
    run_sweep(spec, out, extend=True, progress=progress, command=command)


def refine_command(args) -> int:
    from gsweep.train.signals import Interrupted

    cmd = "gsweep " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0] else ""
    try:
        res = refine(args.results_dir, x=args.x, y=args.y, rounds=args.rounds, max_runs=args.max_runs,
                     metric=args.metric, level=args.level, plan=args.plan, progress=not args.quiet, command=cmd)
    except Interrupted as e:
        print(f"gsweep: {e}; the same refine command resumes", file=sys.stderr)
        return e.exit_code
    if res["runs"] is not None:
        print(f"{args.results_dir}: {res['rounds']} round(s) of refinement; this command added "
              f"{res['added_points']} point(s), {res['added_runs']} run(s); {res['runs']} runs in all")
    return 0
