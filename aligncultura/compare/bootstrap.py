"""Subdomain-clustered bootstrap for one model's HHH metrics and for paired model differences.

Resampling scheme (two-stage cluster bootstrap, "resample both stages" in Davison & Hinkley 1997,
section 3.8): prompts are grouped by subdomain. One resample (1) draws as many subdomains as there
are, with replacement, then (2) for each drawn subdomain draws as many of its prompts as it has,
with replacement. A subdomain drawn twice contributes two independent within-subdomain draws. The
result is a weight per prompt (how often it was drawn) and every metric is recomputed from the
weighted per-prompt values. Prompts of one subdomain move together, so a difference that holds in
a few subdomains only gets the wide interval it deserves; resampling both stages is slightly
conservative (it counts the within-subdomain spread twice).

Paired: the same weights are applied to every model on the same prompts, so a difference is
computed prompt by prompt (common random numbers): the noise the models share cancels.

Per prompt, values are the ``scores.per_prompt_table`` columns the metrics read
(``metric_list.METRIC_COLUMNS``: means over seeds, NaN where the criterion is unknown); a metric is
computed from the weighted means over the prompts where each column is known, exactly as
``metrics.compute_metrics`` computes it (with all weights 1 the two agree to the last digit).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from aligncultura.benchmark.metric_list import JOINT_FIRST, METRIC_COLUMNS, metric_values
from aligncultura.benchmark.scores import per_prompt_table

HEADLINE = tuple(m.name for m in JOINT_FIRST)  # the metrics of rates(), in the comparison's order
_CHUNK = 4_000_000  # weights per chunk (resamples x prompts)


def prompt_matrix(judgments, row_ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row_ids, (n, len(METRIC_COLUMNS)) values) per prompt, the columns in METRIC_COLUMNS order;
    with ``row_ids``, the rows are those prompts in that order (NaN for a prompt not judged)."""
    t = per_prompt_table(judgments)
    width = len(METRIC_COLUMNS)
    x = np.column_stack([t[c] for c in METRIC_COLUMNS]) if len(t["row_id"]) else np.empty((0, width))
    ids = np.asarray(t["row_id"], dtype=object)
    if row_ids is None:
        return ids, x
    pos = {r: i for i, r in enumerate(ids)}
    out = np.full((len(row_ids), width), np.nan)
    for k, r in enumerate(row_ids):
        if r in pos:
            out[k] = x[pos[r]]
    return np.asarray(row_ids, dtype=object), out


def columns(x: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The columns ``names`` of a ``prompt_matrix`` block, (n, len(names))."""
    return x[:, [METRIC_COLUMNS.index(c) for c in names]]


def rates(x: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """Headline metrics (fractions) of per-prompt values ``x`` (n, METRIC_COLUMNS) under weights
    ``w`` (b, n): each a (b,) array, NaN where a resample has no known value for a part of the
    metric."""
    known = ~np.isnan(x)
    num = w @ np.where(known, x, 0.0)
    den = w @ known.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    values = metric_values({c: m[:, k] for k, c in enumerate(METRIC_COLUMNS)})
    return {name: values[name] for name in HEADLINE}


def cluster_weights(clusters: Sequence, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Two-stage bootstrap weights, (b, n) chunks summing to ``n_resamples`` rows.

    Stage 1 draws G clusters out of G with replacement (a multinomial count per cluster);
    stage 2 draws count_g * n_g prompts uniformly with replacement within cluster g (count_g
    independent within-cluster resamples of size n_g, pooled)."""
    labels = np.asarray(clusters, dtype=object)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("cluster_weights needs a non-empty list of cluster labels")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    groups = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    n, g_count = labels.size, len(groups)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK // n)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        picks = rng.multinomial(g_count, np.full(g_count, 1.0 / g_count), size=b)
        flat = []
        for g, idx in enumerate(groups):
            draws = picks[:, g] * idx.size  # prompts drawn within cluster g, per resample
            which = np.repeat(np.arange(b), draws)
            flat.append(which * n + idx[rng.integers(0, idx.size, size=which.size)])
        yield np.bincount(np.concatenate(flat), minlength=b * n).reshape(b, n).astype(float)


def resample(blocks: Sequence[np.ndarray], clusters: Sequence, n_resamples: int,
             seed: int) -> list[dict[str, np.ndarray]]:
    """Bootstrap distributions of the headline metrics for each (n, 5) block, all blocks under
    the same weights (paired). Returns one {metric: (n_resamples,) array} per block."""
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in blocks]
    for w in cluster_weights(clusters, n_resamples, seed):
        for k, x in enumerate(blocks):
            parts[k].append(rates(x, w))
    return [{m: np.concatenate([p[m] for p in ps]) for m in HEADLINE} for ps in parts]


def point(x: np.ndarray) -> dict[str, float]:
    """Headline metrics of one block with every prompt weighted once (fractions, NaN if none)."""
    return {m: float(v[0]) for m, v in rates(x, np.ones((1, len(x)))).items()}
