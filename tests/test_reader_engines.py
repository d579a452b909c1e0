"""The vectorised reader (Arrow readers and kernels) against the reference reading record by
record in Python: same rows, same ids, same hashes, same quarantine, same messages.

Seeded random files mix the cells that take each path (plain ASCII, accents, case folds,
tabs, double and edge spaces, NUL, control characters, odd class ids, integer and duplicate
ids, blank rows) with the file shapes that send a whole piece to the row path (ragged CSV
rows, malformed JSON lines, bytes that are not UTF-8, legacy code pages).
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aligncultura.config import InputConfig
from aligncultura.data import sources
from aligncultura.data.reader import read_input
from aligncultura.errors import InputError

QUESTIONS = [
    "What is a kora?", "Why do people dance the Haka before matches?", "  Leading space?",
    "Trailing space? ", "Double  space?", "Tab\tinside?", "Line\nbreak inside?", "Café culture?",
    "STRASSE or Straße?", "ﬁddle music?", "", "   ", "\t", "nul\x00byte?", "unit\x1fsep?",
    "Ω and ω?", "x" * 32_001, "y" * 32_000, "Quote \"inside\" it?", "comma, inside?", "😀 emoji?",
    "Form\x0cfeed?", "ends with NBSP\xa0", "\u2028sep?",
]
CLASSES = ["3", "03", " 3 ", "", "41", "42", "-1", "abc", "3.0", "3.5", "1e1", "inf", "7"]
REFS = ["a fine answer", "", "  padded  ", "nul\x00ref", "Ünïcode réponse", None]


def rows(seed: int, n: int = 300) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rid = rng.choice([f"r{i}", f"r{i}", f"r{i}", f"r{rng.randrange(n)}", "", f" r{i} "])
        out.append({"id": rid, "question": rng.choice(QUESTIONS) if rng.random() < 0.6
                    else " ".join(rng.choice(["tea", "song", "rite", "mask", "loom"])
                                  for _ in range(rng.randint(1, 20))),
                    "class_id": rng.choice(CLASSES), "helpful": rng.choice(REFS)})
    return out


def both(cfg: InputConfig):
    fast, ref = read_input(cfg), read_input(cfg, engine="rows")
    assert fast.counts == ref.counts
    assert fast.quarantine == ref.quarantine
    assert fast.table.equals(ref.table), (fast.table.slice(0, 3), ref.table.slice(0, 3))
    return fast


def write_csv(path: Path, data: list[dict], newline: str = "\n") -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=newline)
    w.writerow(["id", "question", "class_id", "helpful"])
    for r in data:
        w.writerow([r["id"], r["question"], r["class_id"], r["helpful"]])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def cfg_for(path: Path, **changes) -> InputConfig:
    return InputConfig(name="t", path=str(path), helpful_field="helpful", **changes)


@pytest.mark.parametrize("seed", range(6))
def test_random_csv_reads_the_same_both_ways(tmp_path, seed):
    path = tmp_path / "d.csv"
    write_csv(path, rows(seed), "\r\n" if seed % 2 else "\n")
    result = both(cfg_for(path))
    assert result.quarantine and result.table.num_rows > 100  # both paths were exercised


@pytest.mark.parametrize("seed", range(6))
def test_random_jsonl_reads_the_same_both_ways(tmp_path, seed):
    rng = random.Random(seed)
    mixed = seed % 2  # even seeds: types Arrow reads whole (its row checks run); odd: mixed
    lines = []
    for r in rows(seed):
        rec = dict(r)
        rec["class_id"] = rng.choice([3, 41, 99, -1, None] + ([True, 2.0, "3"] if mixed else []))
        if mixed and rng.random() < 0.2 and rec["id"].strip().startswith("r"):
            rec["id"] = int(rec["id"].strip()[1:])
        if rng.random() < 0.05:
            rec.pop("question")
        lines.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5))
        if rng.random() < 0.03:
            lines.append(rng.choice(["", "   "] + (["{broken", "[1, 2]", "null"] if mixed else [])))
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    both(cfg_for(path))
    # chunks of a few lines each: the good chunks go through Arrow, the bad ones by line
    sources_chunk = sources.CHUNK_BYTES
    try:
        sources.CHUNK_BYTES = 2000
        both(cfg_for(path))
    finally:
        sources.CHUNK_BYTES = sources_chunk


def test_clean_jsonl_with_integer_ids_reads_the_same_both_ways(tmp_path):
    lines = [json.dumps({"id": i, "question": f"Question number {i}?", "class_id": i % 42})
             for i in range(500)]
    path = tmp_path / "ints.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = both(InputConfig(name="t", path=str(path)))
    assert result.table["row_id"].to_pylist()[:3] == ["0", "1", "2"]


@pytest.mark.parametrize("shape", ["ragged", "stray-quote", "quoted-then-text", "bare-cr",
                                   "blank-cells", "not-utf8", "cp1252", "dup-header",
                                   "unnamed-columns"])
def test_odd_csv_files_read_the_same_both_ways(tmp_path, shape):
    body = {
        "ragged": "id,question,class_id\na,Fine?,1\nb,Short row\nc,Long row?,2,extra\n",
        "stray-quote": 'id,question,class_id\na,A 5" screen?,1\nb,Another 3" one?,2\n',
        "quoted-then-text": 'id,question,class_id\na,"Quoted"tail?,1\nb,Fine?,2\n',
        "bare-cr": "id,question,class_id\ra,One?,1\rb,Two?,2\r",
        "blank-cells": "id,question,class_id\na,One?,1\n,,\n  , ,\nb,Two?,2\n",
        "dup-header": "id,question,question,class_id\na,One?,Two?,1\n",
        "unnamed-columns": "id,question,class_id,,\na,One?,1,,\nb,Two?,2,x,\n",
    }
    path = tmp_path / "odd.csv"
    if shape == "not-utf8":
        path.write_bytes(b"id,question,class_id\na,Caf\xe9?,1\nb,Fine?,2\n")
        both(InputConfig(name="t", path=str(path), encoding="utf-8"))
        return
    if shape == "cp1252":
        path.write_bytes("id,question,class_id\na,It\u2019s caf\xe9?,1\nb,Fine?,2\n"
                         .encode("cp1252"))
        for encoding in ("auto", "cp1252"):
            both(InputConfig(name="t", path=str(path), encoding=encoding))
        return
    path.write_text(body[shape], encoding="utf-8", newline="")
    both(InputConfig(name="t", path=str(path)))


def test_quoted_newline_inside_a_csv_field_keeps_physical_line_numbers(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('id,question,class_id\na,"Two\nlines?",1\nb,"",2\nc,"Three\r\n\nlines?",3\n'
                    'd,Bad class?,99\n', encoding="utf-8", newline="")
    result = both(InputConfig(name="t", path=str(path)))
    assert result.table["question"].to_pylist() == ["Two\nlines?", "Three\r\n\nlines?"]
    assert [(q["row_id"], q["line"]) for q in result.quarantine] == [("b", 4), ("d", 8)]


def test_parquet_with_typed_and_untyped_columns_reads_the_same_both_ways(tmp_path):
    data = rows(7, 200)
    typed = pa.table({"id": [r["id"] for r in data], "question": [r["question"] for r in data],
                      "class_id": pa.array([int(c) if c.strip().isdigit() else None
                                            for c in (r["class_id"] for r in data)], pa.int32()),
                      "helpful": [r["helpful"] for r in data]})
    pq.write_table(typed, tmp_path / "typed.parquet")
    both(cfg_for(tmp_path / "typed.parquet"))
    floats = typed.set_column(2, "class_id", typed["class_id"].cast(pa.float64()))
    pq.write_table(floats, tmp_path / "floats.parquet")
    both(cfg_for(tmp_path / "floats.parquet"))


def test_duplicate_ids_across_files_name_the_first_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "question": "One?"}\n'
                                      '{"id": "y", "question": "Two?"}\n')
    (tmp_path / "b.jsonl").write_text('\n{"id": "z", "question": "Three?"}\n'
                                      '{"id": "x", "question": "Again?"}\n')
    result = both(InputConfig(name="t", path=str(tmp_path), class_field=None))
    assert [(Path(q["file"]).name, q["line"], q["reason"]) for q in result.quarantine] == \
        [("b.jsonl", 3, "duplicate id 'x' (first seen at a.jsonl:1)")]


def test_a_jsonl_line_far_over_the_size_limit_is_quarantined_not_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1 << 16)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1 << 12)
    path = tmp_path / "big.jsonl"
    huge = json.dumps({"id": "h", "question": "z" * 300_000})
    path.write_text("\n".join([json.dumps({"id": "a", "question": "Fine?"}), huge,
                               json.dumps({"id": "b", "question": "Also fine?"})]) + "\n")
    result = read_input(InputConfig(name="t", path=str(path), class_field=None))
    assert result.table["row_id"].to_pylist() == ["a", "b"]
    [q] = result.quarantine
    assert (q["line"], q["row_id"]) == (2, None)
    assert q["reason"] == f"line has {len(huge)} bytes (limit {1 << 16}); not parsed"
    assert result.counts["read"] == 3


def test_a_file_of_only_over_long_lines_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 1 << 12)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 1 << 10)
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": "h", "question": "z" * 10_000})
    path.write_text(line)  # no final newline
    with pytest.raises(InputError, match=f"no usable row .*line 1: line has {len(line)} bytes"):
        read_input(InputConfig(name="t", path=str(path), class_field=None))
