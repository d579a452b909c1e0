"""Configs and glue for `jobs.leakage` and `jobs.dedup` over the pure leakage core.

The eval side (and dedup's input) follows the data contract (`InputConfig`, read with
`data.load_prompts`: per-row quarantine, splits). The reference corpus is streamed and never
loaded whole: Parquet and JSON-lines files are cut into pieces of ~16 MB (`leakage.pieces`),
each read, row-counted and scanned by `scan_reference_piece`, in this process or one Ray Data
task per piece (`leakage.map_pieces_ray`; every file is read once, by a worker); CSV files
are read one file at a time through the data contract (so `reference.split` applies to CSV
references only) and scanned on the driver. Each group's per-eval result is turned back into
match rows and reduced once with `leakage.best_matches`, so the outcome does not depend on
grouping or order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from hydra.core.config_store import ConfigStore

from aligncultura.config import InputConfig
from aligncultura.data import FORMATS, InputError, load_prompts
from aligncultura.leakage import DedupConfig, LeakageConfig, best_matches, scan_batch
from aligncultura.leakage.pieces import PIECE_BYTES, MissingColumn, Piece, plan_pieces, read_piece
from aligncultura.leakage.scan import MATCH_SCHEMA, METHODS, PieceError, cpu_limit, map_pieces_ray
from aligncultura.metrics import wilson_ci


@dataclass
class ReferenceConfig(InputConfig):
    """The reference corpus: the data contract plus `paths`, a list of files or directories."""

    name: str = "reference"
    paths: list[str] = field(default_factory=list)
    text_field: str = "text"
    id_field: str | None = "id"  # required for Parquet/JSONL; CSV falls back to name:index
    class_field: str | None = None


@dataclass
class LeakageJobConfig:
    eval: InputConfig = field(default_factory=InputConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)
    executor: str = "local"  # local (in this process) | ray (Ray Data map_batches)
    num_workers: int | None = None  # Ray: concurrent scan tasks (null = all CPUs)
    run_dir: str | None = None


@dataclass
class DedupJobConfig:
    input: InputConfig = field(default_factory=InputConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    # local: everything in this process | ray: fingerprints (SimHash, or MinHash signatures
    # and set keys) computed by Ray Data map_batches; candidates, exact verification and
    # union-find on the driver (identical result)
    executor: str = "local"
    num_workers: int | None = None  # Ray: concurrent fingerprint tasks (null = all CPUs)
    batch_size: int = 4096  # Ray: rows per fingerprint task
    run_dir: str | None = None


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="leakage_schema", node=LeakageJobConfig)
    cs.store(name="dedup_schema", node=DedupJobConfig)


register()


def core_config(node: Any, key: str) -> Any:
    """The core's dataclass (LeakageConfig / DedupConfig) from its node, validated."""
    from omegaconf import OmegaConf

    from aligncultura.jobkit import JobError

    try:
        return OmegaConf.to_object(node)
    except ValueError as exc:
        raise JobError(f"{key}: {str(exc).splitlines()[0]}") from None


def read_side(cfg: Any, key: str):
    """`load_prompts` with the config key (eval/input) in its one-line errors."""
    try:
        return load_prompts(cfg)
    except InputError as exc:
        raise InputError(str(exc).replace("dataset.", f"{key}.")) from None


# ----------------------------------------------------------------------------- references


def reference_files(ref: Any) -> dict[str, list[str]]:
    """The reference files grouped by format; a path that does not exist is a one-line error."""
    if ref.path:
        raise InputError(f"reference.path={ref.path}: the reference takes a list, set "
                         f"reference.paths=[{ref.path}] instead")
    if not ref.paths:
        raise InputError("reference.paths is empty: give reference.paths=[file_or_dir,...]")
    groups: dict[str, list[str]] = {"parquet": [], "jsonl": [], "csv": []}
    for raw in ref.paths:
        path = Path(os.path.expanduser(str(raw)))
        if not path.exists():
            raise InputError(f"reference.paths: {path} does not exist; fix the path or drop it")
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS) \
            if path.is_dir() else [path]
        if not files:
            raise InputError(f"reference.paths: directory {path} holds no .csv, .jsonl or "
                             ".parquet file")
        for f in files:
            fmt = ref.format if ref.format != "auto" else FORMATS.get(f.suffix.lower())
            if fmt not in groups:
                raise InputError(f"reference.paths: cannot tell the format of {f}; set "
                                 "reference.format=csv|jsonl|parquet")
            groups[fmt].append(str(f))
    if (groups["parquet"] or groups["jsonl"]) and not ref.id_field:
        raise InputError("reference.id_field is null: Parquet/JSONL references need an id column "
                         "(set reference.id_field=<column>)")
    return groups


def _unreadable(f: str, fmt: str, exc: BaseException) -> InputError:
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return InputError(f"{f}: not a readable {fmt} reference ({why}); check reference.paths "
                      "and reference.format")


def repair_utf8(batch: pa.RecordBatch, col: int = 0) -> tuple[pa.RecordBatch, int]:
    """pyarrow's JSON reader passes invalid UTF-8 through; replace such bytes with U+FFFD in
    the (rare) batches that hold any, so one bad byte never stops a scan. (batch, rows fixed)"""
    text = batch.column(col)
    try:
        text.validate(full=True)
        return batch, 0
    except pa.ArrowInvalid:
        pass
    raw = text.cast(pa.binary()).to_pylist()
    fixed, bad = [], 0
    for v in raw:
        if v is None:
            fixed.append(None)
            continue
        try:
            fixed.append(v.decode("utf-8"))
        except UnicodeDecodeError:
            fixed.append(v.decode("utf-8", errors="replace"))
            bad += 1
    cols = list(batch.columns)
    cols[col] = pa.array(fixed, pa.string())
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names), bad


COUNT_KEYS = ("read", "used", "quarantined", "null_text", "empty_text", "null_id", "replaced_bytes")


def scan_reference_piece(piece: Piece, index: Any, text_field: str, id_field: str,
                         batch_size: int) -> tuple[pa.Table, dict[str, int]]:
    """Scan one piece of a Parquet/JSONL reference file: (best matches, row counts).

    Rows with a null or blank text or a null id are quarantined (counted, not scanned: they
    cannot match); rows whose bytes are not valid UTF-8 are kept with U+FFFD replacements
    and counted apart. Runs in this process (executor=local) or in a Ray task (executor=ray).
    """
    counts = dict.fromkeys(COUNT_KEYS, 0)
    parts = [MATCH_SCHEMA.empty_table()]
    fmt = "jsonl" if piece.format == "json" else piece.format
    try:
        for b in read_piece(piece, [text_field, id_field], batch_size):
            b, fixed = repair_utf8(b)
            counts["replaced_bytes"] += fixed
            text, ids = b.column(0), b.column(1)
            if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
                    or pa.types.is_null(text.type)):
                raise InputError(f"{piece.path}: column '{text_field}' (reference.text_field) "
                                 f"holds {text.type}, expected text")
            null = np.asarray(text.is_null())
            blank = np.asarray(pc.fill_null(
                pc.equal(pc.utf8_trim_whitespace(text.cast(pa.string())), ""), False))
            null_id = np.asarray(ids.is_null()) & ~null & ~blank
            bad = null | blank | null_id
            counts["read"] += len(b)
            counts["null_text"] += int(null.sum())
            counts["empty_text"] += int(blank.sum())
            counts["null_id"] += int(null_id.sum())
            counts["quarantined"] += int(bad.sum())
            counts["used"] += int((~bad).sum())
            if not bad.all():
                parts.append(scan_batch(index, b.filter(pa.array(~bad)) if bad.any() else b))
    except MissingColumn as exc:
        key = "text_field" if exc.column == text_field else "id_field"
        raise InputError(f"{exc.path}: column '{exc.column}' (reference.{key}) not found; columns "
                         f"are: {', '.join(exc.available[:12])}; set reference.{key}=<column>") from None
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(piece.path, fmt, exc) from None
    return pa.concat_tables(parts), counts


def reference_matches(index: Any, files: list[str], fmt: str, ref: Any, counts: dict[str, Any],
                      executor: str, num_workers: int | None, batch_size: int,
                      piece_bytes: int):
    """Match batches of Parquet/JSONL references, piece by piece (pieces.py): in this process,
    or one Ray Data task per piece (each worker reads its own piece, once). Counts add up in
    `counts` as pieces finish."""
    for key in COUNT_KEYS:
        counts.setdefault(key, 0)
    pieces = []
    for f in files:  # Parquet footers are read here, on the driver
        try:
            pieces += plan_pieces([f], fmt, piece_bytes)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(f, fmt, exc) from None
    kwargs = {"text_field": ref.text_field, "id_field": ref.id_field, "batch_size": batch_size}
    if executor == "ray":
        from aligncultura.runner import init_ray

        init_ray(num_workers)
        done = map_pieces_ray(scan_reference_piece, pieces, index, num_workers, **kwargs)
    else:
        done = (scan_reference_piece(p, index, **kwargs) for p in pieces)
    try:
        for matches, got in done:
            for k, v in got.items():
                counts[k] = counts.get(k, 0) + v
            yield matches
    except PieceError as exc:  # the worker's one-line InputError
        raise InputError(str(exc)) from None


def _fingerprint_block(batch: pa.Table, dedup_cfg: Any) -> pa.Table:
    """Ray Data map function: fingerprints of one block of texts, keyed by row position."""
    from aligncultura.leakage.clusters import fingerprint_rows

    fp = fingerprint_rows(batch.column("text"), dedup_cfg)
    cols: dict[str, Any] = {"pos": batch.column("pos")}
    for k, v in fp.items():
        cols[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]) \
            if v.ndim == 2 else pa.array(v)
    return pa.table(cols)


def ray_fingerprints(texts: pa.ChunkedArray | pa.Array, dedup_cfg: Any, num_workers: int | None,
                     batch_size: int) -> dict[str, np.ndarray]:
    """`fingerprint_rows` over the texts on Ray Data (blocks of `batch_size` rows), put back
    in row order on the driver."""
    import ray

    from aligncultura.runner import init_ray

    init_ray(num_workers)
    n = len(texts)
    with cpu_limit(num_workers):
        table = pa.table({"pos": pa.array(np.arange(n, dtype=np.int64)), "text": texts})
        ds = ray.data.from_arrow(table).repartition(max(1, -(-n // batch_size)))
        out = ds.map_batches(_fingerprint_block, fn_kwargs={"dedup_cfg": dedup_cfg},
                             batch_format="pyarrow", batch_size=batch_size, num_cpus=1)
        parts = list(out.iter_batches(batch_format="pyarrow", batch_size=None))
    got = pa.concat_tables(parts).combine_chunks()
    pos = got.column("pos").to_numpy()
    if len(pos) != n or not np.array_equal(np.sort(pos), np.arange(n)):
        raise RuntimeError(f"Ray fingerprinting returned {len(pos)} rows for {n} texts")
    order = np.argsort(pos, kind="stable")
    result: dict[str, np.ndarray] = {}
    for k in got.column_names[1:]:
        col = got.column(k).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            arr = col.flatten().to_numpy().reshape(len(col), col.type.list_size)
        else:
            arr = col.to_numpy()
        result[k] = arr[order]
    return result


def csv_matches(index, files: list[str], ref: Any, counts: dict[str, Any],
                quarantine: list[dict[str, Any]], batch_size: int):
    """CSV references: one file at a time through the data contract, scanned on the driver."""
    cfg = index.config
    for f in files:
        got = read_side(replace(ref_input(ref), path=f), "reference")
        counts["read"] += got.read
        counts["used"] += got.used
        counts["quarantined"] += len(got.quarantine)
        counts["not_selected"] = counts.get("not_selected", 0) + got.used - got.table.num_rows
        quarantine += got.quarantine
        t = got.table
        for start in range(0, t.num_rows, batch_size):
            b = t.slice(start, batch_size)
            yield scan_batch(index, pa.table({cfg.text_column: b["question"],
                                              cfg.id_column: b["row_id"]}))


def scan_references(index, ref: Any, executor: str, num_workers: int | None,
                    batch_size: int, piece_bytes: int = PIECE_BYTES) -> tuple[pa.Table, dict[str, Any]]:
    """Scan every reference file past the eval index; (per-eval result, reference accounting)."""
    groups = reference_files(ref)
    counts: dict[str, Any] = {"files": sum(len(v) for v in groups.values()), "read": 0, "used": 0,
                              "quarantined": 0}
    quarantine: list[dict[str, Any]] = []
    parts: list[Any] = []
    for fmt in ("parquet", "jsonl"):
        if groups[fmt]:
            parts.append(reference_matches(index, groups[fmt], fmt, ref, counts, executor,
                                           num_workers, batch_size, piece_bytes))
    parts.append(csv_matches(index, groups["csv"], ref, counts, quarantine, batch_size))
    result = best_matches(index, (m for part in parts for m in part))
    counts["scanned"] = counts["used"] - counts.get("not_selected", 0)
    counts["quarantine"] = quarantine
    return result, counts


def ref_input(ref: Any) -> InputConfig:
    """The data-contract view of the reference config (for CSV files)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(ref, resolve=True) if not isinstance(ref, dict) else dict(ref)
    data.pop("paths", None)
    return InputConfig(**data)


# ----------------------------------------------------------------------------- summaries


def rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson_ci(k, n)
    return {"flagged": k, "scored": n, "rate": k / n if n else None,
            "ci95": [lo, hi] if n else None}


def leakage_summary(table: pa.Table) -> dict[str, Any]:
    """Flagged share of scored (status ok) eval rows, overall, per method and per subdomain."""
    ok = np.asarray(table["status"].to_pylist(), dtype=object) == "ok"
    flagged = np.asarray(table["flagged"].to_pylist(), dtype=bool) & ok
    out = {"overall": rate(int(flagged.sum()), int(ok.sum())), "unscored": int((~ok).sum())}
    out["by_method"] = {}
    for m in METHODS:
        hit = np.asarray(table[f"{m}_ref_id"].is_valid()) & ok
        out["by_method"][m] = rate(int(hit.sum()), int(ok.sum()))
    subs = np.asarray([s or "unlabelled" for s in table["subdomain"].to_pylist()], dtype=object)
    out["by_subdomain"] = {s: rate(int((flagged & (subs == s)).sum()), int((ok & (subs == s)).sum()))
                           for s in sorted(set(subs[ok].tolist()))}
    return out


def without_leaked(judgments: pa.Table, row_meta: dict | None, report: str, **kwargs) -> dict:
    """The benchmark's metrics on the judgments of rows a leakage.parquet did not flag.

    `report` is jobs.leakage's leakage.parquet for the same eval ids; kwargs go to
    `compute_metrics`. Returns its metrics plus `excluded_rows` / `excluded_judgments`.
    """
    import pyarrow.parquet as pq

    from aligncultura.metrics import compute_metrics

    path = Path(os.path.expanduser(report))
    if not path.exists():
        raise InputError(f"bench.leakage_report: {path} does not exist; give a leakage.parquet "
                         "written by jobs.leakage")
    try:
        t = pq.read_table(path, columns=["row_id", "flagged"])
    except (pa.ArrowException, OSError, KeyError) as exc:
        raise InputError(f"bench.leakage_report: {path} is not a leakage.parquet with row_id and "
                         f"flagged columns ({str(exc).splitlines()[0][:120]})") from None
    leaked = {r for r, f in zip(t["row_id"].to_pylist(), t["flagged"].to_pylist(), strict=True) if f}
    rows = judgments["row_id"].to_pylist()
    keep = pa.array([r not in leaked for r in rows])
    kept = judgments.filter(keep)
    excluded = sorted(leaked & set(rows))
    out = compute_metrics(kept, row_meta, **kwargs) if kept.num_rows else {}
    out.update(report=str(path), excluded_rows=len(excluded),
               excluded_judgments=judgments.num_rows - kept.num_rows, excluded_ids=excluded[:100])
    return out
