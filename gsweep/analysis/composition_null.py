"""A null for composition (``gsweep analyze``, chain and composition tasks; no JAX).

If a model answered a chain by getting each of its parts right independently, a chain would be right
with the product of its parts' accuracies. A chain split whose accuracy is above that product composes
*beyond* its parts (it gets chains right even where a part alone is shaky, or its errors are
correlated); below it, it fails to compose parts it knows.

What is recorded: per run and split, the accuracy at every evaluation (``final_<split>_acc`` at the
end), not which examples were right. So the rate "chain right given its parts right" cannot be read
from the results (it needs per-example correctness, which the engine does not record); what is
computed is the split-level version: the observed final accuracy of a chain split against the
product of its parts' final accuracies, with

- ``modular_chain``: a trained part at the ``train`` split's accuracy (which also holds the trained
  chains), a held-out part at ``test``'s; the number of held-out parts of each chain is rebuilt from
  the run's task settings (numpy; the same masks the engine used), so ``hop2_novel`` predicts
  mean over its chains of train^(k-j) * test^j for j held-out parts out of k;
- ``composition``: an inferred fact's two parts are atomic facts: ``atomic`` accuracy squared.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def _task_cfg(row: pd.Series) -> dict[str, Any]:
    cfg = {}
    for k, v in row.items():
        if isinstance(k, str) and k.startswith("task."):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                v = None
            elif isinstance(v, (np.integer,)):
                v = int(v)
            elif isinstance(v, (np.floating,)):
                v = float(v)
            cfg[k[len("task."):]] = v
    return cfg


def chain_heldout_parts(cfg: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Per chain split, the share of its chains with j = 0, 1, ... held-out parts (None if not rebuildable)."""
    try:
        from gsweep.tasks import get_task
        from gsweep.tasks.chain import _chains, parts_of

        task = get_task("modular_chain")
        full = {n: p.default for n, p in task.params.items()}
        full.update({k: v for k, v in cfg.items() if v is not None})
        full.setdefault("data_seed", 0)
        data = task.build(full)
        masks = task.masks(data, full)
    except Exception:  # noqa: BLE001 - settings that no longer build: no prediction, said so by the caller
        return None
    p, op = full["p"], full["op"]
    n1 = data.info["n_one"]
    train1 = masks["train"][:n1]
    out = {}
    start = n1
    for k in (2, 3):
        c = _chains(p, k + 1, full[f"n_hop{k}"], full["pool_seed"])
        parts, _ = parts_of(c, op, p)
        j = (~train1[parts]).sum(axis=1)
        for s in (f"hop{k}", f"hop{k}_novel"):
            if s in masks:
                m = masks[s][start:start + len(c)]
                out[s] = np.bincount(j[m], minlength=k + 1) / max(int(m.sum()), 1)
        start += len(c)
    return out


def composition_null(runs: pd.DataFrame, task_name: str | None, splits) -> dict[str, Any] | None:
    """Per chain split: runs, median observed and predicted final accuracy, runs above / below the product."""
    splits = list(splits)
    if task_name == "modular_chain":
        targets = [s for s in splits if s.startswith("hop")]
        parts_by_run = [chain_heldout_parts(_task_cfg(r)) for _, r in runs.iterrows()]
        how = ("trained parts at the train split's final accuracy, held-out parts at test's; "
               "held-out part counts rebuilt from each run's task settings")
    elif task_name == "composition":
        targets = [s for s in ("test", "test_ood") if s in splits]
        parts_by_run = None
        how = "an inferred fact's two parts are atomic facts: the atomic split's final accuracy squared"
    else:
        return None

    def acc(s):
        col = f"final_{s}_acc"
        return pd.to_numeric(runs[col]).to_numpy(dtype=float) if col in runs else np.full(len(runs), np.nan)

    a_train, a_test = acc("train"), acc("test")
    out: dict[str, Any] = {"how": how, "note": (
        "split-level: the engine records each split's accuracy, not which examples were right, so "
        "P(chain right | parts right) is not available; this compares the chain split's accuracy with "
        "the product of its parts' accuracies (independence)"), "splits": {}}
    for s in targets:
        obs = acc(s)
        if task_name == "composition":
            pred = acc("atomic") ** 2
        else:
            pred = np.full(len(runs), np.nan)
            for i, parts in enumerate(parts_by_run):
                if parts is None or s not in parts:
                    continue
                w = parts[s]
                k = len(w) - 1
                pred[i] = float(sum(w[j] * a_train[i] ** (k - j) * a_test[i] ** j for j in range(k + 1)))
        ok = np.isfinite(obs) & np.isfinite(pred)
        d = obs[ok] - pred[ok]
        out["splits"][s] = {
            "n": int(ok.sum()),
            "observed_median": float(np.median(obs[ok])) if ok.any() else None,
            "predicted_median": float(np.median(pred[ok])) if ok.any() else None,
            "above": int((d > 0.01).sum()), "below": int((d < -0.01).sum()),
            "within_0.01": int((np.abs(d) <= 0.01).sum()),
            "median_difference": float(np.median(d)) if ok.any() else None,
        }
    return out


def format_composition_null(c: dict[str, Any] | None) -> list[str]:
    if not c or not c.get("splits"):
        return []
    L = ["  composition null: final accuracy of each chain split against the product of its parts' accuracies "
         f"({c['how']})"]
    for s, v in c["splits"].items():
        if not v["n"]:
            L.append(f"    {s}: no run with both numbers")
            continue
        L.append(f"    {s}: observed median {v['observed_median']:.2f} vs product {v['predicted_median']:.2f} over "
                 f"{v['n']} runs; above the product in {v['above']}, below in {v['below']}, within 0.01 in "
                 f"{v['within_0.01']}")
    L.append(f"    ({c['note']})")
    return L
