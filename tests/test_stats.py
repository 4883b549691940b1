"""The statistics behind `gsweep analyze` (scipy, statsmodels), against brute force, hand computations and
textbook values."""

import itertools
import math

import numpy as np
import pytest

from gsweep.analysis import stats


def brute_auroc(y, s):
    pos, neg = s[y], s[~y]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_rankdata_ties():
    assert stats.rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert stats.rankdata([]).size == 0


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(40) < 0.4
    s = rng.integers(0, 6, 40).astype(float)  # many ties
    assert stats.auroc(y, s) == pytest.approx(brute_auroc(y, s))


def test_auroc_extremes_and_undefined():
    y = np.array([0, 0, 1, 1], bool)
    assert stats.auroc(y, [0, 1, 2, 3]) == 1.0
    assert stats.auroc(y, [3, 2, 1, 0]) == 0.0
    assert stats.auroc(y, [1, 1, 1, 1]) == 0.5
    assert math.isnan(stats.auroc(np.ones(4, bool), [0, 1, 2, 3]))
    # NaN scores are dropped
    assert stats.auroc(np.array([0, 1, 1], bool), [0.0, np.nan, 2.0]) == 1.0


def test_auprc_known_values():
    # sklearn.metrics.average_precision_score([0,0,1,1], [0.1,0.4,0.35,0.8]) == 0.8333...
    assert stats.auprc(np.array([0, 0, 1, 1], bool), [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    assert stats.auprc(np.array([0, 1], bool), [0.0, 1.0]) == 1.0
    assert stats.auprc(np.array([0, 1, 0, 1], bool), [1, 1, 1, 1]) == 0.5  # all tied: the prevalence
    assert math.isnan(stats.auprc(np.zeros(3, bool), [1, 2, 3]))


def test_roc_curve_endpoints():
    fpr, tpr = stats.roc_curve(np.array([0, 1, 0, 1], bool), [0.1, 0.9, 0.3, 0.2])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(stats.auroc(np.array([0, 1, 0, 1], bool), [0.1, 0.9, 0.3, 0.2]))


def test_threshold_at_fpr():
    neg = np.arange(10.0)
    t = stats.threshold_at_fpr(neg, 0.1)
    assert (neg > t).mean() <= 0.1 and t == 8.0
    assert (neg > stats.threshold_at_fpr(neg, 0.0)).sum() == 0
    assert math.isnan(stats.threshold_at_fpr([], 0.1))


def test_mcc():
    assert stats.mcc(10, 0, 0, 10) == 1.0
    assert stats.mcc(0, 10, 10, 0) == -1.0
    assert stats.mcc(5, 5, 5, 5) == 0.0
    assert math.isnan(stats.mcc(10, 10, 0, 0))


def test_spearman():
    x = np.arange(10.0)
    assert stats.spearman(x, x ** 3) == pytest.approx(1.0)
    assert stats.spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert math.isnan(stats.spearman([1, 2], [3, 4]))
    assert math.isnan(stats.spearman([1, 2, 3], [5, 5, 5]))


def test_bootstrap_ci_covers_and_groups():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    r = stats.spearman(x, y)
    lo, hi, nb = stats.bootstrap_ci(lambda i: stats.spearman(x[i], y[i]), 200, n_boot=300)
    assert lo < r < hi and nb == 300
    g = np.repeat(np.arange(20), 10)
    lo2, hi2, _ = stats.bootstrap_ci(lambda i: stats.spearman(x[i], y[i]), 200, groups=g, n_boot=300)
    assert lo2 < r < hi2


def test_grouped_folds_balanced():
    g = np.repeat(np.arange(12), 5)
    f = stats.grouped_folds(g, 5, seed=1)
    assert stats.check_folds(g, f) == []
    assert len(np.unique(f)) == 5
    assert np.bincount(f).max() - np.bincount(f).min() <= 5
    assert (stats.grouped_folds(["a"] * 4, 5) == 0).all()


def test_logistic_fit_recovers_direction():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = rng.random(300) < 1 / (1 + np.exp(-(2 * X[:, 0] - 1 * X[:, 1])))
    w = stats.logistic_fit(X, y, l2=0.1)
    assert w[1] > 1 and w[2] < -0.3
    assert stats.auroc(y, stats.logistic_score(w, X)) > 0.8
    w_sep = stats.logistic_fit(X[:, :1], X[:, 0] > 0, l2=1.0)  # separable: finite thanks to the penalty
    assert np.isfinite(w_sep).all()


# ---------------------------------------------------------------------------------------------- textbook pins
# Library-backed numbers pinned to published values, so that a library change cannot move one silently.


def test_cmh_rabbits_textbook():
    """R's mantelhaen.test(Rabbits) (penicillin and rabbits, 5 strata): Mantel-Haenszel X-squared =
    3.9286, df = 1, p-value = 0.04747, common odds ratio 7."""
    tabs = [[[0, 6], [0, 5]], [[3, 3], [0, 6]], [[6, 0], [2, 4]], [[5, 1], [6, 0]], [[2, 0], [5, 0]]]
    x, y, cells = [], [], []
    for k, t in enumerate(tabs):
        for (i, j), n in np.ndenumerate(np.array(t)):
            x += [i == 0] * n
            y += [j == 0] * n
            cells += [k] * n
    r = stats.cmh(x, y, cells)
    assert r["statistic"] == pytest.approx(3.9286, abs=1e-4)
    assert r["p"] == pytest.approx(0.04747, abs=1e-5)
    assert r["odds_ratio"] == pytest.approx(7.0)
    assert r["n_strata"] == 3  # the first and last strata have a constant column: no within-cell information


def test_holm_known_values():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = stats.holm([0.02, float("nan")])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1])


def test_fisher_known_value():
    # Fisher's tea-tasting table [[3, 1], [1, 3]]: two-sided p = 34/70 = 0.4857
    x = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0], bool)
    assert stats.fisher(x, y)[1] == pytest.approx(0.4857, abs=1e-4)


def confounded(n_cells=8, per=20, within=False, seed=0):
    """Cells differ by a hyperparameter that drives both x and y; with ``within`` y also follows x inside
    every cell. Returns x, y, cells."""
    rng = np.random.default_rng(seed)
    cells = np.repeat(np.arange(n_cells), per)
    level = cells / (n_cells - 1)  # the hyperparameter
    x = rng.random(len(cells)) < 0.05 + 0.9 * level
    if within:
        y = rng.random(len(cells)) < np.where(x, 0.85, 0.15)
    else:
        y = rng.random(len(cells)) < 0.05 + 0.9 * level  # independent of x given the cell
    return x, y, cells


def test_within_cell_tests_ignore_a_confounded_association():
    x, y, cells = confounded()
    assert stats.fisher(x, y)[1] < 0.01  # pooled: found
    assert stats.cmh(x, y, cells)["p"] > 0.05
    assert stats.within_cell_permutation(x, y, cells, n_perm=2000)["p"] > 0.05


def test_within_cell_tests_find_a_within_cell_association():
    x, y, cells = confounded(within=True)
    assert stats.cmh(x, y, cells)["p"] < 1e-3
    assert stats.within_cell_permutation(x, y, cells, n_perm=2000)["p"] < 1e-3


def test_within_cell_permutation_keeps_cell_margins():
    cells = np.repeat([0, 1, 2], [3, 4, 5])
    perms = stats._within_permutations(cells, 50, seed=1)
    for p in perms:
        assert (cells[p] == cells).all() and sorted(p) == list(range(12))


def test_auroc_within_strips_the_cell():
    cells = np.repeat([0, 1], 4)
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1], bool)
    hp = cells.astype(float)  # a score that only knows the cell
    assert stats.auroc_within(y, hp, cells) == (0.5, 2)
    s = np.array([0, 1, 2, 3, 10, 11, 12, 13], float)
    assert stats.auroc_within(y, s, cells)[0] == 1.0
    assert math.isnan(stats.auroc_within(y[:2], s[:2], cells[:2])[0])


def test_paired_cell_bootstrap_sees_a_real_difference():
    rng = np.random.default_rng(0)
    cells = np.repeat(np.arange(10), 10)
    y = rng.random(100) < 0.5
    good, noise = y + rng.normal(0, 0.3, 100), rng.normal(0, 1, 100)
    r = stats.paired_cell_bootstrap(y, good, noise, cells, n_boot=500)
    assert r["difference"] > 0.3 and r["ci"][0] > 0 and r["p"] < 0.01
    same = stats.paired_cell_bootstrap(y, noise, noise + 1e-9 * rng.normal(size=100), cells, n_boot=200)
    assert same["p"] > 0.2
