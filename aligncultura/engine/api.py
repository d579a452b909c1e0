"""Completions from an OpenAI-compatible endpoint (``model.source=api``) instead of vLLM in-process.

`complete_api` takes the same request table as `engine.LLMStage` and yields the same
`COMPLETION_SCHEMA` tables, so jobs do not know which one ran. It POSTs each request to
``{model.api.base_url}/chat/completions`` with the standard library (`urllib.request`, no new
dependency) from a thread pool of ``model.api.concurrency`` workers, and yields every
``engine.batch_size`` finished requests as one table, in completion order.

Sampling keys map as follows. ``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``n`` (and
``stop``, ``presence_penalty``, ``frequency_penalty``) are standard; ``logprobs: k`` becomes
``logprobs: true, top_logprobs: k`` and fills ``logprobs_json`` as `LLMStage` does (the
sampled token plus the top k, by rank); every other key (e.g.
``repetition_penalty``, ``top_k``) is a vLLM extension sent only to servers that are not
api.openai.com, which rejects unknown parameters (there it is dropped with one warning).
Structured outputs: ``{"json": schema}`` becomes ``response_format`` (json_schema, strict),
which vLLM and OpenAI both accept; ``{"choice": [...]}``, ``{"regex": "..."}`` and
``{"grammar": "..."}`` become vLLM's ``structured_outputs`` field (vLLM >= 0.11; the old
``guided_choice``/``guided_regex`` fields are gone) and fail the row on api.openai.com.
``model.chat_template_kwargs`` (e.g. ``enable_thinking``) is forwarded to vLLM servers too.

Retries: connection errors, timeouts, HTTP 429 and 5xx are retried ``max_retries`` times with
exponential backoff and jitter (``Retry-After`` honoured); other 4xx fail at once. A request
that still fails becomes a ``status=failed`` row with the error; the call never raises for it.
``timeout_s`` is the socket timeout of one attempt (a non-streaming response sends nothing
until it is complete, so in practice the time one attempt may take).

The API key is read from the environment variable *named* by ``model.api.api_key_env`` and only
ever placed in the Authorization header: it is never logged, never put into an error (server
messages are scrubbed of it) and never returned. ``engine_start_s`` is 0; ``cpu_s`` and
``peak_rss_mb`` measure this client process, not the server.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import re
import resource
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

import pyarrow as pa

from aligncultura.config import plain_dict
from aligncultura.engine.models import ModelError, ResolvedModel
from aligncultura.engine.requests import COMPLETION_SCHEMA, IDENTITY, read_output

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0  # first retry waits ~1 s (x0.5-1.5 jitter), then 2, 4, ... s
BACKOFF_CAP_S = 60.0
STANDARD_KEYS = {"temperature", "top_p", "max_tokens", "seed", "n", "stop",
                 "presence_penalty", "frequency_penalty"}
STRUCTURED_KINDS = ("json", "choice", "regex", "grammar")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# how OpenAI-compatible servers word a request refused by their content policy (HTTP 400)
POLICY = re.compile(r"content[ _-]?(policy|filter|management)|safety system", re.I)
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                  TimeoutError)


class RequestFailed(Exception):
    """One request's final failure; ``retryable`` says whether another attempt could help."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None,
                 refused: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.refused = refused  # the API's content policy refused it: a harmless, unhelpful answer


def is_openai(base_url: str) -> bool:
    return (urllib.parse.urlparse(base_url).hostname or "") == "api.openai.com"


def api_key(api_key_env: str | None, key: str = "model.api.api_key_env") -> str | None:
    """The key from the variable named by ``api_key_env``; None when no variable is named."""
    if not api_key_env:
        return None
    value = os.environ.get(api_key_env)
    if not value:
        raise ModelError(f"{key}={api_key_env}: that environment variable is not set; export it "
                         f"or set {key}=null for an endpoint without authentication")
    return value


def request_body(messages: list[dict], spec: dict[str, Any], model_name: str, openai: bool,
                 chat_template_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chat-completions JSON for one request (see the module docstring for the mapping)."""
    spec = dict(spec)
    structured = spec.pop("structured", None) or {}
    body: dict[str, Any] = {"model": model_name, "messages": messages}
    for k, v in spec.items():
        if v is None:
            continue
        if k == "logprobs":
            body["logprobs"], body["top_logprobs"] = bool(v), int(v)
        elif k in STANDARD_KEYS:
            # OpenAI deprecated max_tokens (o-series reject it); vLLM accepts both names
            body["max_completion_tokens" if openai and k == "max_tokens" else k] = v
        elif not openai:
            body[k] = v
        else:
            _warn_once(f"sampling.{k} is not an OpenAI parameter: not sent to api.openai.com")
    unknown = set(structured) - set(STRUCTURED_KINDS)
    if unknown or len(structured) > 1:
        raise RequestFailed(f"structured output {sorted(structured)}: use exactly one of "
                            f"{', '.join(STRUCTURED_KINDS)}", retryable=False)
    if "json" in structured:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "judgment", "schema": structured["json"], "strict": True}}
    elif structured:
        if openai:
            raise RequestFailed(f"structured output {next(iter(structured))!r} needs a vLLM "
                                f"server; api.openai.com supports only 'json'", retryable=False)
        body["structured_outputs"] = dict(structured)
    if chat_template_kwargs and not openai:
        body["chat_template_kwargs"] = chat_template_kwargs
    return body


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


class Client:
    """POSTs chat requests with retries; the key is kept only to send it and to scrub it."""

    def __init__(self, base_url: str, key: str | None, timeout_s: float, max_retries: int):
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ModelError(f"model.api.base_url={base_url!r}: use http(s)://host[:port]/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.timeout_s = float(timeout_s)
        self.max_retries = max(0, int(max_retries))
        self._key = key
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        # a proxy from the environment must not intercept a loopback server
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def post(self, body: dict[str, Any], request_id: str) -> dict[str, Any]:
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(data)
            except RequestFailed as exc:
                if not exc.retryable or attempt == self.max_retries:
                    tries = f" (after {attempt + 1} attempts)" if exc.retryable else ""
                    raise RequestFailed(self.scrub(f"{exc}{tries}"), exc.retryable,
                                        refused=exc.refused) from None
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * random.uniform(0.5, 1.5)
                delay = max(delay, min(exc.retry_after or 0.0, BACKOFF_CAP_S))
                log.warning("request %s: %s; retry %d/%d in %.1fs", request_id,
                            self.scrub(str(exc)), attempt + 1, self.max_retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(self, data: bytes) -> dict[str, Any]:
        req = urllib.request.Request(self.url, data=data, headers=self._headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise RequestFailed(f"HTTP {exc.code} from {self.url}: {detail}",
                                retryable=exc.code == 429 or exc.code >= 500,
                                retry_after=retry_after,
                                refused=exc.code == 400 and bool(POLICY.search(detail))) from None
        except NETWORK_ERRORS as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RequestFailed(f"cannot reach {self.url}: {type(exc).__name__}: {reason} "
                                f"(timeout {self.timeout_s:g}s)", retryable=True) from None
        try:
            out = json.loads(raw)
        except ValueError:
            raise RequestFailed(f"{self.url} returned non-JSON: {raw[:200]!r}", False) from None
        if not isinstance(out, dict) or not out.get("choices"):
            raise RequestFailed(f"{self.url} returned no choices: {str(out)[:300]}", False)
        return out


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status code alone still says enough
        return str(exc.reason)
    try:
        err = json.loads(body).get("error", body)
        body = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        pass
    return " ".join(body.split())[:400] or str(exc.reason)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


def response_rows(ident: dict[str, Any], key: str | None, out: dict[str, Any],
                  latency: float, opens_think: bool = False) -> list[dict[str, Any]]:
    """One row per choice (`ident`: the request's identity columns); the response's total
    output tokens are spread over the choices. A choice the server's content filter stopped
    (``finish_reason: content_filter``) is ``refused``."""
    usage = out.get("usage") or {}
    choices = sorted(out["choices"], key=lambda c: c.get("index", 0))
    total_out = int(usage.get("completion_tokens") or 0)
    share, extra = divmod(total_out, len(choices))
    rows = []
    for i, choice in enumerate(choices):
        msg = choice.get("message") or {}
        read = read_output(msg.get("content") or "", opens_think)
        server_trace = msg.get("reasoning_content") or msg.get("reasoning") or ""
        read["reasoning"] = "\n".join(r for r in (server_trace, read["reasoning"]) if r)
        if choice.get("finish_reason") == "content_filter":
            read.update(status="refused", error="refused by the API's content filter")
        rows.append({
            **ident, "output_index": i, **read,
            "finish_reason": str(choice.get("finish_reason")),
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": share + (1 if i < extra else 0), "latency_s": latency,
            "key": key, "cached": False, "logprobs_json": _logprobs_json(choice.get("logprobs")),
        })
    return rows


def _logprobs_json(logprobs: dict | None) -> str | None:
    """OpenAI's per-token ``{token, logprob, top_logprobs}`` as vllm_stage.logprobs_json writes it."""
    steps = []
    for tok in (logprobs or {}).get("content") or []:
        top = {t["token"]: float(t["logprob"]) for t in tok.get("top_logprobs") or []}
        top.setdefault(tok["token"], float(tok["logprob"]))
        steps.append(sorted(([t, lp] for t, lp in top.items()), key=lambda x: -x[1]))
    return json.dumps(steps) if steps else None


def _failed_row(ident: dict[str, Any], key: str | None, error: str, latency: float,
                status: str = "failed") -> dict[str, Any]:
    return {**ident, "output_index": 0, "text": None, "reasoning": None,
            "finish_reason": "error", "input_tokens": 0, "output_tokens": 0,
            "latency_s": latency, "status": status, "error": error[:1000], "key": key,
            "cached": False}


def _run_one(client: Client, row: dict[str, Any], model_name: str, openai: bool,
             chat_template_kwargs: dict[str, Any] | None,
             opens_think: bool = False) -> list[dict[str, Any]]:
    """Never raises: a request that cannot be completed is one failed row (``refused`` when
    the API's content policy refused it)."""
    rid, key = row["request_id"], row.get("key")
    ident = {name: row.get(name) for name in IDENTITY.names}
    t0 = time.perf_counter()
    try:
        body = request_body(json.loads(row["messages"]), json.loads(row["sampling"]),
                            model_name, openai, chat_template_kwargs)
        out = client.post(body, rid)
        # latency covers every attempt and backoff: what a caller waited for this request
        return response_rows(ident, key, out, time.perf_counter() - t0, opens_think)
    except RequestFailed as exc:
        if exc.refused:
            return [_failed_row(ident, key, client.scrub(str(exc)), time.perf_counter() - t0,
                                status="refused")]
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a malformed row or response fails that row only
        error = f"{type(exc).__name__}: {exc}"
    error = client.scrub(error)
    log.warning("request %s failed: %s", rid, error)
    return [_failed_row(ident, key, error, time.perf_counter() - t0)]



def complete_api(requests: pa.Table, model: ResolvedModel, model_cfg: Any,
                 engine_cfg: Any) -> Iterator[pa.Table]:
    """Yield COMPLETION_SCHEMA tables of ``engine_cfg.batch_size`` finished requests each."""
    api = model_cfg.api
    if not api.base_url:
        raise ModelError("model.api.base_url is required for model.source=api")
    client = Client(api.base_url, api_key(api.api_key_env), api.timeout_s, api.max_retries)
    openai = is_openai(api.base_url)
    template_kwargs = plain_dict(getattr(model_cfg, "chat_template_kwargs", None)) or None
    batch_size = max(1, int(engine_cfg.batch_size))
    pool = ThreadPoolExecutor(max_workers=max(1, int(api.concurrency)),
                              thread_name_prefix="aligncultura-api")
    try:
        opens_think = bool(getattr(model_cfg, "reasoning_opens_think", False))
        pending = {pool.submit(_run_one, client, row, model.path, openai, template_kwargs,
                               opens_think) for row in requests.to_pylist()}
        rows: list[dict[str, Any]] = []
        n_done, cpu0 = 0, time.process_time()
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                rows.extend(fut.result())
                n_done += 1
                if n_done == batch_size:
                    cpu1 = time.process_time()
                    yield _table(rows, cpu1 - cpu0)
                    rows, n_done, cpu0 = [], 0, cpu1
        if rows:
            yield _table(rows, time.process_time() - cpu0)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a caller that stops early


def _table(rows: list[dict[str, Any]], cpu: float) -> pa.Table:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for r in rows:
        r.update(engine_start_s=0.0, cpu_s=cpu / max(len(rows), 1), peak_rss_mb=rss)
    return pa.Table.from_pylist(rows, schema=COMPLETION_SCHEMA)
