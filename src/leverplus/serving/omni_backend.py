"""Chat backend serving a Qwen2.5-Omni thinker with audio input: "the cloud via API" for tests and the demo.

`OmniChatBackend(model_dir, model_name)` accepts OpenAI chat messages whose user content holds one
``{"type": "input_audio", "input_audio": {"data": <base64 WAV>, "format": "wav"}}`` part (what
`leverplus.api.audio_content_part` makes; 16 kHz mono PCM WAV) and text parts, plus an optional system message, and
streams one text piece per generated token through `leverplus.serving.chat_backend.stream_generate` — the same
settings semantics as the text backend (greedy when ``temperature`` is 0 or absent; ``max_tokens``, ``min_tokens``,
``repetition_penalty``, ``no_repeat_ngram_size``, ``top_p``, ``top_k``, ``seed`` explicit), which are also what
`AudioGenerationSettings.to_openai` sends. Model, processor and prompt layout are `OmniCaptioner`'s, so a greedy
request returns the same caption as `OmniCaptioner.caption` with the corresponding settings.

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
    except Exception as exc:  # soundfile raises its own error types
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


class OmniChatBackend:
    def __init__(self, model_dir: str, model_name: str, *, dtype: str = "float32", device: str | None = None,
                 stall_timeout_s: float | None = None):
        from leverplus.models.omni import OmniCaptioner

        from .chat_backend import DEFAULT_STALL_TIMEOUT_S

        if stall_timeout_s is not None and not (isinstance(stall_timeout_s, (int, float)) and stall_timeout_s > 0):
            raise ValueError(f"omni chat backend: stall_timeout_s must be > 0, got {stall_timeout_s!r}")
        self.model_name = model_name
        self.model_dir = str(model_dir)
        self.stall_timeout_s = float(stall_timeout_s) if stall_timeout_s is not None else DEFAULT_STALL_TIMEOUT_S
        self.captioner = OmniCaptioner.load(model_dir, dtype=dtype, device=device)

    def stream(self, messages: list[dict], settings: dict) -> Iterator[str | dict]:
        from .chat_backend import generation_config_from_settings, stream_generate

        system, audio, prompt = parse_audio_messages(messages)
        cap = self.captioner
        # validate the settings before the generator starts (a bad request fails before any byte is sent)
        generation_config_from_settings(settings, eos_token_id=cap.eos_token_ids, pad_token_id=cap.pad_token_id)
        inputs = cap.encode(audio, system_prompt=system, prompt=prompt)
        return stream_generate(cap.model, cap.tokenizer, inputs, settings, lock=cap._lock,
                               stall_timeout_s=self.stall_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_dir": self.model_dir, "dtype": self.captioner.dtype,
                "kind": "omni-thinker"}


def make_chat_backend(model_dir: str, *, model_name: str, options: dict) -> OmniChatBackend:
    """Registry factory (`leverplus.serving.backends`): options ``dtype``, ``device``, ``stall_timeout_s``."""
    allowed = {"dtype", "device", "stall_timeout_s"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"omni chat backend: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return OmniChatBackend(model_dir, model_name, **options)
