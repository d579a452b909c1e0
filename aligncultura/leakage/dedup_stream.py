"""jobs.dedup as a stream: memory grows by a few bytes per row, not with the text.

The input is read through the data contract piece by piece (stream_input.py) and every
block of rows is reduced to fixed-size fingerprints (`block_fingerprints`: status, a 128-bit
digest of the normalised text, and MinHash band keys + a shingle-set key, or the SimHash),
computed here or in Ray tasks (ray.py `RayFingerprints`). Those, the row ids, the content
hashes and classes the split needs, and the texts as read are spilled to a temporary
directory (`Spill`) and read back one column at a time. Candidates come from the band keys
one band at a time; only the rows of candidate pairs have their texts read back and
shingled, so the exact Jaccard verification holds O(candidates) sets. The clusters are
those of clusters.py (`near_duplicate_clusters`, `exact_clusters`) on the same rows: the
same representatives, similarities and ids (tests/test_dedup_streaming.py compares them).
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aligncultura.console.progress import Meter

from .clusters import DedupConfig, _set_keys, connected_components, jaccard_pairs
from .lsh import band_keys, lsh_params, self_pairs
from .minhash import minhash
from .shingles import EMPTY, NULL, OK, Shingles, TextBatch, shingles, unique_sets
from .simhash import hamming, near_pairs, simhash_batch
from .stream_input import hash_codes

STATUS = (OK, NULL, EMPTY)  # status codes 0, 1, 2
LOCAL_BLOCK_ROWS = 1024  # in-process blocks: ~10% faster than 4096 rows (arrays stay in cache)


def release_memory() -> None:
    """Hand memory freed by Arrow (its pool) and numpy (glibc's heap) back to the OS, so the
    next piece starts from the live data only, not from the high-water mark of the last one
    (glibc keeps freed blocks of up to 32 MB in its heap). jobs/dedup.py has Arrow allocate
    with malloc too, so that this reaches every freed page."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _text_digests(tb: TextBatch) -> np.ndarray:
    """(n, 2) uint64: 128-bit BLAKE2b of each ok row's normalised bytes (0 for the others)."""
    out = np.zeros((tb.n, 2), dtype=np.uint64)
    rows = np.flatnonzero(tb.ok)
    if len(rows):
        mv = memoryview(tb.buf.tobytes())
        blake = hashlib.blake2b
        a, b = tb.offsets[rows].tolist(), tb.offsets[rows + 1].tolist()
        raw = b"".join(blake(mv[s:e], digest_size=16).digest() for s, e in zip(a, b, strict=True))
        out[rows] = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    return out


def block_fingerprints(texts: pa.Array | pa.ChunkedArray, cfg: DedupConfig
                       ) -> dict[str, np.ndarray]:
    """Fixed-size fingerprints of a block of texts (rows are independent, so blocks can be
    computed anywhere and concatenated): status (uint8 code of STATUS), exact_hi / exact_lo
    (uint64 halves of the text digest), and simhash (uint64), or set_key (uint64, equal
    shingle sets equal keys), nonempty (bool) and bands ((bands, n) uint64 LSH band keys of
    the MinHash signature)."""
    tb = TextBatch(texts, cfg.normalize)
    status = np.zeros(tb.n, dtype=np.uint8)
    status[tb.status == NULL] = 1
    status[tb.status == EMPTY] = 2
    digest = _text_digests(tb)
    out = {"status": status, "exact_hi": digest[:, 0].copy(), "exact_lo": digest[:, 1].copy()}
    if cfg.method == "simhash":
        out["simhash"] = simhash_batch(tb, cfg.simhash.shingles)
    elif cfg.method == "minhash":
        m = cfg.minhash
        sets = unique_sets(shingles(tb, m.shingles, mix=False))
        out["set_key"] = _set_keys(sets)
        out["nonempty"] = sets.counts > 0
        bands = band_keys(minhash(sets, m), *lsh_params(m.threshold, m.num_perm,
                                                        (m.fp_weight, m.fn_weight)))
        out["bands"] = np.ascontiguousarray(bands.T)
    else:
        raise ValueError(f"dedup.method={cfg.method!r}: use 'minhash' or 'simhash'")
    return out


class LocalFingerprints:
    """`block_fingerprints` in this process (the interface of ray.py `RayFingerprints`)."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg

    def submit(self, texts: pa.Array | pa.ChunkedArray) -> list[dict[str, np.ndarray]]:
        return [block_fingerprints(texts, self.cfg)]

    def finish(self) -> list[dict[str, np.ndarray]]:
        return []


class Spill:
    """Columns appended block by block to files in `root` (numpy arrays as raw bytes, Arrow
    arrays as IPC files of one record batch per block), read back one column at a time once
    every block has been added."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files: dict[str, Any] = {}
        self.kinds: dict[str, Any] = {}

    def add(self, name: str, values: np.ndarray) -> None:
        if name not in self.files:
            self.files[name] = open(self.root / name, "wb")  # closed by load / close
            self.kinds[name] = (values.dtype, values.shape[1:])
        np.ascontiguousarray(values).tofile(self.files[name])

    def add_arrow(self, name: str, values: pa.Array | pa.ChunkedArray) -> None:
        """Append values as one record batch of an Arrow IPC file (batches: `take_arrow`)."""
        if isinstance(values, pa.ChunkedArray):
            values = pa.concat_arrays(values.chunks) if values.num_chunks else \
                pa.array([], values.type)
        if name not in self.files:
            sink = pa.OSFile(str(self.root / name), "wb")
            self.files[name] = (sink, pa.ipc.new_file(sink, pa.schema([("v", values.type)])))
            self.kinds[name] = [0]  # row offsets of the batches
        self.files[name][1].write_batch(pa.record_batch([values], names=["v"]))
        self.kinds[name].append(self.kinds[name][-1] + len(values))

    def _close(self, name: str) -> None:
        f = self.files.pop(name, None)
        if isinstance(f, tuple):
            f[1].close()
            f[0].close()
        elif f is not None:
            f.close()

    def load(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """The whole column (or its `rows`)."""
        self._close(name)
        dtype, shape = self.kinds[name]
        out = np.fromfile(self.root / name, dtype=dtype).reshape(-1, *shape)
        return out if rows is None else out[rows]

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Values at `rows` (a few), read through a memory map: only their pages are read."""
        self._close(name)
        dtype, shape = self.kinds[name]
        mm = np.memmap(self.root / name, dtype=dtype, mode="r")
        out = np.array(mm.reshape(-1, *shape)[rows])
        del mm
        return out

    def load_arrow(self, name: str, rows: np.ndarray | None = None) -> pa.Array:
        """The whole column (or its `rows`)."""
        self._close(name)
        with pa.OSFile(str(self.root / name), "rb") as f:
            col = pa.ipc.open_file(f).read_all().column("v").combine_chunks()
        return col if rows is None else col.take(pa.array(rows, pa.int64()))

    def take_arrow(self, name: str, rows: np.ndarray) -> pa.Array:
        """Values at `rows` (ascending), reading only the batches that hold them."""
        self._close(name)
        starts = np.asarray(self.kinds[name], dtype=np.int64)
        cuts = np.searchsorted(rows, starts)
        parts = []
        with pa.OSFile(str(self.root / name), "rb") as f:
            reader = pa.ipc.open_file(f)
            for k in np.flatnonzero(cuts[1:] > cuts[:-1]).tolist():
                local = rows[cuts[k]:cuts[k + 1]] - starts[k]
                parts.append(reader.get_batch(k).column(0).take(pa.array(local, pa.int64())))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    def close(self) -> None:
        for name in list(self.files):
            self._close(name)


class Pass1:
    """The sink of the read (`stream_prompts`' callback): per piece of usable rows, the ids,
    subdomains, content hashes and classes, and per block of `block_rows` rows its texts and
    fingerprints (computed by `fingerprints`: LocalFingerprints or RayFingerprints)."""

    def __init__(self, spill: Spill, fingerprints: Any, block_rows: int):
        self.spill, self.fp, self.block = spill, fingerprints, block_rows

    def __call__(self, table: pa.Table) -> None:
        sp = self.spill
        sp.add_arrow("row_id", table["row_id"])
        sp.add_arrow("subdomain", table["subdomain"])
        sp.add("content_hash", hash_codes(table["content_hash"]))
        cls = table["class_id"]
        sp.add("class_id", np.asarray(cls.fill_null(0), dtype=np.int64))
        sp.add("class_null", np.asarray(cls.is_null(), dtype=bool))
        texts = table["question"]
        for a in range(0, table.num_rows, self.block):
            block = texts.slice(a, self.block)
            sp.add_arrow("question", block)  # for the rows of candidate pairs (`text_sets`)
            self._keep(self.fp.submit(block))
        del table, texts, block
        release_memory()

    def _keep(self, results: list[dict[str, np.ndarray]]) -> None:
        for fp in results:
            for name, values in fp.items():
                if name == "bands":
                    for b, col in enumerate(values):
                        self.spill.add(f"band{b}", col)
                else:
                    self.spill.add(name, values)

    def finish(self) -> None:
        self._keep(self.fp.finish())


class ReadProgress:
    """jobs.dedup's live progress over pass 1 (`stream_prompts`' `on_read`): MB of the input
    files read and fingerprinted of their total, with MB/s and the ETA, as ``[dedup read]
    12.0/50.0 MB (24%), 3.1 MB/s, ETA 12s, 4s elapsed`` (a bar on a terminal). The meter
    starts on the first call, which gives the total; `meter`: its options (stream, every_s,
    bar, enabled)."""

    def __init__(self, label: str = "dedup read", **meter: Any):
        self.label, self.options = label, meter
        self.meter: Meter | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.meter is None:
            self.meter = Meter(self.label, total, unit="MB", rate_unit="MB/s", scale=1e6,
                               **self.options)
        self.meter.set(done=done, amount=done / 1e6)

    def close(self, final: bool = True) -> None:
        """The final line (none when the read failed: `final=False`)."""
        if self.meter is not None:
            self.meter.close(final)


def exact_roots(status: np.ndarray, hi: np.ndarray, lo_at: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
    """Root (first row) of each row's exact-duplicate group: rows with status ok and equal
    128-bit text digests (`exact_clusters` in clusters.py, by digest instead of by string).
    `hi`: the digests' top halves; `lo_at(rows)`: the bottom halves of those rows, asked
    only for the rows whose top half is not unique."""
    roots = np.arange(len(status), dtype=np.int64)
    rows = np.flatnonzero(status == 0)
    h = hi[rows]
    order = np.argsort(h, kind="stable")
    same = h[order[1:]] == h[order[:-1]]
    if not same.any():
        return roots
    shared = np.zeros(len(rows), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    cand = rows[np.sort(order[shared])]
    ch, cl = hi[cand], lo_at(cand)
    o = np.lexsort((cl, ch))  # stable: a group's rows stay ascending, the first is the root
    new = np.ones(len(o), dtype=bool)
    new[1:] = (ch[o[1:]] != ch[o[:-1]]) | (cl[o[1:]] != cl[o[:-1]])
    roots[cand[o]] = cand[o][new][np.cumsum(new) - 1]
    return roots


def simhash_roots(status: np.ndarray, fps: np.ndarray, cfg: DedupConfig
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(roots, similarity to the root): the SimHash branch of `near_duplicate_clusters`."""
    rows = np.flatnonzero(status == 0)
    i, j, _ = near_pairs(fps[rows], cfg.simhash.max_distance, cfg.simhash.num_blocks)
    roots = connected_components(len(status), rows[i], rows[j])
    return roots, 1.0 - hamming(fps, fps[roots]) / 64.0


def minhash_roots(valid: np.ndarray, set_key: np.ndarray,
                  band: Callable[[int, np.ndarray], np.ndarray],
                  sets_of: Callable[[np.ndarray], Shingles], cfg: DedupConfig
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(roots, similarity to the root, candidate pairs): the MinHash branch of
    `near_duplicate_clusters` (`minhash_edges`), with the band keys read one band at a time
    (`band(b, rows)`: band b's keys of those rows) and the shingle sets asked for the rows of
    candidate pairs only
    (`sets_of(rows)`, rows ascending). Rows with equal set keys are collapsed to their first
    row (head) before LSH and linked to it with Jaccard 1."""
    m = cfg.minhash
    n = len(valid)
    rows = np.flatnonzero(valid)
    _, first, inv = np.unique(set_key[rows], return_index=True, return_inverse=True)
    heads = rows[first]
    bands, _ = lsh_params(m.threshold, m.num_perm, (m.fp_weight, m.fn_weight))
    ui, uj = self_pairs((band(b, heads) for b in range(bands)), len(heads))
    i, j = heads[ui], heads[uj]
    need = np.unique(np.concatenate([i, j]))
    sets = sets_of(need) if len(need) else Shingles(np.zeros(1, np.int64), np.zeros(0, np.uint64))

    def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return jaccard_pairs(sets, np.searchsorted(need, a), np.searchsorted(need, b))

    jac = jaccard(i, j) if len(i) else np.zeros(0)
    ok = jac >= m.threshold
    head_of = np.arange(n, dtype=np.int64)
    head_of[rows] = heads[inv]
    dup = rows != head_of[rows]
    roots = connected_components(n, np.concatenate([i[ok], head_of[rows][dup]]),
                                 np.concatenate([j[ok], rows[dup]]))
    sim = np.ones(n)
    moved = np.flatnonzero(roots != np.arange(n))
    linked = moved[head_of[moved] != roots[moved]]  # a head of another set is the root
    if len(linked):
        sim[linked] = jaccard(head_of[linked], roots[linked])
    return roots, sim, len(i)


def text_sets(spill: Spill, rows: np.ndarray, cfg: DedupConfig) -> Shingles:
    """The shingle sets (`unique_sets`) of the usable rows `rows` (ascending), from their
    texts as read (spilled by Pass1)."""
    tb = TextBatch(spill.take_arrow("question", rows), cfg.normalize)
    return unique_sets(shingles(tb, cfg.minhash.shingles, mix=False))
