"""The report page: an HTML skeleton, the inlined plotly.js, report.css/report.js and the data."""

from __future__ import annotations

import json
from pathlib import Path

from gsweep import store
from gsweep.errors import UserError
from gsweep.report.data import escape, payload
from gsweep.results import Results

HERE = Path(__file__).parent


def plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise UserError("gsweep report needs plotly (pip install plotly); it inlines plotly.js into the page") from None
    return get_plotlyjs()


def _script_json(obj) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("</", "<\\/").replace("<!--", "<\\!--")


def render(res: Results) -> str:
    data = payload(res)
    css = (HERE / "report.css").read_text()
    js = (HERE / "report.js").read_text()
    title = f"gsweep report: {data['name']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{css}</style>
</head><body>
<header><h1>{escape(data['name'])}</h1>
<p class="sub">task {escape(str(data['task']))} · budget {data['budget']} steps · {len(data['runs']['run_id'])} runs ·
threshold {data['threshold']:g}, gap {data['gap']:g} ({escape(data['gap_mode'])}) · {escape(str(data['path']))} ·
written {data['written']}</p></header>
<div id="banner" class="banner" hidden></div>
<nav><a href="#map-section">phase diagram</a> <a href="#grok-section">grok time</a>
<a href="#summary-section">summary</a> <a href="#analysis-section">analyze</a>
<a href="#figures-section">replayed runs</a> <a href="#provenance-section">provenance</a></nav>
<section id="map-section"><h2>Phase diagram</h2>
<div class="controls">
<label>x <select id="sel-x"></select></label> <label>y <select id="sel-y"></select></label>
<label>facet <select id="sel-facet"></select></label> <label>metric <select id="sel-metric"></select></label>
</div>
<p id="map-note" class="note"></p>
<div id="legend" class="legend"></div>
<div id="map"></div>
<p class="note">Click a cell to see its runs' learning curves and table rows.</p>
<div id="cell" hidden><h3 id="cell-title"></h3><div id="curves"></div><div id="cell-runs"></div></div>
</section>
<section id="grok-section"><h2>Steps to generalise</h2><div id="grok"></div></section>
<section id="summary-section"><h2>Summary per cell</h2>
<p class="note">Kaplan-Meier medians: runs that never reached the threshold are censored at the steps they ran;
<code>&gt;N</code>: the median is not reached within N steps. P(grokking) with its 95% Wilson interval; diverged
runs are counted apart.</p><div class="scroll">{data['summary_html']}</div></section>
<section id="analysis-section"><h2>Does grokking predict reasoning? (gsweep analyze)</h2><div id="analysis"></div></section>
<section id="figures-section"><h2>Replayed runs</h2><div id="figures"></div></section>
<section id="provenance-section"><h2>Provenance</h2><div id="provenance"></div></section>
<script>{plotly_js()}</script>
<script type="application/json" id="gsweep-data">{_script_json({k: v for k, v in data.items() if k != 'summary_html'})}</script>
<script>{js}</script>
</body></html>
"""


def write_report(res: Results, out: str | Path | None = None) -> Path:
    """Write the page to ``out`` (default ``RESULTS_DIR/report.html``); returns the path."""
    path = Path(out) if out is not None else res.path / "report.html"
    if path.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {path}: the report is one HTML file; name it FILE.html")
    from gsweep.train.resultsdir import check_not_a_record
    check_not_a_record(path, "--out")
    if path.parent.is_dir():  # temporaries of a report a kill interrupted (its own name only)
        for t in path.parent.glob(f".{path.name}.*.tmp"):
            if store.is_own_file(t):
                t.unlink(missing_ok=True)
    store.write_text(path, render(res))
    path.chmod(0o644)  # a page to share
    return path
