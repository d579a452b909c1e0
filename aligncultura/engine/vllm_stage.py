"""The only module that imports vLLM: engine loading, chat, sampling, structured outputs.

`LLMStage` holds one engine and turns a request table (`engine.requests.REQUEST_SCHEMA`) into
a completion table (`engine.requests.COMPLETION_SCHEMA`): per returned sample its text, the
reasoning trace split off, finish reason, token counts, latency and cost, with the request's
identity columns copied through. Only `engine.runner` imports this module.

Why a Ray Data ``map_batches`` actor pool and not ``ray.data.llm``'s processor: the processor
builds its own engine stage per call and, on CPU, needs a placement-group workaround and
imports ``ray.serve`` unless told not to; we also need per-row sampling and structured
outputs from one engine, the chat template's ``system_prompt`` semantics, reasoning traces
split off, and the same callable to run in-process for tests and debugging. A small callable
class (load once in ``__init__``, transform a batch in ``__call__``) does all of that with the
engine settings passed straight through (``engine_kwargs``), and `engine/runner.py` places it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any

import pyarrow as pa

from aligncultura.engine.progress import EngineTicks
from aligncultura.engine.requests import COMPLETION_SCHEMA, identities, read_output

# never phone home: no hub downloads (models are provisioned or read from the local HF cache
# only) and no usage statistics. vLLM's CPU settings (in-process engine core, KV cache size) are
# engine settings: they live in conf/engine/cpu.yaml's `env`, applied after these.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def sampling_params(spec: dict[str, Any]):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    spec = {k: v for k, v in spec.items() if v is not None}
    structured = spec.pop("structured", None)
    if structured:
        allowed = {"json", "choice", "regex", "grammar"}
        unknown = set(structured) - allowed
        if unknown:
            raise ValueError(f"structured output kind {sorted(unknown)} unknown: use {sorted(allowed)}")
        if "json" in structured:  # compact JSON: a small judge cannot run away in whitespace
            structured = {**structured, "disable_any_whitespace": True}
        spec["structured_outputs"] = StructuredOutputsParams(**structured)
    return SamplingParams(**spec)


def apply_env(env: dict[str, str] | None, cpu: bool) -> None:
    """Set the engine's environment before vllm is imported: `OFFLINE_ENV` (on CPU, unless
    already set), then `engine.env`."""
    if cpu:
        for k, v in OFFLINE_ENV.items():
            os.environ.setdefault(k, v)
    for k, v in (env or {}).items():
        os.environ[k] = str(v)


class LLMStage:
    """Holds one vLLM engine; ``__call__`` maps a request batch to completions."""

    def __init__(self, model: dict[str, Any], engine_kwargs: dict[str, Any],
                 chat_template_kwargs: dict[str, Any] | None = None, threads: int | None = None,
                 env: dict[str, str] | None = None, cpu: bool = True, followup: Any = None,
                 opens_think: bool = False, progress: Any = None, log_dir: str | None = None):
        t0 = time.perf_counter()
        from aligncultura.console import logs as runlog

        runlog.engine_log(log_dir)  # a Ray replica: vLLM's and torch's lines to the run dir
        # finished requests reported as they finish: to the driver's progress hub (`progress`,
        # a Ray actor handle) or, in this process, to `self.ticks.sink` (engine/runner.py)
        self.ticks = EngineTicks(progress)
        apply_env(env, cpu)
        if cpu:
            # Ray sets OMP_NUM_THREADS=1 in a 1-CPU actor; vLLM's CPU attention binds its own
            # threads and aborts when the two disagree, so give torch the same count first.
            n = threads or len(os.sched_getaffinity(0)) or 1
            os.environ["OMP_NUM_THREADS"] = str(n)
            import torch

            torch.set_num_threads(n)
        from vllm import LLM

        kwargs = {"disable_log_stats": False, **engine_kwargs}
        if model.get("tokenizer"):
            kwargs.setdefault("tokenizer", model["tokenizer"])
        if model.get("revision"):
            kwargs.setdefault("revision", model["revision"])
        self.lora = None
        if model.get("lora_path"):
            from vllm.lora.request import LoRARequest

            kwargs.setdefault("enable_lora", True)
            self.lora = LoRARequest("adapter", 1, model["lora_path"])
        runlog.capture_loggers()  # in this process (executor=local): vLLM's lines to logs/
        with runlog.quiet():  # and the loading bars it writes to sys.stderr
            self.llm = LLM(model=model["path"], **kwargs)
        self.chat_template_kwargs = chat_template_kwargs or None
        self.followup = followup
        self.opens_think = opens_think
        self.engine_start_s = time.perf_counter() - t0
        self.replica = f"{_node_address()}/{os.getpid()}"

    def _abort_unfinished(self) -> int:
        """Abort what a failed `LLM.chat` left in the engine. `LLM._run_engine` steps until no
        request is unfinished, so a half-processed request left behind by an exception would
        make every later call on this engine spin forever (seen with vLLM 0.32 on CPU)."""
        try:
            engine = self.llm.llm_engine
            left = list(engine.output_processor.request_states)
            if left:
                engine.abort_request(left, internal=True)  # request_states holds internal ids
            return len(left)
        except Exception:  # noqa: BLE001 - best effort; the fallback reports per-row errors
            return -1

    def _chat(self, conversations, params, kind="main"):
        outputs = max((getattr(p, "n", 1) or 1 for p in params), default=1)
        return self.llm.chat(conversations, sampling_params=params,
                             use_tqdm=self.ticks.bar(kind, outputs),
                             lora_request=self.lora, chat_template_kwargs=self.chat_template_kwargs)

    def __call__(self, batch: pa.Table | dict) -> pa.Table:
        return self.process(batch, self.followup)

    def process(self, batch: pa.Table | dict, followup: Any = None) -> pa.Table:
        """Complete a request batch; `followup(completions, {})` may add a second round of
        requests (e.g. judging what was just generated) served by the same engine."""
        with self.ticks.watch(self._generation_tokens):
            out = self._complete(batch)
            if followup is not None:
                more = followup(out)
                if more is not None and more.num_rows:
                    out = pa.concat_tables([out, self._complete(more, "followup")])
        return out

    def _generation_tokens(self) -> int | None:
        """The engine's output tokens so far (its ``vllm:generation_tokens`` counter, kept
        while stats are logged), or None."""
        try:
            for metric in self.llm.get_metrics():
                if metric.name == "vllm:generation_tokens":
                    return int(metric.value)
        except Exception:  # noqa: BLE001 - no metrics: progress counts finished requests only
            return None
        return None

    def _complete(self, batch: pa.Table | dict, kind: str = "main") -> pa.Table:
        if not isinstance(batch, pa.Table):
            batch = pa.table(batch)
        ids = batch.column("request_id").to_pylist()
        idents = identities(batch)
        keys = batch.column("key").to_pylist() if "key" in batch.column_names else [None] * len(ids)
        conversations = [json.loads(m) for m in batch.column("messages").to_pylist()]
        specs = [json.loads(s) for s in batch.column("sampling").to_pylist()]
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        rows: list[dict[str, Any]] = []
        modes = {s.get("mode", "chat") for s in specs}
        if modes != {"chat"}:  # scorer judges: numbers, not text (benchmark/scorers.py)
            return self._scores(idents, keys, conversations, specs, cpu0, t0, kind)
        try:
            outputs = self._chat(conversations, [sampling_params(s) for s in specs], kind)
        except Exception as exc:  # noqa: BLE001 - fall back to one request at a time
            outputs = None
            first_error = f"{type(exc).__name__}: {exc}"[:500]
            left = self._abort_unfinished()
            print(f"warning: an engine batch of {len(ids)} requests failed ({first_error[:200]});"
                  f" aborted {left} unfinished, retrying one request at a time",
                  file=sys.stderr, flush=True)
        wall = time.perf_counter() - t0
        if outputs is None:
            outputs = []
            for conv, spec in zip(conversations, specs, strict=True):
                try:
                    outputs.append(self._chat([conv], [sampling_params(spec)], kind)[0])
                except Exception as exc:  # noqa: BLE001 - this row fails, the batch goes on
                    outputs.append(f"{type(exc).__name__}: {exc}"[:500] or first_error)
        for ident, key, out in zip(idents, keys, outputs, strict=True):
            if isinstance(out, str):
                rows.append({**ident, "output_index": 0, "text": None, "reasoning": None,
                             "finish_reason": "error", "input_tokens": 0, "output_tokens": 0,
                             "latency_s": None, "status": "failed", "error": out, "key": key})
                continue
            latency = _latency(out, wall)
            for i, comp in enumerate(out.outputs):
                rows.append({
                    **ident, "output_index": i, **read_output(comp.text, self.opens_think),
                    "finish_reason": str(comp.finish_reason),
                    "input_tokens": len(out.prompt_token_ids or []),
                    "output_tokens": len(comp.token_ids), "latency_s": latency, "key": key,
                    "logprobs_json": logprobs_json(comp.logprobs),
                })
        return self._finish(rows, cpu0, t0)


    def _finish(self, rows: list[dict[str, Any]], cpu0: float, t0: float) -> pa.Table:
        """The completion table: the batch's CPU and busy time shared over its rows."""
        cpu = time.process_time() - cpu0
        busy = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        n = max(len(rows), 1)
        for r in rows:
            r.update(engine_start_s=self.engine_start_s, cpu_s=cpu / n, peak_rss_mb=rss,
                     cached=False, replica=self.replica, busy_s=busy / n)
        return pa.Table.from_pylist(rows, schema=COMPLETION_SCHEMA)

    def _scores(self, idents, keys, conversations, specs, cpu0, t0, kind="main") -> pa.Table:
        """Scorer requests: `mode=classify` (a pooling model's raw logits per label) or
        `mode=score` (the next-token log-probabilities of `score_tokens` after a plain prompt,
        no chat template). The completion text is the JSON of those numbers."""
        tok = self.llm.get_tokenizer()
        inputs: list[tuple[list[int], list[int]] | str] = []
        for conv, spec in zip(conversations, specs, strict=True):
            try:
                inputs.append(_score_input(tok, conv[-1]["content"], spec))
            except ValueError as exc:
                inputs.append(str(exc))
        todo = [k for k, x in enumerate(inputs) if not isinstance(x, str)]
        results: dict[int, dict[str, Any] | str] = {}
        try:
            results.update(zip(todo, self._score_batch([inputs[k] for k in todo],
                                                       [specs[k] for k in todo], kind), strict=True))
        except Exception as exc:  # noqa: BLE001 - one at a time, so one bad row fails alone
            self._abort_unfinished()
            for k in todo:
                try:
                    results[k] = self._score_batch([inputs[k]], [specs[k]], kind)[0]
                except Exception as one:  # noqa: BLE001
                    results[k] = f"{type(one).__name__}: {one}"[:500] or str(exc)
        wall = time.perf_counter() - t0
        rows = []
        for k, (ident, key) in enumerate(zip(idents, keys, strict=True)):
            got = results.get(k, inputs[k])
            if isinstance(got, str):
                rows.append({**ident, "output_index": 0, "text": None, "reasoning": None,
                             "finish_reason": "error", "input_tokens": 0, "output_tokens": 0,
                             "latency_s": None, "status": "failed", "error": got, "key": key})
                continue
            rows.append({**ident, "output_index": 0, "text": json.dumps(got), "reasoning": None,
                         "finish_reason": "score", "input_tokens": len(inputs[k][0]),
                         "output_tokens": 0, "latency_s": wall, "status": "ok", "error": None,
                         "key": key})
        return self._finish(rows, cpu0, t0)

    def _score_batch(self, inputs: list[tuple[list[int], list[int]]],
                     specs: list[dict[str, Any]], kind: str = "main") -> list[dict[str, Any]]:
        from vllm import PoolingParams, SamplingParams

        prompts = [{"prompt_token_ids": ids} for ids, _ in inputs]
        if specs and specs[0].get("mode") == "classify":
            outs = self.llm.classify(prompts, use_tqdm=self.ticks.bar(kind),
                                     pooling_params=PoolingParams(use_activation=False))
            labels = getattr(self.llm.llm_engine.model_config.hf_config, "id2label", None) or {}
            out = []
            for o in outs:
                logits = [float(x) for x in o.outputs.probs]
                out.append({"logits": logits,
                            "labels": [labels.get(i, f"label_{i}") for i in range(len(logits))]})
            return out
        params = [SamplingParams(max_tokens=1, temperature=0.0, seed=spec.get("seed"),
                                 logprob_token_ids=want) for (_, want), spec in
                  zip(inputs, specs, strict=True)]
        outs = self.llm.generate(prompts, params, use_tqdm=self.ticks.bar(kind),
                                 lora_request=self.lora)
        result = []
        for o, (_, want) in zip(outs, inputs, strict=True):
            step = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
            got = [step.get(i) for i in want]
            result.append({name: (lp.logprob if lp is not None else None)
                           for name, lp in zip(("yes", "no"), got, strict=True)})
        return result


def _score_input(tok: Any, text: str, spec: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(prompt token ids, ids of the score tokens) for a scorer request."""
    ids = tok.encode(text, add_special_tokens=True)
    if spec.get("mode") == "classify":
        limit = spec.get("max_input_tokens")
        return (ids[:int(limit)] if limit else ids), []
    want = []
    for word in spec["score_tokens"]:
        one = tok.encode(word, add_special_tokens=False)
        if len(one) != 1:
            raise ValueError(f"score token {word!r} is {len(one)} tokens for this tokenizer; "
                             "give single-token score_tokens")
        want.append(one[0])
    return ids, want


def _node_address() -> str:
    """The Ray node this replica runs on (its address), or this host outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - outside Ray: the host name says enough
        pass
    import socket

    return socket.gethostname()


def logprobs_json(logprobs: Any) -> str | None:
    """vLLM's per-token ``{token_id: Logprob}`` maps as JSON, each step ordered by rank."""
    if not logprobs:
        return None
    steps = []
    for step in logprobs:
        items = sorted(step.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)
        steps.append([[lp.decoded_token or "", float(lp.logprob)] for lp in items])
    return json.dumps(steps)


def _latency(out: Any, wall: float) -> float:
    m = getattr(out, "metrics", None)
    queued = getattr(m, "queued_ts", 0.0) or getattr(m, "scheduled_ts", 0.0)
    last = getattr(m, "last_token_ts", 0.0)
    if m is not None and last and queued and last >= queued:
        return float(last - queued)
    return float(wall)
