"""Leakage engine: near-duplicate fingerprints, within-set dedup and eval-vs-reference scans.

Pure, vectorised functions over Arrow batches / numpy arrays (no Ray import at module level):

- shingles.py     normalisation, word/char n-grams (CJK falls back to chars), shingle hashes
- simhash.py      64-bit SimHash, Hamming distance, pigeonhole block tables
- minhash.py      MinHash signatures with datasketch's permutation schemes
- lsh.py          LSH bands (datasketch's optimum) and the bucket join shared with SimHash
- containment.py  lm-eval-style n-gram containment of eval prompts in reference documents
- clusters.py     within-set dedup: candidates -> exact verification -> union-find clusters
- pieces.py       reference files cut into ~16 MB pieces (the unit of work), read batch by batch
- scan.py         eval index, `scan_batch`, in-process and Ray Data runners, summary
"""

from .clusters import DedupConfig, exact_clusters, near_duplicate_clusters
from .containment import ContainmentConfig
from .minhash import MinHashConfig
from .pieces import Piece, list_files, plan_pieces, read_piece
from .scan import (
    LeakageConfig,
    LeakageIndex,
    best_matches,
    build_index,
    map_pieces_ray,
    scan_batch,
    scan_batches,
    scan_block,
    scan_files,
    scan_piece,
    scan_ray,
    summarize,
)
from .shingles import NormalizeConfig, ShingleConfig
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
