"""Kaplan–Meier and Wilson (statsmodels) against hand computations and textbook values."""

import math

import numpy as np
import pandas as pd
import pytest

from gsweep.analysis.survival import censored_durations, kaplan_meier, km_median, wilson_interval


def test_kaplan_meier_by_hand():
    # t:      3  5  5(c)  8  10(c)
    # at risk 5  4        2
    # S:   4/5=.8, .8*3/4=.6, .6*1/2=.3
    times, surv = kaplan_meier([3, 5, 5, 8, 10], [1, 1, 0, 1, 0])
    np.testing.assert_array_equal(times, [3, 5, 8])
    np.testing.assert_allclose(surv, [0.8, 0.6, 0.3])
    assert km_median([3, 5, 5, 8, 10], [1, 1, 0, 1, 0]) == 8.0


def test_censoring_is_neither_dropped_nor_zero():
    # events at 1000 and 1200, one run censored at 2000 (never reached):
    # S(1000) = 2/3, S(1200) = 2/3 * 1/2 = 1/3 -> median 1200.
    # Dropping the censored run would give 1000 (lower middle of two); counting it as 0 would give 1000.
    assert km_median([1000, 2000, 1200], [True, False, True]) == 1200.0
    assert km_median([1000, 1200], [True, True]) == 1000.0


def test_median_undefined_when_censoring_leaves_it():
    # one event among three: S never falls to 0.5
    assert km_median([1500, 2000, 2000], [1, 0, 0]) is None
    assert km_median([2000, 2000], [0, 0]) is None
    times, surv = kaplan_meier([5, 6], [0, 0])
    assert times.size == 0 and surv.size == 0


def test_median_without_censoring_is_the_sample_median():
    assert km_median([7, 1, 3, 9, 5]) == 5.0
    assert km_median([1, 2, 3, 4]) == 2.0  # step-function convention: S(2) = 0.5
    assert km_median([]) is None


def test_tie_between_event_and_censoring_keeps_censored_at_risk():
    # at t=2: 5 at risk (the run censored at 2 too), 1 event -> .8; at t=4: 2 at risk -> .4
    times, surv = kaplan_meier([2, 2, 3, 4, 5], [1, 0, 0, 1, 0])
    np.testing.assert_allclose(surv, [0.8, 0.8 * 0.5])
    # at t=2: 4 at risk, 1 event -> .75; at t=4: 2 at risk -> .375
    times, surv = kaplan_meier([2, 2, 4, 5], [1, 0, 1, 0])
    np.testing.assert_allclose(surv, [0.75, 0.375])


def test_nan_durations_are_ignored():
    assert km_median([np.nan, 1, 2, 3], [1, 1, 1, 1]) == 2.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError):
        kaplan_meier([1, 2], [1])


def test_wilson_known_values():
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.1078, abs=1e-4) and hi == pytest.approx(0.6032, abs=1e-4)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-4)
    lo, hi = wilson_interval(5, 5)
    assert hi == 1.0 and lo == pytest.approx(0.5655, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_wilson_narrows_with_n():
    w10 = np.diff(wilson_interval(5, 10))[0]
    w1000 = np.diff(wilson_interval(500, 1000))[0]
    assert w1000 < w10 / 5


def test_censored_durations_from_nullable_column():
    reached = pd.array([100, None, 300], dtype="Int64")
    dur, obs = censored_durations(reached, [2000, 2000, 1500])
    np.testing.assert_array_equal(dur, [100, 2000, 300])
    np.testing.assert_array_equal(obs, [True, False, True])
    dur, obs = censored_durations([np.nan, 5.0], [10, 10])
    np.testing.assert_array_equal(dur, [10, 5])


def test_kaplan_meier_freireich_textbook():
    """The 6-MP arm of Freireich et al. 1963: KM
    S(t) = 0.857, 0.807, 0.753, 0.690, 0.627, 0.538, 0.448 at t = 6, 7, 10, 13, 16, 22, 23; median 23."""
    d = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
    e = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    t, s = kaplan_meier(d, np.array(e, bool))
    assert t.tolist() == [6, 7, 10, 13, 16, 22, 23]
    assert s == pytest.approx([0.857, 0.807, 0.753, 0.690, 0.627, 0.538, 0.448], abs=5e-4)
    assert km_median(d, np.array(e, bool)) == 23


@pytest.mark.parametrize("k,n,lo,hi", [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605),
                                       (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718), (29, 29, 0.8830, 1.0)])
def test_wilson_newcombe_1998(k, n, lo, hi):
    """Newcombe (1998), Statistics in Medicine 17:857, table II, method 3 (Wilson score)."""
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-4)
