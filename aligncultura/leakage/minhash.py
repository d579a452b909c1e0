"""MinHash signatures for a whole batch at once, with datasketch's permutation schemes.

datasketch (2.x) is the reference. Its default scheme ``"affine32"`` pre-mixes each 32-bit
shingle hash with MurmurHash3's fmix32 and applies ``a_k * h + b_k mod 2^32`` (a_k odd);
``"legacy"`` (datasketch < 2.0, or ``scheme="legacy"``) applies
``((a_k * h + b_k) mod (2^61 - 1)) & (2^32 - 1)`` with the product wrapping mod 2^64 first.
The permutation parameters are drawn exactly as datasketch draws them
(`numpy.random.RandomState(seed)`), so with ``ShingleConfig(hash="sha1")`` a signature here
equals ``datasketch.MinHash(num_perm, seed, scheme=...).update_batch(shingles)`` exactly.

Speed comes from doing the batch as one matrix: shingles of all texts are concatenated,
processed in chunks of rows x num_perm that stay in cache, and reduced per text with
`minimum.reduceat`; the legacy modulus is computed with shifts (x mod 2^61-1 =
(x & p) + (x >> 61), then one conditional subtraction), never with integer division.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hashing import U64, docs_in_chunk
from .shingles import ShingleConfig, Shingles

MERSENNE = U64((1 << 61) - 1)
MAX32 = U64((1 << 32) - 1)
_CHUNK_CELLS = 1 << 19  # num_perm x shingles per numpy pass (2 MB of uint32)


@dataclass
class MinHashConfig:
    """MinHash + LSH settings.

    Defaults are for prompts (CulturaX questions: 33 words on average, some under 10):
    word 2-grams and Jaccard >= 0.4. One edited word changes 2 of ~32 bigrams (a 5-gram
    would lose 5), and a swapped word pair in a 9-word prompt still leaves Jaccard 0.45
    with bigrams but 0.27 with trigrams. Chosen on bench/bench_leakage.py's labelled set
    (LEAKAGE_RESULTS.md); for web-length documents the usual setting is n=5, threshold 0.7-0.8.
    """

    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"  # affine32 (datasketch >= 2.0 default) | legacy
    shingles: ShingleConfig = field(default_factory=lambda: ShingleConfig(unit="word", n=2))
    threshold: float = 0.4  # exact Jaccard a pair must reach (verified on the shingle sets)
    fp_weight: float = 0.5  # LSH weights, as datasketch.MinHashLSH(weights=(fp, fn))
    fn_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.scheme not in ("affine32", "legacy"):
            raise ValueError(f"minhash.scheme={self.scheme!r}: use 'affine32' or 'legacy'")
        if self.num_perm < 1:
            raise ValueError(f"minhash.num_perm={self.num_perm} must be >= 1")


def permutations(num_perm: int, seed: int = 1, scheme: str = "affine32") -> np.ndarray:
    """The (2, num_perm) array [a, b] datasketch's MinHash(num_perm, seed, scheme=...) uses."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        return np.array(
            [
                (gen.randint(1, MERSENNE, dtype=U64), gen.randint(0, MERSENNE, dtype=U64))
                for _ in range(num_perm)
            ],
            dtype=U64,
        ).T
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch's affine32 pre-mix."""
    x = np.array(x, dtype=np.uint32, copy=True)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    x ^= x >> np.uint32(16)
    return x


def _apply_legacy(hv: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out = ((a * hv + b) mod 2^64 mod (2^61 - 1)) & (2^32 - 1), exactly, without division."""
    np.multiply(a[:, None], hv[None, :], out=out)
    out += b[:, None]
    hi = out >> U64(61)
    out &= MERSENNE
    out += hi  # < 2^61 + 8: at most one subtraction of p left
    np.add(out, U64(1), out=hi)
    hi >>= U64(61)  # 1 where out >= p
    out += hi  # out - p == out + 1 - 2^61; the 2^61 bit vanishes in the mask below
    out &= MAX32


def signatures(
    h32: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1,
    scheme: str = "affine32", perms: np.ndarray | None = None,
) -> np.ndarray:
    """(texts, num_perm) MinHash signatures from 32-bit shingle hashes in CSR form.

    A text without shingles gets datasketch's empty signature (every value at the maximum).
    dtype: uint32 for affine32, uint64 for legacy (as datasketch stores them).
    Work is laid out permutation-major (num_perm x shingles) so that the per-text
    `minimum.reduceat` runs over contiguous memory.
    """
    a, b = permutations(num_perm, seed, scheme) if perms is None else perms
    n = len(offsets) - 1
    legacy = scheme == "legacy"
    dtype = U64 if legacy else np.uint32
    sig = np.full((n, num_perm), MAX32 if legacy else np.uint32(0xFFFFFFFF), dtype=dtype)
    total = int(offsets[-1]) if n else 0
    if total == 0:
        return sig
    h32 = np.asarray(h32)
    hv = np.asarray(h32, dtype=U64) & MAX32 if legacy else \
        fmix32(h32 if h32.dtype == np.uint32 else h32.astype(np.uint32))
    cols = max(1, _CHUNK_CELLS // num_perm)
    work = np.empty((num_perm, cols), dtype=dtype)
    for lo in range(0, total, cols):
        hi = min(total, lo + cols)
        block = work[:, : hi - lo]
        if legacy:
            _apply_legacy(hv[lo:hi], a, b, block)
        else:
            np.multiply(a[:, None], hv[None, lo:hi], out=block)
            block += b[:, None]
        docs, seg = docs_in_chunk(offsets, lo, hi)
        mins = np.minimum.reduceat(block, seg, axis=1).T
        sig[docs] = np.minimum(sig[docs], mins)
    return sig


def minhash(sh: Shingles, cfg: MinHashConfig = MinHashConfig()) -> np.ndarray:
    """Signatures of the texts whose shingles are `sh` (low 32 bits of each shingle hash)."""
    low = sh.hashes.astype(np.uint32)  # the low 32 bits, half the bytes of `hashes & MAX32`
    return signatures(low, sh.offsets, cfg.num_perm, cfg.seed, cfg.scheme)


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row (datasketch's MinHash.jaccard)."""
    return np.mean(np.asarray(sig_a) == np.asarray(sig_b), axis=-1)
