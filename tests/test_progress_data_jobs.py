"""Live progress of jobs.leakage (the reference scan: pieces done of all, reference MB, MB/s,
ETA) and jobs.dedup (the read and fingerprinting pass: input MB read of the files' total):
the plain lines on a stderr that is not a terminal, the byte accounting behind them, and
that progress changes nothing in the outputs. The meter itself: tests/test_progress.py."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_job
from omegaconf import OmegaConf

import aligncultura.console.progress as progress_mod
import aligncultura.data.sources as sources
from aligncultura.config import InputConfig
from aligncultura.console.progress import Meter
from aligncultura.leakage import build_index
from aligncultura.leakage import stream_input as si
from aligncultura.leakage.config import ReferenceConfig
from aligncultura.leakage.dedup_stream import ReadProgress
from aligncultura.leakage.pieces import plan_pieces
from aligncultura.leakage.references import scan_references
from aligncultura.leakage.scan import LeakageConfig

WORDS = ("river market song weave clay loom drum harvest mask temple lantern spice dye bronze "
         "mural chant pottery festival silk carving ritual bamboo saffron indigo copper").split()
PIECE_BYTES = 6000
SCAN_LINE = re.compile(r"\[leakage scan\] (\d+)/(\d+) pieces \((\d+)%\), ([\d.]+)/([\d.]+) MB, ")
READ_LINE = re.compile(r"\[dedup read\] ([\d.]+)/([\d.]+) MB \((\d+)%\), ")


def _sentence(rng: random.Random) -> str:
    return "How does the " + " ".join(rng.choice(WORDS) for _ in range(20)) + " shape life?"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """An eval set and a reference dir (Parquet of 7 row groups, JSON lines, CSV) that the
    jobs cut into several pieces at PIECE_BYTES, three eval rows leaked."""
    d = tmp_path_factory.mktemp("progress")
    rng = random.Random(11)
    texts = [_sentence(rng) for _ in range(30)]
    (d / "eval.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": t, "class_id": 1}) + "\n"
        for i, t in enumerate(texts)))
    ref = d / "ref"
    ref.mkdir()
    body = [_sentence(rng) for _ in range(500)] + texts[:2]
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(len(body))], "text": body}),
                   ref / "a.parquet", row_group_size=75)
    (ref / "b.jsonl").write_text("".join(
        json.dumps({"id": f"j{i}", "text": texts[2] if i == 7 else _sentence(rng)}) + "\n"
        for i in range(300)))
    (ref / "c.csv").write_text("id,text\n" + "".join(f"c{i},{_sentence(rng)}\n"
                                                       for i in range(80)))
    return d


def _pieces_and_bytes(ref: Path) -> tuple[int, int]:
    """What the scan counts: Parquet/JSONL pieces plus one per CSV file, and the files' bytes."""
    n = len(plan_pieces([str(ref / "a.parquet")], "parquet", PIECE_BYTES)) \
        + len(plan_pieces([str(ref / "b.jsonl")], "jsonl", PIECE_BYTES)) + 1
    return n, sum(p.stat().st_size for p in ref.iterdir())


def _summary(run_dir: Path) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    s.pop("wall_s")
    return s


def test_leakage_scan_reports_pieces_and_mb_and_nothing_else_changes(corpus, tmp_path):
    args = [f"eval.path={corpus / 'eval.jsonl'}", f"reference.paths=[{corpus / 'ref'}]",
            f"leakage.piece_bytes={PIECE_BYTES}", "leakage.batch_size=32"]
    on = run_job("leakage", *args, f"run_dir={tmp_path / 'on'}", timeout=300)
    off = run_job("leakage", *args, f"run_dir={tmp_path / 'off'}", "progress=false",
                  timeout=300)
    assert on.returncode == 0 and off.returncode == 0, on.stderr[-2000:] + off.stderr[-2000:]
    n, size = _pieces_and_bytes(corpus / "ref")
    assert n >= 6  # several Parquet and JSONL pieces, and the CSV file
    lines = [x for x in on.stderr.splitlines() if x.startswith("[leakage scan]")]
    assert lines and "\r" not in on.stderr, on.stderr
    got = [SCAN_LINE.match(x) for x in lines]
    assert all(m and int(m[2]) == n and m[5] == f"{size / 1e6:.3f}" for m in got), lines
    last = got[-1]
    assert (int(last[1]), last[3], last[4]) == (n, "100", f"{size / 1e6:.3f}"), lines[-1]
    assert "MB/s" in lines[-1] and lines[-1].endswith("elapsed")
    assert "[leakage scan]" not in off.stderr
    # progress is all it adds: the same rows, flags and accounting
    table = pq.read_table(tmp_path / "on" / "leakage.parquet")
    assert table.equals(pq.read_table(tmp_path / "off" / "leakage.parquet"))
    assert sum(table["flagged"].to_pylist()) == 3
    assert _summary(tmp_path / "on") == _summary(tmp_path / "off")


@pytest.mark.parametrize("fmt", ["jsonl_dir", "parquet"])
def test_dedup_read_reports_mb_of_the_input_and_nothing_else_changes(tmp_path, fmt):
    rng = random.Random(3)
    rows = [{"id": f"d{i}", "question": "the same text" if i % 9 == 0 else _sentence(rng),
             "class_id": i % 3} for i in range(900)]
    if fmt == "parquet":
        path = tmp_path / "in.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
        size = path.stat().st_size
    else:
        path = tmp_path / "in"
        path.mkdir()
        for k in range(3):
            (path / f"part{k}.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                         for r in rows[k * 300:(k + 1) * 300]))
        size = sum(p.stat().st_size for p in path.iterdir())
    args = [f"input.path={path}", "batch_size=50"]
    on = run_job("dedup", *args, f"run_dir={tmp_path / 'on'}", timeout=300)
    off = run_job("dedup", *args, f"run_dir={tmp_path / 'off'}", "progress=false", timeout=300)
    assert on.returncode == 0 and off.returncode == 0, on.stderr[-2000:] + off.stderr[-2000:]
    lines = [x for x in on.stderr.splitlines() if x.startswith("[dedup read]")]
    assert lines and "\r" not in on.stderr, on.stderr
    total = f"{size / 1e6:.3f}"
    got = [READ_LINE.match(x) for x in lines]
    assert all(m and m[2] == total for m in got), lines
    assert (got[-1][1], got[-1][3]) == (total, "100"), lines[-1]
    assert "MB/s" in lines[-1] and lines[-1].endswith("elapsed")
    assert "[dedup read]" not in off.stderr
    clusters = pq.read_table(tmp_path / "on" / "clusters.parquet")
    assert clusters.equals(pq.read_table(tmp_path / "off" / "clusters.parquet"))
    assert clusters.num_rows == 900
    assert _summary(tmp_path / "on") == _summary(tmp_path / "off")


# ------------------------------------------------------------------ in-process: every update


def _lines(stream: io.StringIO, pattern: re.Pattern) -> list[re.Match]:
    """The meter's lines (every update prints one with every_s=0; the heartbeat may repeat
    one), each matched."""
    got = [pattern.match(x) for x in stream.getvalue().splitlines()]
    assert got and all(got), stream.getvalue()
    return got


def test_the_scan_moves_piece_by_piece_and_its_bytes_add_up(corpus):
    ref_dir = corpus / "ref"
    texts = [json.loads(x)["question"] for x in (corpus / "eval.jsonl").read_text().splitlines()]
    index = build_index(pa.array(texts), pa.array([f"q{i}" for i in range(len(texts))]),
                        LeakageConfig())
    ref = OmegaConf.structured(ReferenceConfig(paths=[str(ref_dir)], text_field="text",
                                               id_field="id"))
    out = io.StringIO()
    result, counts = scan_references(index, ref, "local", None, 32, PIECE_BYTES,
                                     stream=out, every_s=0, bar=False)
    quiet, _ = scan_references(index, ref, "local", None, 32, PIECE_BYTES, progress=False)
    assert result.equals(quiet)
    n, size = _pieces_and_bytes(ref_dir)
    got = _lines(out, SCAN_LINE)
    done = [int(m[1]) for m in got]
    mb = [float(m[4]) for m in got]
    assert done == sorted(done) and mb == sorted(mb)
    assert set(range(1, n + 1)) <= set(done)  # a line for every piece
    assert (done[-1], got[-1][4]) == (n, f"{size / 1e6:.3f}")
    assert counts["read"] == 500 + 2 + 300 + 80


def test_pieces_of_a_file_add_up_to_its_size(tmp_path):
    rng = random.Random(5)
    table = pa.table({"id": [f"r{i}" for i in range(700)],
                      "text": [_sentence(rng) for _ in range(700)]})
    with pq.ParquetWriter(tmp_path / "a.parquet", table.schema) as w:  # one big row group
        for a, b in ((0, 5), (5, 5), (5, 600), (600, 700)):  # and an empty one
            w.write_table(table.slice(a, b - a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    for name, fmt in (("a.parquet", "parquet"), ("b.jsonl", "jsonl")):
        path = tmp_path / name
        for piece_bytes in (1000, 7000, 10**9):
            pieces = plan_pieces([str(path)], fmt, piece_bytes)
            assert all(p.nbytes > 0 for p in pieces), (name, piece_bytes)
            assert sum(p.nbytes for p in pieces) == path.stat().st_size, (name, piece_bytes)
    cut = plan_pieces([str(tmp_path / "a.parquet")], "parquet", 1000)
    assert any(p.stop is not None for p in cut)  # the big row group in row ranges


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_the_read_reports_every_chunk_up_to_the_files_total(monkeypatch, tmp_path, fmt):
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4000)
    rng = random.Random(9)
    rows = [{"id": f"r{i}", "question": _sentence(rng), "class_id": 1} for i in range(400)]
    d = tmp_path / "in"
    d.mkdir()
    for k in range(2):
        part = rows[k * 200:(k + 1) * 200]
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(part), d / f"p{k}.parquet", row_group_size=20)
        elif fmt == "csv":
            (d / f"p{k}.csv").write_text("id,question,class_id\n" + "".join(
                f"{r['id']},{r['question']},1\n" for r in part))
        else:
            (d / f"p{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    size = sum(p.stat().st_size for p in d.iterdir())
    calls: list[tuple[int, int]] = []
    out = io.StringIO()
    meter = ReadProgress(stream=out, every_s=0, bar=False)

    def on_read(done: int, total: int) -> None:
        calls.append((done, total))
        meter(done, total)

    got = si.stream_prompts(InputConfig(name="t", path=str(d)), "input", None, lambda t: None,
                            on_read=on_read)
    meter.close()
    assert got.used == 400
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert {t for _, t in calls} == {size}
    done = [c for c, _ in calls]
    assert done == sorted(done)
    if fmt == "csv":  # read whole by the contract: at the start and after each file
        assert len(set(done)) == 3
    else:  # after every chunk (JSON lines) or batch (Parquet), not just every file
        assert len(set(done)) > 10
    lines = _lines(out, READ_LINE)
    assert lines[-1][1] == lines[-1][2] == f"{size / 1e6:.3f}" and lines[-1][3] == "100"


# ------------------------------------------------------------------ the meter's new options


def test_scaled_counts_and_an_eta_by_the_amount(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: clock[0])
    m = Meter("read", 2_500_000, unit="MB", rate_unit="MB/s", scale=1e6, enabled=False)
    m.set(done=500_000, amount=0.5)
    assert m.line().startswith("[read] 0.50/2.50 MB (20%)")
    # pieces of unequal sizes: 1 of 4 pieces is 1 of 10 MB, then 3 of 4 are 9 of 10 MB
    m = Meter("scan", 4, unit="pieces", rate_unit="MB/s", amount_total=10.0,
              amount_unit="MB", enabled=False)
    clock[0] += 1
    m.set(done=1, amount=1.0)
    clock[0] += 8
    m.set(done=3, amount=9.0)
    assert m.eta_s() == pytest.approx(1.0)  # 1 MB left at 1 MB/s, not 1 piece at 4 s a piece
    assert m.line().startswith("[scan] 3/4 pieces (75%), 9.0/10.0 MB, ")
    m.set(done=4, amount=10.0)
    assert m.eta_s() is None
