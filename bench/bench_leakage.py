"""Leakage engine benchmark: ratios side by side, in one run, on the same texts.

    RAY_AUTH_MODE=disabled python bench/bench_leakage.py --out bench/LEAKAGE_RESULTS.md

Sections (all by default; --sections picks some):
  throughput  MinHash signatures vs datasketch's update loop and update_batch on the same
              shingles; SimHash MB/s next to the raw throughput of the shingle hash alone
  quality     precision/recall per method and edit rate on a generated labelled set
  culturax    exact / near-duplicate groups in CulturaX.csv, cross-split leakage (seed 42)
  ray         Ray Data scan with 1 vs 2 workers on a generated >= 200 MB Parquet corpus
  memory      peak RSS of an in-process scan, 1x vs 10x corpus, each in a fresh subprocess
Everything runs on one core per process; the machine is shared, so compare ratios, not
absolute times (the load average is printed next to the results).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aligncultura.leakage import (  # noqa: E402
    ContainmentConfig,
    DedupConfig,
    LeakageConfig,
    NormalizeConfig,
    ShingleConfig,
    best_matches,
    build_index,
    exact_clusters,
    near_duplicate_clusters,
    scan_batch,
    scan_files,
    scan_ray,
    summarize,
)
from aligncultura.leakage.clusters import duplicate_groups  # noqa: E402
from aligncultura.leakage.minhash import MinHashConfig, minhash  # noqa: E402
from aligncultura.leakage.shingles import (  # noqa: E402
    TextBatch,
    shingles,
)
from aligncultura.leakage.simhash import simhash  # noqa: E402

CSV_PATH = ROOT.parent / "shared" / "data" / "CulturaX.csv"
RATES = (0.02, 0.05, 0.10, 0.20)
KINDS = ("substitute", "delete", "insert", "transpose", "case_punct", "mixed", "embed")
FILE_MB = 21  # one generated Parquet file; 10 files >= 200 MB


def load_questions() -> tuple[list[str], list[int | None], str]:
    """CulturaX questions (cp1252, CRLF) or, without the file, synthetic look-alikes."""
    if CSV_PATH.exists():
        rows = list(csv.DictReader(io.StringIO(CSV_PATH.read_bytes().decode("cp1252"), newline="")))
        classes = [int(r["class"]) if r["class"].strip().isdigit() else None for r in rows]
        return [r["Question"] for r in rows], classes, f"{CSV_PATH.name} ({len(rows)} rows)"
    rng = random.Random(0)
    topics = "festival dance cuisine temple craft language music film museum market".split()
    places = "India Japan Mexico Nigeria Peru Norway Vietnam Egypt Brazil Italy".split()
    frames = ["How do people in {p} celebrate the {t} and what does it mean to families?",
              "What is the history of {t} traditions in {p}, and how have they changed?",
              "I'm visiting {p} soon; how can I respectfully take part in local {t} customs?"]
    qs = [rng.choice(frames).format(p=rng.choice(places), t=rng.choice(topics)) + f" ({k})"
          for k in range(1500)]
    return qs, [None] * len(qs), "synthetic questions (CulturaX.csv absent)"


def timed(fn, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


# ----------------------------------------------------------------------------- throughput


def interleaved(fns: dict, rounds: int) -> dict:
    """Best time of each callable over `rounds` rounds, the callables alternating within a
    round so that all of them see the same load on a shared machine."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def _minhash_rows(name: str, texts: list[str], rounds: int) -> list[list]:
    from datasketch import MinHash

    default = MinHashConfig()
    n = default.shingles.n
    tb = TextBatch(texts)
    grams = []  # datasketch gets the very same shingle bytes
    for i in range(tb.n):
        w = bytes(tb.buf[tb.offsets[i] : tb.offsets[i + 1]]).decode().split()
        grams.append([" ".join(w[k : k + n]).encode() for k in range(max(len(w) - n + 1, 1))])
    n_sh = sum(map(len, grams))
    sub = grams[: max(1, len(grams) // 10)]  # the update loop is slow: a tenth of the texts
    fns, per = {}, {}

    def ours(cfg):
        tb._cache.clear()
        minhash(shingles(tb, cfg.shingles, mix=False), cfg)

    def ds_batch(sketches):
        for m, g in zip(sketches, grams, strict=True):
            m.update_batch(g)

    def ds_loop(sketches):
        for m, g in zip(sketches, sub, strict=True):
            for x in g:
                m.update(x)

    for scheme in ("affine32", "legacy"):
        for h in ("poly64", "sha1"):
            cfg = MinHashConfig(scheme=scheme, shingles=ShingleConfig(n=n, hash=h))
            fns[(scheme, h)], per[(scheme, h)] = partial(ours, cfg), n_sh
        sketches = [MinHash(num_perm=128, scheme=scheme) for _ in grams]  # created untimed
        fns[(scheme, "batch")], per[(scheme, "batch")] = partial(ds_batch, sketches), n_sh
        fns[(scheme, "loop")] = partial(ds_loop, sketches[: len(sub)])
        per[(scheme, "loop")] = sum(map(len, sub))
    fns["e2e"] = lambda: minhash(shingles(TextBatch(texts), default.shingles, mix=False), default)
    per["e2e"] = n_sh
    best = interleaved(fns, rounds)
    ns = {k: best[k] / per[k] * 1e9 for k in fns}
    rows = []
    for scheme in ("affine32", "legacy"):
        batch, loop = ns[(scheme, "batch")], ns[(scheme, "loop")]
        for h in ("poly64", "sha1"):
            mark = "**" if h == "poly64" and scheme == "affine32" else ""
            o = ns[(scheme, h)]
            rows.append([name, scheme, h, f"{o:.0f}", f"{batch:.0f}", f"{loop:.0f}",
                         f"{mark}{loop / o:.1f}x{mark}", f"{mark}{batch / o:.1f}x{mark}"])
    rows.append([name, "affine32", "poly64, incl. normalising raw text", f"{ns['e2e']:.0f}", "", "", "", ""])
    return rows


def _simhash_row(name: str, texts: list[str], rounds: int) -> list:
    sim_cfg = LeakageConfig().simhash.shingles
    sha_cfg = ShingleConfig(unit=sim_cfg.unit, n=sim_cfg.n, hash="sha1")
    tb = TextBatch(texts)

    def cold(fn):
        tb._cache.clear()
        fn()

    best = interleaved({
        "sim": partial(cold, lambda: simhash(shingles(tb, sim_cfg))),
        "grams": partial(cold, lambda: shingles(tb, sim_cfg)),
        "raw": lambda: simhash(shingles(TextBatch(texts), sim_cfg)),
        "norm": lambda: TextBatch(texts),
        "sha": partial(cold, lambda: shingles(tb, sha_cfg)),
    }, rounds)
    mbs = {k: len(tb.buf) / v / 1e6 for k, v in best.items()}
    return [name, f"**{mbs['sim']:.1f}**", f"{mbs['grams']:.1f}", f"{best['grams'] / best['sim']:.0%}",
            f"{mbs['raw']:.1f}", f"{mbs['norm']:.1f}", f"{mbs['sha']:.2f}"]


def bench_throughput(questions: list[str], quick: bool) -> str:
    rng = np.random.default_rng(0)
    vocab = np.array(sorted({w for q in questions for w in q.split()}))
    long_docs = [" ".join(vocab[rng.integers(0, len(vocab), 1000)]) for _ in range(60 if quick else 150)]
    rounds = 2 if quick else 4
    sets = (("CulturaX questions (33 words)", questions), ("1000-word documents", long_docs))
    rows = [r for name, texts in sets for r in _minhash_rows(name, texts, rounds)]
    sim_rows = [_simhash_row(name, texts, max(2, rounds - 1)) for name, texts in sets]
    sim_cfg = LeakageConfig().simhash.shingles
    return "\n".join([
        f"### MinHash signatures (128 permutations, word {MinHashConfig().shingles.n}-grams), "
        "ns per shingle, 1 core", "",
        "`ours` = from the normalised batch: shingling + hashing + signatures. datasketch gets the "
        "same shingles as pre-built bytes and MinHash objects created beforehand (neither is "
        "timed). `poly64` is our vectorised shingle hash; with `sha1`, datasketch's own hash, our "
        f"signatures equal datasketch's bit for bit. Best of {rounds} interleaved rounds.", "",
        table(["texts", "scheme", "our hash", "ours", "ds update_batch", "ds update loop",
               "vs loop", "vs update_batch"], rows), "",
        f"### SimHash (64-bit, {sim_cfg.unit} {sim_cfg.n}-grams), MB/s of normalised text, 1 core", "",
        "The bound is the shingle hashing SimHash consumes (poly64 hashes of every character "
        f"{sim_cfg.n}-gram of the normalised batch); SimHash = that + the bit-sliced majority vote.", "",
        table(["texts", "SimHash from normalised batch", "bound: shingle hashing alone",
               "share of time in hashing", "SimHash incl. normalising raw text",
               "normalisation alone", "same shingles with sha1 (hashlib), for scale"], sim_rows),
    ])


# ----------------------------------------------------------------------------- labelled set


def _punctuate(word: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return word.upper() if rng.random() < 0.5 else word.title()
    stripped = word.rstrip(",.?!;:")
    return stripped + rng.choice([",", ";", "!", "..."]) if stripped == word else stripped


def edit(text: str, rate: float, kind: str, rng: random.Random, vocab: list[str]) -> str:
    """Apply k = max(1, round(rate * words)) edits of one kind (or mixed) to a text."""
    words = text.split()
    k = max(1, round(rate * len(words)))
    for _ in range(k):
        op = rng.choice(KINDS[:5]) if kind in ("mixed", "embed") else kind
        if len(words) < 3:
            op = "insert"
        pos = rng.randrange(len(words))
        if op == "substitute":
            words[pos] = rng.choice(vocab)
        elif op == "delete":
            del words[pos]
        elif op == "insert":
            words.insert(pos, rng.choice(vocab))
        elif op == "transpose":
            pos = min(pos, len(words) - 2)
            words[pos], words[pos + 1] = words[pos + 1], words[pos]
        else:
            words[pos] = _punctuate(words[pos], rng)
    return " ".join(words)


def _word_set(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s]", " ", text.lower()).split())


def labelled_set(questions: list[str], n_eval: int = 300, seed: int = 42):
    """Eval bases, and references: controlled edits of every base at every rate and kind,
    plus negatives: every other question (including template siblings of a base, which makes
    precision conservative), the same edited at 10%, and long filler documents.

    Bases are mutually distinct (word-set Jaccard < 0.4), so an edit of one base is never a
    near-duplicate of another; only exact (case/space) duplicates of a base are left out of
    the negatives."""
    rng = random.Random(seed)
    order = list(range(len(questions)))
    rng.shuffle(order)
    sets: list[set[str]] = []
    bases: list[int] = []
    for i in order:
        s = _word_set(questions[i])
        if s and len(bases) < n_eval and not any(len(s & t) / len(s | t) >= 0.4 for t in sets):
            bases.append(i)
            sets.append(s)
    taken = {normalize_key(questions[i]) for i in bases}
    rest = [i for i in order if normalize_key(questions[i]) not in taken]
    vocab = sorted({w for q in questions for w in q.split()})
    evals = [questions[i] for i in bases]
    refs: list[dict] = []

    def filler(n_words: int) -> str:
        words: list[str] = []
        while len(words) < n_words:
            words += questions[rng.choice(rest)].split()
        return " ".join(words[:n_words])

    for e, text in enumerate(evals):
        for rate in RATES:
            for kind in KINDS:
                t = edit(text, rate, kind, rng, vocab)
                if kind == "embed":
                    t = f"{filler(rng.randrange(100, 300))} {t} {filler(rng.randrange(100, 300))}"
                refs.append({"text": t, "eval": e, "rate": rate, "kind": kind})
    for i in rest:
        refs.append({"text": questions[i], "eval": -1, "rate": -1.0, "kind": "negative"})
        refs.append({"text": edit(questions[i], 0.1, "mixed", rng, vocab), "eval": -1, "rate": -1.0,
                     "kind": "negative_edited"})
    for _ in range(300):
        refs.append({"text": filler(rng.randrange(150, 600)), "eval": -1, "rate": -1.0, "kind": "negative_long"})
    for k, r in enumerate(refs):
        r["id"] = f"ref{k:05d}"
    return evals, refs


def predicted_pairs(evals: list[str], refs: list[dict], cfg: LeakageConfig) -> dict[str, dict]:
    """method -> {(eval_row, ref_row): similarity} over all verified pairs."""
    index = build_index(evals, cfg=cfg)
    tab = pa.table({"id": [r["id"] for r in refs], "text": [r["text"] for r in refs]})
    row_of = {r["id"]: k for k, r in enumerate(refs)}
    out: dict[str, dict] = {m: {} for m in ("simhash", "minhash", "containment")}
    for off in range(0, tab.num_rows, 1024):
        m = scan_batch(index, tab.slice(off, 1024), keep="all")
        for e, ref, meth, sim in zip(m["eval_row"].to_pylist(), m["ref_id"].to_pylist(),
                                     m["method"].to_pylist(), m["similarity"].to_pylist(), strict=True):
            out[meth][(e, row_of[ref])] = sim
    return out


def pr(pred: set, refs: list[dict], keep) -> tuple[float, float, int, int]:
    """Precision and recall on the references selected by keep(ref) (plus all negatives)."""
    rows = {k for k, r in enumerate(refs) if keep(r) or r["eval"] < 0}
    truth = {(r["eval"], k) for k, r in enumerate(refs) if k in rows and r["eval"] >= 0}
    got = {p for p in pred if p[1] in rows}
    tp = len(got & truth)
    return (tp / len(got) if got else 1.0), (tp / len(truth) if truth else float("nan")), len(truth), len(got) - tp


def bench_quality(questions: list[str]) -> str:
    evals, refs = labelled_set(questions)
    cfg = LeakageConfig()
    pairs = predicted_pairs(evals, refs, cfg)
    methods = {
        "simhash (Hamming <= 10)": set(pairs["simhash"]),
        f"minhash (Jaccard >= {cfg.minhash.threshold})": set(pairs["minhash"]),
        f"containment (>= {cfg.containment.min_containment})": set(pairs["containment"]),
        "default flag: minhash OR containment": set(pairs["minhash"]) | set(pairs["containment"]),
        "all three": set(pairs["minhash"]) | set(pairs["containment"]) | set(pairs["simhash"]),
    }
    lm = LeakageConfig(methods=["containment"], flag_methods=["containment"])
    lm.containment = ContainmentConfig(n=13, short_n=13, min_words=13, min_containment=1e-9)
    methods["lm-eval rule: any shared 13-gram (prompts >= 13 words)"] = set(
        predicted_pairs(evals, refs, lm)["containment"])
    n_pos = sum(r["eval"] >= 0 for r in refs)
    n_neg = len(refs) - n_pos
    rows = []
    for name, pred in methods.items():
        row = [name]
        for rate in RATES:
            p, r, _, fp = pr(pred, refs, lambda x, rate=rate: x["rate"] == rate)
            row.append(f"{p:.3f} / {r:.3f}")
        rows.append(row)
    kinds = []
    for name, pred in methods.items():
        row = [name]
        for kind in KINDS:
            _, r, _, _ = pr(pred, refs, lambda x, kind=kind: x["kind"] == kind and x["rate"] <= 0.10)
            row.append(f"{r:.3f}")
        kinds.append(row)
    fps = []
    for name, pred in methods.items():
        wrong = [p for p in pred if refs[p[1]]["eval"] != p[0]]
        by = {}
        for _, k in wrong:
            by[refs[k]["kind"]] = by.get(refs[k]["kind"], 0) + 1
        fps.append([name, len(wrong), ", ".join(f"{k}: {v}" for k, v in sorted(by.items())) or "-"])
    # SimHash feature choices, at the paper's Hamming <= 10
    sim_rows = []
    for label, sh in (("word 1-grams", ShingleConfig(unit="word", n=1)),
                      ("word 2-grams", ShingleConfig(unit="word", n=2)),
                      ("word 3-grams", ShingleConfig(unit="word", n=3)),
                      ("char 3-grams", ShingleConfig(unit="char", n=3)),
                      ("char 4-grams (default)", ShingleConfig(unit="char", n=4)),
                      ("char 5-grams", ShingleConfig(unit="char", n=5))):
        c = LeakageConfig(methods=["simhash"], flag_methods=[])
        c.simhash.shingles = sh
        pred = set(predicted_pairs(evals, refs, c)["simhash"])
        row = [label]
        for rate in RATES:
            p, r, _, _ = pr(pred, refs, lambda x, rate=rate: x["rate"] == rate and x["kind"] != "embed")
            row.append(f"{p:.3f} / {r:.3f}")
        sim_rows.append(row)
    return "\n".join([
        f"Labelled set: {len(evals)} eval questions (seed 42, mutually distinct) x {len(RATES)} edit "
        f"rates x {len(KINDS)} edit kinds = {n_pos} positive references; {n_neg} negatives "
        "(every other question, template siblings of the bases included; the same edited at "
        "10%; 300 long filler documents made of other questions). An edit rate r means "
        "max(1, round(r x words)) edits; `embed` = mixed edits, then the prompt is placed "
        "inside 200-600 words of other text. Scored per (eval, "
        "reference) pair: precision = verified pairs that are true / all verified pairs "
        "(positives of that rate + all negatives), recall = true pairs found / true pairs.", "",
        "#### Precision / recall by edit rate (all kinds)", "",
        table(["method", *[f"{int(r * 100)}%" for r in RATES]], rows), "",
        "#### Recall by edit kind, rates <= 10%", "",
        table(["method", *KINDS], kinds), "",
        "#### False-positive pairs (all rates)", "",
        table(["method", "wrong pairs", "by reference kind"], fps), "",
        "#### SimHash features at Hamming <= 10 (precision / recall, embedded texts excluded)", "",
        table(["features", *[f"{int(r * 100)}%" for r in RATES]], sim_rows),
    ])


# ----------------------------------------------------------------------------- CulturaX


def bench_culturax(questions: list[str], classes: list) -> str:
    ids = [f"q{k:04d}" for k in range(len(questions))]
    exact = exact_clusters(questions, ids, NormalizeConfig(nfkc=False, casefold=True, strip_punct=False))
    rows = [["exact (case + whitespace)", duplicate_groups(exact),
             int(np.sum(np.asarray(exact["cluster_size"].fill_null(0)) > 1)), "-"]]
    examples = []
    for method in ("minhash", "simhash"):
        t0 = time.perf_counter()
        cl = near_duplicate_clusters(questions, ids, DedupConfig(method=method))
        dt = time.perf_counter() - t0
        size = np.asarray(cl["cluster_size"].fill_null(0))
        rows.append([f"near ({method}, defaults)", duplicate_groups(cl), int(np.sum(size > 1)), f"{dt:.2f}"])
        sim = np.asarray(cl["similarity"].fill_null(1.0))
        rep = cl["representative"].to_pylist()
        for k in np.argsort(sim)[:2]:
            if sim[k] < 1.0:
                a, b = questions[ids.index(rep[k])], questions[k]
                examples.append(f"- {method}, similarity {sim[k]:.2f}: \"{a[:90]}\" ~ \"{b[:90]}\"")
    # cross-split leakage: seeded (42) random 80/10/10 split
    n = len(questions)
    perm = np.random.default_rng(42).permutation(n)
    train, held = perm[: int(0.8 * n)], perm[int(0.8 * n) :]
    leak_rows = []
    splits = [("random permutation (numpy default_rng(42))", train, held)]
    try:
        from aligncultura.data.reader import content_hash
        from aligncultura.data.split import assign_splits

        tab = pa.table({"content_hash": [content_hash(q) for q in questions], "class_id": classes,
                        "split": pa.nulls(n, pa.string())})
        sp = np.asarray(assign_splits(tab, (0.8, 0.1, 0.1), 42)["split"].to_pylist())
        splits.append(("project split (data.assign_splits, seed 42: exact dups kept together)",
                       np.flatnonzero(sp == "train"), np.flatnonzero(sp != "train")))
    except Exception as err:  # the data layer is another module; report, do not fail
        leak_rows.append([f"project split unavailable: {type(err).__name__}", "", "", "", "", ""])
    for label, tr, he in splits:
        index = build_index([questions[i] for i in he], [ids[i] for i in he])
        ref = pa.table({"id": [ids[i] for i in tr], "text": [questions[i] for i in tr]})
        result = best_matches(index, [scan_batch(index, ref)])
        s = summarize(result)
        train_keys = {normalize_key(questions[i]) for i in tr}
        exact_k = sum(normalize_key(questions[i]) in train_keys for i in he)
        sim_k = int(np.sum(np.asarray(result["simhash_hamming"].is_valid())))
        lo, hi = s["ci95"]
        leak_rows.append([label, s["scored"], f"{s['flagged']} ({s['rate']:.1%})", f"[{lo:.1%}, {hi:.1%}]",
                          ", ".join(f"{k} {v}" for k, v in s["by_method"].items() if v) or "-",
                          f"{sim_k} / {exact_k}"])
    return "\n".join([
        table(["groups", "groups with >= 2 rows", "rows in them", "seconds"], rows), "",
        "Most distant pairs inside near-duplicate clusters (sanity check):", "", *examples, "",
        "#### Cross-split leakage: share of val+test questions with a near-duplicate in train", "",
        table(["split", "val+test scored", "flagged (minhash OR containment)", "Wilson 95% CI",
               "best match by method", "with simhash <= 10 / exact (case+space) duplicate"], leak_rows),
    ])


def normalize_key(text: str) -> str:
    return " ".join(text.lower().split())


# ----------------------------------------------------------------------------- corpus, Ray, memory


def write_corpus(dest: Path, questions: list[str], files: int, seed: int = 0) -> int:
    """Parquet files of web-like documents (100-2000 words from the questions' vocabulary,
    Zipf-ish word frequencies), some with an edited question embedded; returns bytes."""
    rng = np.random.default_rng(seed)
    words = [w for q in questions for w in q.split()]
    vocab, counts = np.unique(np.array(words), return_counts=True)
    p = counts / counts.sum()
    total = 0
    for f in range(files):
        path = dest / f"part-{f:03d}.parquet"
        texts: list[str] = []
        size = 0
        while size < FILE_MB * 1_000_000:
            n = int(rng.integers(100, 2000))
            doc = " ".join(vocab[rng.choice(len(vocab), n, p=p)])
            if rng.random() < 0.02:
                doc += " " + questions[int(rng.integers(len(questions)))]
            texts.append(doc)
            size += len(doc)
        ids = [f"f{f}-{k}" for k in range(len(texts))]
        pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=2048)
        total += size
    return total


def _ray_cpu_seconds() -> float:
    """CPU seconds used so far by this driver and the Ray processes it started (raylet, GCS,
    workers and their children): with the wall time, the parallelism a run really got."""
    import psutil
    import ray

    try:
        node = ray._private.worker._global_node  # private, but this is a benchmark
        roots = [p.process.pid for procs in node.all_processes.values() for p in procs]
    except Exception:
        return float("nan")
    seen: dict[int, psutil.Process] = {os.getpid(): psutil.Process()}
    for pid in roots:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                seen[p.pid] = p
        except psutil.NoSuchProcess:
            continue
    total = 0.0
    for p in seen.values():
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def bench_ray(corpus: Path, evals: list[str], n_bytes: int, rounds: int = 3) -> str:
    import ray

    from aligncultura.leakage.pieces import list_files, plan_pieces

    index = build_index(evals)
    pieces = plan_pieces(list_files(str(corpus), "parquet"), "parquet", index.config.piece_bytes)
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    runs: dict[str, list[tuple[float, float, float]]] = {"in-process": [], "ray1": [], "ray2": []}
    results = {}
    try:
        scan_ray(index, str(corpus / "part-000.parquet"), num_workers=2)  # warm the workers up
        for _ in range(rounds):  # alternate the three runners
            for name, fn in (("in-process", lambda: scan_files(index, str(corpus))),
                             ("ray1", lambda: scan_ray(index, str(corpus), num_workers=1)),
                             ("ray2", lambda: scan_ray(index, str(corpus), num_workers=2))):
                cpu0, t0 = _ray_cpu_seconds(), time.perf_counter()
                results[name] = fn()
                wall = time.perf_counter() - t0
                runs[name].append((wall, _ray_cpu_seconds() - cpu0, os.getloadavg()[0]))
    finally:
        ray.shutdown()
    same = results["in-process"].equals(results["ray1"]) and results["in-process"].equals(results["ray2"])
    mb = n_bytes / 1e6
    median = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
    rows = []
    for name, label in (("in-process", "in-process (scan_files)"), ("ray1", "Ray, 1 worker"),
                        ("ray2", "Ray, 2 workers")):
        wall, cpu, load = median[name]
        walls = ", ".join(f"{w:.1f}" for w, _, _ in runs[name])
        rows.append([label, f"{wall:.1f}", walls, f"{mb / wall:.1f}",
                     "-" if name == "in-process" else f"{median['ray1'][0] / wall:.2f}x",
                     f"{cpu:.0f}", f"{cpu / wall:.2f}", f"{mb / cpu:.1f}", f"{load:.1f}"])
    per_round = [a[0] / b[0] for a, b in zip(runs["ray1"], runs["ray2"], strict=True)]
    flagged = summarize(results["in-process"])["flagged"]
    return "\n".join([
        f"Corpus: {mb:.0f} MB of text in {len(list(corpus.glob('*.parquet')))} Parquet files, cut "
        f"into {len(pieces)} pieces of <= {index.config.piece_bytes / 1e6:.0f} MB (one Ray task "
        f"each, the worker reads its own piece); {len(evals)} eval questions ({flagged} flagged). "
        f"`ray.init(num_cpus=2)` took {t_init:.1f} s (not counted); workers warmed up on one file "
        f"first; the three runners alternate for {rounds} rounds; the table shows each runner's "
        f"median round. Results identical across runners: {same}. CPU s = CPU time of this "
        "driver plus the Ray processes it started (psutil), so CPU s / wall s is the parallelism "
        "the run actually got on the shared machine.", "",
        table(["runner", "wall s (median)", "wall s, each round", "MB/s", "speed-up vs 1 worker",
               "CPU s", "CPU s / wall s", "MB per CPU s", "load avg after"], rows), "",
        "Speed-up 1 -> 2 workers, round by round: "
        + ", ".join(f"{r:.2f}x" for r in per_round)
        + f"; **{median['ray1'][0] / median['ray2'][0]:.2f}x** median over median.",
    ])


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(paths: list[str], evals_path: str) -> None:
    import resource

    evals = json.loads(Path(evals_path).read_text())
    index = build_index(evals)
    base = _status_mb("VmRSS")
    result = scan_files(index, paths)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base": base, "maxrss": peak, "hwm": _status_mb("VmHWM"),
                      "flagged": summarize(result)["flagged"]}))


# Linux folds the parent's peak RSS into a child's ru_maxrss across fork + exec, so a child
# of this (large) process would report our peak. A fresh, small Python spawns the measured
# process instead: its maxrss then starts from that small process.
_SPAWN = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def bench_memory(corpus: Path, evals: list[str]) -> str:
    files = sorted(str(p) for p in corpus.glob("*.parquet"))
    ev = corpus.parent / "evals.json"
    ev.write_text(json.dumps(evals))
    rows, peaks = [], {}
    for label, paths in (("1x", files[:1]), ("10x", files[:10])):
        cmd = [sys.executable, "-c", _SPAWN, sys.executable, __file__, "--memory-child", str(ev), *paths]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[label] = got["maxrss"]
        mb = sum(os.path.getsize(p) for p in paths) / 1e6
        rows.append([label, f"{mb:.0f} MB parquet", f"{got['base']:.0f}", f"{got['maxrss']:.0f}",
                     f"{got['hwm']:.0f}"])
    return "\n".join([
        table(["corpus", "size", "RSS after imports + index (MB)", "peak RSS, getrusage maxrss (MB)",
               "peak RSS, /proc VmHWM (MB)"], rows), "",
        f"Peak RSS ratio 10x / 1x: **{peaks['10x'] / peaks['1x']:.2f}** (target <= 1.2).",
    ])


def _ray_worker_rss() -> tuple[float, float]:
    """(summed, largest) RSS in MB of the Ray worker processes (`ray::...`) of this node."""
    import psutil
    import ray

    node = ray._private.worker._global_node  # private, but this is a benchmark
    rss = []
    for proc in node.all_processes.get("raylet", []):
        try:
            for c in psutil.Process(proc.process.pid).children(recursive=True):
                if c.name().startswith("ray::") or "default_worker.py" in " ".join(c.cmdline()):
                    rss.append(c.memory_info().rss / 1e6)
        except psutil.NoSuchProcess:
            continue
    return sum(rss), max(rss, default=0.0)


def bench_memory_ray(corpus: Path, evals: list[str]) -> str:
    """Peak RSS of the Ray workers (sampled every 0.1 s) scanning 1x vs 10x, a fresh Ray each."""
    import threading

    import ray

    files = sorted(str(p) for p in corpus.glob("*.parquet"))
    index = build_index(evals)
    rows, peaks = [], {}
    for label, paths in (("1x", files[:1]), ("10x", files[:10])):
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        peak = [0.0, 0.0]
        stop = threading.Event()

        def sample(peak=peak, stop=stop):
            while not stop.is_set():
                total, one = _ray_worker_rss()
                peak[0], peak[1] = max(peak[0], total), max(peak[1], one)
                stop.wait(0.1)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            t0 = time.perf_counter()
            scan_ray(index, paths, num_workers=1)
            wall = time.perf_counter() - t0
        finally:
            stop.set()
            t.join()
            ray.shutdown()
        peaks[label] = peak[1]
        mb = sum(os.path.getsize(p) for p in paths) / 1e6
        rows.append([label, f"{mb:.0f} MB parquet", f"{wall:.0f}", f"{peak[1]:.0f}", f"{peak[0]:.0f}"])
    return "\n".join([
        table(["corpus", "size", "wall s", "peak RSS of the largest Ray worker (MB)",
               "peak summed RSS of all Ray workers (MB)"], rows), "",
        f"Largest-worker peak RSS ratio 10x / 1x: **{peaks['10x'] / peaks['1x']:.2f}** "
        "(`scan_ray`, 1 worker, pieces of <= 16 MB; RSS sampled every 0.1 s with psutil; a fresh "
        "local Ray per size; idle pre-started workers count in the sum).",
    ])


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="throughput,quality,culturax,ray,memory")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (smoke run)")
    ap.add_argument("--memory-child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[1:], args.memory_child[0])
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sections = args.sections.split(",")
    questions, classes, source = load_questions()
    parts = [
        "## Leakage engine (aligncultura.leakage)", "",
        f"Command: `RAY_AUTH_MODE=disabled python bench/bench_leakage.py{' --quick' if args.quick else ''}"
        f"{'' if sections == ap.get_default('sections').split(',') else ' --sections ' + args.sections}"
        f" --out bench/LEAKAGE_RESULTS.md`", "",
        f"Machine: {os.cpu_count()} cores shared with other jobs (load average at start "
        f"{os.getloadavg()[0]:.1f}); numpy {np.__version__}, pyarrow {pa.__version__}; data: {source}.", "",
    ]
    t_start = time.perf_counter()
    if "throughput" in sections:
        parts += ["### Throughput", "", bench_throughput(questions, args.quick), ""]
    if "quality" in sections:
        parts += ["### Quality on a labelled set (default settings)", "", bench_quality(questions), ""]
    if "culturax" in sections:
        parts += ["### CulturaX.csv", "", bench_culturax(questions, classes), ""]
    if "ray" in sections or "memory" in sections:
        with tempfile.TemporaryDirectory(prefix="leak-") as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            t0 = time.perf_counter()
            n_files = 2 if args.quick else 10
            n_bytes = write_corpus(corpus, questions, n_files)
            gen = time.perf_counter() - t0
            evals = questions[: 150]
            parts += [f"(generated {n_bytes / 1e6:.0f} MB corpus in {gen:.0f} s)", ""]
            if "ray" in sections:
                parts += ["### Ray Data scaling (scan_ray, 1 -> 2 workers)", "",
                          bench_ray(corpus, evals, n_bytes, 1 if args.quick else 3), ""]
            if "memory" in sections and n_files >= 10:
                parts += ["### Memory: in-process scan, 1x vs 10x reference corpus", "", bench_memory(corpus, evals), "",
                          "### Memory: Ray workers, 1x vs 10x reference corpus", "",
                          bench_memory_ray(corpus, evals), ""]
    parts += [f"(total {time.perf_counter() - t_start:.0f} s; load average at end {os.getloadavg()[0]:.1f})"]
    text = "\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
