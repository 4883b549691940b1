"""``gsweep report RESULTS_DIR [--out FILE.html]``: one self-contained HTML page per sweep (no JAX).

The page works offline: plotly.js, the data and the figures are inlined (no CDN). It holds the phase
diagram (x / y / facet and metric chosen on the page; a click on a cell shows its runs' curves and
table rows), the grok-time figure, the summary table, ``gsweep analyze``'s results and the replayed
runs' figures where they exist, and the provenance (spec, versions, device, precision, wall time,
command), with a banner for a sweep that is still running or was interrupted.

Curves travel compactly: one uint16 matrix (runs x evaluated steps) per split and measure, base64;
accuracy on a linear scale, loss on a log scale (:mod:`gsweep.report.data`).
"""

from __future__ import annotations

from pathlib import Path

from gsweep.report.page import render, write_report  # noqa: F401


def report_command(args) -> int:
    from gsweep.results import load_results

    res = load_results(args.results_dir)
    path = write_report(res, getattr(args, "out", None))
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.1f} MB, {len(res.runs)} runs; open it in a browser, it works offline)")
    return 0


__all__ = ["render", "write_report", "report_command", "Path"]
