"""Readers: the embedded sample, the released CulturaX.csv as shipped, and bad input.

A bad row is quarantined with file, line and a reason naming the problem; a bad input as a whole
raises a one-line InputError naming the file and the column or config key.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from aligncultura.config import InputConfig
from aligncultura.data import taxonomy
from aligncultura.data.reader import (
    MAX_QUESTION_CHARS,
    PROMPT_SCHEMA,
    ReadResult,
    content_hash,
    read_input,
    sample_path,
)
from aligncultura.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CULTURAX = Path(__file__).resolve().parents[2] / "shared/data/CulturaX.csv"


def culturax_csv() -> Path:
    """The released CSV; skip with the reason when absent, except under CI=true where it fails."""
    if CULTURAX.is_file():
        return CULTURAX
    reason = (f"{CULTURAX} is absent: the released CulturaX.csv is read from ../shared/data "
              "relative to the repo root (see its README)")
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def preset(name: str, **changes) -> InputConfig:
    """An InputConfig from conf/dataset/<name>.yaml, merged into the schema like Hydra does."""
    node = OmegaConf.merge(OmegaConf.structured(InputConfig),
                           OmegaConf.load(REPO / "conf" / "dataset" / f"{name}.yaml"), changes)
    return OmegaConf.to_object(node)


def culturax_config(**changes) -> InputConfig:
    return preset("culturax", path=str(culturax_csv()), **changes)


def check_counts(result: ReadResult) -> None:
    c = result.counts
    assert c["read"] == c["used"] + c["quarantined"]
    assert c["used"] == c["selected"] + c["not_selected"]
    assert result.table.schema == PROMPT_SCHEMA


# ---- the embedded sample -----------------------------------------------------------------------


def test_sample_preset_reads_60_rows_with_the_files_ids():
    cfg = preset("sample")
    assert cfg.path is None and cfg.text_field == "question" and cfg.id_field == "id"
    result = read_input(cfg)
    lines = [json.loads(x) for x in sample_path().read_text(encoding="utf-8").splitlines() if x]
    assert result.table.num_rows == 60 == len(lines)
    assert result.quarantine == [] and result.counts["read"] == 60
    ids = result.table.column("row_id").to_pylist()
    assert len(set(ids)) == 60
    assert ids == [rec["id"] for rec in lines]
    assert result.table.schema == PROMPT_SCHEMA
    assert result.files == [str(sample_path())]
    check_counts(result)
    for row in result.table.to_pylist():
        sub = taxonomy.subdomain(row["class_id"])
        assert (row["subdomain"], row["domain"], row["form"]) == (sub.name, sub.domain, sub.form)
        assert row["domain"] in taxonomy.DOMAINS
        assert row["content_hash"] == content_hash(row["question"])
        assert row["topic"] and row["helpful_ref"] and row["harmless_ref"] and row["honest_ref"]
        assert row["split"] is None  # assigned by assign_splits, not the reader


def test_default_input_config_is_the_sample():
    result = read_input(InputConfig())
    assert result.table.num_rows == 60
    assert result.table.column("topic").null_count == 60  # topic_field is None by default


# ---- the released CulturaX.csv -----------------------------------------------------------------


@pytest.fixture(scope="module")
def culturax() -> ReadResult:
    return read_input(culturax_config())


def test_culturax_preset_fields():
    cfg = preset("culturax")
    assert (cfg.format, cfg.encoding, cfg.text_field, cfg.id_field) == ("csv", "cp1252",
                                                                        "Question", None)
    assert (cfg.class_field, cfg.topic_field) == ("class", "domain")
    assert (cfg.helpful_field, cfg.harmless_field, cfg.honest_field) == (
        "helpful_response", "harmless_response", "honest_response")
    assert cfg.limit is None and cfg.split == "all"


def test_culturax_reads_1500_rows_none_quarantined(culturax):
    assert culturax.counts["read"] == 1500
    assert culturax.table.num_rows == 1500
    assert culturax.quarantine == []
    check_counts(culturax)
    t = culturax.table
    assert len(set(t.column("class_id").to_pylist())) == 30
    for col in ("question", "class_id", "subdomain", "domain", "form", "topic", "helpful_ref",
                "harmless_ref", "honest_ref"):
        assert t.column(col).null_count == 0, col


def test_culturax_row_ids_are_source_and_index(culturax):
    ids = culturax.table.column("row_id").to_pylist()
    assert ids == [f"culturax:{i}" for i in range(1500)]
    assert culturax.table.column("row_index").to_pylist() == list(range(1500))


def test_culturax_smart_quotes_are_decoded(culturax):
    texts = [v for col in ("question", "topic", "helpful_ref", "harmless_ref", "honest_ref")
             for v in culturax.table.column(col).to_pylist() if v]
    assert any("\u2019" in v for v in texts)  # cp1252 byte 0x92
    assert not any("\x92" in v or "\ufffd" in v for v in texts)
    assert not any("\r" in v for v in culturax.table.column("question").to_pylist())


def test_culturax_exact_duplicates_share_content_hash_not_row_id(culturax):
    groups: dict[str, list[str]] = defaultdict(list)
    t = culturax.table
    for h, rid in zip(t.column("content_hash").to_pylist(), t.column("row_id").to_pylist(),
                      strict=True):
        groups[h].append(rid)
    dups = {h: ids for h, ids in groups.items() if len(ids) > 1}
    assert len(dups) == 15
    for ids in dups.values():
        assert len(set(ids)) == len(ids)


def test_culturax_read_as_utf8_quarantines_rows_instead_of_crashing():
    result = read_input(culturax_config(encoding="utf-8"))
    assert result.quarantine, "cp1252 bytes read as UTF-8 must not pass silently"
    assert all("not valid text in the configured encoding" in q["reason"]
               for q in result.quarantine)
    check_counts(result)


# ---- bad rows: quarantined with file, line and reason --------------------------------------------

CSV_HEAD = "id,question,class_id\n"
GOOD_CSV = "a,What is a kora?,32\n"


def csv_input(tmp_path: Path, body: bytes | str, name: str = "data.csv", **changes) -> InputConfig:
    path = tmp_path / name
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    path.write_bytes(raw)
    # an explicit utf-8 (the default `auto` would read a legacy file whole: tested apart)
    return InputConfig(name="t", path=str(path), **{"encoding": "utf-8", **changes})


def jsonl_input(tmp_path: Path, lines: list[str], name: str = "data.jsonl",
                **changes) -> InputConfig:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return InputConfig(name="t", path=str(path), **changes)


def only_problem(result: ReadResult) -> dict:
    check_counts(result)
    assert len(result.quarantine) == 1, result.quarantine
    assert result.table.column("row_id").to_pylist() == ["a"]
    return result.quarantine[0]


@pytest.mark.parametrize(
    "row, reason",
    [
        ('b,"",3', "question is empty or whitespace"),
        ('b,"   \t ",3', "question is empty or whitespace"),
        ("b,hel\x00lo,3", "question contains NUL bytes"),
        ("b,What about the " + "x" * 100_001 + "?,3",
         f"question has 100017 characters (limit {MAX_QUESTION_CHARS})"),
        ("a,Another question,3", "duplicate id 'a' (first seen at data.csv:2)"),
        ("b,Valid question,99", "unknown class id 99 (valid: 0-41)"),
        ("b,Valid question,-1", "unknown class id -1"),
        ("b,Valid question,abc", "class id 'abc' is not an integer"),
        ("b,Valid question,3.5", "class id '3.5' is not an integer"),
        ("b,Valid question,inf", "class id 'inf' is not an integer"),
        ("b,Valid question,1e999", "class id '1e999' is not an integer"),
    ],
    ids=["empty", "whitespace", "nul", "too-long", "dup-id", "class-99", "class-neg",
         "class-abc", "class-3.5", "class-inf", "class-1e999"],
)
def test_bad_csv_row_is_quarantined_with_line_and_reason(tmp_path, row, reason):
    cfg = csv_input(tmp_path, CSV_HEAD + GOOD_CSV + row + "\n")
    q = only_problem(read_input(cfg))
    assert q["reason"] == reason or q["reason"].startswith(reason), q["reason"]
    assert q["line"] == 3
    assert q["file"] == cfg.path and q["source"] == "t"
    assert q["row_id"] == row.split(",", 1)[0]


def test_undecodable_bytes_in_a_utf8_csv_are_quarantined(tmp_path):
    cfg = csv_input(tmp_path, (CSV_HEAD + GOOD_CSV).encode() + b"b,Caf\xe9 culture?,11\n")
    q = only_problem(read_input(cfg))
    assert (q["line"], q["row_id"]) == (3, "b")
    assert q["reason"] == "question is not valid text in the configured encoding"


def test_undecodable_bytes_in_a_reference_column_name_the_column(tmp_path):
    body = b"id,question,class_id,helpful\na,Fine?,1,ok\nb,Fine too?,1,bad\x92\n"
    result = read_input(csv_input(tmp_path, body, helpful_field="helpful"))
    q = only_problem(result)
    assert q["line"] == 3 and q["reason"].startswith("helpful_ref is not valid text")


def test_quarantined_lines_are_physical_lines(tmp_path):
    body = CSV_HEAD + GOOD_CSV + "\n" + 'b,"",1\n' + "\n" + "c,Fine?,77\n"
    result = read_input(csv_input(tmp_path, body))
    check_counts(result)
    assert [(q["line"], q["row_id"]) for q in result.quarantine] == [(4, "b"), (6, "c")]
    assert result.counts == {"read": 3, "used": 1, "quarantined": 2, "selected": 1,
                             "not_selected": 0}


@pytest.mark.parametrize(
    "bad, reason",
    [
        ('{"id": "b", "question": 42, "class_id": 1}', "question is a int, expected text"),
        ('{"id": "b", "question": ["a", "list"], "class_id": 1}',
         "question is a list, expected text"),
        ('{"id": "b", "question": null, "class_id": 1}', "question is null"),
        ('{"id": "b", "question": "Unclosed?', "malformed JSON ("),
        ('["b", "an array", 1]', "JSON line is a list, expected an object"),
        ('{"id": "b", "class_id": 1}', "field 'question' missing (dataset.text_field)"),
        ('{"id": ["b"], "question": "List id?", "class_id": 1}', "id ['b'] is a list"),
        ('{"id": true, "question": "Bool id?", "class_id": 1}', "id True is a bool"),
        ('{"id": "b", "question": "Bool class?", "class_id": true}', "class id True is not"),
        ('{"id": "b", "question": "Nul\\u0000?", "class_id": 1}', "question contains NUL"),
    ],
    ids=["number", "list", "null", "malformed", "array", "no-text-field", "list-id", "bool-id",
         "bool-class", "nul"],
)
def test_bad_jsonl_line_is_quarantined_with_line_and_reason(tmp_path, bad, reason):
    good = json.dumps({"id": "a", "question": "What is a kora?", "class_id": 32})
    result = read_input(jsonl_input(tmp_path, [good, "", bad]))
    q = only_problem(result)
    assert q["line"] == 3  # the blank line 2 is skipped but counted
    assert q["reason"].startswith(reason), q["reason"]


# ---- inputs that read fine ----------------------------------------------------------------------


def test_mixed_crlf_and_lf_line_endings_read_fine(tmp_path):
    body = "id,question,class_id\r\na,First?,1\nb,Second?,2\r\nc,Third?,3\n"
    result = read_input(csv_input(tmp_path, body))
    assert result.quarantine == []
    assert result.table.column("question").to_pylist() == ["First?", "Second?", "Third?"]
    assert result.table.column("class_id").to_pylist() == [1, 2, 3]

    lines = [json.dumps({"id": i, "question": f"Q{i}?", "class_id": 1}) for i in "abc"]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(f"{lines[0]}\r\n{lines[1]}\n{lines[2]}\r\n".encode())
    result = read_input(InputConfig(name="t", path=str(path)))
    assert result.quarantine == [] and result.table.column("row_id").to_pylist() == list("abc")


def test_bom_at_file_start_is_ignored(tmp_path):
    result = read_input(csv_input(tmp_path, "\ufeff" + CSV_HEAD + GOOD_CSV))
    assert result.table.column("row_id").to_pylist() == ["a"] and result.quarantine == []
    line = json.dumps({"id": "a", "question": "Q?", "class_id": 1})
    result = read_input(jsonl_input(tmp_path, ["\ufeff" + line]))
    assert result.table.column("row_id").to_pylist() == ["a"] and result.quarantine == []


def test_line_separator_inside_a_jsonl_string_is_not_a_line_break(tmp_path):
    # json.dumps(ensure_ascii=False) writes U+2028 / U+0085 raw; they must not split the record
    lines = [json.dumps({"id": "a", "question": "One\u2028two\x85three?", "class_id": 1},
                        ensure_ascii=False),
             json.dumps({"id": "b", "question": "Next?", "class_id": 2})]
    result = read_input(jsonl_input(tmp_path, lines))
    assert result.quarantine == []
    assert result.table.column("row_id").to_pylist() == ["a", "b"]


def test_missing_optional_field_on_a_later_jsonl_line_reads_as_null(tmp_path):
    lines = [json.dumps({"id": "a", "question": "Q?", "class_id": 1, "topic": "t"}),
             json.dumps({"id": "b", "question": "R?", "class_id": 2})]
    result = read_input(jsonl_input(tmp_path, lines, topic_field="topic"))
    assert result.table.column("topic").to_pylist() == ["t", None]


def test_empty_class_id_reads_as_unlabelled(tmp_path):
    result = read_input(csv_input(tmp_path, CSV_HEAD + "a,Unlabelled?,\n"))
    row = result.table.to_pylist()[0]
    assert (row["class_id"], row["subdomain"], row["domain"], row["form"]) == (None,) * 4


def test_no_id_field_gives_source_and_index_ids(tmp_path):
    result = read_input(csv_input(tmp_path, "question\nQ1?\n\nQ2?\n", id_field=None,
                                  class_field=None))
    assert result.table.column("row_id").to_pylist() == ["t:0", "t:1"]


def test_directory_of_two_jsonl_files_reads_both_with_stable_ids(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for part, qs in (("b", ["B0?", "B1?"]), ("a", ["A0?", "A1?", "A2?"])):
        (folder / f"{part}.jsonl").write_text(
            "".join(json.dumps({"question": q, "class_id": 1}) + "\n" for q in qs))
    (folder / "notes.txt").write_text("ignored")
    cfg = InputConfig(name="shards", path=str(folder), id_field=None)
    first, again = read_input(cfg), read_input(cfg)
    assert first.files == [str(folder / "a.jsonl"), str(folder / "b.jsonl")]
    assert first.table.column("question").to_pylist() == ["A0?", "A1?", "A2?", "B0?", "B1?"]
    ids = first.table.column("row_id").to_pylist()
    assert ids == [f"shards:{i}" for i in range(5)]
    assert again.table.equals(first.table)


def test_parquet_input(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "question": ["Q?", None], "class_id": [1, 2]}), path)
    result = read_input(InputConfig(name="t", path=str(path)))
    q = only_problem(result)
    assert (q["line"], q["reason"]) == (2, "question is null")


# ---- bad inputs as a whole: one-line InputError naming file and column -------------------------


def input_error(cfg: InputConfig, *parts: str) -> str:
    with pytest.raises(InputError) as info:
        read_input(cfg)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def test_empty_csv_file(tmp_path):
    cfg = csv_input(tmp_path, b"")
    input_error(cfg, cfg.path, "empty")


def test_empty_jsonl_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    input_error(InputConfig(name="t", path=str(path)), str(path), "no usable row")


def test_header_only_csv(tmp_path):
    cfg = csv_input(tmp_path, CSV_HEAD)
    input_error(cfg, cfg.path, "no usable row", "(0 read)")


def test_all_rows_bad_names_the_first_problem(tmp_path):
    cfg = csv_input(tmp_path, CSV_HEAD + 'a,"",1\nb,Q?,99\n')
    input_error(cfg, cfg.path, "no usable row", "(2 read)", "line 2: question is empty")


def test_missing_text_column_names_column_and_key(tmp_path):
    cfg = csv_input(tmp_path, "id,prompt,class_id\na,Q?,1\n")
    input_error(cfg, cfg.path, "column 'question'", "dataset.text_field", "prompt")


def test_missing_optional_column_names_its_key(tmp_path):
    cfg = csv_input(tmp_path, CSV_HEAD + GOOD_CSV, topic_field="topic")
    input_error(cfg, cfg.path, "column 'topic'", "dataset.topic_field")


def test_missing_text_field_in_first_jsonl_record(tmp_path):
    cfg = jsonl_input(tmp_path, [json.dumps({"id": "a", "text": "Q?", "class_id": 1})])
    input_error(cfg, cfg.path, "column 'question'", "dataset.text_field")


def test_directory_without_data_files(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    input_error(InputConfig(name="t", path=str(tmp_path)), str(tmp_path), "no .csv, .jsonl")


def test_unknown_suffix_with_format_auto(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("question\nQ?\n")
    input_error(InputConfig(name="t", path=str(path)), str(path), "dataset.format")


def test_unknown_format(tmp_path):
    cfg = csv_input(tmp_path, CSV_HEAD + GOOD_CSV, format="xlsx")
    input_error(cfg, "format 'xlsx'")


def test_path_that_does_not_exist(tmp_path):
    path = tmp_path / "nope.csv"
    input_error(InputConfig(name="t", path=str(path)), str(path), "does not exist",
                "dataset.path")


def test_named_input_without_path():
    input_error(InputConfig(name="culturax"), "input 'culturax' has no path", "dataset.path")


@pytest.mark.parametrize("encode, note", [
    (lambda t: t.encode("cp1252"), "read as cp1252"),  # what Excel on Windows writes
    (lambda t: t.encode("utf-16"), None),  # BOM: Excel's "Unicode text"
    (lambda t: t.encode("utf-8-sig"), None),
    (lambda t: t.encode("utf-8"), None),
])
def test_encoding_auto_reads_boms_and_detects_legacy_files(tmp_path, capsys, encode, note):
    text = "id,question\r\n1,\u201cHow is injera made?\u201d\r\n2,Is the caf\u00e9 old?\r\n"
    path = tmp_path / "data.csv"
    path.write_bytes(encode(text))
    result = read_input(InputConfig(name="t", path=str(path), class_field=None))
    assert result.table.column("question").to_pylist() == ["\u201cHow is injera made?\u201d",
                                                           "Is the caf\u00e9 old?"]
    err = capsys.readouterr().err
    assert (note in err) if note else "note:" not in err


def test_encoding_auto_keeps_a_utf8_file_with_broken_bytes_utf8(tmp_path):
    """Valid UTF-8 text with one stray byte is not re-read as a legacy code page (that would
    garble every other row): the broken row is quarantined."""
    body = "id,question\n1,Is the caf\u00e9 old?\n".encode() + b"2,Caf\xe9 culture?\n"
    path = tmp_path / "data.csv"
    path.write_bytes(body)
    result = read_input(InputConfig(name="t", path=str(path), class_field=None))
    assert result.table.column("question").to_pylist() == ["Is the caf\u00e9 old?"]
    assert result.quarantine[0]["reason"] == "question is not valid text in the configured encoding"


def test_an_explicit_encoding_is_obeyed(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes("id,question\n1,Is the caf\u00e9 old?\n".encode("cp1252"))
    result = read_input(InputConfig(name="t", path=str(path), class_field=None,
                                    encoding="latin-1"))
    assert result.table.column("question").to_pylist() == ["Is the caf\u00e9 old?"]
