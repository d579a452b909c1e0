"""Statistics used everywhere: Wilson interval for a proportion, the percentile bootstrap over
prompts for any statistic of per-prompt values, the percentile interval and two-sided p-value of
any bootstrap distribution, and the Holm-Bonferroni correction. Nothing here knows about metrics,
prompts' subdomains or runs (that is ``compare.bootstrap``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import sqrt
from statistics import NormalDist

import numpy as np

_MAX_ELEMENTS = 4_000_000  # bootstrap chunk size, in resampled values


def wilson_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n; (nan, nan) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_ci needs 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (float("nan"), float("nan"))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap CI, resampling rows (prompts) of ``values`` with replacement.

    ``values`` is (n_prompts,) or (n_prompts, k). ``statistic`` maps one resample (same shape as
    ``values``) to a float; with ``vectorized=True`` it instead gets a stack of resamples,
    (b, n_prompts[, k]), and returns b floats (as with ``scipy.stats.bootstrap``). Resample indices
    are drawn in chunks from ``numpy.random.default_rng(seed)``. Resamples whose statistic is not
    finite are dropped; (nan, nan) if none is finite.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty (n,) or (n, k) array, got {x.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, _MAX_ELEMENTS // x.size)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        sample = x[rng.integers(0, n, size=(b, n))]
        if vectorized:
            stats[start : start + b] = np.asarray(statistic(sample), dtype=float).reshape(b)
        else:
            stats[start : start + b] = [statistic(s) for s in sample]
    return percentile_ci(stats, confidence)


def percentile_ci(stats: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite resampled values; (nan, nan) if there are none."""
    s = np.asarray(stats, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(s, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference": twice the smaller tail share at 0, with
    the +1 correction ((k + 1) / (B + 1)), capped at 1. NaN when no resample is finite."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    low = (np.sum(d <= 0) + 1) / (d.size + 1)
    high = (np.sum(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * min(low, high)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down; NaN entries stay NaN and are not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(v) for v in out]
