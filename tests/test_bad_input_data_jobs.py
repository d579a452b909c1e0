"""Unusual and bad files through the data jobs' command lines (jobs.dedup, jobs.leakage,
jobs.judge_agreement, jobs.benchmark --dry-run): each file is either read correctly, with its
rows counted and quarantined rows given a reason, or refused with one line naming the file or
key and a next step (exit 2, no traceback). tests/test_bad_input_cli.py holds the matrix of the
generation jobs; this one adds encodings, BOMs, delimiters, quoted newlines, symlinks and the
config values of the data jobs. No engine starts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_job

ROWS = [("a", "What does the kora's 21st string do?"), ("b", "Why is “Diwali” called so?"),
        ("c", "Qu'est-ce qu'un griot, exactement?")]


def csv_text(newline: str = "\n", delimiter: str = ",") -> str:
    lines = [f"id{delimiter}question"] + [f'{i}{delimiter}"{q}"' for i, q in ROWS]
    return newline.join(lines) + newline


def make(d: Path) -> dict[str, str]:
    files = {
        "utf16le_bom.csv": b"\xff\xfe" + csv_text("\r\n").encode("utf-16-le"),
        "utf16be_bom.csv": b"\xfe\xff" + csv_text().encode("utf-16-be"),
        "utf8_bom.csv": b"\xef\xbb\xbf" + csv_text().encode(),
        "excel_cp1252.csv": csv_text("\r\n").encode("cp1252"),
        "quoted_newline.csv": b'id,question\na,"two\nlines?"\nb,"one line?"\n',
        "semicolons.csv": csv_text(delimiter=";").encode(),
        "tabs.tsv.csv": csv_text(delimiter="\t").encode(),
        "header_only.csv": b"id,question\n",
        "one_bad_line.jsonl": (json.dumps({"id": "a", "question": "Fine?"}) + "\n{oops\n"
                               + json.dumps({"id": "b", "question": "Also fine?"}) + "\n").encode(),
        "nul_row.csv": b"id,question\na,fine?\nb,nul\x00here\n",
        "labels_bad.jsonl": json.dumps({"id": "x", "question": "Q?", "response": "R.",
                                        "harmless": "perhaps"}).encode() + b"\n",
    }
    out = {}
    for name, data in files.items():
        (d / name).write_bytes(data)
        out[name] = str(d / name)
    (d / "link.csv").symlink_to(d / "utf8_bom.csv")
    (d / "broken.csv").symlink_to(d / "nowhere.csv")
    (d / "folder.csv").mkdir()
    out.update({"link.csv": str(d / "link.csv"), "broken.csv": str(d / "broken.csv"),
                "folder.csv": str(d / "folder.csv")})
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    return make(tmp_path_factory.mktemp("unusual"))


READ_OK = {  # file -> (rows used, rows quarantined, a text that must come out as written)
    "utf16le_bom.csv": (3, 0, "Why is “Diwali” called so?"),
    "utf16be_bom.csv": (3, 0, "Qu'est-ce qu'un griot, exactement?"),
    "utf8_bom.csv": (3, 0, "Why is “Diwali” called so?"),
    "excel_cp1252.csv": (3, 0, "Why is “Diwali” called so?"),
    "quoted_newline.csv": (2, 0, "two\nlines?"),
    "link.csv": (3, 0, "What does the kora's 21st string do?"),
    "one_bad_line.jsonl": (2, 1, "Also fine?"),
    "nul_row.csv": (1, 1, "fine?"),
}


@pytest.mark.parametrize("name", sorted(READ_OK))
def test_unusual_files_are_read_by_jobs_dedup(name, files, tmp_path):
    used, quarantined, text = READ_OK[name]
    run_dir = tmp_path / "run"
    proc = run_job("dedup", f"input.path={files[name]}", f"run_dir={run_dir}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows"]["used"] == used and summary["rows"]["quarantined"] == quarantined
    texts = pq.read_table(run_dir / "clusters.parquet").num_rows
    assert texts == used
    if quarantined:
        q = pq.read_table(run_dir / "quarantine.parquet").to_pylist()
        assert all(r["reason"] and r["line"] for r in q)
    if name == "excel_cp1252.csv":  # the detected code page is named in a note
        assert "read as cp1252" in proc.stderr
    # the text itself: read through the same contract jobs.dedup used
    from aligncultura.config import InputConfig
    from aligncultura.data.reader import read_input

    got = read_input(InputConfig(name="t", path=files[name], class_field=None)).table
    assert text in got["question"].to_pylist()


ONE_LINE = {  # case -> (job, args, what the line must name)
    "semicolon delimiter": ("dedup", ["input.path={semicolons.csv}"], "id;question"),
    "tab delimiter": ("dedup", ["input.path={tabs.tsv.csv}"], "input.text_field"),
    "header only": ("dedup", ["input.path={header_only.csv}"], "no usable row"),
    "broken symlink": ("dedup", ["input.path={broken.csv}"], "does not exist"),
    "directory named .csv": ("dedup", ["input.path={folder.csv}"], "holds no .csv"),
    "dedup method": ("dedup", ["dedup.method=lsh"], "dedup.method='lsh'"),
    "batch size type": ("dedup", ["batch_size=many"], "batch_size=many"),
    "batch size zero": ("dedup", ["batch_size=0"], "batch_size=0"),
    "executor": ("dedup", ["executor=spark"], "executor='spark'"),
    "reference missing": ("leakage", ["reference.paths=[/no/ref.jsonl]"], "reference.paths"),
    "reference as path": ("leakage", ["reference.path=/x.jsonl"], "reference.paths=[/x.jsonl]"),
    "eval encoding": ("leakage", ["reference.paths=[{utf8_bom.csv}]", "eval.encoding=klingon"],
                      "eval.encoding"),
    "label outside its set": ("judge_agreement", ["labels={labels_bad.jsonl}"],
                              "harmless label 'perhaps'"),
    "labels missing": ("judge_agreement", ["labels=/no/labels.jsonl"], "labels=/no/labels"),
    "scorer kind": ("benchmark", ["dry_run=true", "scorer/harmless=beaver_dam_7b",
                                  "scorer.harmless.kind=regression"], "scorer.harmless.kind"),
    "scorer on wrong criterion": ("benchmark", ["dry_run=true",
                                                "scorer/truthful=truthfulqa_truth",
                                                "scorer.truthful.kind=classifier"],
                                  "scores harmless, not truthful"),
}


@pytest.mark.parametrize("case", sorted(ONE_LINE))
def test_bad_files_and_values_are_one_line(case, files, tmp_path):
    job, args, needle = ONE_LINE[case]
    for name, path in files.items():
        args = [a.replace("{" + name + "}", path) for a in args]
    proc = run_job(job, *args, f"run_dir={tmp_path / 'r'}", timeout=300)
    lines = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith("note:")]
    assert proc.returncode == 2, (case, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert needle in lines[0], lines[0]
