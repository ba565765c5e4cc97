"""The shared OpenAI-compatible client against the real local server serving a tiny real Qwen2 causal LM."""
from __future__ import annotations

import base64
import io
import json
import logging
import time

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

from leverplus.api import APIConfig, APIError, OpenAICompatClient, audio_content_part, request_key
from leverplus.serving.server import FaultPlan

MESSAGES = [{"role": "user", "content": "Hello! How are you today?"}]
GREEDY = {"max_tokens": 12, "temperature": 0}


def direct_generate(backend, messages, **gen_kwargs) -> tuple[str, list[int], int]:
    """The same model and prompt through plain `generate` (no server, no streamer)."""
    import torch

    ids = backend.prompt_ids(messages)
    with torch.inference_mode():
        out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     **gen_kwargs)
    new = out[0, ids.shape[1]:].tolist()
    return backend.tokenizer.decode(new, skip_special_tokens=True), new, ids.shape[1]


class Sleeps:
    """Records the waits of the retry policy instead of sleeping them."""

    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)


# ---- chat -----------------------------------------------------------------------------------------------------------
def test_stream_text_usage_and_ttft(api_server, chat_backend):
    client = OpenAICompatClient(api_config(api_server))
    r = client.chat_stream(MESSAGES, settings=GREEDY)
    text, new_ids, prompt_len = direct_generate(chat_backend, MESSAGES, max_new_tokens=12)
    assert r.text == text and len(text) > 5
    assert r.prompt_tokens == prompt_len
    assert r.completion_tokens == len(new_ids) == 12
    assert r.finish_reason == "length"
    assert r.first_token_time == r.token_times[0]
    assert r.request_start < r.first_token_time < r.end_time
    assert 0 < r.ttft_s < r.total_s
    assert r.token_times == sorted(r.token_times) and len(r.token_times) >= 5
    body = api_server.requests_for("/v1/chat/completions")[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 12 and body["temperature"] == 0


def test_stream_equals_non_stream_equals_generate_with_explicit_settings(api_server, chat_backend):
    settings = {"max_tokens": 10, "min_tokens": 10, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    client = OpenAICompatClient(api_config(api_server))
    streamed = client.chat_stream(MESSAGES, settings=settings)
    plain = client.chat(MESSAGES, settings=settings)
    text, new_ids, _ = direct_generate(chat_backend, MESSAGES, max_new_tokens=10, min_new_tokens=10,
                                       repetition_penalty=1.3, no_repeat_ngram_size=2)
    assert streamed.text == plain["text"] == text
    assert plain["usage"]["completion_tokens"] == streamed.completion_tokens == len(new_ids)
    # the settings changed the answer (so the comparison above is not vacuous)
    assert text != direct_generate(chat_backend, MESSAGES, max_new_tokens=10)[0]


def test_stream_cut_midway_is_retried_whole(api_server):
    client = OpenAICompatClient(api_config(api_server))
    full = client.chat_stream(MESSAGES, settings=GREEDY)
    api_server.faults = FaultPlan(cut_stream_after=3, cuts=1)
    again = client.chat_stream(MESSAGES, settings=GREEDY)
    assert again.text == full.text
    assert client.stats()["retries"] == 1


# ---- errors and retries ---------------------------------------------------------------------------------------------
def test_4xx_is_a_clear_error_without_retry(api_server):
    client = OpenAICompatClient(api_config(api_server, max_retries=3))
    with pytest.raises(APIError, match=r"chat/completions: HTTP 400: unsupported setting\(s\) \['best_of'\]") as ei:
        client.chat(MESSAGES, settings={"best_of": 2})
    assert ei.value.status == 400 and not ei.value.retriable
    assert client.stats() == {"requests_sent": 1, "cache_hits": 0, "retries": 0}
    with pytest.raises(APIError, match=r"HTTP 404: the model 'nope' does not exist"):
        OpenAICompatClient(api_config(api_server, model="nope")).chat_stream(MESSAGES, settings=GREEDY)


def test_wrong_key_401_no_retry_and_key_scrubbed(api_server, monkeypatch):
    monkeypatch.setenv("WRONG_KEY_VAR", "sk-wrong-0000-LEAKCHECK")
    cfg = APIConfig(base_url=api_server.url, model=CHAT_MODEL, api_key_env="WRONG_KEY_VAR", backoff_s=0.01)
    client = OpenAICompatClient(cfg)
    with pytest.raises(APIError, match="HTTP 401: Incorrect API key provided") as ei:
        client.chat_stream(MESSAGES, settings=GREEDY)
    # the server echoed the key it got; the client's error does not carry it
    assert "sk-wrong-0000-LEAKCHECK" not in str(ei.value) and "***" in str(ei.value)
    assert client.stats()["requests_sent"] == 1
    with pytest.raises(APIError, match="HTTP 401"):
        client.embeddings(["a"])


def test_missing_key_variable_names_the_variable(api_server, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(APIError, match="environment variable NO_SUCH_KEY_VAR"):
        OpenAICompatClient(APIConfig(base_url=api_server.url, model=CHAT_MODEL, api_key_env="NO_SUCH_KEY_VAR"))


@pytest.mark.parametrize("call", ["stream", "chat", "embeddings", "rerank"])
def test_5xx_then_success_with_exponential_backoff(api_server, call):
    sleeps = Sleeps()
    client = OpenAICompatClient(api_config(api_server, backoff_s=0.25, max_retries=3), sleep=sleeps)
    api_server.faults = FaultPlan(status=[503, 502])
    if call == "stream":
        assert client.chat_stream(MESSAGES, settings=GREEDY).text
    elif call == "chat":
        assert client.chat(MESSAGES, settings=GREEDY)["text"]
    elif call == "embeddings":
        client = OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, backoff_s=0.25), sleep=sleeps)
        assert client.embeddings(["a b", "c"]).shape[0] == 2
    else:
        client = OpenAICompatClient(api_config(api_server, model=RERANK_MODEL, backoff_s=0.25), sleep=sleeps)
        assert len(client.rerank("q", ["a", "b"])) == 2
    assert sleeps.calls == [0.25, 0.5]
    assert client.stats() == {"requests_sent": 3, "cache_hits": 0, "retries": 2}


def test_429_honours_retry_after(api_server):
    sleeps = Sleeps()
    client = OpenAICompatClient(api_config(api_server, backoff_s=0.01), sleep=sleeps)
    api_server.faults = FaultPlan(status=[429], retry_after=2)
    assert client.chat_stream(MESSAGES, settings=GREEDY).text
    assert sleeps.calls == [2.0]


def test_persistent_5xx_gives_up_after_max_retries(api_server):
    sleeps = Sleeps()
    client = OpenAICompatClient(api_config(api_server, max_retries=2, backoff_s=0.1), sleep=sleeps)
    api_server.faults = FaultPlan(status=[500] * 10)
    with pytest.raises(APIError, match=r"HTTP 500: injected fault: Internal Server Error \(after 3 attempts\)"):
        client.chat(MESSAGES, settings=GREEDY)
    assert client.stats()["requests_sent"] == 3 and sleeps.calls == [0.1, 0.2]


def test_timeout_is_an_api_error_and_retried(api_server):
    client = OpenAICompatClient(api_config(api_server, timeout_s=0.3, max_retries=0))
    api_server.faults = FaultPlan(delay_s=1.5, delays=1)
    with pytest.raises(APIError, match=r"chat/completions \(stream\): timeout: no response within 0.3s"):
        client.chat_stream(MESSAGES, settings=GREEDY)
    client = OpenAICompatClient(api_config(api_server, timeout_s=1.0, max_retries=1))
    api_server.faults = FaultPlan(delay_s=2.5, delays=1)
    assert client.chat(MESSAGES, settings=GREEDY)["text"]
    assert client.stats()["retries"] == 1
    client = OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, timeout_s=0.3, max_retries=0))
    api_server.faults = FaultPlan(delay_s=1.5, delays=1)
    with pytest.raises(APIError, match="embeddings: timeout"):
        client.embeddings(["x"])


@pytest.mark.parametrize("call", ["stream", "chat", "embeddings", "rerank"])
def test_malformed_body_is_a_clear_error(api_server, tmp_path, call):
    model = {"embeddings": EMBED_MODEL, "rerank": RERANK_MODEL}.get(call, CHAT_MODEL)
    client = OpenAICompatClient(api_config(api_server, model=model, cache_dir=str(tmp_path / "cache")))
    api_server.faults = FaultPlan(malformed=1)
    with pytest.raises(APIError, match="malformed response") as ei:
        if call == "stream":
            client.chat_stream(MESSAGES, settings=GREEDY)
        elif call == "chat":
            client.chat(MESSAGES, settings=GREEDY)
        elif call == "embeddings":
            client.embeddings(["a", "b"])
        else:
            client.rerank("q", ["a", "b"])
    assert not ei.value.retriable and client.stats()["requests_sent"] == 1
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing half-written


def test_rate_limit_spaces_requests(api_server):
    client = OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, rate_limit_per_s=10))
    t0 = time.monotonic()
    for i in range(4):
        client.embeddings([f"text {i}"])
    assert time.monotonic() - t0 >= 0.3 - 1e-3


# ---- cache ----------------------------------------------------------------------------------------------------------
def test_cache_makes_a_rerun_send_no_request(api_server, tmp_path):
    cache = tmp_path / "cache"

    def run():
        chat = OpenAICompatClient(api_config(api_server, cache_dir=str(cache)))
        emb = OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, cache_dir=str(cache), batch_size=2))
        rr = OpenAICompatClient(api_config(api_server, model=RERANK_MODEL, cache_dir=str(cache)))
        out = (chat.chat(MESSAGES, settings=GREEDY)["text"], emb.embeddings(["a", "b c", "d"], dimensions=16),
               rr.rerank("q", ["x", "y", "z"], instruction="find"))
        return out, [c.stats() for c in (chat, emb, rr)]

    first, stats1 = run()
    sent = api_server.request_count
    assert sent == 4 and [s["cache_hits"] for s in stats1] == [0, 0, 0]
    second, stats2 = run()
    assert api_server.request_count == sent  # the server saw nothing new
    assert [s["requests_sent"] for s in stats2] == [0, 0, 0] and [s["cache_hits"] for s in stats2] == [1, 2, 1]
    assert first[0] == second[0] and np.array_equal(first[1], second[1]) and first[2] == second[2]
    files = sorted(cache.glob("*.json"))
    assert len(files) == 4
    entry = json.loads(files[0].read_text())
    assert request_key(entry["request"]["endpoint"], entry["request"]["model"], entry["request"]["body"]) == files[0].stem
    # a different request (other settings) is a miss
    OpenAICompatClient(api_config(api_server, cache_dir=str(cache))).chat(MESSAGES, settings={**GREEDY, "max_tokens": 5})
    assert api_server.request_count == sent + 1


def test_failed_call_writes_no_cache_file(api_server, tmp_path):
    client = OpenAICompatClient(api_config(api_server, cache_dir=str(tmp_path / "c"), max_retries=1))
    api_server.faults = FaultPlan(status=[500, 500])
    with pytest.raises(APIError):
        client.chat(MESSAGES, settings=GREEDY)
    assert not list((tmp_path).rglob("*.json")) and not list(tmp_path.rglob("*.tmp"))


def test_key_never_in_errors_logs_or_cache(api_server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache"
    client = OpenAICompatClient(api_config(api_server, cache_dir=str(cache), max_retries=1))
    errors = []
    client.chat(MESSAGES, settings=GREEDY)
    OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, cache_dir=str(cache))).embeddings(["a"])
    api_server.faults = FaultPlan(status=[503, 503])
    for settings in (GREEDY, {"best_of": 3}):
        try:
            client.chat(MESSAGES, settings={**settings, "max_tokens": 3})
        except APIError as err:
            errors.append(str(err))
    assert len(errors) == 2
    blobs = [*errors, caplog.text, repr(client.cfg), json.dumps(client.cfg.as_dict()), repr(client.stats())]
    blobs += [p.read_text() for p in cache.rglob("*")]
    assert all(API_KEY not in b for b in blobs)
    assert all(API_KEY not in json.dumps(r.body) for r in api_server.requests)


# ---- embeddings and rerank ------------------------------------------------------------------------------------------
def test_embeddings_send_float_explicitly_and_keep_order(api_server, hidden_state_backends):
    emb_backend, _ = hidden_state_backends
    client = OpenAICompatClient(api_config(api_server, model=EMBED_MODEL, batch_size=2))
    texts = ["the fox", "一只狐狸", "def f(x): return x", "lazy dog", "x"]
    got = client.embeddings(texts)
    bodies = [r.body for r in api_server.requests_for("/v1/embeddings")]
    assert len(bodies) == 3 and all(b["encoding_format"] == "float" for b in bodies)
    assert all("dimensions" not in b for b in bodies)
    assert [b["input"] for b in bodies] == [texts[0:2], texts[2:4], texts[4:]]
    assert got.dtype == np.float32 and np.array_equal(got, emb_backend.embed(texts, None))
    small = client.embeddings(texts[:2], dimensions=8)
    assert api_server.requests_for("/v1/embeddings")[-1].body["dimensions"] == 8
    assert small.shape == (2, 8) and np.allclose(np.linalg.norm(small, axis=1), 1, atol=1e-6)


def test_rerank_realigned_by_index(api_server, hidden_state_backends):
    _, rr_backend = hidden_state_backends
    docs = ["a lazy dog", "the quick brown fox", "狐狸", "def add(a, b)", "score 0 to 100", "Hello!"]
    expected = rr_backend.score("quick fox", docs, "find the animal")
    assert sorted(expected, reverse=True) != expected  # the server's sorted order differs from document order
    client = OpenAICompatClient(api_config(api_server, model=RERANK_MODEL))
    got = client.rerank("quick fox", docs, instruction="find the animal")
    assert got == expected
    body = api_server.requests_for("/v1/rerank")[-1].body
    assert body["top_n"] == len(docs) and body["instruction"] == "find the animal" and body["documents"] == docs


def test_rerank_missing_results_are_malformed(api_server):
    # a provider that drops documents (its own top_n): detected, never padded or silently shifted
    client = OpenAICompatClient(api_config(api_server, model=RERANK_MODEL))
    api_server.faults = FaultPlan(rerank_top_n=2)
    with pytest.raises(APIError, match=r"malformed response: no score for document indices \[\d\] \(2 results for 3"):
        client.rerank("q", ["a", "b", "c"])


# ---- helpers --------------------------------------------------------------------------------------------------------
def test_audio_content_part_is_pcm16_wav():
    import soundfile as sf

    t = np.arange(16000) / 16000
    wav = 0.5 * np.sin(2 * np.pi * 220 * t)
    part = audio_content_part(wav)
    assert part["type"] == "input_audio" and part["input_audio"]["format"] == "wav"
    data, sr = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])), dtype="float64")
    info = sf.info(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    assert sr == 16000 and info.subtype == "PCM_16" and info.channels == 1
    assert np.max(np.abs(data - wav)) < 1e-4
    with pytest.raises(ValueError, match="1-D mono"):
        audio_content_part(np.zeros((2, 100)))


def test_config_from_dict_validates():
    cfg = APIConfig.from_dict({"base_url": "http://127.0.0.1:1/v1", "model": "m", "timeout_s": 5})
    assert cfg.timeout_s == 5.0 and cfg.max_retries == 3
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['api_key'\]"):
        APIConfig.from_dict({"base_url": "http://x/v1", "model": "m", "api_key": "sk-123"})
    with pytest.raises(ValueError, match="base_url"):
        APIConfig.from_dict({"base_url": "ftp://x", "model": "m"})
