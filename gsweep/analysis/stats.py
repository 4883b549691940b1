"""Statistics for ``gsweep analyze`` (numpy, scipy.stats and statsmodels; no JAX).

Ranks (behind the AUROC, the Mann-Whitney U over n_pos n_neg), Spearman's correlation, the Cochran-Mantel-Haenszel test
(statsmodels ``StratifiedTable``), Fisher's exact test, the Holm correction (``multipletests``) and the
L2-penalised logistic regression of the hyperparameter baseline (statsmodels ``GLM.fit_regularized``)
come from the libraries. What is left here is bookkeeping they do not offer: average precision and ROC
points over tied scores, a bootstrap that resamples whole groups (grid cells; ``scipy.stats.bootstrap``
resamples observations only), a permutation test that permutes labels *inside* each cell
(``scipy.stats.permutation_test`` has no strata), AUROC over within-cell pairs, and folds that hold out
whole groups.

Undefined quantities (a score over one class, a correlation over a constant) are NaN here; callers turn
them into ``null`` plus a reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as sps

# ----------------------------------------------------------------------------------------------
# ranks and ranking scores


def rankdata(a) -> np.ndarray:
    """Ranks 1..n of ``a``, ties given their average rank (scipy.stats.rankdata, method 'average')."""
    a = np.asarray(a, dtype=float)
    return sps.rankdata(a) if a.size else np.zeros(0)


def _clean(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=float)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in shape: {y.shape} vs {s.shape}")
    ok = np.isfinite(s)
    return y[ok], s[ok]


def auroc(y, s) -> float:
    """Area under the ROC curve (Mann-Whitney U / n_pos n_neg; ties count one half). NaN with one class."""
    y, s = _clean(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    u = sps.rankdata(s)[y].sum() - n_pos * (n_pos + 1) / 2.0  # the Mann-Whitney U of the positives
    return float(u / (n_pos * n_neg))


def _by_threshold(y, s):
    """Cumulative true and false positives at each distinct threshold, scores descending."""
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last = np.r_[ss[1:] != ss[:-1], True]  # the last index of each run of equal scores
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(~ys)[last]
    return tp, fp, ss[last]


def auprc(y, s) -> float:
    """Average precision: sum over thresholds of (R_k - R_k-1) * P_k (no interpolation). NaN without
    positives. Its chance level is the prevalence, not 0.5."""
    y, s = _clean(y, s)
    n_pos = int(y.sum())
    if n_pos == 0 or y.size == 0:
        return math.nan
    tp, fp, _ = _by_threshold(y, s)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) from (0, 0) to (1, 1) over the distinct thresholds; empty arrays with one class."""
    y, s = _clean(y, s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    tp, fp, _ = _by_threshold(y, s)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def threshold_at_fpr(neg_scores, fpr: float) -> float:
    """The smallest threshold t such that at most a share ``fpr`` of ``neg_scores`` lie strictly above t.

    Flag a run when its score is > t. NaN without negatives."""
    neg = np.sort(np.asarray(neg_scores, dtype=float)[np.isfinite(neg_scores)])
    n = neg.size
    if n == 0:
        return math.nan
    allowed = int(math.floor(fpr * n + 1e-9))  # how many negatives may lie above t
    return float(neg[n - 1 - allowed]) if allowed < n else -math.inf


# ----------------------------------------------------------------------------------------------
# counts, rates, correlation


def confusion(pred, truth) -> dict[str, int]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    return {"tp": int((pred & truth).sum()), "fp": int((pred & ~truth).sum()),
            "fn": int((~pred & truth).sum()), "tn": int((~pred & ~truth).sum())}


def mcc(tp: int, fp: int, fn: int, tn: int) -> float:
    """Matthews correlation; NaN when a margin is empty (all predicted or all true one way)."""
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if den == 0:
        return math.nan
    return float((tp * tn - fp * fn) / math.sqrt(den))


def spearman(x, y) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr); NaN under 3 pairs or a constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(sps.spearmanr(x, y).statistic)


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, groups: Sequence | None = None,
                 n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, int]:
    """Percentile interval of ``stat(idx)`` over resamples of the indices 0..n-1.

    With ``groups`` (one label per index) whole groups are resampled (a cluster bootstrap), so that
    correlated members (seeds of one grid cell) move together. Resamples where the statistic is
    undefined (NaN) are dropped; returns (lo, hi, number of defined resamples).
    """
    rng = np.random.default_rng(seed)
    if n == 0:
        return math.nan, math.nan, 0
    members = None
    if groups is not None:
        _, inv = np.unique(np.asarray(groups), return_inverse=True)
        order = np.argsort(inv, kind="mergesort")
        bounds = np.r_[0, np.cumsum(np.bincount(inv))]
        members = [order[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]
    vals = []
    for _ in range(n_boot):
        if members is None:
            idx = rng.integers(0, n, size=n)
        else:
            pick = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[k] for k in pick])
        v = stat(idx)
        if np.isfinite(v):
            vals.append(v)
    if not vals:
        return math.nan, math.nan, 0
    a = (1 - level) / 2
    lo, hi = np.quantile(np.asarray(vals), [a, 1 - a])
    return float(lo), float(hi), len(vals)


# ----------------------------------------------------------------------------------------------
# grouped cross-validation


def grouped_folds(groups: Sequence, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..k'-1) of each item such that every group lies in exactly one fold.

    Groups are shuffled with ``seed`` and dealt, largest first, to the currently smallest fold, so folds
    are about equal in size. k' = min(k, number of groups); one group gives a single fold 0.
    """
    g = np.asarray(groups)
    if g.size == 0:
        return np.zeros(0, dtype=int)
    uniq, inv = np.unique(g, return_inverse=True)
    k = max(1, min(int(k), len(uniq)))
    sizes = np.bincount(inv)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-sizes[order], kind="mergesort")]
    fold_of_group = np.empty(len(uniq), dtype=int)
    load = np.zeros(k, dtype=int)
    for gi in order:
        f = int(np.argmin(load))
        fold_of_group[gi] = f
        load[f] += sizes[gi]
    return fold_of_group[inv]


def check_folds(groups: Sequence, folds: Sequence) -> list:
    """Groups whose members lie in more than one fold (empty when the folds hold out whole groups)."""
    g, f = np.asarray(groups), np.asarray(folds)
    bad = []
    for u in np.unique(g):
        if len(np.unique(f[g == u])) > 1:
            bad.append(u)
    return bad


# ----------------------------------------------------------------------------------------------
# logistic regression (the hyperparameter baseline)


def logistic_fit(X: np.ndarray, y, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """Weights (intercept first) of an L2-penalised logistic regression: statsmodels' binomial GLM by
    ``fit_regularized`` (ridge: L1_wt 0), minimising -loglik + l2/2 * |w|^2 over the weights but the
    intercept. X should be standardised; separable data stays finite thanks to l2."""
    import statsmodels.api as sm

    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    A = np.c_[np.ones(len(X)), X]
    alpha = np.full(A.shape[1], l2 / max(len(y), 1))  # statsmodels scales the loglik by 1/n
    alpha[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sm.GLM(y, A, family=sm.families.Binomial()).fit_regularized(alpha=alpha, L1_wt=0.0, maxiter=iters * 4)
    return np.asarray(res.params, dtype=float)


def logistic_score(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The fitted logit (a ranking score; monotone in the probability)."""
    return np.c_[np.ones(len(X)), np.asarray(X, dtype=float)] @ w


# ----------------------------------------------------------------------------------------------
# association within cells (strata), and the multiple-comparison correction


def fisher(x, y) -> tuple[float, float]:
    """Pooled odds ratio and two-sided Fisher exact p of two boolean arrays (runs pooled over cells)."""
    x, y = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    t = [[int((x & y).sum()), int((x & ~y).sum())], [int((~x & y).sum()), int((~x & ~y).sum())]]
    r = sps.fisher_exact(t)
    return float(r.statistic), float(r.pvalue)


def informative_strata(x, y, cells) -> list[np.ndarray]:
    """Per cell with both values of x and of y, its 2x2 table [[x&y, x&~y], [~x&y, ~x&~y]]; other cells
    carry no within-cell information (their CMH variance is 0) and are left out."""
    x, y, cells = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool), np.asarray(cells)
    out = []
    for c in np.unique(cells):
        m = cells == c
        a, b = x[m], y[m]
        if a.all() or (~a).all() or b.all() or (~b).all():
            continue
        out.append(np.array([[(a & b).sum(), (a & ~b).sum()], [(~a & b).sum(), (~a & ~b).sum()]], dtype=float))
    return out


def cmh(x, y, cells) -> dict:
    """Cochran-Mantel-Haenszel test of x-y association within cells (statsmodels StratifiedTable:
    ``test_null_odds(correction=True)``), with the Mantel-Haenszel pooled odds ratio. ``n_strata``: the
    cells with both values of x and y (the only ones that inform it); p NaN with none."""
    tabs = informative_strata(x, y, cells)
    if not tabs:
        return {"n_strata": 0, "statistic": math.nan, "p": math.nan, "odds_ratio": math.nan}
    from statsmodels.stats.contingency_tables import StratifiedTable

    st = StratifiedTable(tabs)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        r = st.test_null_odds(correction=True)
        orr = st.oddsratio_pooled
    return {"n_strata": len(tabs), "statistic": float(r.statistic), "p": float(r.pvalue), "odds_ratio": float(orr)}


def _within_permutations(cells: np.ndarray, n_perm: int, seed: int) -> np.ndarray:
    """[n_perm, n] index arrays, each a random permutation of the items inside every cell."""
    rng = np.random.default_rng(seed)
    _, inv = np.unique(cells, return_inverse=True)
    order = np.argsort(inv, kind="mergesort")  # items grouped by cell
    out = np.empty((n_perm, len(cells)), dtype=np.int64)
    for i in range(n_perm):
        shuffled = order[np.lexsort((rng.random(len(cells)), inv[order]))]
        out[i, order] = shuffled
    return out


def within_cell_permutation(x, y, cells, n_perm: int = 2000, seed: int = 0) -> dict:
    """Permutation test of x-y association with y permuted inside each cell (the hyperparameters held
    fixed): the statistic is the number of runs with both, sum over cells of a_k; two-sided p =
    (1 + #{|T* - E| >= |T - E|}) / (1 + n_perm), E the statistic's mean under within-cell exchange."""
    x, y, cells = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool), np.asarray(cells)
    t = int((x & y).sum())
    e = 0.0
    for c in np.unique(cells):
        m = cells == c
        e += x[m].sum() * y[m].sum() / m.sum()
    if not informative_strata(x, y, cells):
        return {"statistic": t, "expected": e, "p": math.nan, "n_perm": 0}
    perms = _within_permutations(cells, n_perm, seed)
    ts = (x[None, :] & y[perms]).sum(axis=1)
    p = (1 + int((np.abs(ts - e) >= abs(t - e) - 1e-9).sum())) / (1 + n_perm)
    return {"statistic": t, "expected": float(e), "p": float(p), "n_perm": n_perm}


def auroc_within(y, s, cells) -> tuple[float, int]:
    """AUROC over (positive, negative) pairs from the same cell only: sum of the cells' Mann-Whitney U
    over the sum of their n_pos * n_neg. A score that only recognises the hyperparameters is constant
    inside a cell and gets 0.5. Returns (AUROC, number of cells with both classes); NaN with none."""
    y, s, cells = np.asarray(y, dtype=bool), np.asarray(s, dtype=float), np.asarray(cells)
    ok = np.isfinite(s)
    y, s, cells = y[ok], s[ok], cells[ok]
    u = pairs = 0.0
    k = 0
    for c in np.unique(cells):
        m = cells == c
        yp, yn = s[m][y[m]], s[m][~y[m]]
        if len(yp) and len(yn):
            u += auroc(y[m], s[m]) * len(yp) * len(yn)  # the cell's Mann-Whitney U
            pairs += len(yp) * len(yn)
            k += 1
    return (float(u / pairs) if pairs else math.nan), k


def paired_cell_bootstrap(y, s1, s2, cells, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUROC(s1) - AUROC(s2) on the same runs, with a percentile interval and a two-sided bootstrap p
    (twice the smaller share of resampled differences on either side of 0) from resampling whole cells,
    so both scores see the same resampled runs."""
    y = np.asarray(y, dtype=bool)
    s1, s2 = np.asarray(s1, dtype=float), np.asarray(s2, dtype=float)
    d = auroc(y, s1) - auroc(y, s2)
    rng = np.random.default_rng(seed)
    _, inv = np.unique(np.asarray(cells), return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(inv.max() + 1)] if len(inv) else []
    vals = []
    for _ in range(n_boot if members else 0):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        v = auroc(y[idx], s1[idx]) - auroc(y[idx], s2[idx])
        if np.isfinite(v):
            vals.append(v)
    if not math.isfinite(d) or len(vals) < 10:
        return {"difference": d, "ci": [math.nan, math.nan], "p": math.nan, "n_defined": len(vals)}
    v = np.asarray(vals)
    p = min(1.0, 2 * min((v <= 0).mean(), (v >= 0).mean()))
    lo, hi = np.quantile(v, [0.025, 0.975])
    return {"difference": float(d), "ci": [float(lo), float(hi)], "p": float(max(p, 1 / (len(v) + 1))),
            "n_defined": len(vals)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels multipletests, method 'holm'); NaN entries stay NaN and are
    not counted as comparisons."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        from statsmodels.stats.multitest import multipletests

        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(v) for v in out]
