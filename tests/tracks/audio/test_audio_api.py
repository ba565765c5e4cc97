"""The api arm's request against vLLM's own request schema (issue 24 item 3).

VLLM_CHAT_FIELDS is the field list of `ChatCompletionRequest` in vllm/entrypoints/openai/protocol.py at
github.com/vllm-project/vllm @ ec3b890c14b00f6670515d9df8d503b5270e95ca (copied here from that source, not from
the project's own constant, so the test does not check the code against itself). vLLM accepts any other field
and drops it (`OpenAIBaseModel.__log_extra_fields__`). `top_k`: vllm/sampling_params.py @
db573835d3ef40643442e0817059e087355cf458, `_verify_args`: "top_k must be -1 (disable), or at least 1" (checked
before the greedy override, so temperature 0 does not excuse top_k 0); repetition_penalty in (0, 2].
"""
from __future__ import annotations

import numpy as np
import pytest

from leverplus.tracks.audio.generation import AudioGenerationSettings

VLLM_CHAT_FIELDS = {
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream", "stream_options",
    "temperature", "top_p", "tools", "tool_choice", "reasoning_effort", "include_reasoning", "parallel_tool_calls",
    "user", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "bad_words", "echo", "add_generation_prompt",
    "continue_final_message", "add_special_tokens", "documents", "chat_template", "chat_template_kwargs",
    "mm_processor_kwargs", "structured_outputs", "priority", "request_id", "logits_processors",
    "return_tokens_as_token_ids", "return_token_ids", "cache_salt", "kv_transfer_params", "vllm_xargs",
}


def _vllm_accepts(req: dict) -> None:
    """What vLLM's SamplingParams._verify_args would say about the request's values (the parts we send)."""
    assert req["top_k"] == -1 or req["top_k"] >= 1, req
    assert 0 < req["repetition_penalty"] <= 2, req
    assert 0 < req["top_p"] <= 1 and req["temperature"] >= 0, req
    assert 0 <= req["min_tokens"] <= req["max_tokens"], req


def _schema_defaults():

    from leverplus.core.config import load_track

    return load_track({"audio": {}}, "audio", "config/audio.schema.yaml")


@pytest.mark.parametrize("block", ["generation", "unaligned"])
def test_api_request_has_only_fields_vllm_reads_with_values_it_accepts(block, monkeypatch):
    import pathlib

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[3])
    from leverplus.tracks.audio.stages import _split_block, api_settings

    cfg = _schema_defaults()[block]
    _, decoding = _split_block(cfg)
    req = api_settings(decoding)
    client_fields = {"model", "messages", "stream", "stream_options"}  # leverplus.api's _chat_body adds these
    assert set(req) | client_fields <= VLLM_CHAT_FIELDS, sorted(set(req) - VLLM_CHAT_FIELDS)
    _vllm_accepts(req)


def test_unsendable_decoding_is_refused_not_dropped():
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        AudioGenerationSettings(no_repeat_ngram_size=2).to_openai()
    with pytest.raises(ValueError, match=r"\(0, 2\]"):
        AudioGenerationSettings(repetition_penalty=2.5).to_openai()
    # top_k "off" is -1 on the wire, greedy or sampling; a real top_k passes as is
    assert AudioGenerationSettings().to_openai()["top_k"] == -1
    assert AudioGenerationSettings(do_sample=True, top_k=0).to_openai()["top_k"] == -1
    assert AudioGenerationSettings(do_sample=True, top_k=40).to_openai()["top_k"] == 40


def test_openai_round_trip_reads_only_vllm_fields():
    s = AudioGenerationSettings(do_sample=True, temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=0,
                                max_new_tokens=32, seed=5)
    assert AudioGenerationSettings.from_openai(s.to_openai()) == s
    g = AudioGenerationSettings()
    assert AudioGenerationSettings.from_openai(g.to_openai()) == g
    assert AudioGenerationSettings.from_openai({**g.to_openai(), "no_repeat_ngram_size": 3}).no_repeat_ngram_size == 0
    with pytest.raises(ValueError, match="top_k must be -1"):
        AudioGenerationSettings.from_openai({"temperature": 0, "top_k": 0})


def test_demo_server_reads_the_request_as_vllm_does():
    """The local server cannot hide what vLLM does: fields vLLM lacks are dropped and counted, top_k 0 refused."""
    from leverplus.serving.omni_backend import vllm_settings

    ignored: dict = {}
    out = vllm_settings({"max_tokens": 8, "no_repeat_ngram_size": 2, "top_k": -1}, ignored)
    assert out == {"max_tokens": 8, "top_k": -1} and ignored == {"no_repeat_ngram_size": 1}
    for bad, msg in [({"top_k": 0}, "top_k must be -1"), ({"top_k": -2}, "top_k must be -1"),
                     ({"repetition_penalty": 3.0}, r"\(0, 2\]"), ({"top_p": 0.0}, r"\(0, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            vllm_settings(bad)


@pytest.fixture(scope="module")
def tiny_backend(tmp_path_factory):
    import torch

    from leverplus.tracks.audio.assets import EDGE, build_tiny_omni
    from leverplus.serving.omni_backend import OmniChatBackend

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("omni") / "tiny_omni"
    build_tiny_omni(d, size=EDGE, seed=0)
    return OmniChatBackend(str(d), "omni-tiny", stall_timeout_s=30.0)


def test_served_no_repeat_ngram_has_no_effect_and_top_k_0_is_a_400(tiny_backend):
    from leverplus.api import APIConfig, APIError, OpenAICompatClient, audio_content_part
    from leverplus.tracks.audio.demo import synthesize
    from leverplus.serving import OpenAICompatServer

    audio = synthesize("高兴", "女生", np.random.default_rng(4))[:16000]
    msgs = [{"role": "user", "content": [audio_content_part(audio), {"type": "text", "text": "描述情绪"}]}]
    base = {"max_tokens": 16, "min_tokens": 16, "temperature": 0.0, "top_k": -1}
    with OpenAICompatServer(chat=tiny_backend) as srv:
        client = OpenAICompatClient(APIConfig(base_url=srv.url, model="omni-tiny", max_retries=0))
        plain = client.chat_stream(msgs, settings=base)
        asked = client.chat_stream(msgs, settings={**base, "no_repeat_ngram_size": 1})
        assert asked.text == plain.text  # vLLM would decode it without the field; so does the demo server
        assert tiny_backend.ignored_fields.get("no_repeat_ngram_size") == 1
        with pytest.raises(APIError, match="top_k must be -1"):
            client.chat_stream(msgs, settings={**base, "top_k": 0})


@pytest.mark.parametrize("system_prompt", [None, "", "你是一个语音情感描述助手。"])
def test_api_and_local_arms_render_the_same_prompt(tiny_backend, system_prompt):
    """The api arm's messages, read back as the endpoint reads them, render the prompt the local arms render for the
    same `system_prompt` (null: no system turn, the template's default one; "": an empty system turn, not the
    default)."""
    from leverplus.serving.omni_backend import parse_audio_messages
    from leverplus.tracks.audio.stages import chat_messages

    cap = tiny_backend.captioner
    prompts = {"system_prompt": system_prompt, "prompt": "描述情绪"}
    system, _, prompt = parse_audio_messages(chat_messages(np.zeros(1600, np.float32), prompts))
    assert cap.prompt_text(system_prompt=system, prompt=prompt) == cap.prompt_text(**prompts)


def test_local_and_api_arms_count_the_same_tokens():
    """Issue 24 item 5: one latency definition. A trained demo model that ends its caption with the end-of-turn
    token: the local arm's timing row and the API arm's usage give the same N (EOS included), and the local TTFT
    is the first decoding step."""
    import torch

    from leverplus.api import APIConfig, OpenAICompatClient, audio_content_part
    from leverplus.tracks.audio.demo import synthesize
    from leverplus.tracks.audio.assets import shipped_model_dir
    from leverplus.serving import OpenAICompatServer
    from leverplus.serving.omni_backend import OmniChatBackend
    from leverplus.tracks.audio.stages import _timing_row

    torch.set_num_threads(1)
    backend = OmniChatBackend(str(shipped_model_dir("omni_edge")), "omni-edge", stall_timeout_s=60.0)
    settings = AudioGenerationSettings(min_new_tokens=0, max_new_tokens=32)
    prompt = "请用8–16个字的中文短句描述此段音频中说话人的情绪"
    audio = synthesize("悲伤", "男生", np.random.default_rng(7))
    res = backend.captioner.caption(audio, system_prompt=None, prompt=prompt, settings=settings)
    assert res.eos_generated and res.finish_reason == "stop"  # the case where the arms used to disagree
    row = _timing_row("x", res)
    assert row["output_tokens"] == res.n_tokens + 1 == len(res.token_times) + 1
    assert row["first_token_time"] == res.token_times[0] and row["end_time"] >= res.eos_time
    msgs = [{"role": "user", "content": [audio_content_part(audio), {"type": "text", "text": prompt}]}]
    with OpenAICompatServer(chat=backend) as srv:
        api = OpenAICompatClient(APIConfig(base_url=srv.url, model="omni-edge", max_retries=0)).chat_stream(
            msgs, settings=settings.to_openai())
    assert api.text.strip() == res.text
    assert api.completion_tokens == row["output_tokens"]


def test_vllm_in_stream_error_object_fails_the_request():
    """vLLM reports a failure inside a stream as a data chunk {"object": "error", "message": …} followed by
    [DONE]; the client must raise, not return an empty 'successful' stream."""
    import http.server
    import threading

    from leverplus.api import APIConfig, APIError, OpenAICompatClient

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b'data: {"object": "error", "message": "audio too long", "type": "BadRequestError", '
                             b'"code": 400}\n\ndata: [DONE]\n\n')

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = OpenAICompatClient(APIConfig(base_url=f"http://127.0.0.1:{srv.server_port}/v1", model="m",
                                              max_retries=0))
        with pytest.raises(APIError, match="audio too long"):
            client.chat_stream([{"role": "user", "content": "x"}], settings={"max_tokens": 4})
    finally:
        srv.shutdown()


def test_startup_probe_compares_endpoint_and_local_captions(tiny_backend, tmp_path, monkeypatch):
    """The api job's probe: the endpoint's greedy captions of the first clips against the local cloud arm's,
    recorded in run.json; with probe_require_match a mismatch stops the job before the run."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    import pandas as pd
    import soundfile as sf

    from leverplus.tracks.audio.demo import synthesize
    from leverplus.serving import OpenAICompatServer
    from leverplus.tracks.audio.stages import generate_api

    monkeypatch.setenv("LEVERPLUS_AUDIO_TIMING_LOCK", str(tmp_path / "lock"))
    gen = {"prompt": "描述情绪", "system_prompt": None, "min_new_tokens": 4, "max_new_tokens": 6}
    rows, local = [], []
    for i in range(3):
        wav = tmp_path / f"c{i}.wav"
        audio = synthesize("高兴", "女生", np.random.default_rng(30 + i))[:16000]
        sf.write(wav, audio, 16000, subtype="FLOAT")
        rows.append({"id": f"c{i}", "audio": str(wav), "references": ["高兴"]})
        res = tiny_backend.captioner.caption(audio, system_prompt=None, prompt=gen["prompt"],
                                             settings=AudioGenerationSettings(min_new_tokens=4, max_new_tokens=6))
        local.append(res.text)
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cloud = tmp_path / "cloud.parquet"
    pd.DataFrame({"id": ["c0", "c1", "c2"], "prediction": [local[0], local[1] + "X", local[2]]}).to_parquet(cloud)

    def job(name, strict):
        out = tmp_path / name
        output = SimpleNamespace(predictions=str(out / "p.parquet"), timing=str(out / "t.parquet"),
                                 run=str(out / "run.json"))
        params = {"api": {"base_url": srv.url, "model": "omni-tiny", "api_key_env": None, "timeout_s": 30,
                          "max_retries": 0, "rate_limit_per_s": None, "probe_clips": 2,
                          "probe_require_match": strict},
                  "model_name": "omni-tiny", "generation": gen, "warmup": 0,
                  "latency": {"n_timed": 1, "seed": 0}, "batch_size": 2, "scoring": {"n_resamples": 20, "seed": 0}}
        generate_api(input=SimpleNamespace(manifest=str(manifest), model=[], cloud=str(cloud)), output=output,
                     params=params, wildcards={}, threads=1)
        return json.loads(Path(output.run).read_text())

    with OpenAICompatServer(chat=tiny_backend) as srv:
        run = job("lenient", False)
        probe = run["startup_probe"]
        assert probe["n"] == 2 and probe["identical"] == 1 and probe["mismatches"][0]["id"] == "c1"
        with pytest.raises(RuntimeError, match="1 of 2 probe clips"):
            job("strict", True)
    assert not (tmp_path / "strict").exists()
