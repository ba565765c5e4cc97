"""The local OpenAI-compatible server and the causal-LM chat backend (a tiny real Qwen2ForCausalLM)."""
from __future__ import annotations

import base64
import json
import shutil

import httpx
import numpy as np
import pytest
from api_fixtures import (  # noqa: F401 — fixtures
    API_KEY,
    API_KEY_ENV,
    CHAT_MODEL,
    EMBED_MODEL,
    RERANK_MODEL,
    api_config,
    api_server,
    chat_backend,
    hidden_state_backends,
    tiny_chat_dir,
)

from leverplus.api import OpenAICompatClient
from leverplus.serving.chat_backend import CausalLMChatBackend, ChatBackend, generation_config_from_settings

MESSAGES = [{"role": "user", "content": "Score the translation from 0 to 100."}]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _text(backend, settings, messages=MESSAGES):
    items = list(backend.stream(messages, settings))
    assert isinstance(items[-1], dict) and all(isinstance(x, str) for x in items[:-1])
    return "".join(items[:-1]), items[-1]


def test_routes_errors_and_auth(api_server):
    r = httpx.get(api_server.url + "/models", headers=AUTH)
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == [CHAT_MODEL, EMBED_MODEL, RERANK_MODEL]
    r = httpx.get(api_server.url + "/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(api_server.url + "/chat/completions", content=b"{not json", headers=AUTH)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "code"}
    r = httpx.post(api_server.url + "/completions", json={"model": CHAT_MODEL}, headers=AUTH)
    assert r.status_code == 404
    r = httpx.post(api_server.url + "/chat/completions", json={"model": CHAT_MODEL, "messages": MESSAGES,
                                                                "temperature": -1}, headers=AUTH)
    assert r.status_code == 400 and "temperature must be >= 0" in r.json()["error"]["message"]
    assert all("Authorization" not in json.dumps(rec.body or {}) for rec in api_server.requests)
    assert [rec.status for rec in api_server.requests] == [200, 401, 400, 404, 400]


def test_sse_wire_format(api_server):
    body = {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 6, "stream": True}
    for include_usage in (True, False):
        lines = []
        with httpx.stream("POST", api_server.url + "/chat/completions", headers=AUTH,
                          json={**body, "stream_options": {"include_usage": include_usage}}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [ln for ln in r.iter_lines() if ln]
        assert all(ln.startswith("data: ") for ln in lines) and lines[-1] == "data: [DONE]"
        chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        if include_usage:
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
            chunks = chunks[:-1]
        assert all("usage" not in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert all(c["choices"][0]["delta"]["content"] for c in chunks[1:-1])  # no empty content deltas


def test_checkpoint_generation_config_cannot_change_decoding(chat_backend, tiny_chat_dir, tmp_path):
    shaky = tmp_path / "shaky"
    shutil.copytree(tiny_chat_dir, shaky)
    gen = json.loads((shaky / "generation_config.json").read_text())
    gen.update(do_sample=True, temperature=0.7, top_k=3, top_p=0.5, repetition_penalty=2.0, max_new_tokens=2,
               no_repeat_ngram_size=1, min_new_tokens=5)
    (shaky / "generation_config.json").write_text(json.dumps(gen))
    other = CausalLMChatBackend(str(shaky), model_name="shaky")
    settings = {"max_tokens": 10, "temperature": 0}
    assert _text(other, settings) == _text(chat_backend, settings)
    assert _text(chat_backend, settings)[1]["completion_tokens"] == 10


def test_greedy_when_temperature_zero_or_absent_and_seeded_sampling(chat_backend):
    greedy = _text(chat_backend, {"max_tokens": 10})[0]
    assert _text(chat_backend, {"max_tokens": 10, "temperature": 0, "top_p": 0.3})[0] == greedy
    s1 = _text(chat_backend, {"max_tokens": 10, "temperature": 1.5, "seed": 11})[0]
    s2 = _text(chat_backend, {"max_tokens": 10, "temperature": 1.5, "seed": 11})[0]
    s3 = _text(chat_backend, {"max_tokens": 10, "temperature": 1.5, "seed": 12})[0]
    assert s1 == s2 and len({s1, s3, greedy}) > 1
    cfg, seed, stop = generation_config_from_settings({"temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": "\n"},
                                                      eos_token_id=1, pad_token_id=0)
    assert (cfg.do_sample, cfg.temperature, cfg.top_p, seed, stop) == (True, 0.7, 0.9, 3, ["\n"])
    cfg, _, _ = generation_config_from_settings({}, eos_token_id=1, pad_token_id=0)
    assert (cfg.do_sample, cfg.max_new_tokens, cfg.repetition_penalty, cfg.no_repeat_ngram_size) == (False, 16, 1.0, 0)


def test_stop_string_truncates_streamed_and_plain(api_server, chat_backend):
    full, _ = _text(chat_backend, {"max_tokens": 16})
    stop = full[5:8]
    assert len(stop) == 3 and full.find(stop) >= 3
    want = full[: full.find(stop)]
    client = OpenAICompatClient(api_config(api_server))
    streamed = client.chat_stream(MESSAGES, settings={"max_tokens": 16, "stop": [stop]})
    plain = client.chat(MESSAGES, settings={"max_tokens": 16, "stop": stop})
    assert streamed.text == plain["text"] == want
    assert streamed.finish_reason == plain["finish_reason"] == "stop"


def test_min_tokens_and_unknown_settings(chat_backend):
    _, usage = _text(chat_backend, {"max_tokens": 8, "min_tokens": 8})
    assert usage == {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": 8, "finish_reason": "length"}
    with pytest.raises(ValueError, match=r"unsupported setting\(s\) \['logit_bias'\]"):
        chat_backend.stream(MESSAGES, {"logit_bias": {}})
    with pytest.raises(ValueError, match="min_tokens"):
        chat_backend.stream(MESSAGES, {"max_tokens": 2, "min_tokens": 3})
    assert isinstance(chat_backend, ChatBackend)


def test_client_disconnect_mid_stream_leaves_server_healthy(api_server):
    with httpx.stream("POST", api_server.url + "/chat/completions", headers=AUTH,
                      json={"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": 200, "stream": True}) as r:
        next(r.iter_lines())
    client = OpenAICompatClient(api_config(api_server))
    assert client.chat_stream(MESSAGES, settings={"max_tokens": 4}).completion_tokens == 4


def test_embeddings_base64_and_rerank_sorted(api_server, hidden_state_backends):
    emb, rr = hidden_state_backends
    texts = ["fox", "dog", "猫"]
    r = httpx.post(api_server.url + "/embeddings", headers=AUTH,
                   json={"model": EMBED_MODEL, "input": texts, "encoding_format": "base64", "dimensions": 12})
    vecs = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert np.array_equal(vecs, emb.embed(texts, 12))
    r = httpx.post(api_server.url + "/embeddings", headers=AUTH, json={"model": "other", "input": texts})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    docs = ["a", "quick fox", "b c", "dog", "e"]
    r = httpx.post(api_server.url + "/rerank", headers=AUTH, json={"model": RERANK_MODEL, "query": "fox",
                                                                     "documents": docs, "top_n": 3})
    res = r.json()["results"]
    scores = rr.score("fox", docs, None)
    assert len(res) == 3 and [x["relevance_score"] for x in res] == sorted(scores, reverse=True)[:3]
    assert all(scores[x["index"]] == x["relevance_score"] for x in res)


def test_backend_registry_errors(monkeypatch):
    from leverplus.serving import backends

    with pytest.raises(ValueError, match=r"no chat backend named 'gpt'; registered: \['causal_lm', 'omni'\]"):
        backends.make_backend("chat", "gpt", "/nowhere", model_name="x")
    monkeypatch.setitem(backends.BACKEND_FACTORIES, ("chat", "missing"), "leverplus.serving.no_such_module:make")
    with pytest.raises(ValueError, match="needs leverplus.serving.no_such_module"):
        backends.make_backend("chat", "missing", "/nowhere", model_name="x")
    with pytest.raises(ValueError, match="unknown option"):
        backends.make_backend("chat", "causal_lm", "/nowhere", model_name="x", options={"precision": "bf16"})


@pytest.mark.slow
def test_command_line_server(tiny_chat_dir, chat_backend, tmp_path, monkeypatch):
    from leverplus.serving.process import spawn_server

    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    args = ["--chat-model", str(tiny_chat_dir), "--model-name", CHAT_MODEL, "--port", "0",
            "--api-key-env", API_KEY_ENV, "--threads", "1"]
    log = tmp_path / "server.log"
    with spawn_server(args, log_file=log) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        client = OpenAICompatClient(api_config(type("S", (), {"url": url})()))
        got = client.chat_stream(MESSAGES, settings={"max_tokens": 8})
        assert got.text == _text(chat_backend, {"max_tokens": 8})[0] and got.completion_tokens == 8
    assert API_KEY not in log.read_text()
