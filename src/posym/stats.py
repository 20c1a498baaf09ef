"""Statistics shared by the whole book: intervals over seeds, Student-t quantiles, Wilson intervals.

One implementation of each, so every chapter reports intervals the same way: :func:`mean_ci` (the
mean over seeds with a Student-t or percentile-bootstrap interval; NaN and infinite values dropped),
:func:`mean_halfwidth` (the same t-interval as mean and half-width), :func:`seed_band` (a mean and
interval per x value, for the bands of the figures), :func:`t_quantile` (exact, without SciPy) and
:func:`wilson` (a rate's interval); :func:`binomial_tail` (the chance of at least k hits) and
:func:`rank_correlation` (Spearman's correlation with a permutation p-value).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """95 % Wilson score interval for ``k`` successes out of ``n`` (vectorised; NaN where n = 0)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        mid = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return np.clip(mid - half, 0.0, 1.0), np.clip(mid + half, 0.0, 1.0)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) (no SciPy in the pinned stack)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution (inverse of :func:`t_cdf`), by bisection to 1e-12."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Iterable[float], level: float = 0.95, method: str = "t", n_boot: int = 10_000,
            seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (one per seed) and a ``level`` confidence interval for it: ``(mean, lo, hi)``.

    ``method="t"``: the Student-t interval ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (the default: with five
    seeds a bootstrap interval is too narrow).  ``method="bootstrap"``: the percentile interval of ``n_boot``
    resampled means (seeded, so reproducible).  NaN and infinite values are dropped; with one value the interval is
    ``(nan, nan)``; with no value everything is NaN.  Identical values give a zero-width interval.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if method not in ("t", "bootstrap"):
        raise ValueError(f"unknown interval method {method!r}: choose 't' or 'bootstrap'")
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    m = float(x.mean())
    if n == 1:
        return (m, math.nan, math.nan)
    if np.all(x == x[0]):
        return (m, m, m)
    if method == "t":
        half = t_quantile(0.5 + level / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
        return (m, m - half, m + half)
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return (m, float(lo), float(hi))


def mean_halfwidth(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval of :func:`mean_ci` (NaN half-width for one value)."""
    m, lo, hi = mean_ci(values, level=level)
    return m, (hi - m if not math.isnan(hi) else math.nan)


def seed_band(df: pd.DataFrame, y: str, x: str = "step", by: Sequence[str] = (), level: float = 0.95,
              method: str = "t") -> pd.DataFrame:
    """Mean over seeds and its confidence interval at every ``x`` (per group ``by``).

    ``df`` has one row per seed and point (a ``seed`` column is not required: every row is one observation).
    Returns columns ``by..., x, mean, lo, hi, n``.
    """
    keys = list(by) + [x]
    rows = []
    for key, g in df.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        m, lo, hi = mean_ci(g[y], level=level, method=method)
        rows.append({**dict(zip(keys, key)), "mean": m, "lo": lo, "hi": hi, "n": int(g[y].notna().sum())})
    return pd.DataFrame(rows, columns=keys + ["mean", "lo", "hi", "n"])


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(k, n + 1))


def rank_correlation(x, y, n_perm: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """Spearman's rank correlation of ``x`` and ``y`` (ties get their mean rank) and its two-sided permutation
    p-value (``n_perm`` seeded shuffles of ``y``); ``(nan, nan)`` below 4 pairs or when either is constant."""
    x, y = pd.Series(x, dtype=float).rank().to_numpy(), pd.Series(y, dtype=float).rank().to_numpy()
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    r = float(np.corrcoef(x, y)[0, 1])
    perm = np.random.default_rng(seed).permuted(np.tile(y, (n_perm, 1)), axis=1)  # (n_perm, n)
    xc, pc = x - x.mean(), perm - perm.mean(axis=1, keepdims=True)
    null = (pc @ xc) / (np.linalg.norm(pc, axis=1) * np.linalg.norm(xc))
    return r, float((np.sum(np.abs(null) >= abs(r) - 1e-12) + 1) / (n_perm + 1))


# -----------------------------------------------------------------------------------------------
# Normalisation
