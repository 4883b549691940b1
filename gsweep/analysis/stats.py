"""Small, dependency-free statistics for ``gsweep analyze`` (numpy only).

Ranking scores (AUROC, AUPRC, ROC curves) handle ties exactly; correlation is Spearman's on average
ranks; intervals come from percentile bootstraps that can resample whole groups (grid cells), since
seeds of one cell are not independent of each other. Cross-validation folds hold out whole groups, and
the hyperparameter baseline is an L2-regularised logistic regression fitted by Newton's method.

Undefined quantities (a score over one class, a correlation over a constant) are NaN here; callers turn
them into ``null`` plus a reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

# ----------------------------------------------------------------------------------------------
# ranks and ranking scores


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``a``, ties given their average rank (as scipy.stats.rankdata(method='average'))."""
    a = np.asarray(a, dtype=float)
    n = a.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(a, kind="mergesort")
    sa = a[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sa[1:], sa[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    avg = (starts + ends + 1) / 2.0  # average of 1-based ranks starts+1 .. ends
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


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
    r = rankdata(s)
    u = r[y].sum() - n_pos * (n_pos + 1) / 2.0
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
    """Spearman's rank correlation (Pearson's r of average ranks); NaN under 3 pairs or a constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return math.nan
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    if den == 0:
        return math.nan
    return float((rx * ry).sum() / den)


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
    """Weights (intercept first) of an L2-penalised logistic regression by Newton's method.

    The intercept is not penalised. X should be standardised; separable data stays finite thanks to l2.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    A = np.c_[np.ones(len(X)), X]
    w = np.zeros(A.shape[1])
    p0 = np.clip(y.mean(), 1e-6, 1 - 1e-6) if len(y) else 0.5
    w[0] = math.log(p0 / (1 - p0))
    pen = np.full(A.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        z = np.clip(A @ w, -30, 30)
        p = 1 / (1 + np.exp(-z))
        grad = A.T @ (p - y) + pen * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(pen) + 1e-9 * np.eye(A.shape[1])
        step = np.linalg.solve(H, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def logistic_score(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    """The fitted logit (a ranking score; monotone in the probability)."""
    return np.c_[np.ones(len(X)), np.asarray(X, dtype=float)] @ w
