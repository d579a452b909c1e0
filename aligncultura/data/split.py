"""The dataset split: stratified 80/10/10 by subdomain with exact duplicates kept together,
and the seeded selection of one split (or all) up to a row limit."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aligncultura.errors import InputError


def _seeded_key(seed: int, text: str) -> str:
    return hashlib.sha1(f"{seed}:{text}".encode()).hexdigest()


def assign_splits(table: pa.Table, fractions=(0.8, 0.1, 0.1), seed: int = 42,
                  key: str = "dataset") -> pa.Table:
    """Deterministic stratified split by subdomain, keeping exact duplicates together.

    Rows are grouped by `content_hash`; a group's stratum is the class id of its first row
    (unlabelled rows form their own stratum). Within a stratum the groups are ordered by a
    seeded hash and cut into val / test / train with sizes round-half-up(n * fraction) for
    val and test and the rest for train. So a stratum of 1-4 groups goes wholly to train
    (a class that rare cannot be represented in val and test; it is at least seen in
    training), and every stratum with 5+ groups is within one group of 80/10/10.
    Same table and seed, same split; adding rows of another class never moves a row.
    """
    if len(fractions) != 3:
        raise InputError(
            f"{key}.split_fractions {list(fractions)}: give 3 values (train, val, test)"
        )
    f_train, f_val, f_test = fractions
    if abs(f_train + f_val + f_test - 1.0) > 1e-6 or min(fractions) < 0:
        raise InputError(f"{key}.split_fractions {list(fractions)} must be >= 0 and sum to 1")
    hashes = table.column("content_hash").to_pylist()
    classes = table.column("class_id").to_pylist()
    group_class: dict[str, Any] = {}
    for h, c in zip(hashes, classes, strict=True):
        group_class.setdefault(h, c)
    strata: dict[Any, list[str]] = {}
    for h, c in group_class.items():
        strata.setdefault(c, []).append(h)
    split_of: dict[str, str] = {}
    for c, groups in strata.items():
        groups.sort(key=lambda h, c=c: _seeded_key(seed, f"{c}:{h}"))
        n = len(groups)
        n_val = int(n * f_val + 0.5)
        n_test = int(n * f_test + 0.5)
        for i, h in enumerate(groups):
            split_of[h] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    splits = pa.array([split_of[h] for h in hashes], pa.string())
    return table.set_column(table.schema.get_field_index("split"), "split", splits)


def select(table: pa.Table, split: str, limit: int | None, seed: int,
           key: str = "dataset") -> pa.Table:
    """The rows of one split (or all), then the first `limit` in a seeded order."""
    if split not in ("all", "train", "val", "test"):
        raise InputError(f"{key}.split={split!r}: use all, train, val or test")
    if split != "all":
        table = table.filter(pc.equal(table.column("split"), split))
    if limit is not None:
        if limit < 1:
            raise InputError(f"{key}.limit={limit}: must be >= 1 or null")
        keys = [_seeded_key(seed, rid) for rid in table.column("row_id").to_pylist()]
        order = sorted(range(len(keys)), key=keys.__getitem__)[:limit]
        table = table.take(pa.array(sorted(order), pa.int64()))
    return table
