"""Decoding settings for the audio-caption arms: one explicit record, from config `audio.generation`.

Every setting that changes a caption is a field here and is passed to `generate` explicitly, in a *fresh*
`transformers.GenerationConfig` built from these fields alone (`generate_kwargs`); `OmniCaptioner.load` also
replaces the model's own `generation_config` by one that carries only the special token ids. A checkpoint's
`generation_config.json` (the real Qwen2.5-Omni ships sampling defaults) therefore cannot leak into any call.

Defaults are the document's aligned decoding: greedy, repetition_penalty 1.0, min_new_tokens 8, max_new_tokens 32,
no_repeat_ngram_size 2. With `do_sample` true, `temperature`/`top_p`/`top_k` apply and `seed` seeds torch before
every request, so each request is reproducible on its own (independent of order).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class AudioGenerationSettings:
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k filtering
    num_beams: int = 1
    repetition_penalty: float = 1.0
    min_new_tokens: int = 8
    max_new_tokens: int = 32
    no_repeat_ngram_size: int = 2
    seed: int = 0

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"audio.generation.{name}: {why}, got {getattr(self, name)!r}")

        if not isinstance(self.do_sample, bool):
            bad("do_sample", "must be true or false")
        for name in ("top_k", "num_beams", "min_new_tokens", "max_new_tokens", "no_repeat_ngram_size", "seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                bad(name, "must be an integer")
        if self.max_new_tokens < 1:
            bad("max_new_tokens", "must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            bad("min_new_tokens", "must be between 0 and max_new_tokens")
        if self.num_beams < 1:
            bad("num_beams", "must be >= 1")
        if self.top_k < 0:
            bad("top_k", "must be >= 0")
        if self.no_repeat_ngram_size < 0:
            bad("no_repeat_ngram_size", "must be >= 0")
        if not self.temperature > 0:
            bad("temperature", "must be > 0 (use do_sample: false for greedy decoding)")
        if not 0 < self.top_p <= 1:
            bad("top_p", "must be in (0, 1]")
        if not self.repetition_penalty > 0:
            bad("repetition_penalty", "must be > 0")

    @classmethod
    def from_config(cls, block: dict | None) -> AudioGenerationSettings:
        """From a config block (absent keys take the defaults; unknown keys are an error)."""
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"audio.generation: unknown key(s) {unknown}; allowed: {sorted(known)}")
        for name in ("temperature", "top_p", "repetition_penalty"):
            if name in block and isinstance(block[name], int) and not isinstance(block[name], bool):
                block[name] = float(block[name])
        return cls(**block)

    def to_dict(self) -> dict:
        return asdict(self)

    def signature(self) -> str:
        """Short stable text naming every setting, e.g. for a results signature."""
        body = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "gen:" + hashlib.sha256(body.encode()).hexdigest()[:12] + " " + body

    def generation_config(self, *, eos_token_id, pad_token_id, bos_token_id=None):
        """A fresh GenerationConfig with every decoding field explicit and every other processor neutral."""
        from transformers import GenerationConfig

        from .generation import NEUTRAL_PROCESSORS

        sampling = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k) if self.do_sample else {}
        return GenerationConfig(
            do_sample=self.do_sample,
            **sampling,
            num_beams=self.num_beams,
            num_return_sequences=1,
            repetition_penalty=self.repetition_penalty,
            min_new_tokens=self.min_new_tokens,
            max_new_tokens=self.max_new_tokens,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            length_penalty=1.0,
            early_stopping=False,
            **NEUTRAL_PROCESSORS,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
        )

    def generate_kwargs(self, *, eos_token_id, pad_token_id, bos_token_id=None) -> dict:
        """Keyword arguments for `model.generate`: the fresh GenerationConfig (nothing else is read)."""
        return {"generation_config": self.generation_config(
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id)}

    # ---- OpenAI-compatible request fields (what an API arm sends, what the local server reads) ----
    def to_openai(self) -> dict:
        """Request fields for an OpenAI-compatible / vLLM endpoint. Greedy is temperature 0 there; min_tokens,
        top_k, repetition_penalty and no_repeat_ngram_size are vLLM extensions (sent in the JSON body)."""
        if self.num_beams != 1:
            raise ValueError("audio.generation.num_beams > 1 cannot be sent to a chat-completions endpoint")
        return {
            "max_tokens": self.max_new_tokens,
            "min_tokens": self.min_new_tokens,
            "temperature": self.temperature if self.do_sample else 0.0,
            "top_p": self.top_p if self.do_sample else 1.0,
            "top_k": self.top_k if self.do_sample else 0,
            "repetition_penalty": self.repetition_penalty,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "seed": self.seed,
        }

    @classmethod
    def from_openai(cls, request: dict) -> AudioGenerationSettings:
        """The inverse of `to_openai` (what `OmniChatBackend` runs with); temperature 0 means greedy.
        Absent fields take this class's defaults; `top_k` -1 (vLLM's "off") is read as 0."""
        d = cls()
        temperature = float(request.get("temperature", 1.0) if request.get("temperature") is not None else 1.0)
        do_sample = temperature > 0
        top_k = int(request.get("top_k", 0) or 0)
        return cls(
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=float(request.get("top_p", 1.0) or 1.0) if do_sample else 1.0,
            top_k=max(0, top_k) if do_sample else 0,
            num_beams=1,
            repetition_penalty=float(request.get("repetition_penalty", d.repetition_penalty)),
            min_new_tokens=int(request.get("min_tokens", d.min_new_tokens)),
            max_new_tokens=int(request.get("max_tokens", request.get("max_completion_tokens", d.max_new_tokens))),
            no_repeat_ngram_size=int(request.get("no_repeat_ngram_size", d.no_repeat_ngram_size)),
            seed=int(request.get("seed", d.seed) if request.get("seed") is not None else d.seed),
        )
