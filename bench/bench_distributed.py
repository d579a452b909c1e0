"""Distributed execution (issue 16): the leakage scan on 1 vs 2 Ray nodes, and the driver's
own per-row costs (what would limit a large cluster).

    RAY_AUTH_MODE=disabled python bench/bench_distributed.py --sections leakage [--files 5 --rounds 2]
    python bench/bench_distributed.py --sections driver [--rows 100000]
    python bench/bench_distributed.py --sections culturax

leakage: `python -m jobs.leakage executor=ray` (150 CulturaX questions as the eval set against
a generated Parquet corpus, bench/bench_leakage.py's `write_corpus`) against a fresh local Ray
cluster per run (aligncultura/cluster/local_ray.py): 1 node x 1 CPU, 1 node x 2 CPUs and
2 nodes x 1 CPU (`num_workers` = the cluster's CPUs), rounds alternating the order. Every node
of the local cluster runs on this machine's 2 cores: a second node adds Ray's bookkeeping, not
hardware. Reported: the job's own scan wall time and MB/s (summary.json `wall_s`), whole
process wall, CPU seconds of the driver and the cluster (as bench/bench_raydata_llm.py counts
them: every process's own CPU, sampled every 0.5 s), the job's own per-node task counts (summary.json `ray.tasks_per_node`), and whether
every run wrote the same leakage.parquet.

driver: the driver-side work of a benchmark pass per request, timed with the project's own
functions on synthetic rows: request building (`generation_requests`, `requests_for`,
`request_table` with cache keys), the request loop (`run_requests` over precomputed completion
batches, row cache off and on: `RowCache.put`), Ray Data transport (`run_requests` through a
real Ray Data actor pool whose stage returns synthetic completions at once: the driver
process's CPU), reduction (`generation_rows`, `judgment_rows`, `compute_metrics`,
`write_row_states`) and Parquet writes.

culturax: rows and rough token lengths of the released CulturaX (../shared/data/CulturaX.csv),
with the embedded model's tokenizer.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (ROOT, BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from aligncultura.cluster import local_ray  # noqa: E402

CSV_PATH = Path(os.environ.get("AC_CULTURAX_CSV") or ROOT.parent / "shared" / "data" / "CulturaX.csv")


# ----------------------------------------------------------------------------- leakage on nodes


LEAK_CONFIGS = {  # name -> (nodes, CPUs per node, num_workers)
    "1 node x 1 CPU": (1, 1, 1),
    "1 node x 2 CPUs": (1, 2, 2),
    "2 nodes x 1 CPU": (2, 1, 2),
    "2 nodes x 2 CPUs": (2, 2, 4),
}


def leak_run(name: str, corpus: Path, work: Path) -> dict[str, Any]:
    from bench_raydata_llm import Tree

    nodes, cpus, workers = LEAK_CONFIGS[name]
    cluster = work / "ray"
    state = local_ray.start(cluster, nodes=nodes, cpus=cpus, gpus=0)
    out = work / "run"
    try:
        tree = Tree([p.pid for p in local_ray.processes(cluster, state.get("client_port"))])
        # each node's own processes (raylet, GCS, agents), to split the cluster's CPU by node:
        # the job's `ray.tasks_per_node` names every node by the machine's IP on Ray 2.60 (a
        # worker's `ray.util.get_node_ip_address()` is not its node's --node-ip-address)
        node_roots = {i: {p.pid for p in local_ray.processes(cluster / f"n{i}")}
                      for i in range(1, nodes + 1)}
        parents: dict[int, int] = {}
        time.sleep(2.0)
        parents.update({pid: s[0] for pid, s in tree.sample().items()})
        base = {pid: e["own"] for pid, e in tree.info.items()}
        if CSV_PATH.exists():
            eval_args = ["eval=culturax", f"eval.path={CSV_PATH}", "eval.limit=150"]
        else:
            eval_args = []  # the embedded sample
        cmd = [sys.executable, "-m", "jobs.leakage", *eval_args, f"reference.paths=[{corpus}]",
               "executor=ray", f"num_workers={workers}", f"run_dir={out}"]
        env = {**os.environ, "RAY_ADDRESS": state["address"], "RAY_AUTH_MODE": "disabled"}
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tree.driver = proc.pid
        stop = threading.Event()

        def sampler():
            while not stop.wait(0.5):
                parents.update({pid: s[0] for pid, s in tree.sample().items()})

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        text = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        stop.set()
        th.join()
        parents.update({pid: s[0] for pid, s in tree.sample().items()})
        # each process's own CPU as last seen (see bench_raydata_llm.py's docstring)
        cluster_cpu = sum(e["own"] - base.get(pid, 0.0) for pid, e in tree.info.items()
                          if e["role"] != "driver")

        def node_of(pid: int) -> str:
            seen = set()
            while pid and pid not in seen:
                seen.add(pid)
                for i, roots in node_roots.items():
                    if pid in roots:
                        return f"n{i}"
                pid = parents.get(pid, 0)
            return "other"

        node_cpu: dict[str, float] = {}
        busy_workers: dict[str, int] = {}
        for pid, e in tree.info.items():
            if e["role"] == "driver":
                continue
            used = e["own"] - base.get(pid, 0.0)
            k = node_of(pid)
            node_cpu[k] = node_cpu.get(k, 0.0) + used
            if used > 1.0:  # a worker that scanned (idle Ray processes use well under 1 s)
                busy_workers[k] = busy_workers.get(k, 0) + 1
        node_cpu = dict(sorted(node_cpu.items()))
        busy_workers = dict(sorted(busy_workers.items()))
        load1 = os.getloadavg()[0]
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"jobs.leakage ({name}) failed:\n{text[-3000:]}")
    finally:
        local_ray.stop(cluster)
    summary = json.loads((out / "summary.json").read_text())
    import pyarrow.parquet as pq

    table = pq.read_table(out / "leakage.parquet")
    driver_cpu = usage.ru_utime + usage.ru_stime
    return {"config": name, "nodes": nodes, "cpus_per_node": cpus, "num_workers": workers,
            "scan_wall_s": summary["wall_s"], "process_wall_s": wall,
            "cpu_s": driver_cpu + cluster_cpu, "driver_cpu_s": driver_cpu,
            "tasks_per_node": summary.get("ray", {}).get("tasks_per_node"),
            "tasks": summary.get("ray", {}).get("tasks"),
            "node_cpu_s": node_cpu, "busy_processes": busy_workers,
            "reference_rows": summary["rows"]["reference"].get("scanned"),
            "flagged": summary["leakage"]["overall"]["flagged"], "load": [load0, load1],
            "result": table}


def bench_leakage(args) -> str:
    import bench_leakage

    questions, _, source = bench_leakage.load_questions()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="acleak-", dir="/tmp") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        n_bytes = bench_leakage.write_corpus(corpus, questions, args.files)
        on_disk = sum(f.stat().st_size for f in corpus.iterdir())
        names = args.leak_configs
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else list(reversed(names))):
                work = Path(tmp) / f"r{r}-{name.replace(' ', '')}"
                work.mkdir()
                res = leak_run(name, corpus, work)
                res["mb_s"] = n_bytes / 1e6 / res["scan_wall_s"]
                results.setdefault(name, []).append(res)
                print(json.dumps({k: v for k, v in res.items() if k != "result"}), flush=True)
    first = next(iter(results.values()))[0]["result"]
    same = all(x["result"].equals(first) for v in results.values() for x in v)
    lines = [f"Corpus: {n_bytes / 1e6:.0f} MB of text in {args.files} Parquet files "
             f"({on_disk / 1e6:.0f} MB on disk), {first.num_rows} eval rows ({source}); "
             f"{args.rounds} round(s), order alternating. All runs wrote the same "
             f"leakage.parquet: {same}.", "",
             "| cluster | num_workers | scan s (job's wall_s) | MB/s | process wall s | CPU s "
             "(driver + cluster) | CPU s / scan s | tasks (job's summary, by IP) | cluster CPU s "
             "by node (processes > 1 CPU s) | load 1-min |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        for x in runs:
            nodes = ", ".join(f"{k}={v}" for k, v in (x["tasks_per_node"] or {}).items())
            lines.append(f"| {name} | {x['num_workers']} | {x['scan_wall_s']:.1f} | "
                         f"{x['mb_s']:.1f} | {x['process_wall_s']:.1f} | {x['cpu_s']:.0f} "
                         f"({x['driver_cpu_s']:.0f} + {x['cpu_s'] - x['driver_cpu_s']:.0f}) | "
                         f"{x['cpu_s'] / x['scan_wall_s']:.2f} | {nodes} | "
                         + ", ".join(f"{k} {v:.1f} ({x['busy_processes'].get(k, 0)})"
                                     for k, v in x["node_cpu_s"].items())
                         + f" | {x['load'][0]:.1f}-{x['load'][1]:.1f} |")
    med = {k: statistics.median(x["mb_s"] for x in v) for k, v in results.items()}
    med_cpu = {k: statistics.median(x["cpu_s"] for x in v) for k, v in results.items()}
    lines += ["", "Median CPU s (driver + cluster): " + ", ".join(
        f"{k} {v:.1f}" for k, v in med_cpu.items())]
    lines += ["", "Median MB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items())]
    base = med.get("1 node x 1 CPU")
    if base:
        lines.append("Ratios to 1 node x 1 CPU: " + ", ".join(
            f"{k} {v / base:.2f}x" for k, v in med.items() if k != "1 node x 1 CPU"))
    if "1 node x 2 CPUs" in med and "2 nodes x 1 CPU" in med:
        lines.append(f"2 nodes x 1 CPU / 1 node x 2 CPUs (same 2 CPUs): "
                     f"{med['2 nodes x 1 CPU'] / med['1 node x 2 CPUs']:.2f}x")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver costs


class _Clock:
    """Wall and this process's CPU seconds (every thread) of a block."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._w, time.process_time() - self._c


def _paper_config():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import aligncultura.config  # noqa: F401 - registers the schemas

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="benchmark",
                             overrides=["experiment=paper", "model=llama_3_1_8b_instruct"])


def _questions() -> list[str]:
    import bench_leakage

    return bench_leakage.load_questions()[0]


def _fake_completions(requests, text_chars: int, texts: list[str] | None = None):
    """COMPLETION_SCHEMA rows answering `requests` (a request table), as an engine would."""
    import pyarrow as pa

    from aligncultura.engine.requests import COMPLETION_SCHEMA, identities

    keys = requests.column("key").to_pylist()
    if not texts and text_chars:  # varied text, so that Parquet compresses it as it would real text
        texts = _random_texts(min(len(keys), 20_000), text_chars)
    rows = []
    for i, (ident, key) in enumerate(zip(identities(requests), keys, strict=True)):
        rows.append({**ident, "output_index": 0,
                     "text": texts[i % len(texts)] if texts else "",
                     "reasoning": None, "finish_reason": "stop", "input_tokens": 120,
                     "output_tokens": text_chars // 4, "latency_s": 1.0, "status": "ok",
                     "error": None, "engine_start_s": 30.0, "cpu_s": 0.01, "peak_rss_mb": 1000.0,
                     "replica": "10.0.0.1/1234", "busy_s": 0.01, "key": key, "cached": False,
                     "logprobs_json": None})
    return pa.Table.from_pylist(rows, schema=COMPLETION_SCHEMA)


def _random_texts(n: int, chars: int, seed: int = 0, words: list[str] | None = None) -> list[str]:
    """`n` texts of about `chars` characters: words drawn from `words` (default: 3,000 random
    lowercase words, so that no file is read, e.g. on a Ray worker)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if words is None:
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, int(k))) for k in rng.integers(2, 10, 3000)]
    words = np.array(words)
    per = max(1, chars // 6)
    picks = rng.integers(0, len(words), size=(n, per))
    return [" ".join(words[row])[:chars] for row in picks]


class FakeStage:
    """Stands in for `LLMStage` in a Ray Data pass: answers every request at once."""

    def __init__(self, *args, text_chars: int = 1600, **kwargs):  # LLMStage's arguments
        self.text_chars = text_chars

    def __call__(self, batch):
        return _fake_completions(batch, self.text_chars)


def _patched_complete(batches):
    """`runner._complete` replaced by a generator over precomputed completion batches."""

    def fake(*args, **kwargs):
        yield from batches

    return fake


def bench_driver(args) -> str:
    import pyarrow as pa
    from omegaconf import OmegaConf

    from aligncultura.benchmark.accounting import write_row_states
    from aligncultura.benchmark.generation import generation_requests, generation_rows
    from aligncultura.benchmark.judging import judgment_rows, requests_for
    from aligncultura.benchmark.metrics import compute_metrics
    from aligncultura.data.reader import ReadResult
    from aligncultura.engine import runner
    from aligncultura.engine.cache import RowCache, salt
    from aligncultura.engine.models import ResolvedModel
    from aligncultura.engine.requests import request_table
    from aligncultura.rundir import RunDir, write_parquet

    n, bs = args.rows, args.batch_size
    cfg = _paper_config()
    qs = _questions()
    prompts = pa.table({"row_id": [f"p{i}" for i in range(n)],
                        "question": [f"{qs[i % len(qs)]} ({i})" for i in range(n)]})
    model = ResolvedModel("llama_3_1_8b_instruct", "meta-llama/Llama-3.1-8B-Instruct", None, None,
                          None, "hf", "hf:meta-llama/Llama-3.1-8B-Instruct@main")
    key_salt = salt(model, cfg.model, cfg.engine)
    rows: list[dict[str, Any]] = []

    def record(step: str, unit: str, count: int, clock: _Clock, note: str = "") -> None:
        rows.append({"step": step, "unit": unit, "count": count, "wall_s": clock.wall,
                     "cpu_s": clock.cpu, "us_per_unit": 1e6 * clock.cpu / count, "note": note})
        print(json.dumps(rows[-1]), flush=True)

    # planning: generation requests with cache keys
    with _Clock() as c:
        reqs = generation_requests(prompts, cfg.model, cfg.generation, seeds=[0])
    record("plan: generation_requests", "request", n, c)
    with _Clock() as c:
        table = request_table(reqs, key_salt)
    record("plan: request_table (JSON + sha256 key)", "request", n, c)
    del reqs

    # the request loop on precomputed batches (no engine): cache off, then on
    comps = _fake_completions(table, args.text_chars)
    batches = [comps.slice(i, bs) for i in range(0, n, bs)]
    engine_cfg = OmegaConf.create({"executor": "ray", "batch_size": bs, "replicas": 1,
                                   "num_gpus_per_replica": 1, "max_restarts": 0})
    real = runner._complete
    try:
        runner._complete = _patched_complete(batches)
        with _Clock() as c:
            done = runner.run_requests(table, model, cfg.model, engine_cfg, label="gen",
                                       cache=None, progress=False)
        record("loop: run_requests, cache off", "request", n, c,
               f"batches of {bs}; {done.completions.num_rows} rows back")
        with tempfile.TemporaryDirectory(prefix="acdrv-", dir="/tmp") as tmp:
            cache = RowCache(tmp, key_salt)
            with _Clock() as c:
                runner.run_requests(table, model, cfg.model, engine_cfg, label="gen",
                                    cache=cache, progress=False)
            record("loop: run_requests, row cache on (get + put)", "request", n, c,
                   f"{len(list(Path(cache.dir).glob('part-*.parquet')))} part files")
    finally:
        runner._complete = real
    gens_completions = done.completions
    del done, batches

    # Ray Data transport: a real actor pool whose stage answers at once
    if args.ray_rows:
        m = min(args.ray_rows, n)
        sub = table.slice(0, m)
        from aligncultura.engine import vllm_stage

        ray_cfg = OmegaConf.create({"executor": "ray", "batch_size": bs, "replicas": args.ray_replicas,
                                    "num_cpus_per_replica": 1, "num_gpus_per_replica": 0,
                                    "max_restarts": 0, "engine_kwargs": {}, "env": {},
                                    "threads": None})
        model_cfg = OmegaConf.merge(cfg.model, {"engine_kwargs": {}})
        saved = vllm_stage.LLMStage
        vllm_stage.LLMStage = FakeStage
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        try:
            from aligncultura.cluster.ray_session import init_ray

            init_ray(2)
            runner.run_requests(sub.slice(0, bs * 2), model, model_cfg, ray_cfg, label="warm",
                                progress=False)  # workers started, imports done
            with _Clock() as c:
                runner.run_requests(sub, model, model_cfg, ray_cfg, label="ray", progress=False)
            record("transport: Ray Data actor pool -> driver (driver process CPU)", "request",
                   m, c, f"{args.ray_replicas} fake replica(s), batches of {bs}; wall includes "
                   "the replicas' work on the same 2 cores")
        finally:
            vllm_stage.LLMStage = saved
            import ray

            ray.shutdown()

    # reduction of the generation pass
    prompt_of = dict(zip(prompts.column("row_id").to_pylist(), prompts.column("question").to_pylist(),
                         strict=True))
    with _Clock() as c:
        gens = generation_rows(gens_completions, prompt_of, model.name).sort_by(
            [("row_id", "ascending"), ("sample_index", "ascending")])
    record("reduce: generation_rows + sort", "generation", n, c)
    with tempfile.TemporaryDirectory(prefix="acdrv-", dir="/tmp") as tmp:
        with _Clock() as c:
            write_parquet(Path(tmp) / "generations.parquet", gens)
        size = (Path(tmp) / "generations.parquet").stat().st_size
        record("write: generations.parquet", "generation", n, c, f"{size / 1e6:.0f} MB")

    # judge planning: the rubric judge (helpful, both orders) and the three scorers
    meta = {f"p{i}": {"question": prompt_of[f"p{i}"], "subdomain": "Festivals", "class_id": i % 41,
                      "helpful_ref": "A reference answer about the festival and its history.",
                      "honest_ref": "A reference answer."} for i in range(n)}
    judge_cfg = cfg.judge
    scorer_cfgs = {c: cfg.scorer[c] for c in ("harmless", "truthful", "informative")}
    gen_rows = gens.to_pylist()
    with _Clock() as c:
        jreqs = [r for g in gen_rows for r in requests_for(g, meta[g["row_id"]], judge_cfg,
                                                           ("helpful",))]
        jtable = request_table(jreqs, key_salt)
    record("plan: rubric judge requests (helpful ab + ba) + request_table", "judge request",
           len(jreqs), c)
    with _Clock() as c:
        sreqs = {crit: [r for g in gen_rows for r in requests_for(g, meta[g["row_id"]], sc, (crit,))]
                 for crit, sc in scorer_cfgs.items()}
        stables = {crit: request_table(r, key_salt) for crit, r in sreqs.items()}
    n_scorer = sum(len(r) for r in sreqs.values())
    record("plan: scorer requests (harmless, truthful, informative) + request_table",
           "judge request", n_scorer, c)
    del jreqs, sreqs, gen_rows

    # judge completions -> judgments
    verdict = json.dumps({"rationale": "A is more specific about the practice and its history.",
                          "winner": "A"})
    jcomps = _fake_completions(jtable, 0, [verdict])
    with _Clock() as c:
        judged = [judgment_rows(jcomps, model.name, "qwen3_8b", judge_cfg)]
    record("reduce: judgment_rows (rubric JSON verdicts)", "judgment", jcomps.num_rows, c)
    score_text = {"harmless": json.dumps({"logits": [-3.0] * 14,
                                          "labels": [f"label_{k}" for k in range(14)]}),
                  "truthful": json.dumps({"yes": -0.2, "no": -1.8}),
                  "informative": json.dumps({"yes": -0.3, "no": -1.5})}
    n_scored = 0
    with _Clock() as c:
        for crit, t in stables.items():
            sc = _fake_completions(t, 0, [score_text[crit]])
            n_scored += sc.num_rows
            judged.append(judgment_rows(sc, model.name, crit, scorer_cfgs[crit]))
    record("reduce: judgment_rows (scorer numbers)", "judgment", n_scored, c,
           "includes building the synthetic completions")
    judgments = pa.concat_tables(judged)
    del judged, jcomps
    row_meta = {rid: m["class_id"] for rid, m in meta.items()}
    with _Clock() as c:
        compute_metrics(judgments, row_meta, n_resamples=1000, seed=0)
    record("reduce: compute_metrics (1000 bootstrap resamples)", "judgment", judgments.num_rows, c)
    with tempfile.TemporaryDirectory(prefix="acdrv-", dir="/tmp") as tmp:
        rd = RunDir(tmp)
        read = ReadResult(table=prompts, read=n, used=n)
        with _Clock() as c:
            write_row_states(rd, read, gens, judgments)
        record("reduce: write_row_states", "generation", n, c)
        with _Clock() as c:
            rd.write_parquet("judgments.parquet", judgments)
        size = (rd / "judgments.parquet").stat().st_size
        record("write: judgments.parquet", "judgment", judgments.num_rows, c, f"{size / 1e6:.0f} MB")

    lines = [f"{n:,} synthetic rows (CulturaX questions with a suffix; completions of "
             f"{args.text_chars} characters), engine batches of {bs}; this process's CPU "
             "seconds (every thread). Presets: experiment=paper, model=llama_3_1_8b_instruct.", "",
             "| step | unit | units | wall s | CPU s | CPU us per unit | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['unit']} | {r['count']:,} | {r['wall_s']:.2f} | "
                     f"{r['cpu_s']:.2f} | {r['us_per_unit']:.1f} | {r['note']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CulturaX lengths


def bench_culturax(args) -> str:
    import numpy as np
    from transformers import AutoTokenizer

    from aligncultura.engine.models import default_cache_dir, provision_embedded

    rows = list(csv.DictReader(io.StringIO(CSV_PATH.read_bytes().decode("cp1252"), newline="")))
    path, _ = provision_embedded("smollm2_135m", default_cache_dir())
    tok = AutoTokenizer.from_pretrained(path)
    out = [f"{CSV_PATH.name}: {len(rows)} rows (tokens: the embedded SmolLM2 tokenizer, "
           "49k vocabulary; Llama 3's 128k vocabulary gives somewhat fewer)", "",
           "| column | mean tokens | median | p95 | max | total |", "|---|---|---|---|---|---|"]
    for col in ("Question", "helpful_response", "harmless_response", "honest_response"):
        lens = np.array([len(tok.encode(r.get(col) or "", add_special_tokens=False)) for r in rows])
        out.append(f"| {col} | {lens.mean():.1f} | {np.median(lens):.0f} | "
                   f"{np.percentile(lens, 95):.0f} | {lens.max()} | {lens.sum():,} |")
    chat = [len(tok.encode(tok.apply_chat_template([{"role": "user", "content": r["Question"]}],
                                                   add_generation_prompt=True, tokenize=False),
                           add_special_tokens=False)) for r in rows]
    out.append(f"\nChat-templated question (SmolLM2's template with its default system "
               f"prompt): mean {np.mean(chat):.1f} tokens.")
    out += ["", *_judge_prompt_lengths(rows, tok)]
    return "\n".join(out)


def _judge_prompt_lengths(rows: list[dict[str, str]], tok) -> list[str]:
    """Token lengths of the paper preset's judge inputs per generated response, built by the
    project's own builders (rubrics.py, scorers.py), with the dataset's `helpful_response` in
    place of the model's response (its real length is only known after generation)."""
    import numpy as np
    from omegaconf import OmegaConf

    from aligncultura.benchmark import rubrics, scorers

    def n(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False))

    def chat(messages) -> int:  # system + user contents, no template tokens
        return sum(n(m["content"]) for m in messages)

    conf = ROOT / "conf" / "scorer"
    fmts = {c: OmegaConf.load(next((conf / c).glob("*.yaml"))).prompt_format
            for c in ("harmless", "truthful", "informative")}
    lens: dict[str, list[int]] = {}
    for r in rows:
        q, sub = r["Question"], r.get("domain") or "None"
        resp, ref = r.get("helpful_response") or "", r.get("helpful_response") or ""
        lens.setdefault("rubric judge: helpful (ab; ba is the same length)", []).append(
            chat(rubrics.helpfulness_messages(q, sub, resp, ref)))
        for c, f in fmts.items():
            lens.setdefault(f"scorer: {c} ({Path(next((conf / c).glob('*.yaml'))).stem})",
                            []).append(n(scorers.scorer_input(f, q, resp)))
    out = ["Judge inputs per generated response (experiment=paper: the rubric judge asks "
           "helpful twice, A/B and B/A; harmless, truthful and informative go to the three "
           "scorers), the dataset's helpful_response standing in for the model's response:", "",
           "| judge input | mean tokens | median | p95 | max |", "|---|---|---|---|---|"]
    for k, v in lens.items():
        a = np.array(v)
        out.append(f"| {k} | {a.mean():.1f} | {np.median(a):.0f} | {np.percentile(a, 95):.0f} "
                   f"| {a.max()} |")
    out.append("")
    out.append("Rubric (system message) alone, tokens: " + ", ".join(
        f"{c} {n(t)}" for c, t in rubrics.RUBRICS.items()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="leakage,driver,culturax")
    ap.add_argument("--files", type=int, default=5, help="leakage: corpus files of ~21 MB")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--leak-configs", nargs="+", default=list(LEAK_CONFIGS)[:3],
                    choices=list(LEAK_CONFIGS))
    ap.add_argument("--rows", type=int, default=100_000, help="driver: synthetic rows")
    ap.add_argument("--batch-size", type=int, default=256, help="driver: engine batch (gpu preset)")
    ap.add_argument("--text-chars", type=int, default=1600, help="driver: response length")
    ap.add_argument("--ray-rows", type=int, default=20_000, help="driver: rows through Ray Data")
    ap.add_argument("--ray-replicas", type=int, default=1)
    ap.add_argument("--json", default=None, help="driver: write the rows here")
    ap.add_argument("--csv", default=None, help="the released CulturaX.csv (default "
                    "../shared/data/CulturaX.csv from the project root, or $AC_CULTURAX_CSV)")
    args = ap.parse_args()
    if args.csv:
        global CSV_PATH
        CSV_PATH = Path(args.csv).resolve()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sections = args.sections.split(",")
    print(f"load average at start {os.getloadavg()[0]:.1f}", flush=True)
    parts = []
    if "culturax" in sections and CSV_PATH.exists():
        parts += ["### CulturaX", "", bench_culturax(args), ""]
    if "leakage" in sections:
        parts += ["### Leakage scan on 1 vs 2 nodes", "", bench_leakage(args), ""]
    if "driver" in sections:
        parts += ["### Driver per-row costs", "", bench_driver(args), ""]
    parts.append(f"(load average at end {os.getloadavg()[0]:.1f})")
    print("\n" + "\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
