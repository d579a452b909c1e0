"""Judges checked against gold labels: the labelled file and the agreement statistics.

A labelled file (CSV or JSON lines, UTF-8) has one row per (prompt, response):

    id, question, response, [domain], harmless, truthful, informative

`harmless` is ``safe`` or ``unsafe``; `truthful` and `informative` are ``yes`` or ``no``; a
blank label means the row is not labelled for that criterion; `domain` is optional free text
(a UNESCO domain, say). BeaverTails (is_safe) and TruthfulQA-style labels map onto these
columns directly. `agreement` compares one judge's verdicts with the labels per criterion:
accuracy (Wilson CI), Cohen's kappa (bootstrap CI over rows), and for scorer judges the ROC AUC
of the score (bootstrap CI) and the threshold whose positive share matches the gold base rate;
the same per domain when the file has domains.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from aligncultura.benchmark.agreement import cohen_kappa
from aligncultura.errors import InputError
from aligncultura.stats import bootstrap_ci, wilson_ci

LABELS = {"harmless": ("safe", "unsafe"), "truthful": ("yes", "no"),
          "informative": ("yes", "no")}
POSITIVE = {"harmless": "unsafe", "truthful": "yes", "informative": "yes"}  # the scored event
REQUIRED = ("id", "question", "response")


def read_labels(path: str | Path, key: str = "labels.path") -> list[dict[str, Any]]:
    """The labelled rows; a missing column or a label outside its set is one InputError line
    naming the file, the line and the column."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{key}={path}: no such file; give a CSV or JSON-lines labelled file")
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = [(reader.line_num, dict(r)) for r in reader]
        columns = list(reader.fieldnames or [])
    else:
        rows = []
        for i, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{p}:{i}: malformed JSON ({exc.msg}); fix the line") from None
        columns = sorted({c for _, r in rows for c in r})
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{p}: column {', '.join(repr(c) for c in missing)} missing; a labelled "
                         f"file has id, question, response and at least one of "
                         f"{', '.join(LABELS)} (columns are: {', '.join(columns) or 'none'})")
    if not any(c in columns for c in LABELS):
        raise InputError(f"{p}: no label column; give at least one of {', '.join(LABELS)}")
    out, seen = [], set()
    for line, r in rows:
        rid = str(r.get("id") or "").strip()
        if not rid or rid in seen:
            raise InputError(f"{p}:{line}: id {rid!r} is {'empty' if not rid else 'repeated'}; "
                             "every labelled row needs its own id")
        seen.add(rid)
        row = {"id": rid, "question": str(r.get("question") or ""),
               "response": str(r.get("response") or ""),
               "domain": (str(r.get("domain")).strip() or None) if r.get("domain") else None}
        for criterion, allowed in LABELS.items():
            value = r.get(criterion)
            value = str(value).strip().lower() if value not in (None, "") else None
            if value is not None and value not in allowed:
                raise InputError(f"{p}:{line}: {criterion} label {r.get(criterion)!r} is not one "
                                 f"of {', '.join(allowed)} (blank = not labelled)")
            row[criterion] = value
        if not row["question"].strip() or not row["response"].strip():
            raise InputError(f"{p}:{line}: question or response is empty")
        out.append(row)
    if not out:
        raise InputError(f"{p}: no labelled row")
    return out


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); nan with one class only."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _stats(gold: list[str], pred: list[str], scores: list[float | None], criterion: str,
           n_resamples: int, seed: int) -> dict[str, Any]:
    n = len(gold)
    agree = sum(g == p for g, p in zip(gold, pred, strict=True))
    lo, hi = wilson_ci(agree, n) if n else (float("nan"), float("nan"))
    out: dict[str, Any] = {"n": n, "accuracy": agree / n if n else None,
                           "accuracy_ci": [lo, hi], "kappa": cohen_kappa(gold, pred)}
    if n > 1:
        idx = np.arange(n)

        def kappa_of(rows: np.ndarray) -> float:
            k = cohen_kappa([gold[int(i)] for i in rows], [pred[int(i)] for i in rows])
            return float("nan") if k is None else k

        out["kappa_ci"] = list(bootstrap_ci(idx, kappa_of, n_resamples, seed=seed))
    if scores and all(s is not None for s in scores) and n:
        pos = np.array([g == POSITIVE[criterion] for g in gold])
        sc = np.array(scores, dtype=float)
        out["auc"] = roc_auc(pos, sc)
        if n > 1 and 0 < pos.sum() < n:
            both = np.column_stack([pos.astype(float), sc])
            out["auc_ci"] = list(bootstrap_ci(
                both, lambda s: roc_auc(s[:, 0] > 0.5, s[:, 1]), n_resamples, seed=seed))
        base = float(pos.mean())
        out["gold_base_rate"] = base
        # the threshold whose share of scores above it equals the gold base rate
        out["threshold_at_base_rate"] = float(np.quantile(sc, 1 - base)) if 0 < base < 1 \
            else None
    return out


def agreement(labelled: list[dict[str, Any]], judgments: list[dict[str, Any]],
              n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per criterion (and per domain): the judge's scored verdicts against the gold labels."""
    gold = {r["id"]: r for r in labelled}
    out: dict[str, Any] = {}
    for criterion in LABELS:
        mine = [j for j in judgments if j["criterion"] == criterion and gold.get(j["row_id"], {})
                .get(criterion) is not None]
        if not mine:
            continue
        scored = [j for j in mine if j["status"] == "scored"]
        g = [gold[j["row_id"]][criterion] for j in scored]
        p = [j["verdict"] for j in scored]
        s = [j.get("score") for j in scored]
        entry = {"judge": mine[0]["judge"], "labelled": len(mine),
                 "unscored": len(mine) - len(scored),
                 **_stats(g, p, s, criterion, n_resamples, seed)}
        domains = sorted({gold[j["row_id"]]["domain"] for j in scored} - {None})
        if domains:
            entry["by_domain"] = {}
            for d in domains:
                sel = [k for k, j in enumerate(scored) if gold[j["row_id"]]["domain"] == d]
                entry["by_domain"][d] = _stats([g[k] for k in sel], [p[k] for k in sel],
                                               [s[k] for k in sel], criterion, n_resamples, seed)
        out[criterion] = entry
    return out
