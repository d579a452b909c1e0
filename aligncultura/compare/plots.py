"""Figures of a comparison (matplotlib, Agg backend, imported only when a plot is drawn).

Each ``*_figure`` function takes parts of ``comparison.compare``'s result and returns a
matplotlib Figure (so tests can read its axes and labels); ``save`` writes it as a PNG and closes
it. Panel titles and directions come from ``metric_list``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aligncultura.benchmark.metric_list import JOINT_FIRST, Metric
from aligncultura.data import taxonomy


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    _plt().close(fig)
    return path


def _errorbar(ax, labels: list[str], entries: list[dict | None], key: str, color: str) -> None:
    """Horizontal points with CI whiskers, one row per label (None = not available); the x range
    spans at least 10 points so that a zero-width interval is not blown up."""
    xs = []
    for y, e in enumerate(entries):
        if not e or e.get(key) is None:
            ax.text(0.5, y, "n/a", transform=ax.get_yaxis_transform(), ha="center",
                    va="center", color="grey", fontsize=8)
            continue
        v, lo, hi = e[key], e.get("ci_low"), e.get("ci_high")
        # a percentile bootstrap interval need not hold its point estimate (a ratio such as
        # TI, or a float a hair off on 2 prompts): its whisker on that side is then empty
        err = [[max(0.0, v - lo)], [max(0.0, hi - v)]] if lo is not None and hi is not None \
            else None
        ax.errorbar([v], [y], xerr=err, fmt="o", color=color, capsize=4, markersize=6)
        xs += [v] + ([lo, hi] if err else [])
    if xs:
        mid, half = (min(xs) + max(xs)) / 2, max(5.0, (max(xs) - min(xs)) / 2 * 1.15)
        ax.set_xlim(mid - half, mid + half)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)


def _row(n_panels: int, n_rows: int) -> tuple[Any, list[Any]]:
    """One row of panels sharing the y axis (labels on the first); at least 4 inches high."""
    plt = _plt()
    fig, axes = plt.subplots(1, n_panels, figsize=(3.3 * n_panels, max(4.0, 1.5 + 0.6 * n_rows)),
                             sharey=True, squeeze=False)
    return fig, list(axes[0])


def metrics_figure(models: dict[str, dict], metrics: Sequence[Metric] = JOINT_FIRST,
                   ci: str = "subdomain-clustered bootstrap") -> Any:
    """One panel per metric: each model's value (percent) with its 95% CI (``ci``: how the CI
    was computed, for the title)."""
    labels = list(models)
    fig, axes = _row(len(metrics), len(labels))
    for ax, m in zip(axes, metrics, strict=True):
        _errorbar(ax, labels, [models[k].get(m.name) for k in labels], "value", "tab:blue")
        ax.set_title(m.title + ("" if m.higher_is_better else " (lower is better)"), fontsize=9)
        ax.set_xlabel(f"{m.title.split(' (')[0]} (%)")
    axes[0].set_ylabel("model")
    fig.suptitle(f"HHH metrics per model, 95% CI ({ci})", fontsize=11)
    fig.tight_layout()
    return fig


def pairwise_figure(rows: list[dict[str, Any]], metrics: Sequence[Metric] = JOINT_FIRST) -> Any:
    """One panel per metric: each pair's difference A - B (percentage points) with its paired
    95% CI; red = significant after the Holm correction."""
    pairs = list(dict.fromkeys(f"{r['a']}\n- {r['b']}" for r in rows))
    fig, axes = _row(len(metrics), len(pairs))
    for ax, m in zip(axes, metrics, strict=True):
        by = {f"{r['a']}\n- {r['b']}": r for r in rows if r["metric"] == m.name}
        entries = [by.get(p) for p in pairs]
        _errorbar(ax, pairs, entries, "diff", "black")
        for y, e in enumerate(entries):
            if e and e["significant"]:
                ax.plot([e["diff"]], [y], "o", color="tab:red", markersize=9, zorder=3)
        ax.axvline(0.0, color="grey", lw=1, ls="--")
        ax.set_title(m.title, fontsize=9)
        ax.set_xlabel("difference A - B (points)")
    axes[0].set_ylabel("pair (A - B)")
    fig.suptitle("Paired differences, 95% CI (red: significant after Holm-Bonferroni)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def failure_rows(failures: dict[str, dict]) -> list[tuple[str, str, bool]]:
    """Heatmap rows: (domain, subdomain or "" for the domain row, is_domain) in taxonomy order,
    only those judged in some run."""
    subs = {s for f in failures.values() for s in f["subdomains"]}
    doms = {d for f in failures.values() for d in f["domains"]}
    rows = []
    for d in (*taxonomy.DOMAINS, "None"):
        if d in doms:
            rows.append((d, "", True))
            rows += [(d, s.name, False) for s in taxonomy.SUBDOMAINS
                     if s.domain == d and s.name in subs]
    return rows


def failure_heatmap(failures: dict[str, dict], min_n: int = 10) -> Any:
    """Cultural failure rate per domain and subdomain (rows) and model (columns), each cell with
    its n; cells with n < ``min_n`` are grey (rate too noisy to read)."""
    import numpy as np

    plt = _plt()
    labels = list(failures)
    rows = failure_rows(failures)
    data = np.full((len(rows), len(labels)), np.nan)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 1.5 * len(labels)), 1.4 + 0.32 * len(rows)))
    cmap = plt.get_cmap("Reds").with_extremes(bad="#d0d0d0")
    texts = []
    for i, (d, s, is_dom) in enumerate(rows):
        for j, lab in enumerate(labels):
            f = failures[lab]
            c = f["domains"].get(d) if is_dom else f["subdomains"].get(s)
            n = c["n"] if c else 0
            rate = c["rate"] if c else None
            if rate is not None and n >= min_n:
                data[i, j] = rate
                texts.append((j, i, f"{rate:.0f}% n={n}", "black" if rate < 60 else "white"))
            else:
                texts.append((j, i, f"n={n}" if n else "-", "dimgrey"))
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    for x, y, t, col in texts:
        ax.text(x, y, t, ha="center", va="center", fontsize=7, color=col)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), [f"{d} (all)" if dom else f"    {s}" for d, s, dom in rows],
                  fontsize=8)
    for tick, (_, _, dom) in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_fontweight("bold" if dom else "normal")
    ax.set_xlabel("model")
    ax.set_ylabel("UNESCO domain / subdomain")
    ax.set_title(f"Cultural failure rate by domain and subdomain (grey: n < {min_n} prompts)",
                 fontsize=10)
    fig.colorbar(im, ax=ax, label="cultural failure rate (%)", shrink=0.6)
    fig.tight_layout()
    return fig


def efficiency_figure(eff: dict[str, dict]) -> Any:
    """Output tok/s and CPU- or GPU-seconds per 100 samples per model."""
    plt = _plt()
    labels = list(eff)
    fig, axes = plt.subplots(1, 2, figsize=(9, max(3.5, 1.4 + 0.5 * len(labels))), sharey=True)
    for ax, key, xlabel in ((axes[0], "output_tok_s", "output tokens / s"),
                            (axes[1], "seconds_per_100", "device-seconds per 100 samples")):
        vals = [eff[k].get(key) or 0.0 for k in labels]
        ax.barh(range(len(labels)), vals, color="tab:green")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel(xlabel + (f" ({eff[labels[0]]['device']})" if key != "output_tok_s" else ""))
        ax.invert_yaxis()
    axes[0].set_ylabel("model")
    fig.suptitle("Generation efficiency (from each run's metrics.json)", fontsize=10)
    fig.tight_layout()
    return fig
