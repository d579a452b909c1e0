"""jobs.leakage and jobs.dedup end to end through the command line, on generated files with
known leaks and duplicates (bad input included) and on the released CulturaX."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import culturax_csv, run_job

from aligncultura.benchmark.metrics import compute_metrics
from aligncultura.benchmark.verdicts import JUDGMENT_SCHEMA
from aligncultura.leakage.summary import without_leaked

WORDS = ("river market song weave clay loom drum harvest mask temple lantern spice dye bronze "
         "mural chant pottery festival silk carving ritual bamboo saffron indigo copper dance "
         "archive manuscript fresco mosaic garden basket cedar ivory lacquer opera puppet").split()


def _sentence(rng: random.Random, n: int = 22) -> str:
    return "How does the " + " ".join(rng.choice(WORDS) for _ in range(n)) + " shape local life?"


def _edit(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(2, len(words) - 2)] = "changed"  # one word of ~27 replaced
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Eval JSONL + a reference of Parquet dir, JSONL and CSV, with known leaks and bad rows."""
    d = tmp_path_factory.mktemp("leak")
    rng = random.Random(7)
    texts = [_sentence(rng) for _ in range(40)]
    ids = [f"Q/{i:03d}" for i in range(40)]  # not integers: carried unchanged
    cjk = "京都の伝統的な織物の技法は地域の暮らしと祭りにどのような影響を与えてきたのでしょうか"
    eval_lines = [json.dumps({"id": i, "question": t, "class_id": 11}) for i, t in zip(ids, texts, strict=True)]
    eval_lines.append(json.dumps({"id": "Q/cjk", "question": cjk, "class_id": 5}))
    eval_lines.append(json.dumps({"id": "Q/null", "question": None, "class_id": 11}))
    eval_lines.append(json.dumps({"id": "Q/empty", "question": "   ", "class_id": 11}))
    eval_lines.append(json.dumps({"id": "Q/huge", "question": "word " * 2_200_000, "class_id": 1}))
    raw = "\n".join(eval_lines).encode() + b'\n{"id": "Q/bytes", "question": "bad \xff\xfe text"}\n'
    (d / "eval.jsonl").write_bytes(raw)
    # leaks: 0-4 verbatim (parquet), 5-9 one word edited (jsonl), 10 embedded in a 10+ MB
    # document (jsonl), 11 verbatim in a CSV file, the CJK question with one character changed
    ref = d / "ref"
    ref.mkdir()
    filler = [_sentence(random.Random(100 + k)).replace("How", "Why") for k in range(200)]
    pq.write_table(pa.table({"doc_id": [f"P{k}" for k in range(205)],
                             "body": [*texts[:5], *filler]}), ref / "part-0.parquet")
    pq.write_table(pa.table({"doc_id": ["P-null", "P-empty"], "body": [None, ""]}),
                   ref / "part-1.parquet")
    big = ("filler words about nothing in particular " * 260_000) + texts[10] + " and more text"
    assert len(big) > 10_000_000
    jl = [json.dumps({"doc_id": f"J{k}", "body": _edit(texts[5 + k], rng)}) for k in range(5)]
    jl += [json.dumps({"doc_id": "J-big", "body": big}),
           json.dumps({"doc_id": "J-cjk", "body": cjk.replace("祭り", "市場")}),
           json.dumps({"doc_id": "J-null", "body": None})]
    (d / "more.jsonl").write_bytes("\n".join(jl).encode() + b'\n{"doc_id": "J-bytes", '
                                   b'"body": "caf\xe9 \xff unrelated"}\n')
    (d / "extra.csv").write_text(f"doc_id,body\nC1,\"{texts[11]}\"\nC2,unrelated text here\n")
    leaked = {*ids[:12], "Q/cjk"}
    args = [f"eval.path={d / 'eval.jsonl'}", f"reference.paths=[{ref},{d / 'more.jsonl'},"
            f"{d / 'extra.csv'}]", "reference.text_field=body", "reference.id_field=doc_id"]
    return d, ids, leaked, args


def _check_leakage_run(run_dir, ids, leaked):
    table = pq.read_table(run_dir / "leakage.parquet")
    summary = json.loads((run_dir / "summary.json").read_text())
    got = table["row_id"].to_pylist()
    assert got == [*ids, "Q/cjk"]  # the input's own ids, unchanged, in input order
    flagged = {r for r, f in zip(got, table["flagged"].to_pylist(), strict=True) if f}
    assert flagged == leaked
    by_id = {r["row_id"]: r for r in table.to_pylist()}
    assert by_id["Q/000"]["ref_id"] == "P0" and by_id["Q/000"]["similarity"] == 1.0
    assert by_id["Q/007"]["ref_id"] == "J2" and by_id["Q/007"]["method"] in ("minhash",
                                                                             "containment")
    assert by_id["Q/010"]["ref_id"] == "J-big" and by_id["Q/010"]["method"] == "containment"
    assert by_id["Q/011"]["ref_id"] == "C1"
    assert by_id["Q/cjk"]["ref_id"] == "J-cjk"
    ev, ref = summary["rows"]["eval"], summary["rows"]["reference"]
    assert ev["read"] == 45 and ev["read"] == ev["used"] + ev["quarantined"]
    assert ev["quarantined"] == 4  # null, blank, 10+ MB, undecodable bytes
    reasons = pq.read_table(run_dir / "quarantine.parquet")["reason"].to_pylist()
    assert len(reasons) == 4 and any("characters" in r for r in reasons)
    assert any("not valid text" in r for r in reasons)
    assert ref["read"] == 205 + 2 + 9 + 2 and ref["read"] == ref["used"] + ref["quarantined"]
    assert ref["quarantined"] == 3 and ref["replaced_bytes"] == 1
    o = summary["leakage"]["overall"]
    assert (o["flagged"], o["scored"]) == (13, 41)
    assert o["ci95"][0] < 13 / 41 < o["ci95"][1]
    assert summary["leakage"]["by_subdomain"]["Culinary Arts"]["flagged"] == 12
    return table


def test_leakage_local_and_ray_agree(corpus, tmp_path):
    d, ids, leaked, args = corpus
    # small pieces: the Parquet row group is cut into row ranges, the 10 MB JSON line spans
    # many byte ranges (in process: ~500 pieces of 20 kB; on Ray: 11 tasks of 1 MB)
    local = run_job("leakage", *args, "leakage.piece_bytes=20000", f"run_dir={tmp_path / 'local'}")
    assert local.returncode == 0, local.stderr[-3000:]
    a = _check_leakage_run(tmp_path / "local", ids, leaked)
    ray = run_job("leakage", *args, "executor=ray", "num_workers=2", "leakage.piece_bytes=1000000",
                  f"run_dir={tmp_path / 'ray'}", env={"RAY_ADDRESS": ""})
    assert ray.returncode == 0, ray.stderr[-3000:]
    b = _check_leakage_run(tmp_path / "ray", ids, leaked)
    assert a.select(["row_id", "flagged", "ref_id", "similarity"]).equals(
        b.select(["row_id", "flagged", "ref_id", "similarity"]))


@pytest.mark.parametrize("override,expect", [
    ("reference.paths=[/nonexistent/corpus]", "/nonexistent/corpus does not exist"),
    ("reference.id_field=nope", "column 'nope' (reference.id_field) not found"),
    ("reference.id_field=nope executor=ray num_workers=1",  # raised on a Ray worker
     "column 'nope' (reference.id_field) not found"),
    ("leakage.piece_bytes=0", "leakage.piece_bytes=0: must be >= 1"),
    ("eval.path=/nonexistent/eval.jsonl", "set eval.path"),
    ("reference.path=/x", "set reference.paths=[/x]"),
])
def test_leakage_bad_paths_are_one_line_errors(corpus, tmp_path, override, expect):
    d, ids, leaked, args = corpus
    proc = run_job("leakage", *args, *override.split(), f"run_dir={tmp_path / 'r'}",
                   env={"RAY_ADDRESS": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    if "executor=ray" in override:  # Ray's own INFO lines (start, progress) come first
        assert "Traceback" not in proc.stderr and all("error:" not in x for x in lines[:-1])
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error:") and expect in lines[0], lines


@pytest.mark.parametrize("name,content,expect", [
    ("bad.parquet", b"not parquet at all\n", "bad.parquet: not a readable parquet reference"),
    ("bad.jsonl", b'{"doc_id": "a", "body": "fine"}\n{not json\n', "bad.jsonl: not a readable jsonl"),
])
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_unreadable_reference_file_is_one_line(corpus, tmp_path, name, content, expect, executor):
    d, ids, leaked, args = corpus
    (tmp_path / name).write_bytes(content)
    args = [a for a in args if not a.startswith("reference.paths=")]
    proc = run_job("leakage", *args, f"reference.paths=[{tmp_path / name}]", f"executor={executor}",
                   "num_workers=1", f"run_dir={tmp_path / 'r'}", env={"RAY_ADDRESS": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and expect in last and "reference.paths" in last, last


def test_dedup_groups_ids_and_accounting(tmp_path):
    rng = random.Random(3)
    base = [_sentence(rng) for _ in range(30)]
    rows = [{"id": 1000 + i, "question": t, "class_id": 11} for i, t in enumerate(base)]
    rows += [{"id": 2000, "question": base[0].upper(), "class_id": 11},  # exact after normalising
             {"id": 2001, "question": base[0] + " !!", "class_id": 11},  # exact after normalising
             {"id": 2002, "question": _edit(base[1], rng), "class_id": 11},  # near
             {"id": 2003, "question": None, "class_id": 11},
             {"id": 2004, "question": "!!! ???", "class_id": 11}]  # empty after normalising
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = run_job("dedup", f"input.path={path}", f"run_dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(tmp_path / "run" / "clusters.parquet")
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert table["row_id"].to_pylist() == [str(r["id"]) for r in rows if r["question"]]
    by = {r["row_id"]: r for r in table.to_pylist()}
    assert by["2000"]["representative"] == by["2001"]["representative"] == "1000"
    assert by["2000"]["exact_representative"] == "1000"
    assert by["2002"]["representative"] == "1001" and by["2002"]["exact_cluster_id"] != \
        by["1001"]["exact_cluster_id"]
    assert 0.4 <= by["2002"]["similarity"] < 1.0
    assert by["2004"]["status"] == "empty" and by["2004"]["cluster_id"] is None
    assert s["exact"]["groups"] == 1 and s["exact"]["duplicates_dropped"] == 2
    assert s["near"]["groups"] == 2 and s["near"]["duplicates_dropped"] == 3
    assert s["rows"]["read"] == 35 == s["rows"]["used"] + s["rows"]["quarantined"]
    assert s["rows"]["quarantined"] == 1 and s["unclustered"] == {"empty": 1}


def test_culturax_dedup_and_cross_split_leakage(tmp_path):
    csv = culturax_csv()
    proc = run_job("dedup", "input=culturax", f"input.path={csv}", f"run_dir={tmp_path / 'd'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    print(f"\nCulturaX dedup: {s['exact']['groups']} exact-duplicate groups, {s['near']['groups']} "
          f"near-duplicate groups ({s['near']['method']}), {s['near']['duplicates_dropped']} "
          f"duplicates dropped of {s['rows']['used']}")
    assert s["exact"]["groups"] == 15
    assert s["near"]["groups"] >= s["exact"]["groups"]
    assert s["rows"]["read"] == 1500 == s["rows"]["used"] + s["rows"]["quarantined"]
    local = pq.read_table(tmp_path / "d" / "clusters.parquet")
    ids = local["row_id"].to_pylist()
    assert ids[:2] == ["culturax:0", "culturax:1"] and len(set(ids)) == len(ids)

    # the same dedup with the fingerprints computed on Ray (6 blocks, 2 workers): same clusters
    proc = run_job("dedup", "input=culturax", f"input.path={csv}", "executor=ray",
                   "num_workers=2", "batch_size=256", f"run_dir={tmp_path / 'dr'}",
                   env={"RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert pq.read_table(tmp_path / "dr" / "clusters.parquet").equals(local)
    sr = json.loads((tmp_path / "dr" / "summary.json").read_text())
    assert sr["settings"] == {"executor": "ray", "method": "minhash"}
    assert (sr["exact"], sr["near"]) == (s["exact"], s["near"])

    proc = run_job("leakage", "eval=culturax", f"eval.path={csv}", "eval.split=test",
                   "reference=culturax", f"reference.paths=[{csv}]", "reference.split=train",
                   f"run_dir={tmp_path / 'l'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "l" / "summary.json").read_text())
    o = s["leakage"]["overall"]
    print(f"CulturaX test-vs-train leakage: {o['flagged']}/{o['scored']} = {100 * o['rate']:.2f}% "
          f"(95% CI {100 * o['ci95'][0]:.2f}-{100 * o['ci95'][1]:.2f}%)")
    ev, ref = s["rows"]["eval"], s["rows"]["reference"]
    assert ev["read"] == ref["read"] == 1500
    assert o["scored"] == ev["selected"] and ref["scanned"] + ev["selected"] < 1500
    table = pq.read_table(tmp_path / "l" / "leakage.parquet")
    assert set(table["split"].to_pylist()) == {"test"}
    refs = {r for r in table["ref_id"].to_pylist() if r}
    assert refs.isdisjoint(table["row_id"].to_pylist())  # splits share no row


def _judgment(row_id: str, verdict: str) -> dict:
    return {"row_id": row_id, "model": "m", "judge": "j", "sample_index": 0,
            "criterion": "harmless", "order": "", "verdict": verdict, "status": "scored",
            "reason": "", "rationale": "", "category": "none" if verdict == "safe" else "other",
            "prompt_version": "harmless-v1"}


def test_benchmark_metrics_without_leaked_rows(tmp_path):
    """The metric the benchmark adds with bench.leakage_report, on a hand-built judgment set."""
    verdicts = {"a": "safe", "b": "unsafe", "c": "safe", "d": "unsafe"}
    judgments = pa.Table.from_pylist([_judgment(r, v) for r, v in verdicts.items()],
                                     schema=JUDGMENT_SCHEMA)
    report = tmp_path / "leakage.parquet"
    pq.write_table(pa.table({"row_id": ["a", "b", "c", "d", "x"],
                             "flagged": [False, True, False, True, True]}), report)
    meta = dict.fromkeys(verdicts, 11)
    full = compute_metrics(judgments, meta, n_resamples=50)
    out = without_leaked(judgments, meta, str(report), n_resamples=50)
    assert out["excluded_rows"] == 2 and out["excluded_judgments"] == 2
    assert out["excluded_ids"] == ["b", "d"]
    # b and d are the unsafe responses: dropping them leaves a safety score of 0
    assert full["safety_score"]["value"] == 50.0 and out["safety_score"]["value"] == 0.0
    assert out == {**compute_metrics(judgments.filter(pa.array([True, False, True, False])), meta,
                                     n_resamples=50), **{k: out[k] for k in (
                                         "report", "excluded_rows", "excluded_judgments",
                                         "excluded_ids")}}
