"""`gsweep summarize` on synthetic results with planted phases and times (no JAX, no training)."""

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gsweep.analysis.summary import summarize, summarize_command
from gsweep.errors import UserError
from gsweep.results import load_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_results import write_synthetic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("task.data_frac", "model.depth", "train.weight_decay")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("syn") / "synthetic")


def _args(path, **kw):
    d = {"results_dir": str(path), "by": None, "format": "json", "threshold": None, "gap": None, "gap_mode": None,
         "sensitivity": False}
    d.update(kw)
    return argparse.Namespace(**d)


def _json(path, capsys, **kw):
    assert summarize_command(_args(path, **kw)) == 0
    return json.loads(capsys.readouterr().out)


def _cells(out):
    return {tuple(c["cell"][k] for k in out["by"]): c for c in out["cells"]}


def test_synthetic_labels_are_as_planted(syn):
    runs = pd.read_parquet(syn / "runs.parquet")
    assert len(runs) == 54
    r = runs[(runs["task.data_frac"] == 0.2) & (runs["train.weight_decay"] == 0.1) & (runs["model.depth"] == 2)]
    assert sorted(r["phase"].dropna()) == ["grokking", "grokking", "memorization"]
    assert (runs.loc[runs["train.weight_decay"] == 0.0, "phase"] == "memorization").all()


def test_json_cells(syn, capsys):
    out = _json(syn, capsys)
    assert set(out["by"]) == set(KEYS) and len(out["cells"]) == 18
    assert out["threshold"] == 0.99 and out["budget"] == 2000
    cells = {tuple(c["cell"][k] for k in KEYS): c for c in out["cells"]}

    c = cells[(0.2, 1, 0.1)]  # grokking, t_gen 1000/1200/1500
    assert c["n_runs"] == 3 and c["n_grokking"] == 3 and c["p_grokking"] == 1.0
    assert c["t_gen_median"] == 1200 and c["t_fit_median"] == 100
    assert c["p_grokking_ci95"][1] == 1.0 and c["p_grokking_ci95"][0] == pytest.approx(0.4385, abs=1e-4)

    c = cells[(0.2, 2, 0.1)]  # 1000, never (censored at 2000), 1200: KM median 1200, not 1100
    assert c["t_gen_median"] == 1200 and c["t_gen_median_censored"] is False
    assert c["phases"] == {"comprehension": 0, "grokking": 2, "memorization": 1, "confusion": 0}
    assert c["p_grokking"] == pytest.approx(2 / 3)

    c = cells[(0.2, 1, 1.0)]  # 1500, never, never: median undefined
    assert c["t_gen_median"] is None and c["t_gen_median_censored"] is True
    assert c["t_gen_median_bound"] == 2000

    c = cells[(0.2, 2, 1.0)]  # confusion: nothing reached, neither t_fit nor t_gen
    assert c["phases"]["confusion"] == 3
    assert c["t_fit_median"] is None and c["t_fit_median_censored"] is True

    c = cells[(0.8, 2, 0.1)]  # one diverged run, counted apart
    assert c["n_runs"] == 3 and c["n_diverged"] == 1 and c["n"] == 2
    assert sum(c["phases"].values()) == 2 and c["t_gen_median"] == 200

    c = cells[(0.5, 1, 1.0)]  # grokking 1000, 1100; comprehension 500
    assert c["phases"]["grokking"] == 2 and c["phases"]["comprehension"] == 1
    assert c["t_gen_median"] == 1000
    assert cells[(0.5, 1, 1.0)]["t_hop2_median"] == 1200  # hop2 = test + 200


def test_table_and_csv_show_censored_medians_as_greater_than_steps(syn, capsys):
    assert summarize_command(_args(syn, format="table")) == 0
    table = capsys.readouterr().out
    assert ">2000" in table and "grokking" in table and "P(grok)" in table
    assert summarize_command(_args(syn, format="csv")) == 0
    df = pd.read_csv(io.StringIO(capsys.readouterr().out))
    row = df[(df["task.data_frac"] == 0.2) & (df["model.depth"] == 1) & (df["train.weight_decay"] == 1.0)].iloc[0]
    assert row["t_gen_median"] == ">2000"
    row = df[(df["task.data_frac"] == 0.2) & (df["model.depth"] == 2) & (df["train.weight_decay"] == 0.1)].iloc[0]
    assert row["t_gen_median"] == "1200" and row["grokking"] == 2


def test_relabel_with_threshold(syn, capsys):
    # weight decay 0: test plateaus at 0.95 from step 1000 -> at threshold 0.9 they grok (1000 >= 10 * 100)
    out = _json(syn, capsys, threshold=0.9, by=["train.weight_decay"])
    assert out["threshold"] == 0.9 and out["by"] == ["train.weight_decay"]
    c = _cells(out)[(0.0,)]
    assert c["n_runs"] == 18 and c["phases"]["grokking"] == 18 and c["t_gen_median"] == 1000
    # the files are untouched
    assert (pd.read_parquet(syn / "runs.parquet").query("`train.weight_decay` == 0")["phase"] == "memorization").all()


def test_relabel_with_gap(syn, capsys):
    # at data fraction 0.5, t_gen 1000 / 1100 / 500 after t_fit 100
    out = _json(syn, capsys, gap=20.0)  # 1000 < 20 * 100: comprehension
    c = next(c for c in out["cells"] if c["cell"] == {"task.data_frac": 0.5, "model.depth": 1,
                                                       "train.weight_decay": 0.1})
    assert c["phases"]["comprehension"] == 3
    out = _json(syn, capsys, gap=950.0, gap_mode="absolute")  # 900 -> comprehension, 1000 -> grokking
    c = next(c for c in out["cells"] if c["cell"] == {"task.data_frac": 0.5, "model.depth": 1,
                                                       "train.weight_decay": 0.1})
    assert c["phases"]["grokking"] == 1 and c["phases"]["comprehension"] == 2
    assert out["gap_mode"] == "absolute"


def test_by_unknown_key_names_it(syn):
    with pytest.raises(UserError, match=r"'train\.nope'.*valid: .*train\.weight_decay"):
        summarize(load_results(syn), ["train.nope"])


def test_missing_dir_and_bad_threshold(tmp_path, syn):
    with pytest.raises(UserError, match="no such results dir"):
        load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="runs.parquet"):
        load_results(tmp_path / "empty")
    with pytest.raises(UserError, match="--threshold"):
        load_results(syn, threshold=1.5)


def test_one_swept_key_and_single_cell(tmp_path, capsys):
    one = write_synthetic(tmp_path / "one", data_frac=0.5, weight_decay=(0.0, 1.0), depth=1, seeds=2)
    out = _json(one, capsys)
    assert out["by"] == ["train.weight_decay"] and len(out["cells"]) == 2
    assert _cells(out)[(0.0,)]["phases"]["memorization"] == 2
    single = write_synthetic(tmp_path / "single", data_frac=0.8, weight_decay=1.0, depth=1, seeds=1)
    out = _json(single, capsys)
    assert out["by"] == [] and len(out["cells"]) == 1
    assert out["cells"][0]["cell"] == {} and out["cells"][0]["phases"]["comprehension"] == 1
    assert summarize_command(_args(single, format="table")) == 0
    assert "comprehension" in capsys.readouterr().out


def test_cli_json_alone_on_stdout_and_no_jax(syn):
    code = (f"import sys; sys.argv = ['gsweep', 'summarize', {str(syn)!r}, '--format', 'json', '--threshold', '0.9'];"
            "from gsweep.cli import main; rc = main(sys.argv[1:]);"
            "assert 'jax' not in sys.modules, 'jax imported'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)  # the whole of stdout is one JSON document
    assert out["threshold"] == 0.9 and out["n_runs"] == 54


def test_sensitivity_recounts_phases_over_threshold_and_gap(syn, capsys):
    out = _json(syn, capsys, sensitivity=True)
    sens = {(r["threshold"], r["gap"]): r for r in out["sensitivity"]}
    assert set(sens) == {(t, g) for t in (0.8, 0.9, 0.95, 0.99) for g in (2, 5, 10, 20)}
    runs = pd.read_parquet(syn / "runs.parquet")
    planted = runs["phase"].dropna().value_counts().to_dict()  # labelled at threshold 0.99, gap 10
    row = sens[(0.99, 10)]
    assert {p: row[p] for p in planted} == planted and row["n"] == int(runs["phase"].notna().sum())
    # at 0.9 the weight-decay-0 runs (test plateau 0.95 from step 1000, t_fit 100) become grokking
    assert sens[(0.9, 10)]["grokking"] > row["grokking"] and sens[(0.9, 10)]["memorization"] < row["memorization"]
    # a larger gap turns grokking runs into comprehension, never the other way
    assert sens[(0.99, 20)]["grokking"] <= row["grokking"] <= sens[(0.99, 2)]["grokking"]
    assert summarize_command(_args(syn, format="table", sensitivity=True)) == 0
    text = capsys.readouterr().out
    assert "unresolved" in text and "0.8" in text and "20" in text


def test_sensitivity_grid_holds_the_label_in_use_and_reads_absolute_gaps_as_steps(syn, capsys):
    from gsweep.analysis.sensitivity import sensitivity_grid

    assert sensitivity_grid(0.99, 10) == ((0.8, 0.9, 0.95, 0.99), (2, 5, 10, 20))
    assert sensitivity_grid(0.97, 3) == ((0.8, 0.9, 0.95, 0.97, 0.99), (2, 3, 5, 10, 20))
    assert sensitivity_grid(0.99, 400, "absolute")[1] == (100, 200, 400, 800, 1600)
    with pytest.raises(ValueError, match="gap_mode"):
        sensitivity_grid(0.99, 10, "log")
    # absolute gaps of 400 steps: the row at the label in use agrees with the summary's own counts, and a
    # longer gap never makes more grokking runs
    out = _json(syn, capsys, sensitivity=True, gap_mode="absolute", gap=400)
    sens = {(r["threshold"], r["gap"]): r for r in out["sensitivity"]}
    assert {g for _, g in sens} == {100, 200, 400, 800, 1600}
    row = sens[(0.99, 400)]
    for phase in ("grokking", "comprehension", "memorization", "confusion"):
        assert row[phase] == sum(c["phases"][phase] for c in out["cells"]), phase
    grok = [sens[(0.99, g)]["grokking"] for g in (100, 200, 400, 800, 1600)]
    assert grok == sorted(grok, reverse=True) and grok[0] > grok[-1]
