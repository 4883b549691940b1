"""What the report page carries: the runs table, the curves (compact), the summary, figures, provenance.

:func:`payload` returns one JSON-able dict; the page's script draws everything from it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gsweep import store
from gsweep.results import Results, is_diverged

MISSING = 65535  # the uint16 code of "not evaluated"
Q = 65534        # levels of the uint16 scale
FIGURE_GLOBS = (("analyze", "analyze-*.png"), ("replay", "fourier-*.png"), ("replay", "attention-*.png"),
                ("replay", "neurons-*.png"))


def _plain(v: Any) -> Any:
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return None
        return int(v) if v.is_integer() and abs(v) < 2**53 else float(f"{v:.6g}")
    return str(v) if not isinstance(v, (int, str)) else v


def runs_columns(res: Results) -> list[str]:
    """The columns of runs.parquet the page shows: id, seed, swept keys, status, labels."""
    runs = res.runs
    swept = res.swept_keys
    first = ["run_id"] + [k for k in ("seed",) if k in runs and k not in swept] + swept
    rest = ["status", "steps_done", "diverged_step", "phase"]
    tcols = [c for c in ("t_fit", "t_gen") if c in runs]
    tcols += sorted(c for c in runs.columns if c.startswith("t_") and "." not in c and c not in tcols)
    finals = sorted(c for c in runs.columns if c.startswith("final_") and c.endswith("_acc"))
    cols = first + rest + tcols + (["delay"] if "delay" in runs else []) + finals
    return [c for c in dict.fromkeys(cols) if c in runs]


def runs_table(res: Results) -> dict[str, list]:
    runs = res.runs
    out = {c: [_plain(v) for v in runs[c].tolist()] for c in runs_columns(res)}
    out["diverged"] = is_diverged(runs).tolist()
    return out


def encode_u16(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<u2").tobytes()).decode("ascii")


def curves_block(res: Results) -> dict[str, Any]:
    """Per split and measure a (runs x steps) uint16 matrix over the union of evaluated steps, base64.

    acc: round(acc * 65534); loss: log10(loss) mapped onto [lo, hi]; 65535: not evaluated.
    """
    if not (res.path / "curves.parquet").exists():
        return {"steps": [], "splits": [], "acc": {}, "loss": {}, "loss_log10": [0.0, 1.0]}
    c = res.curves
    run_index = pd.Index(res.runs["run_id"].astype(str))
    ri = run_index.get_indexer(c["run_id"].astype(str))
    keep = ri >= 0
    c, ri = c[keep], ri[keep]
    steps = np.unique(c["step"].to_numpy(dtype=np.int64))
    si = np.searchsorted(steps, c["step"].to_numpy(dtype=np.int64))
    split = c["split"].astype(str).to_numpy()
    splits = sorted(dict.fromkeys(split), key=lambda s: (s != "train", s != "test", s))
    loss = c["loss"].to_numpy(dtype=float) if "loss" in c else np.full(len(c), np.nan)
    lg = np.log10(np.clip(loss, 1e-12, None))
    ok = np.isfinite(lg)
    lo, hi = (float(np.floor(lg[ok].min() * 10) / 10), float(np.ceil(lg[ok].max() * 10) / 10)) if ok.any() else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    acc = c["acc"].to_numpy(dtype=float)
    shape = (len(run_index), len(steps))
    out: dict[str, Any] = {"steps": steps.tolist(), "splits": splits, "acc": {}, "loss": {}, "loss_log10": [lo, hi]}
    for s in splits:
        m = split == s
        for name, vals, to_q in (("acc", acc, lambda v: np.clip(v, 0, 1) * Q),
                                 ("loss", lg, lambda v: (np.clip(v, lo, hi) - lo) / (hi - lo) * Q)):
            mat = np.full(shape, MISSING, dtype=np.uint16)
            v = vals[m]
            good = np.isfinite(v)
            mat[ri[m][good], si[m][good]] = np.rint(to_q(v[good])).astype(np.uint16)
            out[name][s] = encode_u16(mat)
    return out


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure_data_uri(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figures(res: Results) -> list[dict[str, str]]:
    """The analyze and replay PNGs under plots/, inlined."""
    out = []
    pdir = res.path / "plots"
    for kind, pattern in FIGURE_GLOBS:
        for p in sorted(pdir.glob(pattern)) if pdir.is_dir() else []:
            if not store.is_own_file(p):  # never read through a link gsweep did not make
                print(f"gsweep: report: {p} is a link or not a file; left out of the page", file=sys.stderr)
                continue
            out.append({"kind": kind, "title": p.stem, "src": png_data_uri(p)})
    return out


def _parse_time(s: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def provenance(res: Results) -> dict[str, Any]:
    m = res.meta
    t0, t1 = _parse_time(m.get("started")), _parse_time(m.get("finished"))
    wall = (t1 - t0).total_seconds() if t0 and t1 else None
    sp = res.path / "spec.yaml"
    spec_text = sp.read_text() if store.is_own_file(sp) else ""
    return {
        "status": res.status, "started": m.get("started"), "finished": m.get("finished"), "wall_s": wall,
        "command": m.get("command"), "host": m.get("host"), "backend": m.get("backend"),
        "device_kind": m.get("device_kind"), "devices": m.get("devices"), "precision": m.get("precision"),
        "versions": m.get("versions") or {k: v for k, v in m.items() if k.endswith("_version")},
        "groups": m.get("groups"), "history": m.get("history"), "spec_yaml": spec_text,
        "n_runs_planned": m.get("n_runs"),
    }


def banner(res: Results) -> str | None:
    """A sentence for a sweep that is not done (None when it is)."""
    st = res.status
    runs = res.runs
    n = len(runs)
    n_fin = int(runs["status"].isin(["done", "stopped", "diverged"]).sum()) if "status" in runs else n
    planned = res.meta.get("n_runs") or n
    if st == "running":
        return (f"This sweep is still running: {n_fin} of {planned} runs were finished when this page was "
                "written. Run gsweep report again when it is done.")
    if st == "interrupted":
        return (f"This sweep was interrupted: {n_fin} of {planned} runs finished. Resume it with the same "
                "gsweep run command; unfinished runs are counted as censored at the steps they ran.")
    if st not in ("done", "?"):
        return f"This sweep's status is {st!r}: {n_fin} of {planned} runs finished."
    return None


def summary_html(res: Results) -> str:
    from gsweep.analysis.summary import summarize, summary_frame

    cells = summarize(res)
    df = summary_frame(cells, text=True)
    html_ = df.to_html(index=False, classes="summary", na_rep="-", float_format=lambda v: f"{v:.3g}", border=0)
    return html_ + sensitivity_html(res)


def sensitivity_html(res: Results) -> str:
    """The phase counts over threshold x gap (gsweep summarize --sensitivity), as a table."""
    if res.curves is None or not len(res.curves) or "steps_done" not in res.runs:
        return ""
    from gsweep.analysis.sensitivity import phase_sensitivity, sensitivity_grid

    try:
        t = phase_sensitivity(res.curves, res.runs, *sensitivity_grid(res.threshold, res.gap, res.gap_mode),
                              gap_mode=res.gap_mode)
    except Exception as e:  # noqa: BLE001 - the page still loads
        return f"<p class='note'>phase sensitivity could not be computed ({html.escape(type(e).__name__)})</p>"
    return ("<p>How the phase counts move with the label's choices (runs, not cells; 'unresolved': grokking "
            "or comprehension calls the evaluation grid cannot tell apart):</p>"
            + t.to_html(index=False, classes="summary", border=0))


def analysis_files(res: Results) -> list[Path]:
    """Every analysis in the results dir: analysis.json (older gsweep) and analysis-*.json, oldest first."""
    files = [p for p in res.path.glob("analysis*.json") if store.is_own_file(p)]  # never through a link
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


def analysis_text(res: Results) -> str | None:
    files = analysis_files(res)
    if not files:
        return None
    from gsweep.analysis.analyze_output import format_summary

    parts = [f"{len(files)} analys{'is' if len(files) == 1 else 'es'} in this results dir: "
             + ", ".join(p.name for p in files)]
    for p in files:
        try:
            parts.append(f"==== {p.name}\n" + format_summary(store.read_json(p)))  # checked and size-bounded
        except Exception as e:  # noqa: BLE001 - an analysis file from another version: show what is wrong
            parts.append(f"==== {p.name} could not be read ({type(e).__name__}: {e})")
    return "\n\n".join(parts)


def payload(res: Results) -> dict[str, Any]:
    from gsweep.plot.grok_time import draw_grok_time
    from gsweep.plot.phase_diagram import choose_axes

    x, y, facets, _ = choose_axes(res, None, None, None)
    swept = [k for k in res.swept_keys if k != "seed"]
    grok = None
    if "t_gen" in res.runs and len(res.runs):
        try:
            grok = figure_data_uri(draw_grok_time(res))
        except Exception as e:  # noqa: BLE001 - a figure that cannot be drawn is named, the page still loads
            grok = f"error: {type(e).__name__}: {e}"
    step_cols = [c for c in runs_columns(res) if c.startswith("t_")]
    return {
        "name": res.name, "path": str(res.path), "task": res.task_name, "budget": res.budget,
        "threshold": res.threshold, "gap": res.gap, "gap_mode": res.gap_mode,
        "swept": swept, "defaults": {"x": x, "y": y, "facet": facets[0] if facets else None},
        "step_metrics": step_cols, "runs": runs_table(res), "curves": curves_block(res),
        "summary_html": summary_html(res), "analysis_text": analysis_text(res), "grok_time": grok,
        "figures": figures(res), "provenance": provenance(res), "banner": banner(res),
        "written": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def escape(s: str) -> str:
    return html.escape(s, quote=True)
