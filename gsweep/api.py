"""The notebook face of gsweep: ``gsweep.load(dir)`` and ``gsweep.run(spec, out=...)`` (the CLI calls the
same functions underneath).

>>> import gsweep
>>> sw = gsweep.load("results/quick")
>>> sw.runs, sw.curves, sw.spec, sw.meta                    # pandas tables (curves read lazily), dicts
>>> sw.summarize(by=["train.weight_decay"], threshold=0.9)  # one row per cell (a DataFrame)
>>> sw.plot.phase_diagram(metric="t_gen")                   # a matplotlib Figure
>>> sw.where("train.weight_decay > 0 and model.depth == 2")  # the same object over fewer runs

Loading, analysis and plots never import JAX; :func:`run` imports it when called.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsweep.errors import UserError
from gsweep.results import Results, load_results


class Sweep(Results):
    """A results dir, loaded (see :class:`gsweep.results.Results`), with the analyses as methods."""

    def __repr__(self) -> str:
        return (f"<gsweep.Sweep {self.name!r} at {self.path}: {len(self.runs)} runs, status {self.status}, "
                f"swept {', '.join(self.swept_keys) or 'nothing'}; threshold {self.threshold:g}, "
                f"gap {self.gap:g} ({self.gap_mode})>")

    def summarize(self, by: Sequence[str] | str | None = None, threshold: float | None = None,
                  gap: float | None = None, gap_mode: str | None = None, text: bool = False) -> pd.DataFrame:
        """One row per cell (``gsweep summarize``): runs, diverged, P(grokking) and its 95% interval,
        Kaplan-Meier medians (NaN where censoring leaves them undefined; ``text=True`` writes ``>N``),
        phase counts. ``threshold``/``gap``/``gap_mode`` relabel from the curves first."""
        from gsweep.analysis.summary import summarize, summary_frame

        res = self.relabelled(threshold, gap, gap_mode)
        cells = summarize(res, [by] if isinstance(by, str) else (list(by) if by else None))
        return summary_frame(cells, text=text)

    def where(self, expr: str) -> Sweep:
        """The runs matching ``expr`` (comparisons of columns with values, ``and``/``or``/``not``,
        ``in [...]``; dotted keys as they are: ``"train.weight_decay > 0 and seed in [0, 1]"``)."""
        mask = where_mask(self.runs, expr)
        return dataclasses.replace(self, runs=self.runs[mask].reset_index(drop=True))

    @property
    def plot(self) -> _Plots:
        """Figures: ``.plot.phase_diagram(...)``, ``.plot.curves(...)``, ``.plot.grok_time()``."""
        return _Plots(self)

    def report(self, out: str | Path | None = None) -> Path:
        """Write the HTML report (``gsweep report``); returns its path."""
        from gsweep.report import write_report

        return write_report(self, out)


class _Plots:
    def __init__(self, sweep: Sweep):
        self._s = sweep

    def phase_diagram(self, x: str | None = None, y: str | None = None, facet: str | None = None,
                      metric: str = "phase"):
        """The phase diagram as a matplotlib Figure (``gsweep plot phase-diagram``)."""
        from gsweep.plot.phase_diagram import draw, phase_diagram_data

        return draw(self._s, phase_diagram_data(self._s, x, y, facet, metric))

    def curves(self, where: str | None = None, split: Sequence[str] | None = None):
        """Learning curves, median and interquartile band per cell (``gsweep plot curves``)."""
        from gsweep.plot.curves import draw_curves

        s = self._s.where(where) if where else self._s
        return draw_curves(s, None, list(split) if split else None)[0]

    def grok_time(self):
        """Steps to generalise against the data fraction (``gsweep plot grok-time``)."""
        from gsweep.plot.grok_time import draw_grok_time

        return draw_grok_time(self._s)


def load(results_dir: str | Path, threshold: float | None = None, gap: float | None = None,
         gap_mode: str | None = None) -> Sweep:
    """Read a results dir (``gsweep run``'s output): the one loader that summarize, analyze, the plots
    and the report use. ``threshold``/``gap``/``gap_mode`` relabel from the curves (files unchanged)."""
    return load_results(results_dir, threshold, gap, gap_mode, cls=Sweep)


# ----------------------------------------------------------------------------------------------
# filters: a small whitelisted expression language (never eval / DataFrame.query)

_CMP = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__",
        ast.GtE: "__ge__"}


def where_mask(df: pd.DataFrame, expr: str, what: str = "where") -> np.ndarray:
    """Boolean mask of the rows of ``df`` matching ``expr`` (:mod:`gsweep.filters`: parsed into a
    whitelisted form, never evaluated as code); UserError naming what is not allowed."""
    from gsweep import filters

    return filters.mask(df, expr, what).to_numpy(dtype=bool)


class NotebookProgress:
    """The progress of :func:`run` for notebooks: tqdm.auto's bar when tqdm is installed, else one line
    of text redrawn in place (IPython display) or printed every few seconds."""

    def __init__(self, total_model_steps: int, enabled: bool = True):
        self.total, self.done, self.enabled = max(1, total_model_steps), 0, enabled
        self.t0, self.last, self.rate_t0, self.rate_done = time.perf_counter(), 0.0, None, 0
        self.bar = self.handle = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, unit="model-step", unit_scale=True, dynamic_ncols=True)
        except ImportError:
            try:
                from IPython import get_ipython
                from IPython.display import display
                if get_ipython() is not None:
                    self.handle = display("gsweep: starting", display_id=True)
            except ImportError:
                pass

    def update(self, label: str, step: int, steps: int, model_steps: int, final: bool = False) -> None:
        self.done += model_steps
        now = time.perf_counter()
        if self.rate_t0 is None:
            self.rate_t0 = now
        else:
            self.rate_done += model_steps
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(f"{label} step {step}/{steps}", refresh=False)
            self.bar.update(model_steps)
            return
        if not final and now - self.last < (0.5 if self.handle is not None else 5.0):
            return
        self.last = now
        rate = self.rate_done / max(now - self.rate_t0, 1e-9) if self.rate_done else 0.0
        eta = (self.total - self.done) / rate if rate else float("nan")
        line = (f"{label} step {step}/{steps}  {100 * self.done / self.total:5.1f}%  "
                f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta)) if np.isfinite(eta) else '--:--:--'}  "
                f"{rate:,.0f} model-steps/s")
        if self.handle is not None:
            self.handle.update(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _override_strings(overrides: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if not overrides:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def run(spec: str | Path | Mapping, out: str | Path | None = None,
        overrides: Mapping[str, Any] | Sequence[str] | None = None, fresh: bool = False, extend: bool = False,
        progress: bool = True) -> Sweep:
    """Train a sweep (a YAML path, or the spec as a dict) into ``out`` (default ``results/<name>``) and
    return it loaded. Resumes what is there, as ``gsweep run`` does. ``overrides``:
    ``{"train.steps": 200, "seeds": 2}`` or ``["train.steps=200"]`` (``--set``)."""
    from gsweep.devices import configure

    configure()  # one XLA CPU device per usable core (GSWEEP_CPU_DEVICES), before JAX starts
    from gsweep.spec import from_dict, load_spec
    from gsweep.spec.sweepfile import apply_overrides
    from gsweep.train.sweep import run_sweep

    sets = _override_strings(overrides)
    if isinstance(spec, Mapping):
        spec_obj = from_dict(apply_overrides(dict(spec), sets, "<dict>"), "<dict>")
    else:
        spec_obj = load_spec(spec, sets)
    if fresh and extend:
        raise UserError("fresh and extend contradict each other; pick one")
    out = Path(out) if out is not None else Path("results") / spec_obj.name
    cmd = f"gsweep.run({str(spec) if not isinstance(spec, Mapping) else '<dict>'!r}, out={str(out)!r})"
    run_sweep(spec_obj, out, fresh=fresh, extend=extend,
              progress=(lambda total, enabled: NotebookProgress(total, enabled)) if progress else False,
              command=cmd)
    return load(out)
