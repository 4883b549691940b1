"""What ``gsweep analyze`` shows: the ROC and onset figures and the printed summary."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gsweep.analysis import stats
from gsweep.analysis.analyze_common import BASELINE, MIN_CI_CLASS
from gsweep.metrics.labels import label_column

# ----------------------------------------------------------------------------------------------
# plots (matplotlib's object API: no pyplot state, any backend)


def _figure(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def plot_roc(path: Path, out: dict, rocs: dict) -> str:
    labs = list(rocs)
    fig = _figure(5.2 * len(labs), 4.8)
    for i, lab in enumerate(labs):
        ax = fig.add_subplot(1, len(labs), i + 1)
        ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
        res = out["predictors"][lab]
        drawn = 0
        for name, (y, s) in rocs[lab].items():
            fpr, tpr = stats.roc_curve(y, s)
            if not len(fpr):
                continue
            a = res["scores"][name]["auroc"]
            style = dict(color="k", lw=2, ls=":") if name == BASELINE else dict(lw=1.5)
            ax.plot(fpr, tpr, label=f"{name} (AUROC {a:.2f})", **style)
            drawn += 1
        if not drawn:
            reason = res["scores"][BASELINE].get("auroc_reason", "undefined")
            ax.text(0.5, 0.5, f"AUROC undefined:\n{reason}", ha="center", va="center", fontsize=9, wrap=True)
        split = out["target"] if lab == "reasoned" else out["source"]
        ax.set_title(f"{lab}: reaches {split} (held-out cells)\n{res['n_scored']} runs, {res['n_pos']} positive",
                     fontsize=10)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        if drawn:
            ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"early warning from the first {out['window']:.0%} of training", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


def plot_onset(path: Path, out: dict, frame: pd.DataFrame) -> str:
    src, tgt = out["source"], out["target"]
    xs, ys = frame[f"t_{src}"].to_numpy(dtype=float), frame[f"t_{tgt}"].to_numpy(dtype=float)
    done = frame["steps_done"].to_numpy(dtype=float)
    fig = _figure(5.6, 5.2)
    ax = fig.add_subplot(1, 1, 1)
    gx, gy = np.isfinite(xs), np.isfinite(ys)
    groups = [
        (gx & gy, xs, ys, dict(marker="o", color="C0"), "reached both"),
        (gx & ~gy, xs, done, dict(marker="^", facecolors="none", edgecolors="C3"), f"{tgt} censored (at steps_done)"),
        (~gx & gy, done, ys, dict(marker=">", facecolors="none", edgecolors="C2"), f"{src} censored (at steps_done)"),
        (~gx & ~gy, done, done, dict(marker="x", color="0.5"), "both censored"),
    ]
    allv = np.r_[xs[gx], ys[gy], done]
    allv = allv[np.isfinite(allv) & (allv > 0)]
    lo, hi = (allv.min(), allv.max()) if allv.size else (1.0, 10.0)
    for m, x, y, style, label in groups:
        if m.any():
            jitter = np.exp(np.random.default_rng(0).normal(0, 0.02, m.sum())) if label == "both censored" else 1
            ax.scatter(x[m] * jitter, y[m], s=22, alpha=0.75, label=f"{label} ({int(m.sum())})", **style)
    ax.plot([lo, hi], [lo, hi], color="0.7", lw=1, ls="--", label="same step")
    wmax = out["window_steps"]["max"]
    ax.axvline(wmax, color="0.8", lw=1, ls=":")
    ax.axhline(wmax, color="0.8", lw=1, ls=":", label=f"window end ({wmax} steps)")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(f"{label_column(src)}: first step with {src} acc >= {out['threshold']:g}")
    ax.set_ylabel(f"{label_column(tgt)}: first step with {tgt} acc >= {out['threshold']:g}")
    sp = out["overall"]["spearman"]
    if sp["value"] is not None and math.isfinite(sp["value"]):
        ci = f" [{sp['ci'][0]:.2f}, {sp['ci'][1]:.2f}]" if "bootstrap" in sp else ""
        title = f"Spearman {sp['value']:.2f}{ci} over {sp['n_both']} runs reaching both"
    else:
        title = f"Spearman undefined: {sp.get('reason', '')}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path)


# ----------------------------------------------------------------------------------------------
# printed summary


def _f(v, nd=2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def format_summary(out: dict, max_cells: int = 20) -> str:
    src, tgt = out["source"], out["target"]
    o = out["overall"]
    j = o["joint"]
    L = []
    ws = out["window_steps"]
    wtxt = f"{ws['min']}" if ws["min"] == ws["max"] else f"{ws['min']}-{ws['max']}"
    L.append(f"gsweep analyze {out['results_dir']}: does generalising on {src!r} predict reaching {tgt!r}?")
    if out.get("where"):
        L.append(f"  only the runs matching --where {out['where']!r}")
    L.append(f"  {out['n_runs']} runs in {out['n_cells']} cell(s)"
             f" (cells: {', '.join(out['cell_keys']) or 'none swept'}; seeds grouped)"
             + (f", {out['n_diverged_left_out']} diverged left out" if out["n_diverged_left_out"] else "")
             + f"; threshold {out['threshold']:g}; window {out['window']:.0%} = {wtxt} steps")
    ts = out.get("target_status")
    if ts:
        L.append(f"  target {tgt!r}: " + (ts["message"] + " (read it apart from the clean targets below)"
                                         if ts["status"] == "overlapping" else ts["message"]))
    L.append("")
    w = max(len(src), len(tgt)) + 16
    L.append(f"  {'':<{w}}{'reached ' + tgt:>18}{'not reached':>14}")
    L.append(f"  {'reached ' + src:<{w}}{j['both']:>18}{j['source_only']:>14}")
    L.append(f"  {'not reached ' + src:<{w}}{j['target_only']:>18}{j['neither']:>14}")
    pr = o["precision_ci"]
    ptxt = (f"precision {_f(o['precision'])} [{_f(pr[0])}, {_f(pr[1])}]" if "precision_reason" not in o
            else f"precision n/a ({o['precision_reason']})")
    rtxt = f"recall {_f(o['recall'])}" if "recall_reason" not in o else f"recall n/a ({o['recall_reason']})"
    L.append(f"  grokked => reasoning: {ptxt} (base rate {_f(o['base_rate'])}), {rtxt}, F1 {_f(o['f1'])}, "
             f"MCC {_f(o['mcc'])}" + (f" ({o['mcc_reason']})" if "mcc_reason" in o else ""))
    L.append("  " + _conditional_line(src, tgt, o))
    L += _within_lines(out)
    sp = o["spearman"]
    if sp["value"] is not None and math.isfinite(sp["value"]):
        if "bootstrap" in sp and all(c is not None and math.isfinite(c) for c in sp["ci"]):
            ci = f"[{_f(sp['ci'][0])}, {_f(sp['ci'][1])}]"
        elif "bootstrap" in sp:
            ci = "(no interval: the bootstrap resamples were undefined, e.g. tied ranks)"
        else:
            ci = f"(no interval: {sp['ci_reason']})" if sp.get("ci_reason") else "(no interval)"
        how = f" (bootstrap over {sp['bootstrap']['resampled']})" if "bootstrap" in sp else ""
        L.append(f"  onsets: Spearman({label_column(src)}, {label_column(tgt)}) = {_f(sp['value'])} {ci} "
                 f"over {sp['n_both']} runs reaching both{how}; {tgt} not before {src} in "
                 f"{_f(100 * sp['target_not_before_source'], 0)}% of them")
    else:
        L.append(f"  onsets: Spearman undefined ({sp['reason']})")
    cz = o["censored"]
    L.append(f"  censored (not reached within steps_done): {src} {cz[src]}, {tgt} {cz[tgt]} runs; negatives for "
             "'eventually', left out of the onset comparison")
    if out.get("phase_table"):
        L.append("  by phase (reached " + tgt + " / runs): " + ", ".join(
            f"{p} {v['reached']}/{v['reached'] + v['not_reached']}" for p, v in out["phase_table"].items()))
    from gsweep.analysis.stability import format_stability
    L += [t for t in [format_stability(out.get("stability"))] if t]
    L += _targets_lines(out)
    L += _delay_lines(out)
    from gsweep.analysis.composition_null import format_composition_null
    L += format_composition_null(out.get("composition_null"))
    L.append("")
    L.append(f"  early warning from the first {out['window']:.0%}: AUROC / AUPRC on held-out cells "
             f"({out['folds']}); alarm threshold at FPR {out['false_positive_rate']:.0%} chosen on training folds")
    L.append("  (within: AUROC over pairs of runs from the same cell only; minus hparams: AUROC minus the baseline's "
             "on the same runs, paired bootstrap over cells)")
    for lab, res in out["predictors"].items():
        split = tgt if lab == "reasoned" else src
        L.append(f"  {lab} (reaches {split}): {res['n_scored']} runs scored, {res['n_pos']} positive, "
                 f"{res['n_reached_in_window']} reached inside the window (left out), {res['n_censored']} censored")
        if res.get("fold_warning"):
            L.append(f"    (degenerate folds: {res['fold_warning']})")
        if 0 < res["n_pos"] < res["n_scored"] and min(res["n_pos"], res["n_scored"] - res["n_pos"]) < MIN_CI_CLASS:
            L.append(f"    (too few to read: no intervals under {MIN_CI_CLASS} positive and {MIN_CI_CLASS} negative runs)")
        if res["n_pos"] == 0 or res["n_pos"] == res["n_scored"]:
            why = res["scores"][BASELINE].get("auroc_reason", "one class only")
            L.append(f"    AUROC undefined for every predictor and the baseline: {why}")
            continue
        L.append(f"    {'predictor':<18}{'AUROC':>7} {'[95% CI]':<14}{'AUPRC':>7}{'(chance)':>9}{'TPR@FPR':>9}"
                 f"{'lead (steps)':>14}{'+hparams':>10}{'within (cells)':>16}  {'minus hparams [95% CI] p':<32}direction")
        for name, s in res["scores"].items():
            if s.get("auroc") is None or not math.isfinite(s["auroc"]):
                L.append(f"    {name:<18}{'n/a':>7}  {s.get('auroc_reason', '')}")
                continue
            ci = s["auroc_ci"]
            cit = f"[{_f(ci[0])}, {_f(ci[1])}]" if ci[0] is not None and math.isfinite(ci[0]) else ""
            lead = s.get("lead_steps_median")
            plus = s.get("auroc_with_hyperparameters")
            vb = s.get("vs_baseline")
            vbt = (f"{vb['difference']:+.2f} [{_f(vb['ci'][0])}, {_f(vb['ci'][1])}] p {_p(vb['p'])}"
                   if vb and vb.get("p") is not None and math.isfinite(vb["p"]) else "-")
            L.append(f"    {name:<18}{_f(s['auroc']):>7} {cit:<14}{_f(s['auprc']):>7}{_f(s['auprc_chance']):>9}"
                     f"{_f(s['tpr_at_fpr']):>9}{(_f(lead, 0) if lead is not None else '-'):>14}"
                     f"{(_f(plus) if plus is not None else '-'):>10}"
                     f"{_f(s.get('auroc_within_cells')) + ' (' + str(s.get('n_cells_both_classes', 0)) + ')':>16}  "
                     f"{vbt:<32}{s.get('direction', '')}")
        fs = res.get("fold_seeds") or {}
        if fs:
            L.append("    held-out AUROC with the cells dealt to folds by seeds 1-4 (min-max): " + ", ".join(
                f"{k} {_f(min(v))}-{_f(max(v))}" for k, v in fs.items()
                if v and all(x is not None and math.isfinite(x) for x in v)))
    for msg in out["left_out"].values():
        L.append(f"  note: {msg}")
    sizes = [row["n"] for row in out["per_cell"]]
    if out["n_cells"] > 1 and max(sizes) < 3:
        L.append("")
        L.append(f"  per cell: left out: every cell has {max(sizes) if min(sizes) == max(sizes) else 'at most ' + str(max(sizes))}"
                 " run(s), too few for a per-cell MCC or Spearman (need 3 or more seeds per cell); "
                 "the overall numbers above pool the cells")
    elif out["n_cells"] > 1:
        L.append("")
        small = sum(1 for n in sizes if n < 3)
        if small:
            L.append(f"  ({small} of {out['n_cells']} cells have fewer than 3 runs: their Spearman is n/a)")
        L.append(f"  per cell ({min(out['n_cells'], max_cells)} of {out['n_cells']}): runs, both / {src} only / "
                 f"{tgt} only / neither, MCC, Spearman")
        for row in out["per_cell"][:max_cells]:
            jj = row["joint"]
            L.append(f"    {row['cell']}: {row['n']}, {jj['both']}/{jj['source_only']}/{jj['target_only']}/"
                     f"{jj['neither']}, MCC {_f(row['mcc'])}, Spearman {_f(row['spearman']['value'])}")
        if out["n_cells"] > max_cells:
            L.append(f"    ... {out['n_cells'] - max_cells} more in the analysis file")
    L.append("")
    L += _comparison_lines(out)
    for n in out["notes"]:
        L.append(f"  caveat: {n}")
    if out.get("written"):
        L.append("  wrote " + ", ".join(out["written"]))
    return "\n".join(L)


def _conditional_line(src: str, tgt: str, o: dict) -> str:
    """P(target | source) against P(target | not source), each with its count and Wilson interval."""
    j = o["joint"]
    nan2 = [math.nan, math.nan]
    rows = ((f"P({tgt} | {src})", j["both"], j["both"] + j["source_only"], o["precision"], o["precision_ci"],
             f"no run reached {src}"),
            (f"P({tgt} | not {src})", j["target_only"], j["target_only"] + j["neither"],
             o.get("p_target_given_not_source", math.nan), o.get("p_target_given_not_source_ci", nan2),
             f"every run reached {src}"))
    parts = [f"{label} = {k}/{n} = {_f(p)} [{_f(ci[0])}, {_f(ci[1])}]" if n else f"{label} n/a ({why})"
             for label, k, n, p, ci, why in rows]
    return parts[0] + " against " + parts[1]


def _p(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.2g}" if v >= 0.001 else "<0.001"


def _tests_text(r: dict) -> str:
    """Pooled Fisher, stratified CMH and within-cell permutation p-values of one association."""
    c, pm, fi = r["cmh"], r["permutation"], r["pooled_fisher"]
    if c.get("reason"):
        within = f"stratified (Cochran-Mantel-Haenszel) and within-cell permutation tests: n/a ({c['reason']})"
    else:
        within = (f"stratified (Cochran-Mantel-Haenszel) p {_p(c['p'])} over {c['n_strata']} informative cell(s), "
                  f"within-cell permutation p {_p(pm['p'])}")
    return f"pooled Fisher p {_p(fi['p'])}; {within}"


def _within_lines(out: dict) -> list[str]:
    rows = [r for r in out.get("targets") or [] if r["target"] == out["target"]]
    if not rows:
        return []
    r = rows[0]
    return [f"  tests of {out['source']} -> {out['target']}: " + _tests_text(r),
            "    (the within-cell tests compare seeds of one cell only: an association that exists only "
            "across cells, through the hyperparameters, does not show there)"]


def _targets_lines(out: dict) -> list[str]:
    rows = out.get("targets") or []
    if not rows:
        return []
    L = ["", f"  every target, from {out['source']!r} (P(target | source) vs P(target | not source); p-values)"]
    for status, title in (("clean", "clean targets (no held-out part shared with the source)"),
                          ("overlapping", "overlapping targets: part of what they measure is the source"),
                          ("undeclared", "targets whose held-out parts the task does not declare")):
        sel = [r for r in rows if r["status"] == status]
        if not sel:
            continue
        L.append(f"    {title}:")
        for r in sel:
            k = r["counts"]
            L.append(f"      {r['target']}: {k['both']}/{k['both'] + k['source_only']} vs "
                     f"{k['target_only']}/{k['target_only'] + k['neither']}; " + _tests_text(r))
            if status == "overlapping":
                L.append(f"        ({r['message']})")
    return L


def _delay_lines(out: dict) -> list[str]:
    d = out.get("delay")
    if not d or "n_generalised" not in d:
        return []
    tgt = out["target"]
    L = ["", f"  does the delay matter? among the {d['n_generalised']} runs that generalised: {d['n_grokking']} grokking, "
         f"{d['n_comprehension']} comprehension" + (f" ({d['n_unresolved']} of them not resolvable by the "
                                                     "evaluation grid: phase_resolved false)" if d.get("n_unresolved")
                                                     else "")]
    g = d["grokking_vs_comprehension"]
    if "reason" in g:
        L.append(f"    grokking vs comprehension -> {tgt}: n/a ({g['reason']})")
    else:
        k = g["counts"]
        L.append(f"    reached {tgt}: grokking {k['both']}/{k['both'] + k['source_only']}, comprehension "
                 f"{k['target_only']}/{k['target_only'] + k['neither']}; " + _tests_text(g))
    c = d.get("ratio_vs_onset") or {}
    if c.get("coef_log_ratio") is not None:
        L.append(f"    log t_{tgt} on log t_gen and log(t_gen/t_fit) (OLS, {c['n']} runs): ratio coefficient "
                 f"{c['coef_log_ratio']:+.2f} [{_f(c['ci'][0])}, {_f(c['ci'][1])}], p {_p(c['p'])}")
    else:
        L.append(f"    delay ratio vs the target's onset given t_gen: n/a ({c.get('reason', '')})")
    return L


def _comparison_lines(out: dict) -> list[str]:
    cmp_ = out.get("comparisons")
    if cmp_ is None:
        return []
    L = [f"  {len(cmp_)} comparisons (p-values) in this analysis; correction: Holm over all of them "
         "(statsmodels multipletests); listed in the analysis file under 'comparisons'"]
    sig = [c for c in cmp_ if c["p_holm"] < 0.05]
    if sig:
        L.append("    below 0.05 after Holm: " + "; ".join(f"{c['name']} (p {_p(c['p'])}, Holm {_p(c['p_holm'])})"
                                                       for c in sig))
    else:
        L.append("    none below 0.05 after Holm")
    return L
