"""N-gram containment: how much of an eval text occurs verbatim inside a reference text.

lm-evaluation-harness's decontamination flags an eval document when any of its 13-grams
(lowercased, punctuation-free) occurs in the training data; PaLM used 8-grams and asked for
70% of them. Here the containment of eval text E in reference R is the share of E's
distinct n-grams that occur in R, and a pair counts when it reaches ``min_containment``.
Jaccard misses an eval prompt embedded in a long document (the document's other n-grams
swamp the union); containment does not.

Defaults (7-grams, share >= 0.3) were chosen on bench/bench_leakage.py's labelled set of
edited CulturaX prompts embedded in long documents: 13-grams cannot survive one edit in a
15-word prompt, and "any shared 13-gram" flags templated prompts that share a stock clause
(see LEAKAGE_RESULTS.md, which reports the lm-eval rule next to the default).

Prompts shorter than ``n`` words use ``short_n``-grams, and prompts shorter than that are
one n-gram of their whole text, down to ``min_words``; shorter prompts are too unspecific to
test and get no containment score. Texts that fall back to characters (CJK) use
``chars_per_word`` times these sizes, in characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hashing import U64, ranges
from .shingles import Shingles, TextBatch, ngrams, unique_sets


@dataclass
class ContainmentConfig:
    n: int = 7  # lm-eval: 13, with any overlap (min_containment ~0)
    short_n: int = 5
    min_words: int = 5
    min_containment: float = 0.3
    chars_per_word: int = 2
    fallback_bytes_per_word: float = 16.0
    hash: str = "poly64"

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.short_n <= self.n:
            raise ValueError(
                f"containment sizes need 1 <= min_words <= short_n <= n, got {self.min_words}, "
                f"{self.short_n}, {self.n}"
            )
        if not 0.0 <= self.min_containment <= 1.0:
            raise ValueError(f"containment.min_containment={self.min_containment} not in [0, 1]")


def eval_sizes(units_per_text: np.ndarray, cfg: ContainmentConfig, scale: int = 1) -> np.ndarray:
    """The n-gram size each eval text is indexed with (0 = too short to index)."""
    n, short, low = cfg.n * scale, cfg.short_n * scale, cfg.min_words * scale
    u = np.asarray(units_per_text)
    return np.select([u >= n, u >= short, u >= low], [n, short, u], 0).astype(np.int64)


_FILTER_BITS = 20  # a 2^20-entry presence table (1 MB) per group screens reference n-grams


@dataclass
class _Group:
    mode: str  # "word" or "char"
    size: int
    hashes: np.ndarray  # sorted n-gram hashes, one entry per (hash, eval text)
    owner: np.ndarray  # eval row of each entry
    present: np.ndarray  # bool by the hash's top bits: cheap first test for membership


def _top(h: np.ndarray) -> np.ndarray:
    return (h >> U64(64 - _FILTER_BITS)).astype(np.intp)


class ContainmentIndex:
    """The distinct n-grams of every eval text, grouped by (unit, n-gram size)."""

    def __init__(self, tb: TextBatch, cfg: ContainmentConfig = ContainmentConfig()):
        self.cfg = cfg
        self.n_rows = tb.n
        self.totals = np.zeros(tb.n, dtype=np.int64)  # distinct n-grams per eval text
        self.groups: list[_Group] = []
        fallback = tb.char_fallback(cfg.fallback_bytes_per_word)
        for mode, units in (("word", tb.words(fallback)), ("char", tb.chars(fallback))):
            scale = 1 if mode == "word" else cfg.chars_per_word
            sizes = eval_sizes(np.diff(units.doc_offsets), cfg, scale)
            for size in np.unique(sizes[sizes > 0]):
                rows = np.flatnonzero(sizes == size)
                sets = unique_sets(ngrams(units, int(size), cfg.hash, mix=False)).take(rows)
                self.totals[rows] = sets.counts
                owner = rows[sets.doc_ids()]
                order = np.argsort(sets.hashes, kind="stable")
                present = np.zeros(1 << _FILTER_BITS, dtype=bool)
                present[_top(sets.hashes)] = True
                self.groups.append(
                    _Group(mode, int(size), sets.hashes[order], owner[order], present)
                )

    def query(self, tb: TextBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reference row, eval row, containment) for every pair sharing at least one n-gram."""
        cfg = self.cfg
        fallback = tb.char_fallback(cfg.fallback_bytes_per_word)
        got_r, got_e, got_c = [], [], []
        for g in self.groups:
            if g.mode == "char" and not fallback.any():
                continue
            units = tb.words(fallback) if g.mode == "word" else tb.chars(fallback)
            sh = ngrams(units, g.size, cfg.hash, mix=False)
            # a reference shorter than the n-gram size is one shorter shingle: it cannot
            # contain the eval text, and its hash never equals a full-size n-gram's
            r, h = _present(sh, g)
            if len(r) == 0:
                continue
            lo = np.searchsorted(g.hashes, h, "left")
            cnt = np.searchsorted(g.hashes, h, "right") - lo
            owners = g.owner[ranges(lo, cnt)]
            code = np.repeat(r, cnt) * np.int64(self.n_rows) + owners
            pairs, matched = np.unique(code, return_counts=True)
            ref, ev = pairs // self.n_rows, pairs % self.n_rows
            got_r.append(ref)
            got_e.append(ev)
            got_c.append(matched / self.totals[ev])
        if not got_r:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(got_r), np.concatenate(got_e), np.concatenate(got_c)


def _present(sh: Shingles, g: _Group) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (text, hash) pairs of `sh` whose hash is one of the group's n-grams."""
    if len(g.hashes) == 0 or len(sh.hashes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, U64)
    idx = np.flatnonzero(g.present[_top(sh.hashes)])
    h = sh.hashes[idx]
    pos = np.searchsorted(g.hashes, h)
    hit = g.hashes[np.minimum(pos, len(g.hashes) - 1)] == h
    idx, h = idx[hit], h[hit]
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros(0, U64)
    docs = np.searchsorted(sh.offsets, idx, "right") - 1
    order = np.lexsort((h, docs))
    docs, h = docs[order], h[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (docs[1:] != docs[:-1])
    return docs[keep].astype(np.int64), h[keep]
