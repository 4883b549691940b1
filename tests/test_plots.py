"""`gsweep plot` figures on synthetic results with planted phases (no JAX, no training).

The cell grid of the phase diagram is checked as data (majority phase, share, colour, text), and
every figure as an image that is non-empty and not blank."""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gsweep.errors import UserError
from gsweep.plot.commands import plot_command
from gsweep.plot.common import is_log_spaced, output_path, query_runs
from gsweep.plot.curves import curve_bands, select_cells
from gsweep.plot.grok_time import grok_time_data
from gsweep.plot.phase_diagram import CENSORED_COLOR, PHASE_COLORS, phase_diagram_data
from gsweep.results import load_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_results import write_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("plots") / "synthetic")


def _args(kind, path, **kw):
    d = {"kind": kind, "results_dir": str(path), "x": None, "y": None, "facet": None, "metric": "phase",
         "out": None, "threshold": None, "gap": None, "where": None, "split": None}
    d.update(kw)
    return argparse.Namespace(**d)


def _not_blank(path):
    assert path.exists() and path.stat().st_size > 1000
    a = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert a.shape[0] > 100 and a.shape[1] > 100
    assert a.std() > 5, f"{path} looks blank"


def _cell(d, frac, wd, depth):
    c = d.cells
    r = c[(c["task.data_frac"] == frac) & (c["train.weight_decay"] == wd) & (c["model.depth"] == depth)]
    assert len(r) == 1
    return r.iloc[0]


def test_phase_grid_majority_share_and_colour(syn):
    d = phase_diagram_data(load_results(syn))
    assert (d.x, d.y, d.facets) == ("task.data_frac", "train.weight_decay", ["model.depth"])
    assert d.y_log and not d.x_log and d.y_values == [0.0, 0.1, 1.0]
    assert len(d.cells) == 18
    expect = {  # (frac, wd, depth): (majority, agreeing, labelled)
        (0.2, 0.0, 1): ("memorization", 3, 3),
        (0.2, 0.1, 1): ("grokking", 3, 3),
        (0.5, 1.0, 1): ("grokking", 2, 3),
        (0.8, 1.0, 1): ("comprehension", 3, 3),
        (0.2, 1.0, 1): ("memorization", 2, 3),
        (0.2, 1.0, 2): ("confusion", 3, 3),
        (0.2, 0.1, 2): ("grokking", 2, 3),
        (0.8, 0.1, 2): ("comprehension", 2, 2),  # the third run diverged
    }
    for (frac, wd, depth), (phase, k, n) in expect.items():
        r = _cell(d, frac, wd, depth)
        assert r["phase"] == phase, (frac, wd, depth)
        assert r["agree"] == k and r["share"] == pytest.approx(k / n)
        assert r["color"] == PHASE_COLORS[phase]
        assert r["text"].startswith(f"{k}/{n}")
    assert not _cell(d, 0.5, 1.0, 1)["tie"]
    assert "div" in _cell(d, 0.8, 0.1, 2)["text"] and _cell(d, 0.8, 0.1, 2)["n_diverged"] == 1
    # the literature's picture, planted: memorization at wd 0, grokking at low fraction, comprehension at high
    assert (d.cells.loc[d.cells["train.weight_decay"] == 0.0, "phase"] == "memorization").all()
    assert (d.cells.loc[(d.cells["train.weight_decay"] > 0) & (d.cells["task.data_frac"] == 0.8), "phase"]
            == "comprehension").all()


def test_continuous_metric_censored_cells(syn):
    d = phase_diagram_data(load_results(syn), metric="t_gen")
    assert d.step_metric and type(d.norm).__name__ == "LogNorm"
    r = _cell(d, 0.2, 1.0, 1)  # 1500, never, never: no median within the budget
    assert bool(r["censored"]) and r["text"] == ">2000" and r["color"] == CENSORED_COLOR
    assert np.isnan(r["value"])
    r = _cell(d, 0.2, 0.1, 2)  # KM median 1200 with one run censored
    assert not r["censored"] and r["value"] == 1200 and r["text"].startswith("1200")
    assert "(2/3)" in r["text"] and r["color"] != CENSORED_COLOR
    for wd0 in d.cells[d.cells["train.weight_decay"] == 0.0].itertuples():
        assert wd0.censored and wd0.text == ">2000"
    # every censored cell's text is a bound, never a number
    for t in d.cells.loc[d.cells["censored"].astype(bool), "text"]:
        assert t.startswith(">")
    # colours follow the values: the faster cell is darker on viridis than the slower one
    fast, slow = _cell(d, 0.8, 1.0, 1), _cell(d, 0.2, 0.1, 1)
    assert fast["value"] < slow["value"] and fast["color"] != slow["color"]


def test_other_metrics(syn):
    res = load_results(syn)
    d = phase_diagram_data(res, metric="final_test_acc")
    assert not d.step_metric and not d.cells["censored"].any()
    assert _cell(d, 0.8, 1.0, 1)["text"] == "1.00" and _cell(d, 0.2, 0.0, 1)["text"] == "0.95"
    d = phase_diagram_data(res, metric="t_hop2")
    assert _cell(d, 0.5, 1.0, 1)["value"] == 1200
    d = phase_diagram_data(res, metric="delay")
    assert _cell(d, 0.8, 1.0, 1)["value"] == 200 and _cell(d, 0.2, 1.0, 2)["text"] == "no fit"
    assert _cell(d, 0.2, 0.0, 1)["text"] == ">1900"


def test_threshold_relabels_the_diagram(syn):
    d = phase_diagram_data(load_results(syn, threshold=0.9))
    assert (d.cells.loc[d.cells["train.weight_decay"] == 0.0, "phase"] == "grokking").all()
    # gap 20: at fraction 0.5, t_gen 1000 / 1100 / 500 after t_fit 100 all count as comprehension
    d = phase_diagram_data(load_results(syn, gap=20.0))
    assert _cell(d, 0.5, 1.0, 1)["phase"] == "comprehension" and _cell(d, 0.5, 1.0, 1)["text"] == "3/3"


def test_ties_are_marked(syn):
    # gap 10.5: 1000 and 1100 vs 10.5 * 100 -> one comprehension, one grokking, plus the 500 run:
    # 2 comprehension, 1 grokking; at data fraction 0.2 depth 2 wd 0.1 (1000, never, 1200): 1 each
    d = phase_diagram_data(load_results(syn, gap=10.5))
    r = _cell(d, 0.2, 0.1, 2)
    assert r["tie"] and r["phase"] == "comprehension" and r["text"] == "1/3 tie"


def test_missing_columns_are_user_errors(syn):
    res = load_results(syn)
    with pytest.raises(UserError, match=r"--metric 'nope'.*valid: .*t_gen"):
        phase_diagram_data(res, metric="nope")
    with pytest.raises(UserError, match=r"--x 'task\.frac'.*valid: .*task\.data_frac"):
        phase_diagram_data(res, x="task.frac")
    with pytest.raises(UserError, match="numeric"):
        phase_diagram_data(res, metric="status")


def test_phase_diagram_png_and_svg(syn, tmp_path):
    assert plot_command(_args("phase-diagram", syn)) == 0
    _not_blank(syn / "plots" / "phase-diagram-phase.png")
    out = tmp_path / "pd.svg"
    assert plot_command(_args("phase-diagram", syn, metric="t_gen", out=str(out))) == 0
    head = out.read_text()[:200].lstrip()
    assert head.startswith("<?xml") or head.startswith("<svg")
    assert "hatch" in out.read_text() or "pattern" in out.read_text()  # censored cells are hatched


def test_curves(syn, tmp_path):
    res = load_results(syn)
    keys, cells = select_cells(res, "train.weight_decay == 1.0 and model.depth == 1")
    assert keys == ["task.data_frac"] and len(cells) == 3 and all(len(ids) == 3 for _, ids in cells)
    ids = cells[0][1]  # frac 0.2: t_gen 1500, never, never -> the median test acc stays below 0.99
    b = curve_bands(res.curves, ids, "test", "acc")
    assert b["median"].max() < 0.99 and (b["q75"] >= b["median"]).all() and (b["q25"] <= b["median"]).all()
    assert b["n"].max() == 3
    out = tmp_path / "c.png"
    assert plot_command(_args("curves", syn, where="train.weight_decay == 1.0", split=["train", "test", "hop2"],
                              out=str(out))) == 0
    _not_blank(out)
    with pytest.raises(UserError, match="--split 'nope'.*valid: .*hop2"):
        plot_command(_args("curves", syn, split=["nope"]))
    with pytest.raises(UserError, match="no run matches"):
        plot_command(_args("curves", syn, where="train.weight_decay > 100"))
    with pytest.raises(UserError, match="--where"):
        plot_command(_args("curves", syn, where="train.weight_decay >>> 1"))


def test_grok_time(syn):
    res = load_results(syn)
    x, lines, pts, runs = grok_time_data(res)
    assert x == "task.data_frac" and lines == ["train.weight_decay", "model.depth"]
    p = pts.set_index(["train.weight_decay", "model.depth", "task.data_frac"])
    assert p.loc[(0.1, 2, 0.2), "median"] == 1200 and not p.loc[(0.1, 2, 0.2), "censored"]
    assert p.loc[(1.0, 1, 0.2), "censored"] and p.loc[(1.0, 1, 0.2), "bound"] == 2000
    assert p.loc[(0.1, 2, 0.8), "n"] == 2  # the diverged run is left out
    # censored runs sit at their steps_done, not dropped
    assert len(runs) == 53 and (runs.loc[~runs["reached"], "t"] == 2000).all()
    assert plot_command(_args("grok-time", syn)) == 0
    _not_blank(syn / "plots" / "grok-time.png")


def test_one_swept_key_and_nothing_swept(tmp_path):
    one = write_synthetic(tmp_path / "one", data_frac=0.5, weight_decay=(0.0, 0.1, 1.0), depth=1, seeds=1)
    d = phase_diagram_data(load_results(one))
    assert d.x == "task.data_frac" and d.y == "train.weight_decay" and d.facets == []
    assert len(d.cells) == 3
    for kind in ("phase-diagram", "curves", "grok-time"):
        out = tmp_path / f"one-{kind}.png"
        assert plot_command(_args(kind, one, out=str(out))) == 0
        _not_blank(out)
    frac = write_synthetic(tmp_path / "frac", data_frac=(0.2, 0.5, 0.8), weight_decay=1.0, depth=1, seeds=2)
    d = phase_diagram_data(load_results(frac))
    assert d.x == "task.data_frac" and d.y is None and len(d.cells) == 3
    none = write_synthetic(tmp_path / "none", data_frac=0.8, weight_decay=1.0, depth=1, seeds=1)
    d = phase_diagram_data(load_results(none))
    assert len(d.cells) == 1 and d.cells.iloc[0]["phase"] == "comprehension"
    for kind in ("phase-diagram", "curves", "grok-time"):
        out = tmp_path / f"none-{kind}.png"
        assert plot_command(_args(kind, none, out=str(out))) == 0
        _not_blank(out)


def test_facet_and_axes_flags(syn, tmp_path):
    res = load_results(syn)
    d = phase_diagram_data(res, x="train.weight_decay", y="model.depth", facet="task.data_frac")
    assert d.facets == ["task.data_frac"] and len(d.facet_values) == 3 and d.x_log
    d = phase_diagram_data(res, facet="model.depth", x="task.data_frac", y="train.weight_decay")
    assert d.pooled == []
    d = phase_diagram_data(res, facet="task.data_frac")  # the axes make room for the facet
    assert (d.x, d.y, d.facets) == ("model.depth", "train.weight_decay", ["task.data_frac"])
    with pytest.raises(UserError, match="--facet"):
        phase_diagram_data(res, x="model.depth", facet="model.depth")
    with pytest.raises(UserError, match="--x and --y"):
        phase_diagram_data(res, x="model.depth", y="model.depth")


def test_helpers(tmp_path, syn):
    runs = load_results(syn).runs
    assert len(query_runs(runs, "train.weight_decay > 0 and model.depth == 2")) == 18
    assert len(query_runs(runs, "`train.weight_decay` > 0")) == 36  # pandas-style backquotes still read
    assert len(query_runs(runs, "phase == 'a.b' or train.weight_decay in [0.1]")) == 18
    with pytest.raises(UserError, match="--where"):  # parsed, never evaluated: no method calls
        query_runs(runs, "train.weight_decay.isin([0.1])")
    assert is_log_spaced([0.0, 1e-3, 1e-2, 1e-1, 1.0]) and not is_log_spaced([0.2, 0.4, 0.6, 0.8])
    assert not is_log_spaced(["a", "b"])
    res = load_results(syn)
    assert output_path(res, None, "x.png") == syn / "plots" / "x.png"
    assert output_path(res, str(tmp_path / "dir"), "x.png") == tmp_path / "dir" / "x.png"
    with pytest.raises(UserError, match="suffix"):
        output_path(res, str(tmp_path / "x.jpg"), "x.png")


def test_cli_plots_without_jax(syn, tmp_path):
    out = tmp_path / "cli.png"
    code = ("import sys; from gsweep.cli import main;"
            f"rc = main(['plot', 'phase-diagram', {str(syn)!r}, '--metric', 't_gen', '--out', {str(out)!r}]);"
            f"rc2 = main(['plot', 'phase-diagram', {str(syn)!r}, '--metric', 'nope']);"
            "assert 'jax' not in sys.modules, 'jax imported'; sys.exit(rc * 10 + rc2)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stderr  # first ok (0), second a user error (2)
    assert "'nope'" in p.stderr and "t_gen" in p.stderr
    _not_blank(out)


def test_runs_table_is_not_modified(syn):
    before = pd.read_parquet(syn / "runs.parquet")
    plot_command(_args("phase-diagram", syn, threshold=0.5, out=str(syn / "plots" / "t.png")))
    pd.testing.assert_frame_equal(before, pd.read_parquet(syn / "runs.parquet"))


def test_all_censored_metric_has_no_colour_scale(syn, tmp_path, capsys):
    """A metric no run reaches: every cell hatched, no colorbar with made-up ticks, and a note."""
    from gsweep.plot.phase_diagram import draw, has_values

    res = load_results(syn)
    res.runs["t_gen"] = pd.NA  # as if nobody generalised within the budget
    d = phase_diagram_data(res, metric="t_gen")
    assert d.cells["censored"].astype(bool).all() and not has_values(d)
    fig = draw(res, d)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert all(ax.get_label() != "<colorbar>" for ax in panels)
    d2 = phase_diagram_data(load_results(syn), metric="t_gen")  # some cells reached: a colour scale
    assert has_values(d2)
    assert any(ax.get_label() == "<colorbar>" for ax in draw(load_results(syn), d2).axes)


def test_share_map_shows_minority_phases(syn, tmp_path):
    """--metric share:PHASE colours each cell by the share of its labelled runs in that phase, with the
    count: the 1-of-3 comprehension run in a majority-grokking cell is visible."""
    d = phase_diagram_data(load_results(syn), metric="share:comprehension")
    r = _cell(d, 0.5, 1.0, 1)  # seeds 0, 1 grokking, seed 2 comprehension
    assert r["value"] == pytest.approx(1 / 3) and r["text"].startswith("0.33\n1/3")
    assert _cell(d, 0.8, 0.1, 2)["text"].startswith("1.00\n2/2")  # the diverged run is not labelled
    g = phase_diagram_data(load_results(syn), metric="share:grokking")
    assert _cell(g, 0.2, 0.1, 1)["value"] == 1.0 and _cell(g, 0.2, 0.0, 1)["value"] == 0.0
    assert _cell(g, 0.2, 0.0, 1)["color"] != _cell(g, 0.2, 0.1, 1)["color"]
    with pytest.raises(UserError, match="share:PHASE"):
        phase_diagram_data(load_results(syn), metric="share:nonsense")
    out = tmp_path / "share.png"
    assert plot_command(_args("phase-diagram", syn, metric="share:grokking", out=str(out))) == 0
    _not_blank(out)
