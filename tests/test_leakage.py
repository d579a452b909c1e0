"""Leakage engine: fingerprints, candidate schemes, clustering, containment, scans."""

from __future__ import annotations

import itertools
import os
import random

import numpy as np
import pyarrow as pa
import pytest

from aligncultura.leakage import (
    ContainmentConfig,
    DedupConfig,
    LeakageConfig,
    MinHashConfig,
    NormalizeConfig,
    ShingleConfig,
    build_index,
    exact_clusters,
    near_duplicate_clusters,
    scan_batch,
    scan_batches,
    summarize,
)
from aligncultura.leakage.clusters import connected_components, duplicate_groups
from aligncultura.leakage.lsh import lsh_params
from aligncultura.leakage.minhash import estimate_jaccard, minhash
from aligncultura.leakage.normalization import normalize
from aligncultura.leakage.shingles import (
    TextBatch,
    intersection_sizes,
    shingles,
    unique_sets,
)
from aligncultura.leakage.simhash import SimHashIndex, hamming, near_pairs, simhash

WORDS = (
    "festival music dance food family temple river market song painting village city craft "
    "language museum ritual harvest wedding mask drum poem story elder child market bread tea "
    "silk pottery lantern parade costume theatre opera film radio book garden mountain sea"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(n))


def fingerprints(texts, cfg: ShingleConfig = ShingleConfig(unit="word", n=1)) -> np.ndarray:
    return simhash(shingles(TextBatch(texts), cfg))


# ----------------------------------------------------------------------------- normalisation


def test_normalize_nfkc_casefold_punctuation_whitespace():
    got = normalize(["  Ｈｅｌｌｏ,\tWORLD!! Straße\u00a0ﬁne\u200b ", None, "?!"]).to_pylist()
    assert got == ["hello world strasse fine", None, ""]
    keep = normalize(["Hello, World"], NormalizeConfig(casefold=False, strip_punct=False))
    assert keep.to_pylist() == ["Hello, World"]


def test_word_shingles_are_position_independent_and_sha1_matches_datasketch():
    from datasketch.hashfunc import sha1_hash32

    tb = TextBatch(["x y z hello world this", "Hello, World! this is a test"])
    sh = shingles(tb, ShingleConfig(n=3))
    first, second = set(sh.hashes[: sh.offsets[1]]), set(sh.hashes[sh.offsets[1] :])
    assert len(first & second) == 1  # "hello world this"
    sha = shingles(tb, ShingleConfig(n=3, hash="sha1"))
    assert int(sha.hashes[0]) & 0xFFFFFFFF == sha1_hash32(b"x y z")


# ----------------------------------------------------------------------------- simhash


def test_simhash_identical_small_edit_unrelated():
    rng = random.Random(0)
    base = sentence(rng, 120)
    words = base.split()
    words[60] = "changed"
    fps = fingerprints([base, base, " ".join(words)])
    assert hamming(fps[0], fps[1]) == 0
    assert hamming(fps[0], fps[2]) <= 6
    others = fingerprints([sentence(rng, 120) for _ in range(60)])
    dists = [hamming(a, b) for a, b in itertools.combinations(others, 2)]
    assert 29 <= np.mean(dists) <= 35
    assert min(dists) > 10


def test_block_scheme_finds_every_pair_within_distance_10():
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**63, 150, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 150, dtype=np.uint64)
    near = []
    for fp in base[:100]:  # plant neighbours at distances 0..14
        bits = rng.choice(64, size=rng.integers(0, 15), replace=False)
        near.append(int(fp) ^ sum(1 << int(b) for b in bits))
    fps = np.concatenate([base, np.array(near, dtype=np.uint64)])
    d = hamming(fps[:, None], fps[None, :])
    iu = np.triu_indices(len(fps), 1)
    truth = {(int(i), int(j)) for i, j in zip(*iu, strict=True) if d[i, j] <= 10}
    for blocks in (11, 12, 13):
        i, j, dist = near_pairs(fps, 10, blocks)
        assert {(int(a), int(b)) for a, b in zip(i, j, strict=True)} == truth
        assert np.array_equal(dist, d[i, j])
    index = SimHashIndex(fps[:150], np.ones(150, bool))
    q, e, dist = index.query(fps[150:], np.ones(100, bool))
    want = {(a, b) for a in range(100) for b in range(150) if d[150 + a, b] <= 10}
    assert set(zip(q.tolist(), e.tolist(), strict=True)) == want


# ----------------------------------------------------------------------------- minhash + lsh


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_minhash_equals_datasketch_exactly_with_sha1(scheme):
    from datasketch import MinHash

    rng = random.Random(1)
    texts = [sentence(rng, rng.randrange(1, 40)) for _ in range(40)]
    cfg = MinHashConfig(scheme=scheme, num_perm=64, seed=3, shingles=ShingleConfig(n=3, hash="sha1"))
    tb = TextBatch(texts)
    sig = minhash(shingles(tb, cfg.shingles), cfg)
    for row, text in enumerate(texts):
        w = text.split()
        m = MinHash(num_perm=64, seed=3, scheme=scheme)
        m.update_batch([" ".join(w[k : k + 3]).encode() for k in range(max(len(w) - 2, 1))])
        assert sig.dtype == m.hashvalues.dtype
        assert np.array_equal(sig[row], m.hashvalues)
    empty = minhash(shingles(TextBatch([""]), cfg.shingles), cfg)[0]
    assert np.array_equal(empty, MinHash(num_perm=64, seed=3, scheme=scheme).hashvalues)


def test_minhash_estimates_agree_with_datasketch_and_truth():
    from datasketch import MinHash

    rng = random.Random(2)
    diffs = []
    for _ in range(30):
        a = sentence(rng, 80).split()
        b = list(a)
        for k in rng.sample(range(80), rng.randrange(0, 30)):
            b[k] = "zz" + str(k)
        tb = TextBatch([" ".join(a), " ".join(b)])
        sh = shingles(tb, ShingleConfig(n=3))
        sig = minhash(sh, MinHashConfig(num_perm=256))
        ours = float(estimate_jaccard(sig[0], sig[1]))
        grams = [{" ".join(w[k : k + 3]).encode() for k in range(len(w) - 2)} for w in (a, b)]
        ms = [MinHash(num_perm=256) for _ in grams]
        for m, g in zip(ms, grams, strict=True):
            m.update_batch(list(g))
        exact = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
        sd = np.sqrt(max(exact * (1 - exact), 0.01) / 256)
        assert abs(ours - exact) <= 4 * sd
        diffs.append(ours - ms[0].jaccard(ms[1]))
    assert abs(np.mean(diffs)) <= 0.02


def test_lsh_params_are_datasketchs():
    from datasketch import MinHashLSH

    for threshold, num_perm, weights in [(0.5, 128, (0.5, 0.5)), (0.8, 256, (0.3, 0.7)), (0.3, 64, (0.5, 0.5))]:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
        assert lsh_params(threshold, num_perm, weights) == (lsh.b, lsh.r)


def test_intersection_sizes_match_python_sets():
    rng = random.Random(3)
    texts = [sentence(rng, rng.randrange(0, 30)) for _ in range(30)]
    sets = unique_sets(shingles(TextBatch(texts), ShingleConfig(n=1)))
    pairs = [(rng.randrange(30), rng.randrange(30)) for _ in range(200)]
    i, j = np.array(pairs).T
    got = intersection_sizes(sets, sets, i, j)
    py = [set(sets.hashes[sets.offsets[k] : sets.offsets[k + 1]].tolist()) for k in range(30)]
    assert got.tolist() == [len(py[a] & py[b]) for a, b in pairs]


# ----------------------------------------------------------------------------- clusters


def test_union_find_components_and_smallest_representative():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_cc

    rng = np.random.default_rng(4)
    n = 500
    i, j = rng.integers(0, n, 300), rng.integers(0, n, 300)
    roots = connected_components(n, i, j)
    _, labels = scipy_cc(coo_matrix((np.ones(300), (i, j)), shape=(n, n)), directed=False)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        assert set(roots[members]) == {members.min()}
    perm = rng.permutation(300)
    assert np.array_equal(connected_components(n, j[perm], i[perm]), roots)


@pytest.mark.parametrize("method", ["minhash", "simhash"])
def test_near_duplicate_clusters_table(method):
    rng = random.Random(5)
    base = sentence(rng, 60)
    edited = base.split()
    edited[10] = "different"
    texts = [sentence(rng, 60), base, None, base.upper() + "!", "", " ".join(edited), sentence(rng, 60)]
    table = near_duplicate_clusters(texts, ids=[f"r{k}" for k in range(7)], cfg=DedupConfig(method=method))
    assert table.column_names == [
        "id", "cluster_id", "representative", "is_representative", "cluster_size", "similarity", "status",
    ]
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "null", "ok", "empty", "ok", "ok"]
    assert [rows[k]["representative"] for k in (1, 3, 5)] == ["r1", "r1", "r1"]
    assert rows[1]["is_representative"] and not rows[5]["is_representative"]
    assert rows[3]["similarity"] == 1.0 and 0.7 < rows[5]["similarity"] < 1.0
    assert rows[0]["cluster_size"] == 1 and rows[2]["cluster_id"] is None


@pytest.mark.parametrize("method", ["minhash", "simhash"])
def test_clusters_from_batched_fingerprints_equal_in_process(method):
    """The Ray path fingerprints blocks of rows apart; stitched back, the clusters must equal the
    in-process ones (MinHash verifies candidates on shingle sets rebuilt for those rows only)."""
    from aligncultura.leakage.clusters import fingerprint_rows

    rng = random.Random(9)
    base = [sentence(rng, 40) for _ in range(40)]
    texts = base + [b.upper() for b in base[:5]] + [None, "", "?!"]
    for b in base[5:15]:
        words = b.split()
        words[rng.randrange(len(words))] = "changed"
        texts.append(" ".join(words))
    rng.shuffle(texts)
    cfg = DedupConfig(method=method)
    parts = [fingerprint_rows(pa.array(texts[k:k + 7], pa.string()), cfg)
             for k in range(0, len(texts), 7)]
    fps = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    whole = near_duplicate_clusters(texts, cfg=cfg)
    assert near_duplicate_clusters(texts, cfg=cfg, fingerprints=fps).equals(whole)
    assert duplicate_groups(whole) >= 10


def test_exact_clusters_case_and_whitespace():
    table = exact_clusters(["A  b", "a b", "a b!", None, "c"], norm=NormalizeConfig(strip_punct=False))
    assert table["cluster_id"].to_pylist() == [0, 0, 2, None, 4]


# ----------------------------------------------------------------------------- scans


def test_containment_finds_prompt_embedded_in_long_document():
    rng = random.Random(6)
    prompt = sentence(rng, 30)
    short = sentence(rng, 6)  # shorter than n: indexed by its short_n-grams
    evals = [prompt, short, sentence(rng, 30)]
    index = build_index(evals, ["p", "s", "x"])
    doc = f"{sentence(rng, 400)} {prompt.upper()}. {sentence(rng, 300)} {short} {sentence(rng, 50)}"
    refs = pa.table({"id": ["doc", "other"], "text": [doc, sentence(rng, 500)]})
    result = scan_batches(index, [refs]).to_pylist()
    assert [r["flagged"] for r in result] == [True, True, False]
    assert result[0]["method"] == "containment" and result[0]["ref_id"] == "doc"
    assert result[0]["containment"] == 1.0 and result[0]["minhash_jaccard"] is None


def test_cjk_texts_fall_back_to_character_shingles():
    text = "京都の祇園祭は毎年七月に行われる日本で最も有名な祭りの一つであり山鉾巡行が見どころです"
    edited = text.replace("七月", "7月")
    tb = TextBatch([text, edited, "plain english words here"])
    fallback = tb.char_fallback(ShingleConfig().fallback_bytes_per_word)
    assert fallback.tolist() == [True, True, False]
    index = build_index([text], ["ja"])
    result = scan_batches(index, [pa.table({"id": ["x"], "text": [edited]})]).to_pylist()[0]
    assert result["flagged"] and result["minhash_jaccard"] > 0.5


def test_null_and_empty_texts_have_a_status_and_never_crash():
    index = build_index([None, "", "   ", "a real question about festivals and food"])
    assert index.status.tolist() == ["null", "empty", "empty", "ok"]
    refs = pa.table({"id": ["1", "2", "3"], "text": [None, "", "a real question about festivals and food"]})
    result = scan_batches(index, [refs])
    assert result["status"].to_pylist() == ["null", "empty", "empty", "ok"]
    assert result["flagged"].to_pylist() == [False, False, False, True]
    assert summarize(result)["scored"] == 1
    nothing = scan_batch(index, pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    assert nothing.num_rows == 0
    all_null = pa.table({"id": ["a"], "text": pa.array([None], pa.string())})
    assert scan_batch(index, all_null).num_rows == 0
    assert near_duplicate_clusters([None, ""])["status"].to_pylist() == ["null", "empty"]


def test_ten_megabyte_document():
    rng = random.Random(8)
    prompt = sentence(rng, 25)
    words = [rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(1_200_000)]
    words[600_000:600_000] = prompt.split()
    doc = " ".join(words)
    assert len(doc) > 10_000_000
    cfg = LeakageConfig(methods=["minhash", "containment"])  # simhash: below, on 10 MB of CJK
    index = build_index([prompt, sentence(rng, 25)], ["in", "out"], cfg)
    result = scan_batches(index, [pa.table({"id": ["big"], "text": [doc]})]).to_pylist()
    assert [r["flagged"] for r in result] == [True, False]
    cjk = "祭" * 3_500_000 + "り"  # 10.5 MB without a single space: character shingles
    tb = TextBatch([cjk])
    fp = simhash(shingles(tb, ShingleConfig()))
    assert tb.char_fallback(16.0).tolist() == [True] and fp.shape == (1,)


def test_best_match_does_not_depend_on_batch_order():
    rng = random.Random(9)
    evals = [sentence(rng, 20) for _ in range(5)]
    refs = [e for e in evals for _ in range(3)] + [sentence(rng, 20) for _ in range(20)]
    ids = [f"r{k:02d}" for k in range(len(refs))]
    index = build_index(evals)
    tables = [pa.table({"id": ids[k : k + 7], "text": refs[k : k + 7]}) for k in range(0, len(refs), 7)]
    a = scan_batches(index, tables)
    b = scan_batches(index, tables[::-1])
    assert a.equals(b)
    assert a["ref_id"].to_pylist() == ["r00", "r03", "r06", "r09", "r12"]
    sliced = build_index(evals, cfg=LeakageConfig(max_batch_bytes=300))  # 2-3 rows per slice
    assert scan_batches(sliced, tables).equals(a)


def test_scan_files_reads_json_lines(tmp_path):
    import json

    from aligncultura.leakage import scan_files

    rows = [{"id": "x0", "text": "the quick brown fox jumps over the lazy dog today", "extra": 1},
            {"id": "x1", "text": "something else entirely here"}, {"id": "x2", "text": None}]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = build_index(["The quick brown fox jumps over the lazy dog, today!", "unrelated words"])
    result = scan_files(index, str(tmp_path), fmt="json")
    assert result["ref_id"].to_pylist() == ["x0", None]
    summary = summarize(result)
    assert (summary["flagged"], summary["scored"]) == (1, 2)
    assert 0.09 < summary["ci95"][0] < 0.5 < summary["ci95"][1] <= 1.0


def test_scan_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="leakage methods"):
        LeakageConfig(methods=["bogus"])
    with pytest.raises(ValueError, match="min_words <= short_n <= n"):
        ContainmentConfig(short_n=20)
    index = build_index(["some words here"])
    with pytest.raises(KeyError, match="leakage.id_column"):
        scan_batch(index, pa.table({"text": ["x"]}))


def test_in_process_and_ray_scans_agree(tmp_path):
    ray = pytest.importorskip("ray")
    import pyarrow.parquet as pq

    from aligncultura.leakage import scan_files, scan_ray

    rng = random.Random(10)
    evals = [sentence(rng, 25) for _ in range(20)]
    for part in range(3):
        texts = [sentence(rng, 40) for _ in range(200)]
        for k in range(part, 20, 3):
            edited = evals[k].split()
            edited[k % 25] = "edit"
            texts[k * 7] = " ".join(edited) if k % 2 else f"{sentence(rng, 100)} {evals[k]}"
        ids = [f"p{part}-{k}" for k in range(200)]
        pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / f"part{part}.parquet")
    index = build_index(evals)
    local = scan_files(index, str(tmp_path), batch_size=64)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = scan_ray(index, str(tmp_path), num_workers=2, batch_size=64)
        small = scan_ray(index, str(tmp_path), num_workers=2, batch_size=64, piece_bytes=20_000)
    finally:
        ray.shutdown()
    assert local.equals(remote) and local.equals(small)  # 3 pieces, then 9 pieces (3 per file)
    assert local["flagged"].to_pylist() == [True] * 20


def _rows(pieces, columns, batch_size):
    from aligncultura.leakage.pieces import read_piece

    return [r for p in pieces for b in read_piece(p, columns, batch_size) for r in b.to_pylist()]


def test_parquet_pieces_cover_every_row_once(tmp_path):
    import pyarrow.parquet as pq

    from aligncultura.leakage.pieces import list_files, plan_pieces

    rng = random.Random(4)
    texts = [sentence(rng, rng.randrange(1, 60)) for _ in range(700)]
    table = pa.table({"id": [f"r{i}" for i in range(700)], "text": texts})
    with pq.ParquetWriter(tmp_path / "a.parquet", table.schema) as w:  # row groups 5, 300, 7, 388
        for a, b in ((0, 5), (5, 305), (305, 312), (312, 700)):
            w.write_table(table.slice(a, b - a))
    pq.write_table(table.slice(0, 0), tmp_path / "b.parquet")  # no rows
    pq.write_table(table.slice(0, 50), tmp_path / "c.parquet")
    files = list_files(str(tmp_path), "parquet")
    assert [f.rsplit("/", 1)[1] for f in files] == ["a.parquet", "b.parquet", "c.parquet"]
    want = table.to_pylist() + table.slice(0, 50).to_pylist()
    for piece_bytes in (1, 3_000, 20_000, 10**9):
        pieces = plan_pieces(files, "parquet", piece_bytes)
        for bs in (1, 64, 4096):
            assert _rows(pieces, ["id", "text"], bs) == want, (piece_bytes, bs)
    assert len(plan_pieces(files, "parquet", 10**9)) == 2  # one per non-empty file
    cut = plan_pieces(files, "parquet", 3_000)
    assert any(p.stop is not None for p in cut) and len(cut) > 10  # big row groups in ranges
    assert all(p.row_groups for p in cut)


def test_json_pieces_cover_every_line_once(tmp_path):
    import json

    from aligncultura.leakage.pieces import Piece, plan_pieces

    rng = random.Random(5)
    rows = [{"id": i, "text": sentence(rng, rng.choice([1, 3, 40, 900]))} for i in range(120)]
    lines = [json.dumps(r) for r in rows]
    for k in (7, 50, 51):
        lines[k] += "\r"  # CRLF line ends and blank lines are allowed
        lines[k + 1] = "  \n" + lines[k + 1]
    (tmp_path / "x.jsonl").write_text("\n".join(lines))  # no newline at the end
    for piece_bytes in (1, 13, 100, 4096, 10**9):
        pieces = plan_pieces([str(tmp_path / "x.jsonl")], "jsonl", piece_bytes)
        got = _rows(pieces, ["id", "text"], 16)
        assert got == rows, piece_bytes
        assert all(Piece.from_json(p.to_json()) == p for p in pieces)
    (tmp_path / "empty.jsonl").write_text("")
    assert plan_pieces([str(tmp_path / "empty.jsonl")], "json", 100) == []


def test_missing_column_names_the_setting(tmp_path):
    import pyarrow.parquet as pq

    from aligncultura.leakage import scan_files

    pq.write_table(pa.table({"id": ["a"], "body": ["x y z"]}), tmp_path / "r.parquet")
    with pytest.raises(KeyError, match="column 'text' not found.*set leakage.text_column"):
        scan_files(build_index(["x y z"]), str(tmp_path))
    with pytest.raises(ValueError, match="piece_bytes=0"):
        scan_files(build_index(["x y z"]), str(tmp_path), piece_bytes=0)
