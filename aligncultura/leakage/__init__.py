"""Leakage engine: near-duplicate fingerprints, within-set dedup and eval-vs-reference scans.

Pure, vectorised functions over Arrow batches / numpy arrays (no Ray import at module level):

- normalization.py  NFKC, casefold, punctuation and spaces, over a batch's UTF-8 bytes
- hashing.py        span hashes (poly64, sha1), fmix64, span ranges
- textbatch.py      a batch of normalised texts and its words / characters (byte spans)
- shingles.py       word/char n-grams (CJK falls back to chars), shingle sets
- simhash.py        64-bit SimHash (streamed over character n-grams), Hamming distance,
                    pigeonhole block tables verified as they are joined
- minhash.py        MinHash signatures with datasketch's permutation schemes
- lsh.py            LSH bands (datasketch's optimum) and the bucket join shared with SimHash
- containment.py    lm-eval-style n-gram containment of eval prompts in reference documents
- clusters.py       within-set dedup: candidates -> exact verification -> union-find clusters
- pieces.py         reference files cut into ~16 MB pieces (the unit of work), read batch by batch
- scan.py           eval index, `scan_batch`, best-match reduction, in-process runner, summary
- ray.py            every Ray entry point: `scan_ray`, `map_pieces_ray`, `scan_block`,
                    `RayFingerprints`, `TaskNodes` (Ray is imported inside the functions only)

Glue for jobs.leakage / jobs.dedup / jobs.benchmark (not re-exported here):

- config.py         the jobs' Hydra configs (registered on import) and input helpers
- stream_input.py   the data contract read piece by piece, with its split and selection
- dedup_stream.py   jobs.dedup streamed: fixed-size fingerprints per block spilled to disk,
                    candidates band by band, only the rows of candidate pairs shingled again
- dedup_output.py   jobs.dedup's clusters.parquet (in row groups) and group counts
- references.py     reference corpora: files, pieces, CSV, scanned past the eval index
- summary.py        flagged rates with Wilson CIs, benchmark metrics without leaked rows
"""

from .clusters import DedupConfig, exact_clusters, near_duplicate_clusters
from .containment import ContainmentConfig
from .minhash import MinHashConfig
from .normalization import NormalizeConfig
from .pieces import Piece, list_files, plan_pieces, read_piece
from .ray import map_pieces_ray, scan_block, scan_ray
from .scan import (
    LeakageConfig,
    LeakageIndex,
    best_matches,
    build_index,
    scan_batch,
    scan_batches,
    scan_files,
    scan_piece,
    summarize,
)
from .shingles import ShingleConfig
from .simhash import SimHashConfig

__all__ = [
    "ContainmentConfig",
    "DedupConfig",
    "LeakageConfig",
    "LeakageIndex",
    "MinHashConfig",
    "NormalizeConfig",
    "ShingleConfig",
    "SimHashConfig",
    "best_matches",
    "build_index",
    "exact_clusters",
    "list_files",
    "map_pieces_ray",
    "near_duplicate_clusters",
    "Piece",
    "plan_pieces",
    "read_piece",
    "scan_batch",
    "scan_batches",
    "scan_block",
    "scan_files",
    "scan_piece",
    "scan_ray",
    "summarize",
]
