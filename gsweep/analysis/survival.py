"""Survival statistics for censored step counts (numpy and statsmodels; no JAX).

A run that never reached the threshold is *censored* at its ``steps_done``: we know its time to
reach is larger than that, not what it is. Dropping such runs biases medians down, counting them
as zero is wrong, so medians of ``t_fit`` / ``t_gen`` are Kaplan–Meier medians.

- :func:`kaplan_meier` -> (event times, survival just after each) — the product-limit estimator
  (statsmodels ``SurvfuncRight``).
- :func:`km_median` -> the smallest event time where the survival falls to 0.5 or below, or
  ``None`` when censoring leaves it undefined (callers show that as ``>steps``).
- :func:`wilson_interval` -> the Wilson score interval of a binomial proportion (95% by default;
  statsmodels ``proportion_confint(method="wilson")``).
- :func:`censored_durations` -> (durations, observed) from a nullable step column and steps_done.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def _as_arrays(durations, observed) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(durations, dtype=float).ravel()
    if observed is None:
        e = np.ones(d.shape, dtype=bool)
    else:
        e = np.asarray(observed, dtype=bool).ravel()
    if d.shape != e.shape:
        raise ValueError(f"durations ({d.size}) and observed ({e.size}) differ in length")
    keep = ~np.isnan(d)
    return d[keep], e[keep]


def kaplan_meier(durations, observed=None) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan–Meier estimate of S(t) = P(T > t).

    Args:
      durations: the time of each subject (the event time when observed, else the censoring time).
        NaN entries are ignored.
      observed: bool per subject, True when the event happened at that time (False = censored
        there). ``None`` means every event was observed.

    Returns:
      ``(times, survival)``: the distinct times of observed events, ascending, and S just after
      each. Both empty when no event was observed. At a tie between an event and a censoring, the
      censored subject counts as still at risk (the usual convention).
    """
    d, e = _as_arrays(durations, observed)
    if not e.any():
        return np.array([], dtype=float), np.array([], dtype=float)
    from statsmodels.duration.survfunc import SurvfuncRight

    sf = SurvfuncRight(d, e.astype(float))
    times = np.asarray(sf.surv_times, dtype=float)
    surv = np.asarray(sf.surv_prob, dtype=float)
    return times, surv


def km_median(durations, observed=None) -> float | None:
    """Kaplan–Meier median: the first event time t with S(t) <= 0.5; ``None`` when S never gets there.

    ``None`` means more than half of the subjects may never have had the event within their
    budget (a median "> steps"). With no censoring and an odd count this is the sample median; with
    an even count it is the lower of the two middle values (the usual step-function convention).
    """
    times, surv = kaplan_meier(durations, observed)
    hit = np.nonzero(surv <= 0.5 + 1e-12)[0]
    if hit.size == 0:
        return None
    return float(times[hit[0]])


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (95% with the default ``z``).

    Returns ``(low, high)`` in [0, 1]; ``(nan, nan)`` when ``n == 0``.
    """
    k, n = int(successes), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    lo, hi = proportion_confint(k, n, alpha=2 * float(norm.sf(z)), method="wilson")
    low, high = max(0.0, float(lo)), min(1.0, float(hi))
    # exact ends: no rounding drift at k = 0 or k = n
    if k == 0:
        low = 0.0
    if k == n:
        high = 1.0
    return (low, high)


def censored_durations(reached, steps_done) -> tuple[np.ndarray, np.ndarray]:
    """``(durations, observed)`` from a step-count column with missing = not reached.

    ``reached``: first step at which the threshold was met, NaN / None / pandas <NA> when never;
    ``steps_done``: the steps each run trained (its censoring time).
    """
    r = np.array([math.nan if _missing(v) else float(v) for v in list(reached)], dtype=float)
    s = np.asarray([float(v) for v in list(steps_done)], dtype=float)
    if r.shape != s.shape:
        raise ValueError(f"reached ({r.size}) and steps_done ({s.size}) differ in length")
    observed = ~np.isnan(r)
    return np.where(observed, r, s), observed


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(v != v)  # NaN
    except TypeError:  # pandas.NA raises on bool()
        return True
