"""A synthetic results dir with KNOWN phases and times, written as `gsweep run` would (no training).

Grid (defaults): task.data_frac [0.2, 0.5, 0.8] x train.weight_decay [0.0, 0.1, 1.0] x
model.depth [1, 2] x 3 seeds; budget 2000 steps, evals at 1, 2, 3, 5, 10, 20, 50, then every 50.
Threshold 0.99, gap 10 (relative). Every run fits train at step 100 unless said otherwise.

Per run (see :func:`plan`):

- weight decay 0: memorization (test accuracy plateaus at 0.95 from step 1000, so with
  ``--threshold 0.9`` these runs become grokking at t_gen = 1000 >= 10 * 100);
- data fraction 0.2, weight decay > 0: grokking, t_gen = 1000 / 1200 / 1500 for seeds 0 / 1 / 2;
- data fraction 0.5, weight decay > 0: seeds 0, 1 grokking (t_gen 1000, 1100), seed 2
  comprehension (t_gen 500): majority grokking with 2 of 3 seeds agreeing;
- data fraction 0.8, weight decay > 0: comprehension, t_gen = 200 / 300 / 300;
- special cells override those:
  * (0.2, 1.0, depth 2): confusion for every seed (neither split reaches 0.99): censored cell;
  * (0.2, 0.1, depth 2): t_gen = 1000, never (memorization), 1200: the KM median is 1200
    (S = 2/3 after 1000, 1/3 after 1200), where dropping the censored run would give 1100;
    majority grokking 2/3;
  * (0.2, 1.0, depth 1): t_gen = 1500, never, never: KM median undefined (">2000"),
    majority memorization 2/3;
  * (0.8, 0.1, depth 2) seed 2 diverges at step 500 (status diverged, no phase).
- split ``hop2`` reaches the threshold 200 steps after test when that is within the budget.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep.metrics.labels import compute_labels
from gsweep.spec import from_dict

BUDGET = 2000
FIT = 100


def eval_steps(budget: int = BUDGET, every: int = 50) -> list[int]:
    early = [s for s in (1, 2, 3, 5, 10, 20) if s < every]
    return early + list(range(every, budget + 1, every))


def plan(frac: float, wd: float, depth: int, seed: int) -> dict:
    """The designed outcome of one run: t_fit, t_gen (None = never), test plateau, divergence."""
    p = {"t_fit": FIT, "t_gen": None, "plateau": None, "diverged": None}
    if wd == 0.0:
        p["plateau"] = (1000, 0.95)
    elif frac <= 0.2:
        p["t_gen"] = (1000, 1200, 1500)[seed % 3]
    elif frac <= 0.5:
        p["t_gen"] = (1000, 1100, 500)[seed % 3]
    else:
        p["t_gen"] = (200, 300, 300)[seed % 3]
    if (frac, wd, depth) == (0.2, 1.0, 2):
        p.update(t_fit=None, t_gen=None, plateau=None)
    if (frac, wd, depth) == (0.2, 0.1, 2):
        p["t_gen"] = (1000, None, 1200)[seed % 3]
    if (frac, wd, depth) == (0.2, 1.0, 1):
        p["t_gen"] = (1500, None, None)[seed % 3]
    if (frac, wd, depth) == (0.8, 0.1, 2) and seed % 3 == 2:
        p["diverged"] = 500
    return p


def _acc(step: int, reach: int | None, plateau: tuple[int, float] | None, horizon: int) -> float:
    if reach is not None and step >= reach:
        return 1.0
    if plateau is not None and step >= plateau[0]:
        return plateau[1]
    return 0.05 + 0.5 * min(step / (reach or horizon), 1.0)


def write_synthetic(out: str | Path, data_frac=(0.2, 0.5, 0.8), weight_decay=(0.0, 0.1, 1.0),
                    depth=(1, 2), seeds: int = 3, name: str = "synthetic", budget: int = BUDGET,
                    every: int = 50) -> Path:
    """Write spec.yaml, meta.json, runs.parquet and curves.parquet under ``out``; return the path.

    A key given one value (a scalar or a 1-list) is not swept, as in a real sweep file.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def leaf(v):
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        return v if len(v) > 1 else v[0]

    raw = {"name": name,
           "task": {"name": "modular", "p": 7, "data_frac": leaf(data_frac)},
           "model": {"name": "transformer", "depth": leaf(depth), "d_model": 8, "heads": 2, "d_mlp": 16},
           "train": {"steps": budget, "eval_every": every, "weight_decay": leaf(weight_decay)},
           "analysis": {"threshold": 0.99, "gap": 10.0, "gap_mode": "relative"},
           "seeds": seeds}
    spec = from_dict(raw, "<synthetic>")
    steps = eval_steps(budget, every)
    rows, curves = [], []
    for run in spec.runs():
        s = dict(run.settings)
        p = plan(float(s["task.data_frac"]), float(s["train.weight_decay"]), int(s["model.depth"]), int(s["seed"]))
        done = p["diverged"] or budget
        rows.append({"run_id": run.run_id, "group_id": run.group_id, **s,
                     "status": "diverged" if p["diverged"] else "done", "steps_done": done,
                     "diverged_step": p["diverged"]})
        t_hop2 = p["t_gen"] + 200 if p["t_gen"] is not None and p["t_gen"] + 200 <= budget else None
        for st in steps:
            if st > done:
                break
            accs = {"train": _acc(st, p["t_fit"], None, budget),
                    "test": _acc(st, p["t_gen"], p["plateau"], budget),
                    "hop2": _acc(st, t_hop2, None, budget)}
            wn = 10.0 * math.exp(-float(s["train.weight_decay"]) * st / 1000.0)
            for split, a in accs.items():
                curves.append({"run_id": run.run_id, "step": st, "split": split,
                               "loss": -math.log(max(a, 1e-3)) + 0.01, "acc": a, "weight_norm": wn,
                               "train_loss_mean": -math.log(max(accs["train"], 1e-3)) + 0.01,
                               "train_loss_osc": 0.01, "fourier_sparsity": float("nan")})
    runs = pd.DataFrame(rows)
    runs["steps_done"] = runs["steps_done"].astype("int64")
    runs["diverged_step"] = pd.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
                                      for v in runs["diverged_step"]], dtype="Int64")
    curves_df = pd.DataFrame(curves)
    curves_df["step"] = curves_df["step"].astype("int64")
    labels = compute_labels(curves_df, runs, 0.99, 10.0, "relative")
    runs = pd.concat([runs.reset_index(drop=True), labels], axis=1)
    (out / "spec.yaml").write_text(spec.to_yaml())
    meta = {"status": "done", "swept_keys": spec.swept_keys, "precision": "highest",
            "gsweep_version": "synthetic", "devices": ["cpu"]}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    runs.to_parquet(out / "runs.parquet", index=False)
    curves_df.to_parquet(out / "curves.parquet", index=False)
    return out


if __name__ == "__main__":  # python tests/synthetic_results.py DIR
    import sys

    print(write_synthetic(sys.argv[1] if len(sys.argv) > 1 else "results/synthetic"))
