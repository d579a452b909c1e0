"""Bad input through the public command line: one line naming file/row/key and a next step
(exit 2, no traceback), or a quarantined row with its reason; nothing computed is lost.

Whole-input problems are caught by `dry_run=true` (it reads and validates everything, starts
no engine). Row-level problems are checked through real runs whose usable rows are all in the
row cache of the session's benchmark (`quickstart_benchmark`), so they start no engine either;
only the garbage judge needs one.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, run_job

SAMPLE = ROOT / "aligncultura/data/sample_data/culturax_sample.jsonl"
NEXT_STEP = ("set ", "use ", "check ", "available", "see `", "give ", "must be", "run `")


def _sample() -> list[dict]:
    return [json.loads(x) for x in SAMPLE.read_text().splitlines()]


def _files(d: Path) -> dict[str, str]:
    """One small file per whole-input problem, by placeholder name."""
    good = _sample()[0]
    (d / "emptydir").mkdir()
    (d / "mixed").mkdir()
    (d / "mixed/a.jsonl").write_text(json.dumps(good) + "\n")
    (d / "mixed/b.csv").write_text("id,question\n1,hi\n")
    files = {
        "empty_jsonl": ("empty.jsonl", b""),
        "empty_csv": ("empty.csv", b""),
        "notext_csv": ("notext.csv", b"id,text\n1,hello\n"),
        "notopic_jsonl": ("notopic.jsonl",
                          json.dumps({"id": "x", "question": "q?", "class_id": 1}).encode()),
        "allbad_jsonl": ("allbad.jsonl", b"{not json\n[1, 2]\n"),
        "junk_parquet": ("junk.parquet", b"PAR1 this is not parquet"),
        "utf16_jsonl": ("utf16.jsonl", (json.dumps(good) + "\n").encode("utf-16")),
        "gzip_jsonl": ("gzipped.jsonl", gzip.compress((json.dumps(good) + "\n").encode())),
    }
    out = {"emptydir": str(d / "emptydir"), "mixed": str(d / "mixed")}
    for key, (name, data) in files.items():
        (d / name).write_bytes(data)
        out[key] = str(d / name)
    return out


# (job, overrides with {name} placeholders for the files above, what the one line must name)
CASES = {
    "missing file": ("generate", ["dataset.path=/does/not/exist.jsonl"], "exist.jsonl"),
    "empty jsonl": ("generate", ["dataset.path={empty_jsonl}"], "(0 read)"),
    "empty csv": ("generate", ["dataset.path={empty_csv}"], "file is empty"),
    "dir without data": ("generate", ["dataset.path={emptydir}"], "holds no .csv"),
    "dir of mixed formats": ("generate", ["dataset.path={mixed}"], "dataset.format"),
    "missing text column": ("generate", ["dataset.path={notext_csv}"], "dataset.text_field"),
    # an optional column the user named: still an error (left at its preset name: a note)
    "missing optional column": ("generate", ["dataset.path={notopic_jsonl}",
                                             "dataset.topic_field=topic"], "dataset.topic_field"),
    "every line malformed": ("generate", ["dataset.path={allbad_jsonl}"], "line 1: malformed"),
    "utf-16 read as utf-8": ("generate", ["dataset.path={utf16_jsonl}", "dataset.encoding=utf-8"],
                             "line 1"),
    "gzip named .jsonl": ("generate", ["dataset.path={gzip_jsonl}"], "no usable row"),
    "corrupt parquet": ("generate", ["dataset.path={junk_parquet}"], "not a readable Parquet"),
    "unknown encoding": ("generate", ["dataset.encoding=klingon"], "dataset.encoding"),
    "unknown format": ("generate", ["dataset.format=xml"], "format 'xml'"),
    "config typo": ("generate", ["dataset.limt=3"], "dataset.limt"),
    "wrong type": ("generate", ["dataset.limit=abc"], "dataset.limit=abc"),
    "unknown preset": ("generate", ["model=nope"], "model=nope"),
    "model path missing": ("generate", ["model=local", "model.path=/no/such/ckpt"],
                           "model.path=/no/such/ckpt"),
    "lora path missing": ("generate", ["model.lora_path=/no/adapter"], "model.lora_path"),
    "limit 0": ("generate", ["dataset.limit=0"], "dataset.limit=0"),
    "fractions not summing to 1": ("generate", ["dataset.split_fractions=[0.5,0.1,0.1]"],
                                   "dataset.split_fractions"),
    "two fractions": ("generate", ["dataset.split_fractions=[0.5,0.5]"], "3 values"),
    "unknown split": ("generate", ["dataset.split=dev"], "dataset.split='dev'"),
    "judge path missing": ("benchmark", ["judge.model.source=local",
                                         "judge.model.path=/no/judge"], "judge.model.path"),
    "unknown judge2": ("benchmark", ["judge2=nope"], "judge2=nope"),
    "determinism share": ("benchmark", ["bench.determinism_sample=2"],
                          "bench.determinism_sample"),
    "failed share": ("benchmark", ["bench.max_failed_rate=1.5"], "bench.max_failed_rate=1.5"),
    "yes/no mass": ("build_dataset", ["classify.min_yes_no_mass=2"], "classify.min_yes_no_mass"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_whole_input_problem_is_one_line(case, bad_files, tmp_path):
    job, args, needle = CASES[case]
    args = [a.format(**bad_files) for a in args]
    proc = run_job(job, "dry_run=true", *args, f"run_dir={tmp_path / 'r'}", timeout=300)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, (case, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
    assert any(s in lines[0] for s in NEXT_STEP), f"no next step in: {lines[0]}"
    assert not (tmp_path / "r").exists()


# ---- row-level problems: quarantined with a reason, the run goes on -------------------------

def _bench_rows(ref_dir: Path) -> list[dict]:
    """The sample rows the session benchmark generated for (their answers are cached)."""
    ids = set(pq.read_table(ref_dir / "generations.parquet").column("row_id").to_pylist())
    return [r for r in _sample() if r["id"] in ids]


def _cached_args(ref_dir: Path) -> list[str]:
    return ["experiment=quickstart", "generation.max_tokens=32", "dataset.limit=null",
            f"cache_dir={ref_dir.parent / 'cache'}"]


@pytest.mark.slow  # uses the session benchmark (one engine start)
def test_bad_rows_are_quarantined_with_reasons(quickstart_benchmark, tmp_path):
    ref_dir, _ = quickstart_benchmark
    good = _bench_rows(ref_dir)
    assert len(good) == 4
    g0 = good[0]

    def row(rid, q, cid=1, **kw):
        return json.dumps({**{k: v for k, v in g0.items()}, "id": rid, "question": q,
                           "class_id": cid, **kw}).encode()

    bad = {  # id -> (line, reason substring)
        "nul": (row("nul", "a\x00b"), "NUL"),
        "empty": (row("empty", ""), "empty or whitespace"),
        "blank": (row("blank", " \t\u3000 "), "empty or whitespace"),
        "huge": (row("huge", "x" * 100_001), "100001 characters"),
        g0["id"]: (row(g0["id"], "a different question, same id"), "duplicate id"),
        "cls99": (row("cls99", "unknown class?", 99), "unknown class id 99"),
        "clsfloat": (row("clsfloat", "class 2.5?", 2.5), "not an integer"),
        "clstext": (row("clstext", "class abc?", "abc"), "not an integer"),
        "num": (row("num", 12345), "is a int, expected text"),
        "list": (row("list", ["a", "b"]), "is a list, expected text"),
        "null": (row("null", None), "question is null"),
        "reftype": (row("reftype", "ref?", helpful_response=7), "helpful_ref is a int"),
        "cp1252": (row("cp1252", "caf\u00e9").replace(b"caf\\u00e9", b"caf\xe9 \x93q\x94"),
                   "not valid text in the configured encoding"),
    }
    lines = [json.dumps(g).encode() for g in good]
    lines += [v[0] for v in bad.values()]
    lines += [b"{not json", b"[1, 2]", json.dumps({"id": "notext"}).encode()]
    # mixed line endings: CRLF for some lines, LF for others, a blank line in between
    blob = b"\r\n".join(lines[:3]) + b"\n\n" + b"\n".join(lines[3:]) + b"\r\n"
    src = tmp_path / "messy.jsonl"
    src.write_bytes(blob)
    rd = tmp_path / "run"
    proc = run_job("generate", *_cached_args(ref_dir), f"dataset.path={src}",
                   "dataset.name=messy", f"run_dir={rd}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "all 4 rows cached: no engine started" in proc.stdout
    q = pq.read_table(rd / "quarantine.parquet").to_pylist()
    by_id = {r["row_id"]: r for r in q if r["row_id"]}
    for rid, (_, reason) in bad.items():
        assert reason in by_id[rid]["reason"], (rid, by_id[rid])
        assert by_id[rid]["file"] == str(src) and by_id[rid]["line"] > 0
    reasons = [r["reason"] for r in q]
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any("JSON line is a list" in r for r in reasons)
    assert any("field 'question' missing" in r for r in reasons)
    assert len(q) == len(bad) + 3
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["rows"]["read"] == 4 + len(q) == summary["rows"]["used"] + len(q)
    assert summary["rows"]["states"] == {"ok": 4, "quarantined": len(q), "not_selected": 0}
    states = pq.read_table(rd / "row_states.parquet").to_pylist()
    assert all(s["reason"] for s in states if s["state"] == "quarantined")
    gens = pq.read_table(rd / "generations.parquet").to_pylist()
    assert sorted(g["prompt"] for g in gens) == sorted(g["question"] for g in good)  # no "\r"


@pytest.mark.slow  # uses the session benchmark (one engine start)
def test_cp1252_csv_read_as_utf8_quarantines_rows(quickstart_benchmark, tmp_path):
    """The released CulturaX is cp1252 with CRLF: read as utf-8, the rows whose text is not
    ASCII are quarantined with the reason (not a crash), the others go on."""
    ref_dir, _ = quickstart_benchmark
    cols = ("id", "question", "class_id", "topic", "helpful_response", "harmless_response",
            "honest_response")
    rows = [*_bench_rows(ref_dir), dict(zip(cols, ("q1", "\u201cQuoted\u201d caf\u00e9?", 3, "t",
                                                    "h", "a", "o"), strict=True))]
    out = [",".join(cols)]
    out += [",".join('"' + str(r[c]).replace('"', '""') + '"' for c in cols) for r in rows]
    src = tmp_path / "cp1252.csv"
    src.write_bytes("\r\n".join(out).encode("cp1252") + b"\r\n")
    broken = [(r["id"], i + 2) for i, r in enumerate(rows)
              if not all(str(r[c]).isascii() for c in cols)]
    assert ("q1", 6) in broken and len(broken) < len(rows)
    rd = tmp_path / "run"
    proc = run_job("generate", *_cached_args(ref_dir), f"dataset.path={src}", f"run_dir={rd}",
                   "dataset.encoding=utf-8", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"all {len(rows) - len(broken)} rows cached: no engine started" in proc.stdout
    q = pq.read_table(rd / "quarantine.parquet").to_pylist()
    assert [(r["row_id"], r["line"]) for r in q] == broken
    assert all("not valid text in the configured encoding" in r["reason"] for r in q)


@pytest.mark.slow  # uses the session benchmark (one engine start)
def test_unwritable_wandb_dir_keeps_local_results(quickstart_benchmark, tmp_path):
    """W&B cannot write (its directory is a file): the job still finishes locally, exit 0,
    and says where the results are and how to sync later; no engine starts (all cached)."""
    ref_dir, _ = quickstart_benchmark
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "wandb").write_text("not a directory")
    proc = run_job("benchmark", "experiment=quickstart", "dataset.limit=4",
                   "generation.max_tokens=32", f"cache_dir={ref_dir.parent / 'cache'}",
                   f"run_dir={rd}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "all 24 rows cached: no engine started" in proc.stdout
    warn = [x for x in proc.stderr.splitlines() if "W&B logging failed" in x]
    assert len(warn) == 1 and "wandb sync" in warn[0] and str(rd) in warn[0]
    assert "Traceback" not in proc.stderr
    for name in ("metrics.json", "summary.json", "generations.parquet", "judgments.parquet"):
        assert (rd / name).exists(), name
    assert json.loads((rd / "metrics.json").read_text())["joint_hhh"]["value"] == pytest.approx(
        json.loads((ref_dir / "metrics.json").read_text())["joint_hhh"]["value"])


@pytest.mark.slow
def test_garbage_judge_fails_loudly_and_keeps_generations(quickstart_benchmark, tmp_path):
    """Only judge settings change (no JSON schema, 1 token: nothing parses): the generations
    all come from the cache (0 generation requests), every judgment is unscored, and the run
    fails with one line naming the judge, counts and reason, keeping everything it wrote."""
    ref_dir, _ = quickstart_benchmark
    rd = tmp_path / "run"
    proc = run_job("benchmark", "experiment=quickstart", "dataset.limit=4",
                   "generation.max_tokens=32", f"cache_dir={ref_dir.parent / 'cache'}",
                   "judge.structured=false", "judge.max_tokens=1", "wandb.mode=disabled",
                   f"run_dir={rd}", timeout=1200)
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: judge smollm2_135m unscored ")
    assert "judge.max_unscored_rate=" in errors[0] and str(rd) in errors[0]
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["generations"]["computed"] == 0 and summary["generations"]["cached"] == 4
    assert summary["judgments"]["computed"] == 20
    assert summary["judgments"]["unscored"] == 20 and summary["status"] == "failed"
    gens = pq.read_table(rd / "generations.parquet")
    ref = pq.read_table(ref_dir / "generations.parquet")
    assert gens.column("response").to_pylist() == ref.column("response").to_pylist()
    judged = pq.read_table(rd / "judgments.parquet")
    assert set(judged.column("status").to_pylist()) == {"unscored"}
    assert all(judged.column("reason").to_pylist())
    assert isinstance(judged, pa.Table) and (rd / "metrics.json").exists()


def _one_error(proc) -> str:
    lines = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, \
        proc.stderr[-2000:]
    return lines[0]


def test_every_job_names_the_key_the_user_set(tmp_path):
    """The same bad input (a class column that does not exist) under each job's own key."""
    data = tmp_path / "seeds.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "question": r["question"]}) + "\n"
                            for r in _sample()[:3]))
    cases = [
        ("generate", [f"dataset.path={data}", "dataset.class_field=label"], "dataset.class_field"),
        ("benchmark", [f"dataset.path={data}", "dataset.class_field=label"], "dataset.class_field"),
        ("build_dataset", [f"seeds.path={data}", "seeds.class_field=label"], "seeds.class_field"),
        ("dedup", [f"input.path={data}", "input.class_field=label"], "input.class_field"),
        ("leakage", [f"eval.path={data}", "eval.class_field=label", f"reference.paths=[{data}]"],
         "eval.class_field"),
        ("build_dataset", [f"seeds.path={data}", "seeds.limit=0"], "seeds.limit=0"),
    ]
    for job, args, key in cases:
        line = _one_error(run_job(job, *args, "dry_run=true" if job not in ("dedup", "leakage")
                                  else f"run_dir={tmp_path / job}", timeout=300))
        assert key in line, (job, line)
        if not key.startswith("dataset."):  # never the generic key of another job
            assert "dataset." not in line, (job, line)


def test_an_error_never_prints_control_characters(tmp_path):
    """A UTF-16 CSV read as UTF-8: its header is full of NUL bytes; the error escapes them."""
    data = tmp_path / "unicode.csv"
    data.write_bytes("id,question\r\n1,How is injera made?\r\n".encode("utf-16"))
    proc = run_job("generate", f"dataset.path={data}", "dataset.encoding=utf-8", "dry_run=true",
                   timeout=300)
    line = _one_error(proc)
    assert "\x00" not in proc.stderr and "\\x00" in line, line
    assert all(ch.isprintable() for ch in line)


def test_optional_columns_left_at_their_preset_names_are_skipped_with_a_note(tmp_path):
    """A user's own file with just id and question: the preset's class, topic and reference
    columns are absent. Each is skipped with a one-line note; the job runs (dry run here)."""
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"id": r["id"], "question": r["question"]}) + "\n"
                            for r in _sample()[:3]))
    proc = run_job("generate", f"dataset.path={data}", "dry_run=true", timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    notes = [x for x in proc.stderr.splitlines() if x.startswith("note: ")]
    assert len(notes) == 5, notes  # class_id, topic and the three reference answers
    assert any("'class_id' for dataset.class_field" in n for n in notes)
    assert all("name the column with dataset." in n for n in notes)
    assert "plan: 3 prompts (read 3, quarantined 0)" in proc.stdout
