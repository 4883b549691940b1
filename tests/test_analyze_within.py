"""`gsweep analyze` within cells, on constructed results dirs whose answer is known (no JAX, no training).

- an association that exists only across cells (a hyperparameter drives both splits; inside a cell they
  are independent): the pooled test finds it, the stratified and within-cell permutation tests do not;
- one that exists within cells: they find it;
- a target that passes through the source's held-out parts (``hop2_novel`` of ``modular_chain``) is
  flagged as overlapping and reported apart; the default target is a clean one;
- two analyses write two sets of files (named by source, target and threshold).
"""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from gsweep.analysis import predict
from gsweep.metrics.labels import compute_labels

STEPS = 1000
EVALS = [10, 20, 50, 100] + list(range(150, STEPS + 1, 50))


def constructed(path, *, within: bool, seeds=16, wds=(0.1, 0.3, 1.0, 3.0), fracs=(0.4, 0.7), seed=0):
    """modular_chain-like results: the cell's level (its place on the grid) sets P(test) and P(target);
    with ``within`` the target follows test inside each cell, else it is drawn independently of it."""
    rng = np.random.default_rng(seed)
    rows, crows = [], []
    cells = [(wd, fr) for wd in wds for fr in fracs]
    k = 0
    for ci, (wd, fr) in enumerate(cells):
        level = ci / (len(cells) - 1)
        for s in range(seeds):
            rid = f"r{k:04d}"
            k += 1
            grok = rng.random() < 0.05 + 0.9 * level
            if within:
                reason = rng.random() < (0.9 if grok else 0.1)
            else:
                reason = rng.random() < 0.05 + 0.9 * level
            t_gen = int(rng.choice(EVALS[6:14])) if grok else None
            t_h = int(rng.choice(EVALS[6:14])) if reason else None
            rows.append({"run_id": rid, "group_id": "g0", "seed": s, "task.name": "modular_chain", "task.op": "add",
                         "task.p": 7, "task.n_hop2": 200, "task.n_hop3": 200, "task.data_frac": fr,
                         "task.data_seed": 0, "model.depth": 1, "train.weight_decay": wd, "train.steps": STEPS,
                         "status": "done", "steps_done": STEPS})
            for step in EVALS:
                accs = {"train": 1.0 if step >= 100 else 0.5,
                        "test": 1.0 if t_gen is not None and step >= t_gen else 0.1,
                        "hop2": 1.0 if t_h is not None and step >= t_h else 0.1,
                        "hop2_novel": 1.0 if t_gen is not None and step >= t_gen else 0.1}
                for sp, acc in accs.items():
                    crows.append({"run_id": rid, "step": step, "split": sp, "loss": 1.0 - 0.9 * acc, "acc": acc,
                                  "weight_norm": 10.0 + rng.normal(), "train_loss_osc": rng.exponential()})
    runs = pd.DataFrame(rows)
    curves = pd.DataFrame(crows)
    runs = pd.concat([runs, compute_labels(curves, runs, 0.99, 10.0, "relative")], axis=1)
    path.mkdir(parents=True)
    runs.to_parquet(path / "runs.parquet", index=False)
    curves.to_parquet(path / "curves.parquet", index=False)
    (path / "meta.json").write_text(json.dumps({"status": "done",
                                                "swept_keys": ["task.data_frac", "train.weight_decay", "seed"]}))
    spec = {"name": "constructed", "task": {"name": "modular_chain", "p": 7, "data_frac": list(fracs)},
            "model": {"name": "transformer", "depth": 1}, "train": {"steps": STEPS, "weight_decay": list(wds)},
            "analysis": {"threshold": 0.99, "gap": 10.0, "gap_mode": "relative"}, "seeds": list(range(seeds))}
    (path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def across(tmp_path_factory):
    d = constructed(tmp_path_factory.mktemp("across") / "r", within=False)
    return d, predict.analyze(d, n_boot=100)


@pytest.fixture(scope="module")
def inside(tmp_path_factory):
    d = constructed(tmp_path_factory.mktemp("inside") / "r", within=True)
    return d, predict.analyze(d, n_boot=100)


def _row(out, target):
    return next(r for r in out["targets"] if r["target"] == target)


def test_association_only_across_cells_pooled_finds_within_cell_tests_do_not(across):
    _, out = across
    r = _row(out, "hop2")
    assert r["status"] == "clean"
    assert r["pooled_fisher"]["p"] < 0.01  # pooled over cells: a strong association
    assert r["cmh"]["p"] > 0.05 and r["permutation"]["p"] > 0.05  # none at fixed hyperparameters
    assert r["n_informative_cells"] >= 4


def test_association_within_cells_is_found(inside):
    _, out = inside
    r = _row(out, "hop2")
    assert r["cmh"]["p"] < 0.001 and r["permutation"]["p"] < 0.01
    holm = {c["name"]: c["p_holm"] for c in out["comparisons"]}
    assert any("hop2 (clean): cmh" in k and v < 0.05 for k, v in holm.items())


def test_overlapping_target_flagged_and_default_is_clean(across, tmp_path):
    d, out = across
    assert out["target"] == "hop2" and out["target_status"]["status"] == "clean"
    assert _row(out, "hop2_novel")["status"] == "overlapping"
    text = predict.format_summary(out)
    assert "clean targets" in text and "overlapping targets" in text
    assert text.index("clean targets") < text.index("overlapping targets")
    novel = predict.analyze(d, target="hop2_novel", n_boot=50)
    assert novel["target_status"]["status"] == "overlapping"
    assert "overlapping target: part of what it measures is the source" in predict.format_summary(novel)


def test_counts_comparisons_and_holm(across):
    _, out = across
    ps = [c["p"] for c in out["comparisons"]]
    assert out["n_comparisons"] == len(ps) > 6
    assert all(c["p_holm"] >= c["p"] - 1e-12 for c in out["comparisons"])
    text = predict.format_summary(out)
    assert f"{len(ps)} comparisons" in text and "Holm" in text
    assert "Cochran-Mantel-Haenszel" in text and "permutation" in text


def test_each_analysis_writes_its_own_files(across):
    d, out = across
    predict.analyze(d, target="hop2_novel", n_boot=50)
    predict.analyze(d, target="hop2", threshold=0.9, n_boot=50)
    names = sorted(p.name for p in d.glob("analysis*.json"))
    assert names == ["analysis-test-hop2-t0.9.json", "analysis-test-hop2-t0.99.json",
                     "analysis-test-hop2_novel-t0.99.json"]
    assert len(list(d.glob("predictors*.parquet"))) == 3 and len(list((d / "plots").glob("analyze-roc-*.png"))) == 3


def test_early_warning_within_cells_and_against_baseline(across):
    _, out = across
    sc = out["predictors"]["reasoned"]["scores"]
    # the baseline only knows the cell: inside a cell its score is constant, so it ranks nothing there
    assert sc["hyperparameters"]["auroc_within_cells"] == pytest.approx(0.5)
    for name in ("norm_fall", "loss_osc"):
        if sc.get(name, {}).get("vs_baseline"):
            assert -1 <= sc[name]["vs_baseline"]["difference"] <= 1
    assert out["predictors"]["reasoned"]["fold_seeds"]["hyperparameters"]


def test_delay_block_counts_generalisers(across):
    _, out = across
    d = out["delay"]
    assert d["n_generalised"] == d["n_grokking"] + d["n_comprehension"] > 0


def test_report_lists_every_analysis_and_the_sensitivity_table(tmp_path):
    from gsweep.report.data import analysis_text, summary_html
    from gsweep.results import load_results

    d = constructed(tmp_path / "r", within=True, seeds=4)
    predict.analyze(d, n_boot=20, plots=False)
    predict.analyze(d, target="hop2_novel", n_boot=20, plots=False)
    res = load_results(d)
    text = analysis_text(res)
    assert "2 analyses in this results dir" in text
    assert "analysis-test-hop2-t0.99.json" in text and "analysis-test-hop2_novel-t0.99.json" in text
    assert "overlapping target" in text
    html = summary_html(res)
    assert "unresolved" in html and "0.8" in html


def test_report_offers_share_maps():
    from pathlib import Path

    js = (Path(predict.__file__).parents[1] / "report" / "report.js").read_text()
    assert '"share:" + p' in js and "isShare(metric)" in js


def test_composition_null_chain_parts():
    """The held-out part counts are rebuilt from the task's own masks: clean splits have none, novel
    splits at least one; the prediction is train^(k-j) * test^j averaged over the split's chains."""
    from gsweep.analysis.composition_null import chain_heldout_parts, composition_null

    cfg = {"name": "modular_chain", "p": 7, "n_hop2": 200, "n_hop3": 200, "data_frac": 0.6, "data_seed": 3,
           "hop2_frac": 0.5, "hop3_frac": 0.5}
    parts = chain_heldout_parts(cfg)
    assert parts["hop2"].tolist() == [1.0, 0.0, 0.0] and parts["hop3"][0] == 1.0
    assert parts["hop2_novel"][0] == 0.0 and parts["hop2_novel"].sum() == pytest.approx(1.0)
    assert parts["hop3_novel"][0] == 0.0
    runs = pd.DataFrame([{**{f"task.{k}": v for k, v in cfg.items()}, "final_train_acc": 0.9,
                          "final_test_acc": 0.5, "final_hop2_acc": 0.95, "final_hop2_novel_acc": 0.2}])
    out = composition_null(runs, "modular_chain", ["train", "test", "hop2", "hop2_novel"])
    assert out["splits"]["hop2"]["predicted_median"] == pytest.approx(0.81)
    w = parts["hop2_novel"]
    assert out["splits"]["hop2_novel"]["predicted_median"] == pytest.approx(w[1] * 0.45 + w[2] * 0.25)
    assert out["splits"]["hop2"]["above"] == 1 and out["splits"]["hop2_novel"]["below"] == 1
    comp = pd.DataFrame([{"final_atomic_acc": 0.9, "final_test_acc": 0.5, "final_test_ood_acc": 0.9}])
    c = composition_null(comp, "composition", ["train", "atomic", "test", "test_ood"])
    assert c["splits"]["test"]["predicted_median"] == pytest.approx(0.81) and c["splits"]["test_ood"]["above"] == 1


def test_delay_ratio_partialled_on_t_gen():
    """log t_target = log t_gen + 0.5 log(t_gen / t_fit) + noise: the OLS finds the ratio's 0.5."""
    from gsweep.analysis.within import delay_block

    rng = np.random.default_rng(0)
    n = 60
    t_fit = rng.choice([50, 100, 200], n).astype(float)
    t_gen = t_fit * np.exp(rng.uniform(0, 3, n))
    t_tgt = np.exp(np.log(t_gen) + 0.5 * np.log(t_gen / t_fit) + rng.normal(0, 0.05, n))
    runs = pd.DataFrame({"t_fit": t_fit, "t_gen": t_gen,
                         "phase": np.where(t_gen >= 10 * t_fit, "grokking", "comprehension")})
    d = delay_block(runs, t_tgt, np.repeat(np.arange(6), 10), n_perm=200)
    c = d["ratio_vs_onset"]
    assert c["coef_log_ratio"] == pytest.approx(0.5, abs=0.05) and c["p"] < 1e-6
    assert d["n_generalised"] == n and d["n_grokking"] + d["n_comprehension"] == n


def test_where_restricts_the_runs_and_names_its_files(inside):
    d, full = inside
    sub = predict.analyze(d, where="train.weight_decay >= 1.0", n_boot=50, plots=False)
    assert sub["where"] == "train.weight_decay >= 1.0"
    assert sub["n_runs"] < full["n_runs"] and sub["n_cells"] == full["n_cells"] // 2
    assert sub["files"]["analysis"] != full["files"]["analysis"]  # a filtered analysis never overwrites
    assert (d / sub["files"]["analysis"]).is_file() and (d / full["files"]["analysis"]).is_file()
    assert "--where" in predict.format_summary(sub)
    from gsweep.errors import UserError

    with pytest.raises(UserError, match="matches none"):
        predict.analyze(d, where="train.weight_decay > 100", n_boot=20, plots=False)
