"""jobs.dedup streams (aligncultura/leakage/dedup_stream.py): the data contract read piece by
piece (stream_input.py) gives exactly `load_prompts`' rows, splits and selection, and the
clusters computed from spilled fixed-size fingerprints equal the in-memory clusters.py ones,
with many small pieces and blocks so that every seam is crossed."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import aligncultura.data.sources as sources
from aligncultura.config import InputConfig
from aligncultura.data.reader import load_prompts
from aligncultura.leakage import DedupConfig, exact_clusters, near_duplicate_clusters
from aligncultura.leakage import stream_input as si
from aligncultura.leakage.config import DedupJobConfig
from aligncultura.leakage.dedup_stream import exact_roots

WORDS = ("river market song weave clay loom drum harvest mask temple lantern spice dye bronze "
         "mural chant pottery festival silk carving ritual bamboo saffron indigo copper").split()


def _text(rng: random.Random, n: int = 18) -> str:
    return "How does the " + " ".join(rng.choice(WORDS) for _ in range(n)) + " matter?"


def _records(seed: int = 1, n: int = 400) -> list[dict]:
    """Rows with near and exact duplicates (across classes too), repeated ids, a blank and an
    empty-after-normalising question, CJK, and classes missing or not in the taxonomy."""
    rng = random.Random(seed)
    cjk = "京都の伝統的な織物の技法は地域の暮らしと祭りにどのような影響を与えてきたのでしょうか"
    rows = []
    for k in range(n):
        q = _text(rng)
        roll = rng.random()
        if roll < 0.1 and rows:
            q = rng.choice(rows)["question"].upper()  # exact after normalising
        elif roll < 0.25 and rows:
            words = rng.choice(rows)["question"].split()
            words = words if len(words) > 5 else _text(rng).split()
            words[rng.randrange(2, len(words) - 2)] = "changed"
            q = " ".join(words)
        elif roll < 0.27:
            q = cjk.replace("祭り", rng.choice(["市場", "祭り", "寺"]))
        rid = f"r{k}" if rng.random() > 0.05 or k < 10 else f"r{rng.randrange(k)}"  # repeats
        cls = rng.choice([1, 5, 11, 11, 23, None])
        rows.append({"id": rid, "question": q, "class_id": cls})
    rows[7]["question"] = "   "  # quarantined (blank)
    rows[8]["question"] = "!!! ???"  # usable, empty after normalising
    rows[9]["class_id"] = 999  # not a class: quarantined
    return rows


def _write(rows: list[dict], d, fmt: str):
    if fmt == "jsonl":
        lines = [json.dumps(r) for r in rows]
        lines.insert(50, "{not json")
        (d / "in.jsonl").write_text("\n".join(lines) + "\n")
        return d / "in.jsonl"
    if fmt == "dir":
        (d / "parts").mkdir()
        for p in range(3):
            part = rows[p::3]
            (d / "parts" / f"p{p}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        return d / "parts"
    if fmt == "csv":
        import csv

        with open(d / "in.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "question", "class_id"])
            w.writerows([r["id"], r["question"], "" if r["class_id"] is None else r["class_id"]]
                        for r in rows)
        return d / "in.csv"
    if fmt == "parquet_floats":  # a class column Arrow rows cannot take: record by record
        rows = [{**r, "class_id": None if r["class_id"] is None else r["class_id"] + 0.5 * (
            r["class_id"] == 23)} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), d / "in.parquet", row_group_size=64)
    return d / "in.parquet"


@pytest.fixture
def small_pieces(monkeypatch):
    """JSON lines and Parquet in ~4 kB pieces and id runs of 64: many pieces, merges, lookups."""
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4000)
    monkeypatch.setattr(si.CompactIds, "_MAX_RUN", 64)
    monkeypatch.setattr(si.CompactIds, "_FLUSH", 16)


@pytest.mark.parametrize("fmt", ["jsonl", "dir", "csv", "parquet", "parquet_floats"])
@pytest.mark.parametrize("split,limit,fractions", [
    ("all", None, [0.8, 0.1, 0.1]), ("test", None, [0.5, 0.25, 0.25]),
    ("train", 37, [0.8, 0.1, 0.1]), ("val", 1000, [0.0, 0.5, 0.5]),
])
def test_streamed_read_equals_load_prompts(small_pieces, tmp_path, fmt, split, limit, fractions):
    path = _write(_records(), tmp_path, fmt)
    cfg = InputConfig(name="t", path=str(path), split=split, limit=limit,
                      split_fractions=fractions, split_seed=7)
    want = load_prompts(cfg, "input", None)
    pieces: list[pa.Table] = []
    got = si.stream_prompts(cfg, "input", None, pieces.append)
    if fmt != "csv":  # CSV files are read whole by the contract
        assert len(pieces) > 5
    table = pa.concat_tables(pieces)
    splits = si.split_codes(si.hash_codes(table["content_hash"]),
                            np.asarray(table["class_id"].fill_null(0), dtype=np.int64),
                            np.asarray(table["class_id"].is_null()), fractions, 7, "input")
    full = load_prompts(InputConfig(name="t", path=str(path), split_fractions=fractions,
                                    split_seed=7), "input", None).table
    assert [si.SPLITS[k] for k in splits] == full["split"].to_pylist()
    sel = si.select_rows(splits, lambda rows: table["row_id"].take(pa.array(rows)).to_pylist(),
                         split, limit, 7, "input")
    ours = table.take(pa.array(sel, pa.int64())).drop_columns(["split"])
    assert ours.equals(want.table.drop_columns(["split"]))
    assert (got.read, got.used, got.quarantine) == (want.read, want.used, want.quarantine)
    assert len(want.quarantine) >= 3


def test_bad_split_settings_are_the_contracts_errors(tmp_path):
    from aligncultura.errors import InputError

    hashes, cls, null = np.arange(3, dtype=np.uint64), np.zeros(3, np.int64), np.ones(3, bool)
    with pytest.raises(InputError, match="split_fractions"):
        si.split_codes(hashes, cls, null, [0.5, 0.5], 1, "input")
    with pytest.raises(InputError, match="input.split='dev'"):
        si.select_rows(np.zeros(3, np.uint8), list, "dev", None, 1, "input")
    with pytest.raises(InputError, match="input.limit=0"):
        si.select_rows(np.zeros(3, np.uint8), list, "all", 0, 1, "input")


@pytest.mark.parametrize("on_disk", [False, True])
def test_compact_ids_behave_like_a_dict(monkeypatch, tmp_path, on_disk):
    monkeypatch.setattr(si.CompactIds, "_MAX_RUN", 32)
    monkeypatch.setattr(si.CompactIds, "_FLUSH", 8)
    rng = random.Random(3)
    root = tmp_path if on_disk else None
    ids, ref = si.CompactIds(root), {}
    for step in range(300):
        batch = [f"id{rng.randrange(2000)}" for _ in range(rng.randrange(1, 20))]
        if rng.random() < 0.5:
            fresh = [b for b in dict.fromkeys(batch) if b not in ref]
            assert ids.keys().isdisjoint(fresh) == ref.keys().isdisjoint(fresh)
            ids.update((b, step * 100 + k) for k, b in enumerate(fresh))
            ref.update((b, step * 100 + k) for k, b in enumerate(fresh))
        else:
            for b in batch:
                assert (b in ids) == (b in ref) and ids.get(b) == ref.get(b)
                if b not in ref:
                    ids[b] = ref[b] = step
        assert ids.keys().isdisjoint(batch) == ref.keys().isdisjoint(batch)
    assert max(len(r.hi) for r in ids.runs) <= 32 and len(ids.runs) > 3
    if on_disk:  # the cold halves are files, one per run (merged runs' files removed)
        assert len(list(tmp_path.glob("ids-*.bin"))) == len(ids.runs)
    # ids whose digests share the top 64 bits are still told apart
    real = si.digests
    monkeypatch.setattr(si, "digests", lambda v: real(v) & np.array([0, ~np.uint64(0)], np.uint64))
    ids = si.CompactIds(root)
    ids.update([("a", 1), ("b", 2), ("c", 3)])
    ids["e"] = 5
    assert (ids.get("a"), ids.get("b"), ids.get("c"), ids.get("d"), ids.get("e")) == \
        (1, 2, 3, None, 5)
    assert not ids.keys().isdisjoint(["d", "c"]) and ids.keys().isdisjoint(["d", "f"])


def test_exact_roots_tell_apart_digests_sharing_their_top_half():
    status = np.array([0, 0, 0, 1, 0, 0, 2], np.uint8)
    hi = np.array([5, 5, 7, 5, 5, 9, 5], np.uint64)
    lo = np.array([1, 2, 3, 1, 1, 4, 1], np.uint64)
    roots = exact_roots(status, hi, lambda rows: lo[rows])
    assert roots.tolist() == [0, 1, 2, 3, 0, 5, 6]


def _old_job_table(cfg: InputConfig, dcfg: DedupConfig) -> pa.Table:
    """clusters.parquet as jobs.dedup built it in memory (before it streamed)."""
    t = load_prompts(cfg, "input", None).table
    exact = exact_clusters(t["question"], t["row_id"], dcfg.normalize)
    near = near_duplicate_clusters(t["question"], t["row_id"], dcfg)
    out = near.rename_columns(["row_id", *near.column_names[1:]])
    out = out.append_column("exact_cluster_id", exact["cluster_id"])
    out = out.append_column("exact_representative", exact["representative"])
    for name in ("subdomain", "split"):
        out = out.append_column(name, t[name])
    return out


@pytest.mark.parametrize("method", ["minhash", "simhash"])
@pytest.mark.parametrize("split,limit", [("all", None), ("train", 150)])
def test_streamed_dedup_equals_in_memory_clusters(small_pieces, tmp_path, method, split, limit):
    from jobs.dedup import run

    path = _write(_records(5, 600), tmp_path, "jsonl")
    inp = InputConfig(name="t", path=str(path), split=split, limit=limit)
    dcfg = DedupConfig(method=method)
    cfg = OmegaConf.structured(DedupJobConfig(input=inp, dedup=dcfg, batch_size=7,
                                              run_dir=str(tmp_path / "run")))
    out = run(cfg)
    got = pq.read_table(tmp_path / "run" / "clusters.parquet")
    want = _old_job_table(inp, dcfg)
    assert got.equals(want)
    s = out["summary"]
    assert s["near"]["groups"] >= 10 and s["exact"]["groups"] >= (5 if limit is None else 1)
    if split == "all":
        assert s["unclustered"] == {"empty": 1}
    assert s["rows"]["selected"] == want.num_rows
