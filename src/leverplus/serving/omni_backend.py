"""Chat backend serving a Qwen2.5-Omni thinker with audio input: "the cloud via API" for tests and the demo.

`OmniChatBackend(model_dir, model_name)` accepts OpenAI chat messages whose user content holds one
``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}`` part (what
`leverplus.api.audio_content_part` makes; 16 kHz mono PCM WAV) and text parts, plus an optional system message, and
streams one text piece per generated token through `leverplus.serving.chat_backend.stream_generate` — the same
settings semantics as the text backend (greedy when ``temperature`` is 0 or absent; ``max_tokens``, ``min_tokens``,
``repetition_penalty``, ``top_p``, ``top_k``, ``seed`` explicit), which are also what
`AudioGenerationSettings.to_openai` sends. Model, processor and prompt layout are `OmniCaptioner`'s, so a greedy
request returns the same caption as `OmniCaptioner.caption` with the corresponding settings.

Request fields are read as vLLM reads them, so that this demo server cannot hide what a real vLLM endpoint does
with the api arm's request: a field that vLLM's chat request does not have
(`leverplus.tracks.audio.generation.VLLM_CHAT_REQUEST_FIELDS`, e.g. ``no_repeat_ngram_size``) is ignored and
counted in ``ignored_fields`` (vLLM logs and drops it), and ``top_k`` 0 is refused with vLLM's message ("top_k
must be -1 (disable), or at least 1"), as are a ``repetition_penalty`` outside (0, 2] and a ``top_p`` outside (0, 1].

Bad input (no audio part, two audio parts, undecodable base64/WAV, a rate other than 16 kHz, stereo) raises
`ValueError` with the reason, which the server answers as HTTP 400. A failure inside `generate` reaches the client
as HTTP 500 (non-streaming) or an in-stream error event (streaming), with the original error's type and message;
a generation that produces no token for ``stall_timeout_s`` seconds (default
`chat_backend.DEFAULT_STALL_TIMEOUT_S`, the model-lock wait included) is cancelled and fails the same way.
"""
from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["OmniChatBackend", "make_chat_backend", "parse_audio_messages"]


def _decode_wav(part: dict) -> np.ndarray:
    import soundfile as sf

    payload = part.get("input_audio")
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), str):
        raise ValueError("input_audio part needs {'data': <base64>, 'format': 'wav'}")
    fmt = payload.get("format", "wav")
    if fmt != "wav":
        raise ValueError(f"input_audio format {fmt!r} is not supported (only 'wav')")
    try:
        raw = base64.b64decode(payload["data"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("input_audio data is not valid base64") from None
    try:
        audio, sr = sf.read(io.BytesIO(raw), dtype="float32", always_2d=False)
    except Exception as exc:  # noqa: BLE001 (soundfile raises its own error types)
        raise ValueError(f"input_audio data is not a readable WAV: {exc}") from None
    if audio.ndim != 1:
        raise ValueError(f"input_audio must be mono, got {audio.shape[1]} channels")
    if sr != 16000:
        raise ValueError(f"input_audio must be 16 kHz (the Whisper feature extractor's rate), got {sr} Hz")
    if audio.size == 0:
        raise ValueError("input_audio is empty")
    return audio


def parse_audio_messages(messages: list[dict]) -> tuple[str | None, np.ndarray, str]:
    """(system prompt or None, the 16 kHz clip, the user's text) from OpenAI chat messages."""
    system, audio, texts = None, None, []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError("every message needs 'role' and 'content'")
        role, content = m["role"], m["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise ValueError("message content must be a string or a list of parts")
        if role == "system":
            system = "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")
        elif role == "user":
            for p in parts:
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    texts.append(p.get("text", ""))
                elif kind == "input_audio":
                    if audio is not None:
                        raise ValueError("one input_audio part per request is supported")
                    audio = _decode_wav(p)
                else:
                    raise ValueError(f"unsupported content part type {kind!r} (text and input_audio only)")
        else:
            raise ValueError(f"unsupported message role {role!r} (system and one user turn only)")
    if audio is None:
        raise ValueError("the user message has no input_audio part")
    return system, audio, "".join(texts)


def vllm_settings(settings: dict, ignored: dict | None = None) -> dict:
    """The request settings as vLLM's chat endpoint reads them: fields outside its request model dropped (counted in
    ``ignored``; logged), ``top_k`` 0 / below -1, ``repetition_penalty`` outside (0, 2] and ``top_p`` outside (0, 1]
    refused with ``ValueError`` (HTTP 400), as vLLM's SamplingParams refuses them."""
    import logging

    from leverplus.tracks.audio.generation import VLLM_CHAT_REQUEST_FIELDS

    settings = dict(settings or {})
    dropped = sorted(set(settings) - VLLM_CHAT_REQUEST_FIELDS)
    if dropped:
        logging.getLogger(__name__).warning("The following fields were present in the request but ignored: %s",
                                            dropped)
        for k in dropped:
            settings.pop(k)
            if ignored is not None:
                ignored[k] = ignored.get(k, 0) + 1
    top_k = settings.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or top_k < -1 or top_k == 0):
        raise ValueError(f"top_k must be -1 (disable), or at least 1, got {top_k}.")
    rp = settings.get("repetition_penalty")
    if rp is not None and not (isinstance(rp, (int, float)) and 0.0 < rp <= 2.0):
        raise ValueError(f"repetition_penalty must be in (0, 2], got {rp}.")
    tp = settings.get("top_p")
    if tp is not None and not (isinstance(tp, (int, float)) and 0.0 < tp <= 1.0):
        raise ValueError(f"top_p must be in (0, 1], got {tp}.")
    return settings


class OmniChatBackend:
    def __init__(self, model_dir: str, model_name: str, *, dtype: str = "float32", device: str | None = None,
                 stall_timeout_s: float | None = None):
        from leverplus.tracks.audio.omni import OmniCaptioner

        from leverplus.serving.chat_backend import DEFAULT_STALL_TIMEOUT_S

        if stall_timeout_s is not None and not (isinstance(stall_timeout_s, (int, float)) and stall_timeout_s > 0):
            raise ValueError(f"omni chat backend: stall_timeout_s must be > 0, got {stall_timeout_s!r}")
        self.model_name = model_name
        self.model_dir = str(model_dir)
        self.stall_timeout_s = float(stall_timeout_s) if stall_timeout_s is not None else DEFAULT_STALL_TIMEOUT_S
        self.captioner = OmniCaptioner.load(model_dir, dtype=dtype, device=device)
        self.ignored_fields: dict[str, int] = {}  # request fields vLLM would drop, with how often they came

    def stream(self, messages: list[dict], settings: dict) -> Iterator[str | dict]:
        from leverplus.serving.chat_backend import generation_config_from_settings, stream_generate

        settings = vllm_settings(settings, self.ignored_fields)
        system, audio, prompt = parse_audio_messages(messages)
        cap = self.captioner
        # validate the settings before the generator starts (a bad request fails before any byte is sent)
        generation_config_from_settings(settings, eos_token_id=cap.eos_token_ids, pad_token_id=cap.pad_token_id)
        inputs = cap.encode(audio, system_prompt=system, prompt=prompt)
        return stream_generate(cap.model, cap.tokenizer, inputs, settings, lock=cap._lock,
                               stall_timeout_s=self.stall_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_dir": self.model_dir, "dtype": self.captioner.dtype,
                "device": self.captioner.device, "kind": "omni-thinker",
                "ignored_fields": dict(self.ignored_fields)}


def make_chat_backend(model_dir: str, *, model_name: str, options: dict) -> OmniChatBackend:
    """Registry factory (`leverplus.serving.backends`): options ``dtype``, ``device``, ``stall_timeout_s``."""
    allowed = {"dtype", "device", "stall_timeout_s"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"omni chat backend: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return OmniChatBackend(model_dir, model_name, **options)
