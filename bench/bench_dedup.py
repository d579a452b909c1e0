"""Dedup at Arrow speed: jobs.dedup vs datasketch and datatrove on one generated corpus.

    python bench/bench_dedup.py [--memory] [--skip-datatrove] [--workdir /tmp/bench_dedup]

Parts, all in one run, on the same documents:
  corpus    seeded JSON-lines corpus (>= 75 MB): 100,000 base documents of ~90 random words
            plus 500 planted near-duplicates (5-8% of words edited) shuffled in; the same rows
            as CSV; the planted pairs in a sidecar JSON
  read      aligncultura.data.reader.read_input on the JSONL and the CSV (best of 3, MB/s)
  dedup     `python -m jobs.dedup ... dedup.method=minhash` as a whole process (start-up
            included): wall time, peak RSS, found pairs, recall of the planted pairs
  baseline  datasketch's MinHash update loop over the same documents (signatures only)
  datatrove datatrove's MinHash dedup pipeline (4 stages, LocalPipelineExecutor, 2 workers)
            with our shingles / bands / rows / seed, as a whole process (needs
            `pip install datatrove==0.10.1 spacy`; --skip-datatrove leaves it out)
  leakage   `python -m jobs.leakage` with the corpus as the reference side
  memory    (--memory) peak RSS of jobs.dedup and jobs.leakage on a 10x corpus vs the 1x one,
            next to the peak RSS of a Python that only imports jobs.dedup (the floor)

Every measured process is started by a small, fresh Python (see `SPAWN`), so its peak RSS is
its own. Results go to stdout and to bench/DEDUP_RESULTS.md (--out).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_BASE = 100_000
N_DUP = 500
WORDS = (80, 100)  # words per base document, inclusive
EDIT_RATE = (0.05, 0.08)  # share of a copy's words edited
VOCAB = 5000
N_EVAL = 300  # leakage eval rows: fresh near-copies of base documents (not in the corpus)
BASELINE_BUDGET_S = 120.0  # above this the datasketch loop is timed on a 20% sample
GEN_VERSION = 1  # bump when the generator changes: cached corpora are rebuilt


# ----------------------------------------------------------------------------- helpers


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (floats with 3 significant digits, as bench/bench_leakage.py)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


# Linux folds the parent's peak RSS into a child's ru_maxrss across fork + exec, so a child of
# this (large) process would report our peak: a small, fresh Python spawns the measured
# process instead (the approach of bench/bench_leakage.py `bench_memory`). There the measured
# child reports its own getrusage; a job does not, so this spawner reports RUSAGE_CHILDREN
# (the largest waited-for descendant) and samples the live process tree with psutil every
# 0.1 s (when psutil is installed): summed and largest RSS, CPU seconds per process.
SPAWN = r"""
import json, os, resource, subprocess, sys, threading, time
out, cmd = sys.argv[1], sys.argv[2:]
limit = float(os.environ.get("BENCH_RSS_LIMIT_MB") or "inf") * 2**20
seen = {"tree": 0, "one": 0, "cpu": {}, "killed": False}
stop = threading.Event()
def sample(pid):
    try:
        import psutil
        root = psutil.Process(pid)
    except Exception:
        seen["tree"] = None
        return
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        total = 0
        for p in procs:
            try:
                with p.oneshot():
                    rss, t = p.memory_info().rss, p.cpu_times()
                total += rss
                seen["one"] = max(seen["one"], rss)
                seen["cpu"][(p.pid, p.create_time())] = t.user + t.system
            except psutil.Error:
                pass
        seen["tree"] = max(seen["tree"], total)
        if total > limit:  # protect the shared machine: end the measured tree
            seen["killed"] = True
            for p in reversed(procs):
                try:
                    p.kill()
                except psutil.Error:
                    pass
        stop.wait(0.1)
t0 = time.perf_counter()
proc = subprocess.Popen(cmd)
th = threading.Thread(target=sample, args=(proc.pid,), daemon=True)
th.start()
rc = proc.wait()
wall = time.perf_counter() - t0
stop.set()
th.join()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
tree = seen["tree"]
with open(out, "w") as f:
    json.dump({"rc": rc, "wall_s": wall, "ru_maxrss_mb": ru.ru_maxrss / 1024,
               "ru_cpu_s": ru.ru_utime + ru.ru_stime,
               "tree_peak_mb": None if tree is None else tree / 2**20,
               "sampled_one_mb": seen["one"] / 2**20,
               "sampled_cpu_s": sum(seen["cpu"].values()), "killed": seen["killed"]}, f)
sys.exit(rc)
"""


def measure(cmd: list[str], workdir: Path, label: str, cwd: Path | None = None,
            rss_limit_mb: float | None = None) -> dict[str, Any]:
    """Run `cmd` under the fresh spawner: wall s (start-up included), peak RSS MB of the
    largest process, peak summed RSS MB of the process tree, CPU s; output in <label>.log.
    Past `rss_limit_mb` (summed tree RSS) the tree is killed and `killed` is set."""
    out = workdir / f"{label}.measure.json"
    log = workdir / f"{label}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["BENCH_RSS_LIMIT_MB"] = str(rss_limit_mb or "")
    load = os.getloadavg()[0]
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-c", SPAWN, str(out), *cmd], stdout=fh,
                            stderr=subprocess.STDOUT, cwd=cwd or workdir, env=env).returncode
    got = json.loads(out.read_text()) if out.exists() else {}
    if rc != 0 and not got.get("killed"):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{label}: exit {rc}; last lines of {log}:\n{tail}")
    got["load"] = load
    # RUSAGE_CHILDREN covers the descendants that were waited for; datatrove's forkserver and
    # its pool workers are not (they outlive their parent's wait), so take the larger of the
    # exact figures and the 0.1 s samples
    got["maxrss_mb"] = max(got["ru_maxrss_mb"], got["sampled_one_mb"])
    got["cpu_s"] = max(got["ru_cpu_s"], got["sampled_cpu_s"])
    return got


# ----------------------------------------------------------------------------- corpus

_ONSETS = ("b c d f g h j k l m n p r s t v w z br ch cl dr fl gr pl pr sh st th tr").split()
_VOWELS = ("a e i o u a e i o ai ea ee ie oo ou").split()
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "nd", "st", "ng")


def vocabulary(size: int = VOCAB, seed: int = 0) -> list[str]:
    """`size` distinct English-like synthetic words (1-3 syllables), deterministic."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        n = rng.choice((1, 1, 2, 2, 2, 3))
        words.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                          for _ in range(n)))
    out = sorted(words)
    rng.shuffle(out)
    return out


def as_text(words: list[str]) -> str:
    """A question: first word capitalised, a question mark at the end."""
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "?"


def bigram_jaccard(a: list[str], b: list[str]) -> float:
    sa = {(x, y) for x, y in zip(a, a[1:], strict=False)}
    sb = {(x, y) for x, y in zip(b, b[1:], strict=False)}
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def edit_words(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """A copy with 5-8% of its words edited: replaced, deleted, inserted or swapped."""
    out = list(words)
    for _ in range(max(1, round(len(words) * rng.uniform(*EDIT_RATE)))):
        kind = rng.choice(("replace", "replace", "delete", "insert", "swap"))
        i = rng.randrange(len(out) - 1)
        if kind == "replace":
            out[i] = rng.choice(vocab)
        elif kind == "delete":
            del out[i]
        elif kind == "insert":
            out.insert(i, rng.choice(vocab))
        else:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def base_documents(chunk: int, seed: int, vocab: list[str]) -> list[list[str]]:
    """N_BASE documents of WORDS words drawn uniformly from the vocabulary."""
    rng = np.random.default_rng([seed, chunk])
    lengths = rng.integers(WORDS[0], WORDS[1] + 1, N_BASE)
    idx = rng.integers(0, len(vocab), int(lengths.sum())).tolist()
    words = [vocab[i] for i in idx]
    ends = np.cumsum(lengths).tolist()
    return [words[e - n:e] for e, n in zip(ends, lengths.tolist(), strict=True)]


def chunk_rows(chunk: int, seed: int, vocab: list[str]) -> tuple[list[tuple[str, str]], list]:
    """One corpus chunk: (id, text) rows in file order and the planted pairs
    [copy id, original id, bigram Jaccard]. Chunk k has ids d<k><6 digits>."""
    docs = base_documents(chunk, seed, vocab)
    rng = random.Random(f"{seed}:{chunk}")
    originals = rng.sample(range(N_BASE), N_DUP)
    copies = [edit_words(docs[o], rng, vocab) for o in originals]
    all_docs = docs + copies
    order = list(range(len(all_docs)))
    rng.shuffle(order)
    ids = [""] * len(all_docs)
    for pos, k in enumerate(order):
        ids[k] = f"d{chunk}{pos:06d}"
    rows = [(ids[k], as_text(all_docs[k])) for k in order]
    pairs = [[ids[N_BASE + c], ids[o], round(bigram_jaccard(docs[o], copies[c]), 4)]
             for c, o in enumerate(originals)]
    return rows, pairs


def _jsonl_lines(rows: list[tuple[str, str]]) -> str:
    return "".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in rows)


def make_corpus(workdir: Path, seed: int, memory: bool) -> dict[str, Any]:
    """Write corpus.jsonl, corpus.csv, planted_pairs.json, eval.jsonl (and corpus_10x.jsonl
    with --memory) unless a manifest says the same files are already there."""
    manifest_path = workdir / "corpus_manifest.json"
    params = {"version": GEN_VERSION, "seed": seed, "n_base": N_BASE, "n_dup": N_DUP,
              "words": list(WORDS), "edit_rate": list(EDIT_RATE), "vocab": VOCAB}
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        files_ok = all((workdir / f).exists() and (workdir / f).stat().st_size == s
                       for f, s in manifest.get("sizes", {}).items())
        if manifest.get("params") != params or not files_ok:
            manifest = {}
    need_10x = memory and "corpus_10x.jsonl" not in manifest.get("sizes", {})
    if manifest and not need_10x:
        manifest["cached"] = True
        return manifest
    vocab = vocabulary(VOCAB, seed)
    t0 = time.perf_counter()
    if not manifest:
        rows, pairs = chunk_rows(0, seed, vocab)
        (workdir / "corpus.jsonl").write_text(_jsonl_lines(rows))
        with open(workdir / "corpus.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "question"])
            w.writerows(rows)
        (workdir / "planted_pairs.json").write_text(json.dumps(
            {"params": params, "pairs": pairs, "columns": ["copy", "original", "jaccard"]}))
        # leakage eval: fresh near-copies of base documents (other edits, not in the corpus)
        rng = random.Random(f"{seed}:eval")
        by_id = dict(rows)
        planted = {p[0] for p in pairs}
        base_ids = [i for i, _ in rows if i not in planted]
        evals = []
        for k, rid in enumerate(rng.sample(base_ids, N_EVAL)):
            words = by_id[rid].rstrip("?").lower().split()
            evals.append((f"e{k:04d}", as_text(edit_words(words, rng, vocab))))
        (workdir / "eval.jsonl").write_text(_jsonl_lines(evals))
        jac = [p[2] for p in pairs]
        manifest = {"params": params, "gen_s": time.perf_counter() - t0,
                    "docs": len(rows), "jaccard": [min(jac), float(np.mean(jac)), max(jac)]}
    if memory:
        t1 = time.perf_counter()
        dest = workdir / "corpus_10x.jsonl"
        shutil.copyfile(workdir / "corpus.jsonl", dest)
        docs = manifest["docs"]
        pairs = json.loads((workdir / "planted_pairs.json").read_text())["pairs"]
        with open(dest, "a") as f:
            for chunk in range(1, 10):
                rows, more = chunk_rows(chunk, seed, vocab)
                f.write(_jsonl_lines(rows))
                docs += len(rows)
                pairs += more
        (workdir / "planted_pairs_10x.json").write_text(json.dumps(
            {"params": params, "pairs": pairs, "columns": ["copy", "original", "jaccard"]}))
        manifest["docs_10x"] = docs
        manifest["gen_10x_s"] = time.perf_counter() - t1
    files = ["corpus.jsonl", "corpus.csv", "planted_pairs.json", "eval.jsonl"]
    if memory:
        files += ["corpus_10x.jsonl", "planted_pairs_10x.json"]
    manifest["sizes"] = {f: (workdir / f).stat().st_size for f in files}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    manifest["cached"] = False
    return manifest


def corpus_section(man: dict[str, Any], workdir: Path) -> str:
    sizes = man["sizes"]
    rows = [["corpus.jsonl", man["docs"], sizes["corpus.jsonl"] / 1e6],
            ["corpus.csv (same rows)", man["docs"], sizes["corpus.csv"] / 1e6],
            ["eval.jsonl (leakage eval side)", N_EVAL, sizes["eval.jsonl"] / 1e6]]
    if "corpus_10x.jsonl" in sizes:
        rows.append(["corpus_10x.jsonl (--memory)", man["docs_10x"],
                     sizes["corpus_10x.jsonl"] / 1e6])
    j = man["jaccard"]
    gen = "reused from an earlier run (same parameters)" if man["cached"] else \
        f"generated in {man['gen_s']:.0f} s" + \
        (f", 10x in {man['gen_10x_s']:.0f} s" if "gen_10x_s" in man else "")
    return "\n".join([
        table(["file", "documents", "MB"], rows), "",
        f"In `{workdir}`, {gen}. {N_BASE:,} base documents of {WORDS[0]}-{WORDS[1]} words drawn "
        f"uniformly from {VOCAB:,} synthetic words (unrelated to each other), plus {N_DUP} "
        f"planted near-duplicates (a copy of a distinct base document with "
        f"{EDIT_RATE[0]:.0%}-{EDIT_RATE[1]:.0%} of its words replaced, deleted, inserted or "
        f"swapped), shuffled in. Word-bigram Jaccard copy vs original: min {j[0]:.2f}, mean "
        f"{j[1]:.2f}, max {j[2]:.2f}. Ground truth: `planted_pairs.json`. The 10x corpus is "
        "the 1x corpus followed by 9 more chunks from the same generator (seeds 1-9).",
    ])


# ----------------------------------------------------------------------------- reading


def bench_read(workdir: Path, reps: int = 3) -> str:
    from aligncultura.config import InputConfig
    from aligncultura.data.reader import read_input

    rows = []
    for name in ("corpus.jsonl", "corpus.csv"):
        path = workdir / name
        # the data contract's defaults (aligncultura/config.py InputConfig) with no class column
        cfg = InputConfig(name="bench", path=str(path), text_field="question", id_field="id",
                          class_field=None)
        best, n = float("inf"), 0
        for _ in range(reps):
            t0 = time.perf_counter()
            res = read_input(cfg, "input")
            best = min(best, time.perf_counter() - t0)
            n = res.table.num_rows
            del res
        mb = path.stat().st_size / 1e6
        rows.append([name, mb, n, best, mb / best])
    return "\n".join([
        table(["file", "MB", "rows read", f"best of {reps} s", "MB/s"], rows), "",
        "`aligncultura.data.reader.read_input(InputConfig(path=..., text_field='question', "
        "id_field='id', class_field=None))` in this process (file bytes / best time).",
    ])


# ----------------------------------------------------------------------------- quality


def load_truth(workdir: Path, name: str = "planted_pairs.json") -> list[tuple[str, str]]:
    data = json.loads((workdir / name).read_text())
    return [(c, o) for c, o, _ in data["pairs"]]


def score_clusters(labels: dict[str, Any], truth: list[tuple[str, str]]) -> dict[str, Any]:
    """Quality of near-duplicate clusters. `labels`: id -> cluster label for the ids in
    clusters of more than one member. Found pairs = members that are not their cluster's
    representative (sum of size - 1); a planted pair is recovered when both ids share a
    cluster; a false cluster holds two ids that are not one planted pair."""
    groups: dict[Any, list[str]] = {}
    for i, c in labels.items():
        groups.setdefault(c, []).append(i)
    group_of = {}
    for g, (a, b) in enumerate(truth):
        group_of[a] = group_of[b] = g
    recalled = sum(1 for a, b in truth if a in labels and labels.get(b) == labels[a])
    false = sum(1 for m in groups.values() if len({group_of.get(x, ("none", x)) for x in m}) > 1)
    return {"clusters": len(groups), "found_pairs": sum(len(m) - 1 for m in groups.values()),
            "recall": recalled / len(truth), "recalled": recalled, "false_clusters": false}


def dedup_labels(run_dir: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    t = pq.read_table(run_dir / "clusters.parquet",
                      columns=["row_id", "cluster_id", "cluster_size"]).to_pydict()
    return {i: c for i, c, s in zip(t["row_id"], t["cluster_id"], t["cluster_size"], strict=True)
            if s is not None and s > 1}


# ----------------------------------------------------------------------------- jobs


def measure_best(cmd: list[str], workdir: Path, label: str, run_dir: Path, reps: int = 1,
                 rss_limit_mb: float | None = None) -> dict[str, Any]:
    """`measure` a job `reps` times (its run dir removed first: a rerun into an existing run
    dir resumes); the fastest run, with the lowest CPU s and the highest peak RSS of all."""
    runs = []
    for _ in range(reps):
        shutil.rmtree(run_dir, ignore_errors=True)
        got = measure(cmd, workdir, label, rss_limit_mb=rss_limit_mb)
        if got.get("killed"):
            return got
        got["summary"] = json.loads((run_dir / "summary.json").read_text())
        runs.append(got)
    best = dict(min(runs, key=lambda g: g["wall_s"]))
    best["walls"] = [g["wall_s"] for g in runs]
    best["cpu_s"] = min(g["cpu_s"] for g in runs)
    best["maxrss_mb"] = max(g["maxrss_mb"] for g in runs)
    best["run_dir"] = run_dir
    return best


def run_dedup(corpus: Path, workdir: Path, label: str, reps: int = 1,
              rss_limit_mb: float | None = None) -> dict[str, Any]:
    run_dir = workdir / f"run_{label}"
    # keys: conf/dedup.yaml + aligncultura/leakage/config.py DedupJobConfig
    cmd = [sys.executable, "-m", "jobs.dedup", f"input.path={corpus}", "input.class_field=null",
           f"run_dir={run_dir}", "dedup.method=minhash", f"hydra.run.dir={workdir}/hydra/{label}"]
    return measure_best(cmd, workdir, label, run_dir, reps, rss_limit_mb)


def run_leakage(corpus: Path, workdir: Path, label: str, reps: int = 1,
                rss_limit_mb: float | None = None) -> dict[str, Any]:
    run_dir = workdir / f"run_{label}"
    # keys: conf/leakage.yaml + aligncultura/leakage/config.py LeakageJobConfig/ReferenceConfig
    cmd = [sys.executable, "-m", "jobs.leakage", f"eval.path={workdir / 'eval.jsonl'}",
           "eval.class_field=null", f"reference.paths=[{corpus}]", "reference.text_field=question",
           "reference.id_field=id", f"run_dir={run_dir}", f"hydra.run.dir={workdir}/hydra/{label}"]
    got = measure_best(cmd, workdir, label, run_dir, reps, rss_limit_mb)
    got["mb"] = corpus.stat().st_size / 1e6
    return got


# ----------------------------------------------------------------------------- baseline


def _ds_signatures(texts: list[str], num_perm: int, seed: int) -> None:
    from datasketch import MinHash

    for text in texts:
        words = text.lower().split()
        m = MinHash(num_perm=num_perm, seed=seed)
        for k in range(max(len(words) - 1, 1)):
            m.update(" ".join(words[k:k + 2]).encode())


def bench_datasketch(texts: list[str], num_perm: int, seed: int) -> dict[str, Any]:
    """The datasketch loop over all texts, or over a seeded 20% sample scaled linearly when a
    1,000-text probe projects more than BASELINE_BUDGET_S."""
    rng = random.Random(seed)
    probe = rng.sample(texts, min(1000, len(texts)))
    t0 = time.perf_counter()
    _ds_signatures(probe, num_perm, seed)
    projected = (time.perf_counter() - t0) * len(texts) / len(probe)
    sample = texts if projected <= BASELINE_BUDGET_S else \
        random.Random(seed + 1).sample(texts, len(texts) // 5)
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    _ds_signatures(sample, num_perm, seed)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = len(texts) / len(sample)
    return {"wall_s": took * scale, "cpu_s": cpu * scale, "measured_s": took, "load": load,
            "docs": len(sample), "scaled": len(sample) < len(texts)}


# ----------------------------------------------------------------------------- datatrove


XXHASH_SHIMMED = False


def _xxhash_str_shim() -> None:
    """datatrove hashes each shingle as a str with xxhash; xxhash >= 4 takes bytes only
    (datatrove's `processing` extra pins xxhash < 4, which encoded str as UTF-8 itself). When
    the installed xxhash refuses str, datatrove's 32-bit hash function encodes first."""
    global XXHASH_SHIMMED
    import xxhash

    try:
        xxhash.xxh32_intdigest("x")
        return
    except TypeError:
        pass
    import datatrove.utils.hashes.xxhash as dx

    def xxhash32(data: str | bytes) -> int:
        return xxhash.xxh32_intdigest(data.encode() if isinstance(data, str) else data)

    dx.xxhash32 = xxhash32
    XXHASH_SHIMMED = True


def datatrove_child(cfg_path: str) -> None:
    """Runs in its own process (`--datatrove-child`): datatrove's documented MinHash pipeline
    (signatures -> buckets -> clusters -> filter) on LocalPipelineExecutors, stage by stage."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.typeshelper import Languages

    _xxhash_str_shim()
    c = json.loads(Path(cfg_path).read_text())
    out, logs = c["out"], c["out"] + "/logs"
    mcfg = MinhashConfig(n_grams=c["n_grams"], num_buckets=c["bands"],
                         hashes_per_bucket=c["rows"], seed=c["seed"],
                         hash_config=HashConfig(precision=32, hash_fc="xxhash"))

    def reader() -> JsonlReader:
        return JsonlReader(c["input"], text_key="question", id_key="id")

    w = c["workers"]
    stages = {
        "signatures": LocalPipelineExecutor(
            [reader(), MinhashDedupSignature(f"{out}/signatures", config=mcfg,
                                             language=Languages.english)],
            tasks=c["tasks"], workers=w, logging_dir=f"{logs}/signatures"),
        "buckets": LocalPipelineExecutor(
            [MinhashDedupBuckets(f"{out}/signatures", f"{out}/buckets", config=mcfg)],
            tasks=mcfg.num_buckets, workers=w, logging_dir=f"{logs}/buckets"),
        "clusters": LocalPipelineExecutor(
            [MinhashDedupCluster(f"{out}/buckets", f"{out}/remove_ids", config=mcfg,
                                 save_cluster_id=True)],
            tasks=1, workers=1, logging_dir=f"{logs}/clusters"),
        "filter": LocalPipelineExecutor(
            [reader(),
             MinhashDedupFilter(f"{out}/remove_ids", load_cluster_ids=True,
                                exclusion_writer=JsonlWriter(f"{out}/removed")),
             JsonlWriter(f"{out}/deduplicated_output")],
            tasks=c["tasks"], workers=w, logging_dir=f"{logs}/filter"),
    }
    timings = {}
    for name, ex in stages.items():
        t0 = time.perf_counter()
        ex.run()
        timings[name] = time.perf_counter() - t0
    timings["xxhash_str_shim"] = XXHASH_SHIMMED
    Path(c["timings"]).write_text(json.dumps(timings))


def run_datatrove(workdir: Path, bands: int, rows: int, n_grams: int, seed: int,
                  workers: int = 2) -> dict[str, Any]:
    """Shard the corpus into `workers` JSONL files (datatrove splits work by files), run the
    pipeline as a subprocess under the spawner, and read its clusters back to ids."""
    src = workdir / "datatrove_in"
    out = workdir / "datatrove_out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)  # datatrove skips tasks its logs mark completed
    src.mkdir()
    lines = (workdir / "corpus.jsonl").read_text().splitlines(keepends=True)
    per = -(-len(lines) // workers)
    shards = [lines[k * per:(k + 1) * per] for k in range(workers)]
    for k, part in enumerate(shards):
        (src / f"shard_{k:05d}.jsonl").write_text("".join(part))
    cfg = {"input": str(src), "out": str(out), "bands": bands, "rows": rows, "n_grams": n_grams,
           "seed": seed, "workers": workers, "tasks": workers,
           "timings": str(workdir / "datatrove_timings.json")}
    (workdir / "datatrove_cfg.json").write_text(json.dumps(cfg))
    got = measure([sys.executable, str(Path(__file__).resolve()), "--datatrove-child",
                   str(workdir / "datatrove_cfg.json")], workdir, "datatrove")
    got["stages"] = json.loads((workdir / "datatrove_timings.json").read_text())
    ids = [[json.loads(x)["id"] for x in part] for part in shards]
    labels = {}
    for k in range(workers):
        f = out / "remove_ids" / f"{k:06d}.clusters"
        if f.exists():  # (doc index in the rank's shard, cluster id), uint32 pairs
            for doc, cl in np.fromfile(f, dtype="<u4").reshape(-1, 2).tolist():
                labels[ids[k][doc]] = cl
    got["labels"] = labels
    return got


# ----------------------------------------------------------------------------- main


def bench_memory(workdir: Path, man: dict[str, Any], ours: dict[str, Any],
                 leak: dict[str, Any]) -> str:
    """jobs.dedup and jobs.leakage on the 10x corpus, peak RSS next to the 1x runs. A run
    whose process tree passes 70% of the memory available at the start is ended."""
    try:
        import psutil

        limit = 0.7 * psutil.virtual_memory().available / 2**20
    except ImportError:
        limit = None
    big = workdir / "corpus_10x.jsonl"
    # the floor: the interpreter with jobs.dedup's imports and the LSH parameters (datasketch)
    floor = measure([sys.executable, "-c", "import jobs.dedup; from aligncultura.leakage.lsh "
                     "import lsh_params; lsh_params(0.4, 128)"], workdir, "imports_only")
    rows, notes = [], [f"A Python that only imports jobs.dedup (and computes the LSH "
                       f"parameters, which imports datasketch and scipy) peaks at "
                       f"{floor['maxrss_mb']:,.0f} MB."]
    for name, one, run in (("jobs.dedup", ours, run_dedup), ("jobs.leakage", leak, run_leakage)):
        ten = run(big, workdir, name.split(".")[1] + "_10x", rss_limit_mb=limit)
        if ten.get("killed"):
            rows.append([name, one["maxrss_mb"], f"> {limit:,.0f} (ended)", "-", one["wall_s"],
                         "-", f"{ten['load']:.1f}"])
            continue
        rows.append([name, one["maxrss_mb"], ten["maxrss_mb"],
                     f"**{ten['maxrss_mb'] / one['maxrss_mb']:.2f}**", one["wall_s"],
                     ten["wall_s"], f"{ten['load']:.1f}"])
        if name == "jobs.dedup":
            truth10 = load_truth(workdir, "planted_pairs_10x.json")
            q10 = score_clusters(dedup_labels(ten["run_dir"]), truth10)
            notes.append(f"jobs.dedup on 10x: {ten['summary']['near']['groups']:,} near groups, "
                         f"planted pairs recovered {q10['recalled']:,}/{len(truth10):,}, "
                         f"false clusters {q10['false_clusters']}.")
        else:
            o = ten["summary"]["leakage"]["overall"]
            notes.append(f"jobs.leakage on 10x: {o['flagged']}/{o['scored']} flagged, "
                         f"{ten['mb'] / ten['wall_s']:.1f} reference MB/s.")
    return "\n".join([
        table(["job", "1x peak RSS MB", "10x peak RSS MB", "ratio 10x / 1x (target <= 1.2)",
               "1x wall s", "10x wall s", "load avg at start (10x)"], rows), "",
        f"1x = corpus.jsonl ({man['sizes']['corpus.jsonl'] / 1e6:.0f} MB), 10x = "
        f"corpus_10x.jsonl ({man['sizes']['corpus_10x.jsonl'] / 1e6:.0f} MB, "
        f"{man['docs_10x']:,} docs), one run each. Peak RSS = the larger of RUSAGE_CHILDREN "
        "ru_maxrss of the fresh spawner and the sampled RSS (see above). " + " ".join(notes),
    ])


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    got = []
    for pkg in ("numpy", "pyarrow", "datasketch", "datatrove", "spacy", "xxhash", "psutil",
                "hydra-core"):
        try:
            got.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            got.append(f"{pkg} (not installed)")
    return ", ".join(got)


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "aligncultura", "jobs"], cwd=ROOT,
                               text=True, capture_output=True).stdout.strip()
        return rev + (" + uncommitted changes in aligncultura/ or jobs/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/bench_dedup")
    ap.add_argument("--memory", action="store_true", help="also 10x corpus peak RSS (slow)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3, help="runs of each 1x job (best wall kept)")
    ap.add_argument("--out", default=None, help="default bench/DEDUP_RESULTS.md (none if --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 5,000 base documents, 50 planted copies, 30 eval rows")
    ap.add_argument("--skip-datatrove", action="store_true",
                    help="leave out the datatrove pipeline (no datatrove / spaCy needed)")
    ap.add_argument("--datatrove-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.datatrove_child:
        datatrove_child(args.datatrove_child)
        return
    global N_BASE, N_DUP, N_EVAL
    if args.quick:
        N_BASE, N_DUP, N_EVAL = 5000, 50, 30
        if args.workdir == ap.get_default("workdir"):
            args.workdir += "_quick"
    out = args.out or (None if args.quick else str(ROOT / "bench" / "DEDUP_RESULTS.md"))
    sys.path.insert(0, str(ROOT))
    from aligncultura.leakage.lsh import lsh_params
    from aligncultura.leakage.minhash import MinHashConfig

    t_start = time.perf_counter()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    cmd = "python bench/bench_dedup.py" + (" --memory" if args.memory else "") + \
        (" --quick" if args.quick else "") + (" --skip-datatrove" if args.skip_datatrove else "") + \
        (f" --workdir {args.workdir}" if args.workdir != ap.get_default("workdir") else "")
    parts = [
        "## Dedup at Arrow speed (jobs.dedup vs datasketch vs datatrove)", "",
        f"Command: `{cmd}` (from the repository root). Machine: nproc {os.cpu_count()}, "
        f"Python {platform.python_version()}, load average at start {load0:.1f}; "
        f"{versions()}; aligncultura at {git_rev()}.", "",
    ]

    def emit(title: str, body: str) -> None:
        parts.extend([f"### {title}", "", body, ""])
        print(f"### {title}\n\n{body}\n", flush=True)

    man = make_corpus(workdir, args.seed, args.memory)
    emit("Corpus", corpus_section(man, workdir))
    emit("Reading speed (data contract)", bench_read(workdir))

    truth = load_truth(workdir)
    corpus = workdir / "corpus.jsonl"
    mh = MinHashConfig()
    bands, rows = lsh_params(mh.threshold, mh.num_perm, (mh.fp_weight, mh.fn_weight))

    ours = run_dedup(corpus, workdir, "dedup_1x", reps=args.reps)
    q_ours = score_clusters(dedup_labels(ours["run_dir"]), truth)
    texts = [json.loads(x)["question"] for x in corpus.read_text().splitlines()]
    ds = bench_datasketch(texts, mh.num_perm, mh.seed)
    del texts
    dt = None if args.skip_datatrove else run_datatrove(workdir, bands, rows, mh.shingles.n,
                                                          mh.seed)
    q_dt = None if dt is None else score_clusters(dt["labels"], truth)

    def row(name: str, m: dict[str, Any], q: dict[str, Any] | None) -> list[Any]:
        tree = m.get("tree_peak_mb")
        qual = [q["found_pairs"], f"{q['recalled']}/{len(truth)} ({q['recall']:.1%})",
                q["false_clusters"]] if q else ["-", "-", "-"]
        return [name, m["wall_s"], m["cpu_s"], m.get("maxrss_mb", "-"),
                "-" if tree is None else tree, *qual, f"{m['load']:.1f}"]

    ds_note = (f"seeded 20% sample ({ds['docs']:,} docs, {ds['measured_s']:.0f} s) scaled "
               "linearly" if ds["scaled"] else f"all {ds['docs']:,} docs")
    reps = f"best of {len(ours['walls'])}: " + ", ".join(f"{w:.1f}" for w in ours["walls"]) + " s"
    table_rows = [row(f"jobs.dedup (minhash, executor=local, 1 process; {reps})", ours, q_ours),
             row(f"datasketch MinHash update loop (signatures only; {ds_note})", ds, None)]
    ratio = (f"**datasketch loop / jobs.dedup process: {ds['wall_s'] / ours['wall_s']:.1f}x "
             f"wall, {ds['cpu_s'] / ours['cpu_s']:.1f}x CPU** (target >= 10x).")
    dt_text = "datatrove: left out (--skip-datatrove)."
    if dt is not None:
        st = dt["stages"]
        table_rows.append(row("datatrove MinHash, 4 stages, 2 workers", dt, q_dt))
        ratio += (f" **datatrove / jobs.dedup: {dt['wall_s'] / ours['wall_s']:.1f}x wall, "
                  f"{dt['cpu_s'] / ours['cpu_s']:.1f}x CPU**.")
        shim = (" datatrove hashes str shingles with xxhash, which xxhash >= 4 refuses (its "
                "`processing` extra pins xxhash < 4; 4.x is installed here for wandb), so the "
                "child encodes them to UTF-8 first, as xxhash 3 did.") \
            if st.get("xxhash_str_shim") else ""
        dt_text = (
            f"datatrove: `MinhashConfig(n_grams={mh.shingles.n}, num_buckets={bands}, "
            f"hashes_per_bucket={rows}, seed={mh.seed}, hash_config=HashConfig(precision=32))` "
            "(our bands x rows and 32-bit signature values; xxhash, its default hash), "
            "`language=Languages.english` (its default spaCy word tokenizer after its own text "
            "normalisation), JsonlReader(text_key='question', id_key='id') over the corpus cut "
            "into 2 shards (it splits work by files), LocalPipelineExecutor with 2 tasks / 2 "
            "workers (stage 2: one task per bucket, stage 3: 1 task), `save_cluster_id=True`; "
            "clusters read from its `.clusters` files. datatrove does not verify candidates "
            f"(any shared bucket links two documents).{shim} Stage wall s: signatures "
            f"{st['signatures']:.1f}, buckets {st['buckets']:.1f}, clusters "
            f"{st['clusters']:.1f}, filter (reads the corpus again, writes gzipped JSONL) "
            f"{st['filter']:.1f}; stages 1-3 (clusters known) "
            f"{st['signatures'] + st['buckets'] + st['clusters']:.1f} s.")
    body = "\n".join([
        table(["", "wall s (whole process)", "CPU s", "peak RSS MB (largest process)",
               "peak RSS MB (process tree, sampled)", "found pairs", "planted pairs recovered",
               "false clusters", "load avg at start"], table_rows), "",
        ratio + " The machine is shared: wall times move with the load of other jobs, CPU "
        "seconds much less.", "",
        f"jobs.dedup: `python -m jobs.dedup input.path={corpus} input.class_field=null "
        "run_dir=<dir> dedup.method=minhash` (defaults: word 2-grams, 128 permutations, seed 1, "
        f"Jaccard >= {mh.threshold}, LSH {bands} bands x {rows} rows from "
        "aligncultura/leakage/lsh.py `lsh_params`, every candidate verified by exact Jaccard; "
        "streamed: the input read in pieces, fixed-size fingerprints per block spilled to "
        "TMPDIR, aligncultura/leakage/dedup_stream.py). In-job time of the fastest run "
        "(summary.json wall_s: reading, fingerprints, clusters and writing): "
        f"{ours['summary']['wall_s']:.1f} s; near groups {ours['summary']['near']['groups']}.",
        "",
        f"datasketch: per document `MinHash(num_perm={mh.num_perm}, seed={mh.seed})` and "
        "`update(bigram.encode())` for each whitespace word 2-gram of the lowercased text; no "
        "reading, no LSH, no clustering; in the benchmark process (CPU = process time).", "",
        dt_text, "",
        "Wall and peak RSS are of the whole process started by a small fresh Python (start-up, "
        "reading, writing included); largest process = the larger of the spawner's "
        "RUSAGE_CHILDREN ru_maxrss and the largest RSS sampled every 0.1 s with psutil "
        "(datatrove's forkserver workers are never waited for by the spawner's child, so "
        "getrusage misses them); process tree = summed RSS of the process and all its "
        "descendants at one sample (pages shared by forked workers count once per process). "
        "CPU s = user + system of the whole tree (getrusage, or the sum of the last sample of "
        "each process when larger).",
    ])
    emit("jobs.dedup vs datasketch vs datatrove (same corpus)", body)

    leak = run_leakage(corpus, workdir, "leakage_1x", reps=args.reps)
    o = leak["summary"]["leakage"]["overall"]
    emit("jobs.leakage with the corpus as the reference", "\n".join([
        table(["eval rows", "reference MB", "wall s (whole process)", "CPU s", "reference MB/s",
               "peak RSS MB", "flagged", "load avg at start"],
              [[N_EVAL, leak["mb"], leak["wall_s"], leak["cpu_s"], leak["mb"] / leak["wall_s"],
                leak["maxrss_mb"], f"{o['flagged']}/{o['scored']}", f"{leak['load']:.1f}"]]), "",
        "`python -m jobs.leakage eval.path=eval.jsonl eval.class_field=null "
        "reference.paths=[corpus.jsonl] reference.text_field=question reference.id_field=id "
        "run_dir=<dir>` (default methods, executor=local), best of "
        f"{len(leak['walls'])} runs ({', '.join(f'{w:.1f}' for w in leak['walls'])} s). Eval "
        f"rows are fresh near-copies of {N_EVAL} base documents (5-8% of words edited, not in "
        "the corpus), so every one should be flagged. In-job compute (summary.json wall_s): "
        f"{leak['summary']['wall_s']:.1f} s.",
    ]))

    if args.memory:
        emit("Peak RSS, 10x corpus vs 1x (--memory)", bench_memory(workdir, man, ours, leak))

    total = time.perf_counter() - t_start
    parts.append(f"(whole benchmark: {total / 60:.1f} min; load average at the end "
                 f"{os.getloadavg()[0]:.1f})")
    print(parts[-1])
    if out:
        Path(out).write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
