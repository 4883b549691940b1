"""gsweep.load / gsweep.run: the notebook API (one implementation with the CLI), the safe `where`
filter, and the README's notebook example run as written."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gsweep
from gsweep.analysis.summary import summarize_command
from gsweep.api import Sweep, where_mask
from gsweep.errors import UserError
from tests.synthetic_results import write_synthetic

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "synthetic")


def test_import_is_light():
    code = "import sys, gsweep; bad = [m for m in ('jax', 'pandas', 'matplotlib') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_load_tables_and_lazy_curves(syn):
    sw = gsweep.load(syn)
    assert isinstance(sw, Sweep) and len(sw.runs) == 54
    assert sw._curves is None  # curves.parquet is read on first use
    assert set(sw.curves["split"]) == {"train", "test", "hop2"}
    assert sw.spec["name"] == "synthetic" and sw.meta["status"] == "done"
    assert "54 runs" in repr(sw)


def test_summarize_is_the_cli_summary(syn, capsys):
    sw = gsweep.load(syn)
    df = sw.summarize()
    ns = type("A", (), {"results_dir": str(syn), "by": None, "format": "json", "threshold": None, "gap": None,
                        "gap_mode": None})
    summarize_command(ns)
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert len(df) == len(cells) == 18
    assert list(df["n_grokking"]) == [c["n_grokking"] for c in cells]
    # relabelled: with threshold 0.9 the weight-decay-0 runs (test plateau 0.95 from step 1000) grok
    by = sw.summarize(by="train.weight_decay", threshold=0.9)
    assert by.set_index("train.weight_decay").loc[0.0, "n_grokking"] == 18
    assert sw.summarize(by="train.weight_decay").set_index("train.weight_decay").loc[0.0, "n_grokking"] == 0
    # the KM median of the designed cell (0.2, 0.1, depth 2): 1200, where dropping the censored run gives 1100
    row = df[(df["task.data_frac"] == 0.2) & (df["train.weight_decay"] == 0.1) & (df["model.depth"] == 2)]
    assert row["t_gen_median"].item() == 1200


def test_where_filters_runs_and_curves(syn):
    sw = gsweep.load(syn)
    sub = sw.where("train.weight_decay > 0 and model.depth == 2")
    assert len(sub.runs) == 18 and (sub.runs["train.weight_decay"] > 0).all()
    assert set(sub.curves["run_id"]) == set(sub.runs["run_id"])
    assert len(sw.runs) == 54  # the original is unchanged
    assert len(sw.where("seed in [0, 1] or not (task.data_frac < 0.5)").runs) == 36 + 12  # seeds 0, 1; seed 2 at data_frac 0.5 and 0.8
    assert len(sw.where("0.2 < task.data_frac <= 0.8").runs) == 36
    assert len(sw.where("phase == 'grokking'").runs) == int((sw.runs["phase"] == "grokking").sum())


@pytest.mark.parametrize("expr,msg", [
    ("__import__('os').system('echo hacked')", "Call is not allowed"),
    ("__import__('os').system('echo hacked') == 0", "Call is not allowed"),
    ("train.weight_decay.__class__ == 1", "unknown column"),
    ("nope > 1", "unknown column 'nope'"),
    ("train.weight_decay >", "not a valid filter"),
    ("seed + 1 > 2", "BinOp is not allowed"),
    ("(lambda: 1)() == 1", "is not allowed"),
])
def test_where_rejects_anything_but_comparisons(syn, expr, msg):
    sw = gsweep.load(syn)
    with pytest.raises(UserError, match=re.escape(msg)):
        sw.where(expr)


def test_where_mask_handles_missing_values():
    import pandas as pd
    df = pd.DataFrame({"t_gen": pd.array([100, None, 300], dtype="Int64"), "x.y": [1.0, 2.0, 3.0]})
    assert where_mask(df, "t_gen < 200").tolist() == [True, False, False]
    assert where_mask(df, "x.y != 2").tolist() == [True, False, True]


def test_plots_return_figures(syn):
    from matplotlib.figure import Figure
    sw = gsweep.load(syn)
    assert isinstance(sw.plot.phase_diagram(metric="t_gen"), Figure)
    assert isinstance(sw.plot.curves(where="train.weight_decay == 1.0"), Figure)
    assert isinstance(sw.plot.grok_time(), Figure)


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- notebook example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no notebook example block"
    return m.group(1)


def test_readme_notebook_example_runs(tmp_path, monkeypatch):
    """The README's notebook example, as written, from a folder holding sweeps/ci-tiny.yaml."""
    (tmp_path / "sweeps").mkdir()
    shutil.copy(ROOT / "sweeps" / "ci-tiny.yaml", tmp_path / "sweeps" / "ci-tiny.yaml")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), ns)  # noqa: S102 - our own README
    sw = ns["sw"]
    assert isinstance(sw, Sweep) and len(sw.runs) == 8
    assert (tmp_path / "results" / "notebook" / "report.html").exists()
    assert np.isfinite(sw.runs["final_test_acc"]).all()
