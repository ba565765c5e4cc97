"""OmniCaptioner on a real (tiny) Qwen2.5-Omni thinker: processor offline, caption timing, explicit decoding
settings, draft log-prob, thread control, the audio demo generator and the Omni chat backend behind the local server."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from leverplus.tracks.audio.generation import AudioGenerationSettings

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[3]
PROMPT = "请用8–16个字的中文短句描述此段音频中说话人的情绪"


def _clip(seed: int = 0, seconds: float = 1.2) -> np.ndarray:
    from leverplus.tracks.audio.demo import synthesize

    return synthesize("高兴", "女生", np.random.default_rng(seed))[: int(16000 * seconds)]


@pytest.fixture(scope="module")
def tiny_omni_dir(tmp_path_factory):
    from leverplus.tracks.audio.assets import EDGE, build_tiny_omni

    d = tmp_path_factory.mktemp("omni") / "tiny_omni"
    build_tiny_omni(d, size=EDGE, seed=0)
    return d


@pytest.fixture(scope="module")
def captioner(tiny_omni_dir):
    from leverplus.tracks.audio.omni import OmniCaptioner

    cap = OmniCaptioner.load(tiny_omni_dir, device="cpu")
    cap.warm_up()
    return cap


@pytest.mark.slow  # a fresh interpreter importing torch + transformers (~15–30 s on 2 busy cores)
def test_processor_builds_offline_without_torchvision(tiny_omni_dir):
    code = (
        "import sys\n"
        "from leverplus.tracks.audio.processor import build_processor\n"
        f"p = build_processor({str(tiny_omni_dir)!r})\n"
        "import numpy as np\n"
        "msgs=[{'role':'user','content':[{'type':'audio'},{'type':'text','text':'hi'}]}]\n"
        "t = p.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)\n"
        "enc = p(text=[t], audio=[np.zeros(16000, np.float32)], return_tensors='pt')\n"
        "n = int((enc['input_ids'] == p.audio_token_id).sum())\n"
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
        "assert type(p.feature_extractor).__name__ == 'WhisperFeatureExtractor' and p.feature_extractor.feature_size == 128\n"
        "print('AUDIO_TOKENS', n, tuple(enc['input_features'].shape))\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    # 1 s of audio → 100 mel frames → 25 audio tokens; features padded to 30 s
    assert "AUDIO_TOKENS 25 (1, 128, 3000)" in out.stdout


def test_caption_timing_per_token(captioner):
    settings = AudioGenerationSettings()  # aligned defaults: greedy, min 8, max 32
    res = captioner.caption(_clip(), system_prompt=None, prompt=PROMPT, settings=settings)
    assert res.n_tokens >= settings.min_new_tokens
    assert len(res.token_times) == res.n_tokens == len(res.token_ids)
    assert res.feature_s > 0
    assert res.request_start < res.token_times[0] == res.first_token_time
    assert all(a <= b for a, b in zip(res.token_times, res.token_times[1:]))
    assert 0 < res.ttft_s < res.total_s
    assert res.token_times[-1] <= res.end_time
    assert res.text == captioner.tokenizer.decode(res.token_ids, skip_special_tokens=True).strip()
    # the timestamped ids are exactly what generate returns after the prompt (the prompt put is not a token)
    inputs = captioner.encode(_clip(), system_prompt=None, prompt=PROMPT)
    with torch.inference_mode():
        out = captioner.model.generate(**inputs, **settings.generate_kwargs(
            eos_token_id=captioner.eos_token_ids, pad_token_id=captioner.pad_token_id))
    new_ids = out[0, inputs["input_ids"].shape[1]:].tolist()
    if new_ids and new_ids[-1] in captioner.eos_token_ids:
        new_ids = new_ids[:-1]
    assert res.token_ids == new_ids


def test_settings_recorded_and_checkpoint_generation_config_cannot_leak(tiny_omni_dir, captioner, tmp_path):
    from leverplus.tracks.audio.omni import OmniCaptioner

    block = {"do_sample": False, "repetition_penalty": 1.0, "min_new_tokens": 8, "max_new_tokens": 12,
             "no_repeat_ngram_size": 2, "seed": 3}
    settings = AudioGenerationSettings.from_config(block)
    recorded = settings.to_dict()
    assert {k: recorded[k] for k in block} == block
    cfg = settings.generation_config(eos_token_id=[1], pad_token_id=0)
    for k, v in block.items():
        if k != "seed":
            assert getattr(cfg, k) == v, k
    hostile = tmp_path / "hostile"
    shutil.copytree(tiny_omni_dir, hostile)
    (hostile / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "temperature": 5.0, "top_k": 3, "max_new_tokens": 2, "min_new_tokens": 0,
        "repetition_penalty": 3.0, "no_repeat_ngram_size": 0, "eos_token_id": 7, "pad_token_id": 7}))
    bad = OmniCaptioner.load(hostile, device="cpu")
    for seed in range(3):
        a = captioner.caption(_clip(seed), system_prompt=None, prompt=PROMPT, settings=settings)
        b = bad.caption(_clip(seed), system_prompt=None, prompt=PROMPT, settings=settings)
        assert a.token_ids == b.token_ids and a.n_tokens == b.n_tokens > 2
    with pytest.raises(ValueError, match="unknown key"):
        AudioGenerationSettings.from_config({"temprature": 0.7})


def test_openai_settings_round_trip():
    s = AudioGenerationSettings(do_sample=True, temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=0,
                                max_new_tokens=32, no_repeat_ngram_size=0, seed=5)
    assert AudioGenerationSettings.from_openai(s.to_openai()) == s
    g = AudioGenerationSettings()
    assert g.to_openai()["temperature"] == 0.0 and AudioGenerationSettings.from_openai(g.to_openai()) == g


def test_draft_logprob_equals_direct_log_softmax(captioner):
    draft = "女生语气欢快，听起来很高兴"
    audio = _clip(1)
    got = captioner.draft_logprob(audio, system_prompt="你是一个语音情感描述助手。", prompt=PROMPT, draft=draft)
    # independent route: the full conversation (assistant turn included) rendered by the chat template
    p = captioner.processor
    sys_msg = {"role": "system", "content": [{"type": "text", "text": "你是一个语音情感描述助手。"}]}
    user = {"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": PROMPT}]}
    prompt_text = p.apply_chat_template([sys_msg, user], add_generation_prompt=True, tokenize=False)
    full_text = prompt_text + draft + "<|im_end|>"
    enc_p = p(text=[prompt_text], audio=[audio], return_tensors="pt")
    enc = p(text=[full_text], audio=[audio], return_tensors="pt")
    n_prompt = enc_p["input_ids"].shape[1]
    ids = enc["input_ids"][0]
    with torch.inference_mode():
        logits = captioner.model(**enc).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    target = ids[n_prompt:]
    expected = logp[n_prompt - 1: len(ids) - 1].gather(1, target[:, None]).mean().item()
    assert got["n_tokens"] == len(target) == len(captioner.tokenizer(draft)["input_ids"]) + 1
    assert got["mean_logprob"] == pytest.approx(expected, abs=1e-5)
    assert got["seconds"] > 0
    other = captioner.draft_logprob(audio, system_prompt=None, prompt=PROMPT, draft="男生语气低沉")
    assert other["mean_logprob"] != pytest.approx(got["mean_logprob"], abs=1e-4)


@pytest.mark.parametrize("seconds", [0.3, 1.234, 2.0, 29.99])
def test_trimmed_audio_features_equal_the_stock_30s_padding(captioner, seconds):
    """Our encode pads the Whisper features to the clip + n_fft samples, not to 30 s: the frames the thinker reads
    (under feature_attention_mask) must be bit-identical to the stock processor's, and so must the logits."""
    rng = np.random.default_rng(int(seconds * 1000))
    audio = np.resize(_clip(3, 2.0), int(16000 * seconds)) + rng.normal(0, 1e-3, int(16000 * seconds))
    audio = audio.astype(np.float32)
    ours = captioner.encode(audio, system_prompt=None, prompt=PROMPT)
    text = captioner.prompt_text(system_prompt=None, prompt=PROMPT)
    stock = captioner.processor(text=[text], audio=[audio], return_tensors="pt", sampling_rate=16000)
    assert stock["input_features"].shape[-1] == 3000
    if seconds < 29.9:
        assert ours["input_features"].shape[-1] < 3000  # really trimmed
    assert torch.equal(ours["input_ids"], stock["input_ids"])
    m_o, m_s = ours["feature_attention_mask"][0].bool(), stock["feature_attention_mask"][0].bool()
    assert int(m_o.sum()) == int(m_s.sum())
    assert torch.equal(ours["input_features"][0][:, m_o], stock["input_features"][0][:, m_s])
    with torch.inference_mode():
        a = captioner.model(**ours).logits
        b = captioner.model(**stock).logits
    assert torch.equal(a, b)


def test_caption_batch_equals_batch_one(captioner):
    clips = [_clip(i, s) for i, s in enumerate((0.7, 1.2, 1.0, 0.4, 1.6))]
    settings = AudioGenerationSettings(max_new_tokens=10)
    one = [captioner.caption(c, system_prompt=None, prompt=PROMPT, settings=settings) for c in clips]
    batched = captioner.caption_batch(clips, system_prompt=None, prompt=PROMPT, settings=settings, batch_size=3)
    assert [b["text"] for b in batched] == [o.text for o in one]
    assert [b["n_tokens"] for b in batched] == [o.n_tokens for o in one]
    assert [b["finish_reason"] for b in batched] == [o.finish_reason for o in one]
    assert [b["prompt_tokens"] for b in batched] == [o.prompt_tokens for o in one]
    drafts = ["女生语气欢快，听起来很高兴", "男生", "女生声音无力，显得很悲伤", "高兴", "男生语气很冲"]
    single = [captioner.draft_logprob(c, system_prompt="你是一个语音情感描述助手。", prompt=PROMPT, draft=d)
              for c, d in zip(clips, drafts)]
    many = captioner.draft_logprob_batch(clips, drafts, system_prompt="你是一个语音情感描述助手。", prompt=PROMPT,
                                         batch_size=4)
    assert [m["n_tokens"] for m in many] == [x["n_tokens"] for x in single]
    np.testing.assert_allclose([m["mean_logprob"] for m in many], [x["mean_logprob"] for x in single], atol=1e-5)


@pytest.mark.slow  # a fresh interpreter importing torch + transformers (~15–30 s on 2 busy cores)
def test_set_threads_really_applied():
    code = ("import json, torch\nfrom leverplus.tracks.audio.omni import set_threads\n"
            "info = set_threads(2)\nimport os\n"
            "print(json.dumps({**info, 'inside': torch.get_num_threads(), 'omp': os.environ['OMP_NUM_THREADS']}))\n")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "7", "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["inside"] == info["threads_effective"] == 2 and info["omp"] == "2"
    assert info["cpu_model"]


def _tree_digest(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def test_demo_generator_deterministic(tmp_path):
    from leverplus.tracks.audio.demo import EMOTIONS, caption_emotion, generate_demo

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    counts = generate_demo(a, seed=0, n_train=6, n_val=10)
    generate_demo(b, seed=0, n_train=6, n_val=10)
    generate_demo(c, seed=1, n_train=6, n_val=10)
    assert counts["train"] == 6 and counts["val"] == 10
    assert _tree_digest(a) == _tree_digest(b)
    assert _tree_digest(a) != _tree_digest(c)
    import soundfile as sf

    rows = [json.loads(line) for line in (a / "val.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 10
    for row in rows:
        assert row["emotion"] in EMOTIONS and len(row["references"]) == 2
        assert all(caption_emotion(r) == row["emotion"] for r in row["references"])
        info = sf.info(a / row["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert 1.0 <= info.duration <= 2.0


def test_omni_backend_serves_the_same_caption(tiny_omni_dir, captioner):
    from leverplus.api import APIConfig, OpenAICompatClient, audio_content_part
    from leverplus.serving import OpenAICompatServer
    from leverplus.serving.omni_backend import OmniChatBackend

    settings = AudioGenerationSettings(max_new_tokens=12)
    audio = _clip(2)
    local = captioner.caption(audio, system_prompt="You are a helpful assistant.", prompt=PROMPT,
                              settings=settings)
    backend = OmniChatBackend(str(tiny_omni_dir), "omni-tiny")
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [audio_content_part(audio), {"type": "text", "text": PROMPT}]}]
    with OpenAICompatServer(chat=backend) as srv:
        client = OpenAICompatClient(APIConfig(base_url=srv.url, model="omni-tiny", max_retries=0))
        res = client.chat_stream(messages, settings=settings.to_openai())
        assert res.text.strip() == local.text
        assert res.prompt_tokens == local.prompt_tokens
        # completion_tokens counts the end-of-turn token when one was generated (as vLLM does)
        assert res.completion_tokens == local.n_tokens + (local.finish_reason == "stop")
        assert res.first_token_time is not None and res.ttft_s < res.total_s
        from leverplus.api import APIError

        with pytest.raises(APIError, match="input_audio"):
            client.chat_stream([{"role": "user", "content": "no audio"}], settings=settings.to_openai())


# ---- failure paths of the served backend: bounded, clear errors (never a hang) -----------------------------------
def _bounded(fn, timeout_s: float):
    """Run `fn` in a daemon thread; fail with every thread's stack if it has not returned within `timeout_s`
    (a regression must turn into a red test, not a CI job that hangs)."""
    import faulthandler
    import tempfile
    import threading

    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 — re-raised in the test thread
            box["error"] = exc

    t = threading.Thread(target=target, name="bounded-test-body", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        with tempfile.TemporaryFile("w+") as fh:
            faulthandler.dump_traceback(fh, all_threads=True)
            fh.seek(0)
            stacks = fh.read()
        pytest.fail(f"did not finish within {timeout_s:g} s (a hang); stacks:\n{stacks[-6000:]}")
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _FailAtStep:
    """A forward hook on the real thinker: raises at the `at`-th forward call (1 = prefill), or, with `block`,
    waits there until released (a generation that stalls)."""

    def __init__(self, at: int, *, block: bool = False):
        import threading

        self.at, self.block, self.calls = at, block, 0
        self.release = threading.Event()

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls == self.at:
            if self.block:
                self.release.wait(120)
            else:
                raise RuntimeError(f"injected failure at forward call {self.at}")
        return output


@pytest.fixture(scope="module")
def omni_backend(tiny_omni_dir):
    from leverplus.serving.omni_backend import OmniChatBackend

    return OmniChatBackend(str(tiny_omni_dir), "omni-tiny", stall_timeout_s=3.0)


def _audio_messages(seed: int = 3):
    from leverplus.api import audio_content_part

    return [{"role": "user", "content": [audio_content_part(_clip(seed)), {"type": "text", "text": PROMPT}]}]


@pytest.mark.parametrize("at", [1, 4])  # in the prefill (before any token) and mid-stream (after 3 tokens)
def test_backend_error_reaches_client_as_clear_error_in_bounded_time(omni_backend, at):
    import time

    from leverplus.api import APIConfig, APIError, OpenAICompatClient
    from leverplus.serving import OpenAICompatServer

    settings = AudioGenerationSettings(min_new_tokens=8, max_new_tokens=12).to_openai()
    hook = _FailAtStep(at)

    def body():
        handle = omni_backend.captioner.model.register_forward_hook(hook)
        try:
            with OpenAICompatServer(chat=omni_backend) as srv:
                client = OpenAICompatClient(APIConfig(base_url=srv.url, model="omni-tiny", max_retries=0,
                                                      timeout_s=30))
                t0 = time.perf_counter()
                with pytest.raises(APIError, match=f"injected failure at forward call {at}") as streamed:
                    client.chat_stream(_audio_messages(), settings=settings)
                assert not streamed.value.retriable
                hook.calls = 0
                with pytest.raises(APIError, match=f"injected failure at forward call {at}") as plain:
                    client.chat(_audio_messages(), settings=settings)
                assert plain.value.status == 500
                elapsed = time.perf_counter() - t0
                handle.remove()
                # the server is healthy afterwards: the failed generation released the model
                ok = client.chat_stream(_audio_messages(), settings=settings)
                assert ok.completion_tokens >= 8
                client.close()
            return elapsed
        finally:
            handle.remove()

    elapsed = _bounded(body, 120)
    assert elapsed < 60


def test_stalled_generation_fails_the_request_and_server_stops(omni_backend):
    import time

    from leverplus.api import APIConfig, APIError, OpenAICompatClient
    from leverplus.serving import OpenAICompatServer

    settings = AudioGenerationSettings(min_new_tokens=8, max_new_tokens=12).to_openai()
    hook = _FailAtStep(3, block=True)

    def body():
        handle = omni_backend.captioner.model.register_forward_hook(hook)
        try:
            t0 = time.perf_counter()
            with OpenAICompatServer(chat=omni_backend) as srv:
                # the client would wait 60 s per read; the backend's stall timeout (3 s) answers first
                client = OpenAICompatClient(APIConfig(base_url=srv.url, model="omni-tiny", max_retries=0))
                with pytest.raises(APIError, match="no token for 3 s"):
                    client.chat_stream(_audio_messages(), settings=settings)
                client.close()
            return time.perf_counter() - t0
        finally:
            hook.release.set()
            handle.remove()

    elapsed = _bounded(body, 90)
    assert elapsed < 45
    # the stalled generate thread was cancelled once released: the model serves again
    assert omni_backend.captioner._lock.acquire(timeout=30)
    omni_backend.captioner._lock.release()


# ---- the api arm's job (tracks.audio.stages.generate_api) against a served endpoint -----------------------------------
def _api_job(tmp_path, base_url, n_clips=3, n_timed=2):
    import soundfile as sf
    from types import SimpleNamespace

    rows = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in range(n_clips):
        wav = tmp_path / f"c{i}.wav"
        sf.write(wav, _clip(10 + i), 16000, subtype="PCM_16")
        rows.append({"id": f"c{i}", "audio": str(wav), "references": ["女生很高兴"]})
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "api"
    output = SimpleNamespace(predictions=str(out / "predictions.parquet"), timing=str(out / "timing.parquet"),
                             run=str(out / "run.json"))
    gen = {"prompt": PROMPT, "system_prompt": None, "min_new_tokens": 8, "max_new_tokens": 12}
    params = {"api": {"base_url": base_url, "model": "omni-tiny", "api_key_env": None, "timeout_s": 30,
                      "max_retries": 0, "rate_limit_per_s": None},
              "model_name": "omni-tiny", "generation": gen, "warmup": 0,
              "latency": {"n_timed": n_timed, "seed": 0}, "batch_size": 4,
              "scoring": {"n_resamples": 20, "seed": 0}}
    return SimpleNamespace(manifest=str(manifest), model=[]), output, params, out


def test_api_arm_job_streams_every_clip_and_writes_nothing_on_failure(omni_backend, tmp_path):
    import pandas as pd

    from leverplus.api import APIError
    from leverplus.serving import OpenAICompatServer
    from leverplus.tracks.audio.stages import generate_api, timed_subset

    def body():
        with OpenAICompatServer(chat=omni_backend) as srv:
            inp, output, params, out = _api_job(tmp_path / "ok", srv.url)
            generate_api(input=inp, output=output, params=params, wildcards={}, threads=1)
            pred, timing = pd.read_parquet(output.predictions), pd.read_parquet(output.timing)
            run = json.loads(Path(output.run).read_text())
            assert list(pred["id"]) == ["c0", "c1", "c2"] and len(timing) == 2 == run["n_timed"]
            assert list(timing["id"]) == timed_subset(["c0", "c1", "c2"], 2, 0) == list(pred["id"][pred["timed"]])
            assert ((timing["ttft_s"] > 0) & (timing["ttft_s"] < timing["total_s"])).all()
            assert (pred["output_tokens"] >= 8).all()  # usage.completion_tokens, streamed with include_usage
            # a failure inside the 2nd request (each request makes 8-13 forward calls): the job fails, no file
            hook = _FailAtStep(14)
            handle = omni_backend.captioner.model.register_forward_hook(hook)
            try:
                inp, output, params, out = _api_job(tmp_path / "bad", srv.url)
                with pytest.raises(APIError, match="injected failure"):
                    generate_api(input=inp, output=output, params=params, wildcards={}, threads=1)
            finally:
                handle.remove()
            assert hook.calls >= 14 and not out.exists()

    _bounded(body, 120)


# ---- devices (issue 24 item 2): the edge runs on the CPU whatever GPU is visible, and run.json says so ---------
def _local_job(tmp_path, model_dir, arm="edge", **extra):
    import soundfile as sf
    from types import SimpleNamespace

    tmp_path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(2):
        wav = tmp_path / f"c{i}.wav"
        sf.write(wav, _clip(20 + i), 16000, subtype="PCM_16")
        rows.append({"id": f"c{i}", "audio": str(wav), "references": ["女生很高兴"]})
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / arm
    output = SimpleNamespace(predictions=str(out / "predictions.parquet"), timing=str(out / "timing.parquet"),
                             run=str(out / "run.json"))
    params = {"arm": arm, "model": {"source": "demo", "dtype": "bfloat16"}, "model_name": "tiny",
              "generation": {"prompt": PROMPT, "system_prompt": None, "min_new_tokens": 2, "max_new_tokens": 4,
                             "no_repeat_ngram_size": 0},
              "warmup": 0, "latency": {"n_timed": 1, "seed": 0}, "batch_size": 2,
              "scoring": {"n_resamples": 20, "seed": 0}, **extra}
    return SimpleNamespace(manifest=str(manifest), model=str(model_dir)), output, params


def test_edge_arm_stays_on_cpu_in_float32_when_a_gpu_is_visible(tiny_omni_dir, tmp_path, monkeypatch):
    from leverplus.tracks.audio.omni import OmniCaptioner, resolve_device
    from leverplus.tracks.audio.stages import generate_local

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU box, as far as the code can tell
    monkeypatch.setenv("LEVERPLUS_AUDIO_TIMING_LOCK", str(tmp_path / "lock"))
    assert resolve_device(None) == "cpu" and resolve_device("cpu") == "cpu" and resolve_device("auto") == "cuda"
    cap = OmniCaptioner.load(tiny_omni_dir)  # no device given: the CPU, never "cuda because one is visible"
    assert cap.device == "cpu" and next(cap.model.parameters()).device.type == "cpu"
    inp, output, params = _local_job(tmp_path, tiny_omni_dir, device="cpu", dtype="float32")
    generate_local(input=inp, output=output, params=params, wildcards={}, threads=1)
    run = json.loads(Path(output.run).read_text())
    assert run["device"]["device"] == "cpu" and run["device"]["requested"] == "cpu"
    assert run["device"]["dtype"] == "float32" and run["device"]["cuda_visible"] is True
    assert run["threads"]["threads_effective"] == 1


def test_explicit_cuda_without_a_gpu_is_refused(monkeypatch):
    from leverplus.tracks.audio.omni import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="use auto, cpu, cuda"):
        resolve_device("gpu")


# ---- processor and template from the checkpoint (issue 24 item 4) ------------------------------------------------
# Qwen/Qwen2.5-Omni-7B's preprocessor_config.json (the values transformers' own Qwen2.5-Omni processor loads).
QWEN25_OMNI_PREPROCESSOR = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "Qwen2VLImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136, "n_fft": 400, "n_samples": 4800000,
    "nb_max_frames": 30000, "padding_side": "right", "padding_value": 0.0, "patch_size": 14,
    "processor_class": "Qwen2_5OmniProcessor", "return_attention_mask": True, "sampling_rate": 16000,
    "temporal_patch_size": 2,
}
# its chat template's default system turn (chat_template.json; transformers' Qwen2.5-Omni processor tests)
QWEN25_OMNI_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a "
    "helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == "
    "'audio' or 'audio' in content or 'audio_url' in content %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif 'text' in "
    "content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def real_layout_dir(tiny_omni_dir, tmp_path_factory):
    """The tiny thinker with the real checkpoint's processor files: preprocessor_config.json, chat_template.json."""
    d = tmp_path_factory.mktemp("omni_real_layout") / "m"
    shutil.copytree(tiny_omni_dir, d)
    for f in ("processor_config.json", "chat_template.jinja", "preprocessor_config.json"):
        (d / f).unlink(missing_ok=True)
    (d / "preprocessor_config.json").write_text(json.dumps(QWEN25_OMNI_PREPROCESSOR))
    (d / "chat_template.json").write_text(json.dumps({"chat_template": QWEN25_OMNI_TEMPLATE}))
    return d


def test_40s_clip_gets_the_audio_tokens_transformers_gives_it(real_layout_dir):
    """A 40 s clip: the processor built from the checkpoint expands it to as many <|AUDIO|> tokens as transformers'
    own loader (WhisperFeatureExtractor.from_pretrained + the Qwen2.5-Omni processor's length formula): 1000, not
    the 750 of a 30 s cut."""
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    from leverplus.tracks.audio.omni import OmniCaptioner

    cap = OmniCaptioner.load(real_layout_dir, device="cpu")
    audio = np.resize(_clip(5, 2.0), 16000 * 40).astype(np.float32)
    ours = cap.encode(audio, system_prompt=None, prompt=PROMPT)
    n_audio = int((ours["input_ids"][0] == cap.processor.audio_token_id).sum())
    fe = WhisperFeatureExtractor.from_pretrained(real_layout_dir)
    ref = fe(audio, sampling_rate=16000, return_attention_mask=True, padding="max_length")
    expected = int(_get_feat_extract_output_lengths(torch.tensor(ref["attention_mask"]).sum(-1))[0])
    assert n_audio == expected == 1000
    assert int(ours["feature_attention_mask"].sum()) == 4000
    info = cap.processor_info()
    assert info["n_samples"] == 4800000 and info["max_clip_s"] == 300 and info["chat_template"] == "chat_template.json"
    # the checkpoint's template, not a fallback: the same default system turn a vLLM endpoint renders
    assert cap.prompt_text(system_prompt=None, prompt=PROMPT).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")


def test_clip_beyond_the_extractor_is_refused_not_cut(captioner):
    """The demo model's extractor takes 30 s; a 31 s clip is refused with both lengths, never silently cut."""
    audio = np.resize(_clip(3, 2.0), 16000 * 31).astype(np.float32)
    with pytest.raises(ValueError, match=r"31.00 s is longer .* \(30 s"):
        captioner.encode(audio, system_prompt=None, prompt=PROMPT)


def test_fallback_template_has_the_official_system_turn(tmp_path, tiny_omni_dir):
    from transformers import AutoTokenizer

    from leverplus.tracks.audio.processor import chat_template_of

    tok = AutoTokenizer.from_pretrained(tiny_omni_dir)
    tok.chat_template = None
    d = tmp_path / "bare"
    d.mkdir()
    template, source = chat_template_of(d, tok)
    assert source.startswith("fallback") and "You are a helpful assistant." in template
    assert "virtual human" not in template
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        from leverplus.tracks.audio.processor import feature_extractor_of

        feature_extractor_of(d)
