#!/usr/bin/env python3
"""The accelerator figures against their targets, from the folder scripts/gpu_bench.sh wrote.

    python scripts/gpu_report.py DIR            # DIR: $OUT of gpu_bench.sh, as it came back
    python scripts/gpu_report.py DIR --json     # the same as JSON

Reads files only (no JAX): card.txt, bench/*.json (gsweep bench), plan.txt and the sampled sweep's
meta.json and runs.parquet at tf32 (sweep/) and at highest (sweep-highest/), devices.txt, and the
literature sweep's summary. Prints one line per target: the figure, the card, met / not met /
not measured. The targets (fixed before any accelerator run, in the issue "On a lent accelerator"):

- tf32: >= 10,000 model-steps/s, >= 30x the PyTorch loop and >= 6x the torch.func ensemble in the
  same run; highest: >= 8x the loop (each at the bench's best R; every R is printed);
- compile <= 30 s per group (the bench's configurations and the sweep's groups);
- evaluation <= 10% of step time at eval_every 100 (the bench's eval_overhead_frac);
- gsweep plan within 2x of the measured wall time of the same sweep;
- t_gen at tf32 within seed noise of t_gen at highest. The rule, fixed here before the data: runs are
  paired by (cell, seed) (the same run but its precision); in every cell (data fraction x weight
  decay) with >= 2 seeds that generalise at both precisions, |mean paired difference| <= the standard
  deviation of t_gen over the cell's seeds at highest. Also printed: runs that generalise at one
  precision only, and a Wilcoxon signed-rank test of the cells' mean paired differences (SciPy; unit:
  a cell, since the runs of a cell share its data fraction and weight decay);
- one GPU, one device: the sweep ran on the accelerator's device(s), not on CPU devices.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

CELL = ("task.data_frac", "train.weight_decay")
UNITS = {"h": 3600.0, "min": 60.0, "s": 1.0}


def plan_seconds(text: str) -> float | None:
    """The total estimate of a ``gsweep plan`` printout ('total: ... estimated 1 h 2 min'), in seconds."""
    m = re.search(r"^total:.*estimated ([^\n]*)$", text, re.M)
    if not m:
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|s)\b", m.group(1))
    return sum(float(v) * UNITS[u] for v, u in parts) if parts else None


def bench_rows(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bench's targets, each at the configuration (R) that serves it best, from its JSON configurations."""
    rows = []

    def best(prec: str, key: str):
        cs = [c for c in configs if c.get("precision") == prec and c.get(key) is not None]
        return max(cs, key=lambda c: c[key]) if cs else None

    for prec, key, goal, what in (("tf32", "model_steps_per_s", 10_000, "tf32 model-steps/s"),
                                  ("tf32", "ratio_vs_torch_loop", 30, "tf32 x PyTorch loop"),
                                  ("tf32", "ratio_vs_torch_vmap", 6, "tf32 x torch.func ensemble"),
                                  ("highest", "ratio_vs_torch_loop", 8, "highest x PyTorch loop")):
        c = best(prec, key)
        rows.append({"target": f"{what} >= {goal:,}", "figure": None if c is None else round(c[key], 3),
                     "at": None if c is None else f"R={c['runs']}",
                     "met": None if c is None else bool(c[key] >= goal)})
    comp = [c["compile_s"] for c in configs if c.get("compile_s") is not None]
    rows.append({"target": "bench compile <= 30 s per configuration", "figure": max(comp) if comp else None,
                 "at": "worst", "met": None if not comp else bool(max(comp) <= 30)})
    ev = [c["eval_overhead_frac"] for c in configs if c.get("eval_overhead_frac") is not None]
    rows.append({"target": "evaluation <= 10% of step time (eval_every 100)", "figure": max(ev) if ev else None,
                 "at": "worst", "met": None if not ev else bool(max(ev) <= 0.10)})
    return rows


def tgen_agreement(runs_tf32, runs_highest) -> dict[str, Any]:
    """t_gen at tf32 against highest, paired by (cell, seed); the rule of the module doc."""
    import numpy as np
    from scipy.stats import wilcoxon

    key = [*CELL, "seed"]
    a = runs_tf32[key + ["t_gen"]].rename(columns={"t_gen": "tf32"})
    b = runs_highest[key + ["t_gen"]].rename(columns={"t_gen": "highest"})
    m = a.merge(b, on=key, how="inner")
    one_only = int((m["tf32"].isna() != m["highest"].isna()).sum())
    both = m.dropna(subset=["tf32", "highest"])
    cells = []
    for cell, g in both.groupby(list(CELL)):
        if len(g) < 2:
            continue
        diff = float((g["tf32"] - g["highest"]).mean())
        sd = float(np.std(g["highest"].to_numpy(float), ddof=1))
        cells.append({"cell": dict(zip(CELL, cell, strict=True)), "seeds": len(g), "mean_diff": diff, "seed_sd": sd,
                      "within": bool(abs(diff) <= sd)})
    d = np.array([c["mean_diff"] for c in cells])  # unit: a cell
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else (1.0 if len(d) else None)
    return {"pairs": int(len(m)), "pairs_both_generalise": int(len(both)), "generalise_at_one_only": one_only,
            "cells": cells, "wilcoxon_p": p, "met": (all(c["within"] for c in cells) if cells else None)}


def report(d: Path) -> dict[str, Any]:
    import pandas as pd

    out: dict[str, Any] = {"dir": str(d), "rows": []}
    card = d / "card.txt"
    out["card"] = card.read_text().strip() if card.is_file() else "(no card.txt)"
    benches = sorted((d / "bench").glob("*.json")) if (d / "bench").is_dir() else []
    configs = json.loads(benches[-1].read_text()).get("configurations", []) if benches else []
    out["bench"] = [{k: c.get(k) for k in ("precision", "runs", "model_steps_per_s", "ratio_vs_torch_loop",
                                            "ratio_vs_torch_vmap", "compile_s", "eval_overhead_frac",
                                            "achieved_tflops", "peak_tflops", "device_name")} for c in configs]
    out["rows"] += bench_rows(configs)
    meta_f = d / "sweep" / "meta.json"
    meta = json.loads(meta_f.read_text()) if meta_f.is_file() else None
    if meta:
        comp = {g: v.get("compile_s") for g, v in meta.get("groups", {}).items()}
        worst = max((c for c in comp.values() if c is not None), default=None)
        out["sweep_groups"] = {g: {k: v.get(k) for k in ("runs", "runs_per_chunk", "devices", "compile_s",
                                                           "first_chunk_s", "steady_chunk_s")}
                               for g, v in meta.get("groups", {}).items()}
        out["rows"].append({"target": "sweep compile <= 30 s per group", "figure": worst, "at": "worst group",
                            "met": None if worst is None else bool(worst <= 30)})
        t0, t1 = pd.Timestamp(meta["started"]), pd.Timestamp(meta.get("finished") or meta["started"])
        wall = (t1 - t0).total_seconds()
        est = plan_seconds((d / "plan.txt").read_text()) if (d / "plan.txt").is_file() else None
        ok = None if not (est and wall > 0) else bool(0.5 <= est / wall <= 2.0)
        out["rows"].append({"target": "gsweep plan within 2x of the measured wall", "figure":
                            None if est is None else f"plan {est:.0f} s vs run {wall:.0f} s", "at": "sampled default",
                            "met": ok})
        gpu = meta.get("backend") not in (None, "cpu")
        out["rows"].append({"target": "one GPU, one device (no CPU-device rule on a GPU host)",
                            "figure": f"backend {meta.get('backend')}, {meta.get('run_devices')} device(s) "
                                      f"{meta.get('devices')}", "at": "sampled default",
                            "met": None if not gpu else bool(meta.get("device_kind") != "cpu" and not any(
                                str(x).startswith("cpu") for x in meta.get("devices", [])))})
    ra, rb = d / "sweep" / "runs.parquet", d / "sweep-highest" / "runs.parquet"
    if ra.is_file() and rb.is_file():
        t = tgen_agreement(pd.read_parquet(ra), pd.read_parquet(rb))
        out["tgen"] = t
        out["rows"].append({"target": "t_gen at tf32 within seed noise of highest", "figure":
                            f"{sum(c['within'] for c in t['cells'])}/{len(t['cells'])} cells within; "
                            f"{t['generalise_at_one_only']} run(s) generalise at one precision only; "
                            f"Wilcoxon p over cells {t['wilcoxon_p']}", "at": "sampled default", "met": t["met"]})
    else:
        out["rows"].append({"target": "t_gen at tf32 within seed noise of highest", "figure": None, "at": None,
                            "met": None})
    lit = d / "summary-lit.json"
    out["literature"] = json.loads(lit.read_text()) if lit.is_file() else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.dir.is_dir():
        print(f"gpu_report: error: {args.dir}: not a folder", file=sys.stderr)
        return 2
    r = report(args.dir)
    if args.json:
        print(json.dumps(r, indent=1, default=str))
        return 0
    print("card: " + " | ".join(ln.strip() for ln in r["card"].splitlines() if ln.strip()))
    for c in r.get("bench", []):
        print(f"  bench {c['precision']:>7} R={c['runs']}: {c['model_steps_per_s']:.1f} model-steps/s, "
              f"{c['ratio_vs_torch_loop']:.2f}x loop, {c['ratio_vs_torch_vmap']:.2f}x ensemble, "
              f"compile {c['compile_s']:.1f} s, eval {100 * (c['eval_overhead_frac'] or 0):.1f}%")
    for row in r["rows"]:
        met = {True: "met", False: "NOT met", None: "not measured"}[row["met"]]
        print(f"{met:>12}  {row['target']}: {row['figure']} ({row['at']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
