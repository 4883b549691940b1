"""Label resolution: the eval interval of t_fit / t_gen and whether the grid can tell the phase."""

import pandas as pd

from gsweep.metrics.labels import compute_labels


def curves_for(run, steps, fit_at, gen_at):
    rows = []
    for s in steps:
        rows.append({"run_id": run, "split": "train", "step": s, "acc": 1.0 if fit_at is not None and s >= fit_at else 0.0, "loss": 1.0})
        rows.append({"run_id": run, "split": "test", "step": s, "acc": 1.0 if gen_at is not None and s >= gen_at else 0.0, "loss": 1.0})
    return rows


def test_eval_interval_ratio_and_resolution():
    grid = [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1500, 2000, 3000]
    plan = {"late": (100, 2000), "unresolved": (100, 800), "prompt": (300, 400), "memo": (100, None),
            "unresolved_late": (100, 1000)}
    rows = []
    for r, (f, g) in plan.items():
        rows += curves_for(r, grid, f, g)
    runs = pd.DataFrame({"run_id": list(plan), "status": "done", "steps_done": 3000})
    lab = compute_labels(pd.DataFrame(rows), runs, threshold=0.99, gap=10).set_index(runs["run_id"])
    assert lab.loc["late", "phase"] == "grokking" and lab.loc["late", "phase_resolved"]
    assert lab.loc["late", "gen_eval_interval"] == 500 and lab.loc["late", "fit_eval_interval"] == 100
    assert lab.loc["late", "delay_ratio"] == 20.0
    # t_fit = 100 is the first evaluation after 0: the true crossing lies in (0, 100], so 8x or 10x cannot be told
    assert lab.loc["unresolved", "phase"] == "comprehension" and not lab.loc["unresolved", "phase_resolved"]
    assert lab.loc["unresolved_late", "phase"] == "grokking" and not lab.loc["unresolved_late", "phase_resolved"]
    assert lab.loc["prompt", "phase"] == "comprehension" and lab.loc["prompt", "phase_resolved"]
    assert pd.isna(lab.loc["memo", "phase_resolved"]) and pd.isna(lab.loc["memo", "gen_eval_interval"])


def test_relabel_replaces_the_resolution_columns(tmp_path):
    """Relabelling at another threshold recomputes the resolution columns too (no duplicate columns)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic_results import write_synthetic

    from gsweep.results import load_results

    d = write_synthetic(tmp_path / "syn")
    res = load_results(d, threshold=0.9)
    assert res.runs.columns.is_unique
    for c in ("fit_eval_interval", "gen_eval_interval", "delay_ratio", "phase_resolved"):
        assert c in res.runs
