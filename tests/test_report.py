"""gsweep report: a self-contained page whose data match the results, bad input as one line, and the
page in a real (headless Chromium) browser: the map's cells, no console errors, a click on a cell
shows the curves of exactly that cell's runs."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gsweep.cli import main
from gsweep.plot.phase_diagram import choose_axes, phase_diagram_data
from gsweep.report.data import MISSING
from gsweep.results import load_results
from tests.browser import Browser, find_chromium
from tests.synthetic_results import write_synthetic


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "synthetic")


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="gsweep-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_and_carries_the_results(syn, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(syn), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    assert not re.search(r"<script[^>]+src=", html), "every script is inlined"
    assert not re.search(r"<link[^>]+href=\"https?:", html)
    d = _data(html)
    res = load_results(syn)
    assert d["runs"]["run_id"] == list(res.runs["run_id"])
    assert d["defaults"] == {"x": "task.data_frac", "y": "train.weight_decay", "facet": "model.depth"}
    # the curves decode to the parquet values (acc within one uint16 step, loss within the log quantum)
    c = d["curves"]
    steps = np.array(c["steps"])
    curves = res.curves
    for split in ("test", "hop2"):
        acc = np.frombuffer(base64.b64decode(c["acc"][split]), dtype="<u2").reshape(len(res.runs), len(steps))
        loss = np.frombuffer(base64.b64decode(c["loss"][split]), dtype="<u2").reshape(len(res.runs), len(steps))
        lo, hi = c["loss_log10"]
        for i in (0, 17, len(res.runs) - 1):
            rid = res.runs["run_id"][i]
            want = curves[(curves["run_id"] == rid) & (curves["split"] == split)].sort_values("step")
            have = acc[i] != MISSING
            assert list(steps[have]) == list(want["step"])
            np.testing.assert_allclose(acc[i][have] / 65534, want["acc"], atol=1 / 65534)
            got_loss = 10 ** (lo + loss[i][have] / 65534 * (hi - lo))
            np.testing.assert_allclose(np.log10(got_loss), np.log10(want["loss"]), atol=(hi - lo) / 65534)
    # the diverged run stops at its divergence step
    div = res.runs.index[res.runs["status"] == "diverged"][0]
    acc = np.frombuffer(base64.b64decode(c["acc"]["test"]), dtype="<u2").reshape(len(res.runs), len(steps))
    assert steps[acc[div] != MISSING].max() == 500
    assert d["banner"] is None
    assert "t_gen_median" in html and "&gt;2000" in html  # the summary table, censored medians as >N


def test_default_output_and_status_banner(syn, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(syn, d)
    meta = json.loads((d / "meta.json").read_text())
    meta["status"] = "interrupted"
    meta["n_runs"] = 60
    (d / "meta.json").write_text(json.dumps(meta))
    runs = pd.read_parquet(d / "runs.parquet")
    runs.loc[0, "status"] = "running"
    runs.to_parquet(d / "runs.parquet", index=False)
    assert main(["report", str(d)]) == 0
    data = _data((d / "report.html").read_text())
    assert data["banner"].startswith("This sweep was interrupted: 53 of 60 runs finished")


@pytest.mark.parametrize("case", ["missing", "file", "empty", "not-results", "running", "bad-out"])
def test_bad_input_is_one_line(case, syn, tmp_path, capsys):
    d = tmp_path / "d"
    out = []
    if case == "file":
        d.write_text("x")
    elif case == "empty":
        d.mkdir()
    elif case == "not-results":
        d.mkdir()
        (d / "notes.txt").write_text("hello")
    elif case == "running":
        d.mkdir()
        (d / "spec.yaml").write_text((syn / "spec.yaml").read_text())
        (d / "meta.json").write_text(json.dumps({"status": "running"}))
    elif case == "bad-out":
        d, out = syn, ["--out", str(tmp_path / "r.png")]
    assert main(["report", str(d), *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gsweep: error: ") and err.count("\n") == 1, err
    want = {"missing": "no such results dir", "file": "not a results dir", "empty": "empty",
            "not-results": "not a results dir", "running": "still running", "bad-out": "HTML"}[case]
    assert want in err


def test_no_jax_needed(syn, tmp_path):
    code = ("import sys, gsweep; gsweep.report(sys.argv[1], sys.argv[2]); "
            "assert 'jax' not in sys.modules, 'the report imported JAX'")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code,
                    str(syn), str(tmp_path / "r.html")], check=True, env=env)


# ----------------------------------------------------------------------------------------------
# in a browser


def _chromium():
    if not find_chromium():
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; `make test` installs it where it can): "
                    "the report's browser test is skipped")


def test_report_in_headless_chromium(syn, tmp_path):
    _chromium()
    page = tmp_path / "r.html"
    assert main(["report", str(syn), "--out", str(page)]) == 0
    res = load_results(syn)
    x, y, facets, _ = choose_axes(res, None, None, None)
    want_cells = phase_diagram_data(res, x, y, facets[0]).cells
    shots = os.environ.get("GSWEEP_SCREENSHOTS")  # a folder: keep the before/after screenshots (README)
    with Browser(width=1280, height=1500) as b:
        b.open(page.as_uri(), "window.gsweep && window.gsweep.ready")
        assert b.eval("gsweep.state.cells.length") == len(want_cells)
        # what plotly drew: one coloured (or censored/diverged) square per cell
        drawn = b.eval("""document.getElementById('map').data.reduce((n, t) =>
            n + t.z.flat().filter(v => v !== null).length, 0)""")
        assert drawn == len(want_cells)
        assert b.eval("document.querySelectorAll('#map .heatmaplayer image, #map .hm image').length") >= 1
        assert b.eval("document.getElementById('cell').hidden") is True
        if shots:
            b.screenshot(Path(shots) / "report-map.png")
        # the cell (data_frac 0.8, weight decay 0.1, depth 2): one of its three runs diverged at step 500
        cells = b.eval("gsweep.state.cells.map(c => [c.facet, c.y, c.x])")
        target = cells.index([2, 0.1, 0.8])
        sel = res.runs[(res.runs["model.depth"] == 2) & (res.runs["train.weight_decay"] == 0.1)
                       & (res.runs["task.data_frac"] == 0.8)]
        assert len(sel) == 3
        pt = b.eval(f"gsweep.cellCenter({target})")
        b.click(pt["x"], pt["y"])
        b.wait_for("gsweep.state.selected !== null", 10)
        assert b.eval("gsweep.state.selected.id") == target
        shown = b.eval("Array.from(new Set(document.getElementById('curves').data.filter(t => t.meta && t.meta.run)"
                       ".map(t => t.meta.run))).sort()")
        assert shown == sorted(sel["run_id"]), "the curves of exactly the clicked cell's runs"
        assert b.eval("gsweep.state.curveRunIds") == sorted(sel["run_id"])
        splits = b.eval("Array.from(new Set(document.getElementById('curves').data.filter(t => t.meta && t.meta.median)"
                        ".map(t => t.meta.median))).sort()")
        assert splits == ["hop2", "test", "train"]
        assert b.eval("document.getElementById('curves').layout.xaxis.type") == "log"
        rows = b.eval("Array.from(document.querySelectorAll('#cell-runs tr[data-run]')).map(r => r.dataset.run).sort()")
        assert rows == sorted(sel["run_id"])
        # the diverged run's curve stops at its divergence step
        div = sel.loc[sel["status"] == "diverged", "run_id"].iloc[0]
        last = b.eval(f"Math.max(...document.getElementById('curves').data.filter(t => t.meta && t.meta.run === "
                      f"'{div}').map(t => Math.max(...t.x)))")
        assert last == 500
        # another metric and axis choice redraws without errors; censored cells read >N
        b.eval("(() => { const s = document.getElementById('sel-metric'); s.value = 't_gen';"
               " s.dispatchEvent(new Event('change')); })()")
        texts = b.eval("gsweep.state.cells.map(c => c.text)")
        assert ">2000" in texts
        if shots:
            b.eval("(() => { const s = document.getElementById('sel-metric'); s.value = 'phase';"
                   f" s.dispatchEvent(new Event('change')); gsweep.showCell({target}); }})()")
            b.eval("window.scrollTo(0, 0)")
            b.screenshot(Path(shots) / "report-cell.png")
        assert b.errors() == []
