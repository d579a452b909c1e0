"""The request contract: what every stage sends to an engine and what comes back.

Pure Arrow and JSON (no vLLM, Ray or W&B), so stages, the row cache and the engines all read
it without importing an engine.

A *request table* (`REQUEST_SCHEMA`) has one row per chat request:
- identity (`IDENTITY`): ``request_id`` (unique in its table, opaque: never parsed), ``row_id``
  (the dataset row or builder prompt it is about), ``task`` (``generate``, ``judge`` or a
  builder step), ``seed_index`` (generation: which of ``bench.seeds``), ``sample_index``
  (generation: the index of the request's first sample, ``seed_index * n``; judging: the
  judged sample), ``criterion`` and ``order`` (judging);
- ``messages`` (JSON list of ``{"role", "content"}``) and ``sampling`` (JSON of sampling
  settings, optionally with ``structured``: ``{"json": schema}``, ``{"choice": [...]}`` or
  ``{"regex": "..."}``);
- ``key``: the row cache's content key (`request_key`), null when there is no cache.

An engine turns it into a *completion table* (`COMPLETION_SCHEMA`): the request's identity
columns copied through, then one row per returned sample (``output_index``) with text,
reasoning trace, finish reason, token counts, latency and cost. `PAYLOAD` is the part that
depends on the request's content only: what the row cache stores.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pyarrow as pa

IDENTITY = pa.schema([
    ("request_id", pa.string()),
    ("row_id", pa.string()),
    ("task", pa.string()),
    ("seed_index", pa.int32()),
    ("sample_index", pa.int32()),
    ("criterion", pa.string()),
    ("order", pa.string()),
])

REQUEST_SCHEMA = pa.schema([*IDENTITY, ("messages", pa.string()), ("sampling", pa.string()),
                            ("key", pa.string())])

# what an engine returned for one sample, shared by completions and generation rows
_OUTPUT = [
    ("reasoning", pa.string()),  # the <think> trace, split off the text
    ("finish_reason", pa.string()),
    ("input_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("latency_s", pa.float64()),
    ("status", pa.string()),  # one of STATUSES
    ("error", pa.string()),
]

# ok; failed (engine error: retried on the next run); refused (an API's content policy refused
# the request); truncated_reasoning (the output ended inside its <think> block: the partial trace
# is in `reasoning`, there is no response to judge)
STATUSES = ("ok", "failed", "refused", "truncated_reasoning")
FINISHED = ("ok", "refused", "truncated_reasoning")  # outcomes a rerun would reproduce: cached

PAYLOAD = pa.schema([
    ("output_index", pa.int32()),  # which of the request's `n` samples
    ("text", pa.string()),
    *_OUTPUT,
    ("engine_start_s", pa.float64()),
    ("cpu_s", pa.float64()),  # engine process CPU seconds for this batch, spread over rows
    ("peak_rss_mb", pa.float64()),
    ("replica", pa.string()),  # the engine replica that computed the row: "<node>/<pid>"
    ("busy_s", pa.float64()),  # that replica's wall seconds for the batch, spread over rows
    ("key", pa.string()),
    ("cached", pa.bool_()),  # served from the row cache, not computed in this run
    # requests whose sampling sets `logprobs: k`: per generated token, the top-k (plus the
    # sampled) tokens as JSON [[[token, logprob], ...], ...]; null otherwise
    ("logprobs_json", pa.string()),
])

COMPLETION_SCHEMA = pa.schema([*IDENTITY, *PAYLOAD])

# one generated response per row: the generation stage's output (generations.parquet)
GENERATION_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("model", pa.string()),
    ("sample_index", pa.int32()),
    ("prompt", pa.string()),
    ("response", pa.string()),
    *_OUTPUT,
])

_THINK = re.compile(r"<think>(.*?)(</think>|$)", re.S)


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, response): ``<think>...</think>`` traces never stay in the response."""
    reasoning = []
    if "</think>" in text and "<think>" not in text:  # templates that open the tag themselves
        head, _, text = text.partition("</think>")
        reasoning.append(head.strip())
    for m in _THINK.finditer(text):
        reasoning.append(m.group(1).strip())
    response = _THINK.sub("", text).strip()
    return "\n".join(r for r in reasoning if r), response


def read_output(raw: str, opens_think: bool = False) -> dict[str, Any]:
    """A model's raw output -> ``text``, ``reasoning``, ``status`` and ``error``.

    The output is ``truncated_reasoning`` when it ended inside its reasoning block: a ``<think>``
    it opened was never closed, or, for a chat template that opens ``<think>`` itself
    (``model.reasoning_opens_think``), no ``</think>`` came at all. The partial trace is kept in
    ``reasoning``; there is no response (it would be the trace, judged as the answer)."""
    reasoning, text = split_reasoning(raw)
    last_open = raw.rfind("<think>")
    unclosed = raw.find("</think>", last_open) < 0 if last_open >= 0 \
        else opens_think and "</think>" not in raw
    if unclosed:
        trace = raw[last_open + len("<think>"):] if last_open >= 0 else raw
        return {"text": None, "reasoning": trace.strip(), "status": "truncated_reasoning",
                "error": "the output ended inside its <think> block (raise "
                         "model.reasoning_max_tokens)"}
    return {"text": text, "reasoning": reasoning, "status": "ok", "error": None}


def build_messages(system_prompt: str | None, user: str) -> list[dict[str, str]]:
    """null = the chat template's default system prompt; "" = an empty system turn (none)."""
    msgs = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return msgs + [{"role": "user", "content": user}]


def request_key(key_salt: str, messages: str, sampling: str) -> str:
    """The row cache's key: the model part (`engine.cache.salt`) plus the request table's
    `messages` and `sampling` JSON strings (sorted keys)."""
    h = hashlib.sha256()
    for part in (key_salt, messages, sampling):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def request_table(rows: list[dict[str, Any]], key_salt: str | None = None) -> pa.Table:
    """Request dicts -> REQUEST_SCHEMA. Each dict has ``request_id``, ``messages`` (list) and
    ``sampling`` (dict), and any identity column it knows (the rest are null). With a
    `key_salt` each request also gets its row-cache key."""
    out = []
    for r in rows:
        m, s = json.dumps(r["messages"]), json.dumps(r["sampling"], sort_keys=True)
        out.append({**{name: r.get(name) for name in IDENTITY.names}, "messages": m,
                    "sampling": s,
                    "key": request_key(key_salt, m, s) if key_salt is not None else None})
    return pa.Table.from_pylist(out, schema=REQUEST_SCHEMA)


def identities(requests: pa.Table) -> list[dict[str, Any]]:
    """Each request's identity columns as a dict (absent columns are null)."""
    n = requests.num_rows
    cols = {name: (requests.column(name).to_pylist() if name in requests.column_names
                   else [None] * n) for name in IDENTITY.names}
    return [{name: cols[name][i] for name in IDENTITY.names} for i in range(n)]


def failed_completions(requests: pa.Table, error: str) -> pa.Table:
    """One failed completion per request, with the error as its reason."""
    keys = requests.column("key").to_pylist() if "key" in requests.column_names \
        else [None] * requests.num_rows
    return pa.Table.from_pylist(
        [{**ident, "output_index": 0, "finish_reason": "error", "input_tokens": 0,
          "output_tokens": 0, "status": "failed", "error": error, "key": key, "cached": False}
         for ident, key in zip(identities(requests), keys, strict=True)],
        schema=COMPLETION_SCHEMA)
