"""Constants and small helpers shared by the parts of ``gsweep analyze`` (no JAX)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FPR = 0.10
N_FOLDS = 5
N_BOOT = 1000
MIN_CI_CLASS = 5  # fewest positives (and negatives) for an AUROC interval; fewest runs for a Spearman one
BASELINE = "hyperparameters"


# ----------------------------------------------------------------------------------------------
# helpers


def _float(a) -> np.ndarray:
    """Any numeric-ish column (Int64 with <NA>, object) -> float array with NaN for missing."""
    return pd.to_numeric(pd.Series(a), errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _num(v):
    """float or None (JSON null) for NaN/inf."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return _num(o)
    if o is pd.NA or o is None:
        return None
    return o


def _median(a) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else None
