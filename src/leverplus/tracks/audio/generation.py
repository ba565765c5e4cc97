"""Decoding settings for the audio-caption arms: one explicit record, from config `audio.generation`.

Every setting that changes a caption is a field here and is passed to `generate` explicitly, in a *fresh*
`transformers.GenerationConfig` built from these fields alone (`generate_kwargs`); `OmniCaptioner.load` also
replaces the model's own `generation_config` by one that carries only the special token ids. A checkpoint's
`generation_config.json` (the real Qwen2.5-Omni ships sampling defaults) therefore cannot leak into any call.

Defaults are the aligned decoding: greedy, repetition_penalty 1.0, min_new_tokens 8, max_new_tokens 32,
no_repeat_ngram_size 0 (the document used 2; a vLLM endpoint cannot apply it, so the block every arm shares --
the api arm included -- leaves it off; `to_openai` refuses a non-zero value). With `do_sample` true, `temperature`/`top_p`/`top_k` apply and `seed` seeds torch before
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
    no_repeat_ngram_size: int = 0
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

        from leverplus.models.generation import NEUTRAL_PROCESSORS

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
        """Request fields for a vLLM OpenAI-compatible chat endpoint, each one a field vLLM's chat request reads
        (`VLLM_CHAT_REQUEST_FIELDS`) with a value vLLM accepts. Greedy is temperature 0 there; ``top_k`` "off" is
        -1 (vLLM's SamplingParams refuses 0 in the Omni-era releases: "top_k must be -1 (disable), or at least 1");
        ``min_tokens``, ``top_k`` and ``repetition_penalty`` are vLLM extensions (sent in the JSON body).

        Refused, never sent to be dropped: ``no_repeat_ngram_size`` > 0 (vLLM's chat request has no such field
        and SamplingParams no such parameter: it would be accepted, logged as ignored, and not applied),
        ``num_beams`` > 1, ``repetition_penalty`` above 2 (vLLM's range is (0, 2])."""
        if self.num_beams != 1:
            raise ValueError("audio.generation.num_beams > 1 cannot be sent to a chat-completions endpoint")
        if self.no_repeat_ngram_size:
            raise ValueError(
                f"audio.generation.no_repeat_ngram_size {self.no_repeat_ngram_size}: an OpenAI-compatible vLLM "
                "endpoint has no such request field (it would ignore it and decode without it), so the api arm "
                "cannot apply this decoding; set no_repeat_ngram_size: 0 in the block every arm uses")
        if not 0 < self.repetition_penalty <= 2:
            raise ValueError(f"audio.generation.repetition_penalty {self.repetition_penalty}: vLLM accepts (0, 2]")
        return {
            "max_tokens": self.max_new_tokens,
            "min_tokens": self.min_new_tokens,
            "temperature": self.temperature if self.do_sample else 0.0,
            "top_p": self.top_p if self.do_sample else 1.0,
            "top_k": self.top_k if (self.do_sample and self.top_k > 0) else -1,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
        }

    @classmethod
    def from_openai(cls, request: dict) -> AudioGenerationSettings:
        """The inverse of `to_openai`; temperature 0 means greedy. Only fields vLLM reads are read (so
        ``no_repeat_ngram_size`` is 0 whatever the request says, as on vLLM); absent fields take vLLM's defaults
        where this class's differ (``min_tokens`` 0). ``top_k`` -1 (vLLM's "off") is this class's 0; 0 is refused
        as vLLM refuses it."""
        temperature = float(request.get("temperature", 1.0) if request.get("temperature") is not None else 1.0)
        do_sample = temperature > 0
        top_k = int(request.get("top_k", -1) if request.get("top_k") is not None else -1)
        if top_k == 0 or top_k < -1:
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {top_k}.")
        max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or cls().max_new_tokens
        return cls(
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=float(request.get("top_p", 1.0) or 1.0) if do_sample else 1.0,
            top_k=max(0, top_k) if do_sample else 0,
            num_beams=1,
            repetition_penalty=float(request.get("repetition_penalty") or 1.0),
            min_new_tokens=int(request.get("min_tokens") or 0),
            max_new_tokens=int(max_tokens),
            no_repeat_ngram_size=0,
            seed=int(request.get("seed") or 0),
        )


# The request fields of vLLM's chat completion endpoint: `ChatCompletionRequest` in
# vllm/entrypoints/openai/protocol.py (github.com/vllm-project/vllm @ ec3b890c14b00f6670515d9df8d503b5270e95ca).
# Any other field is accepted and dropped there (`OpenAIBaseModel.__log_extra_fields__` logs "present in the
# request but ignored"). The local demo server reads only these (`leverplus.serving.omni_backend`).
VLLM_CHAT_REQUEST_FIELDS = frozenset({
    "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
    "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream", "stream_options",
    "temperature", "top_p", "tools", "tool_choice", "reasoning_effort", "include_reasoning", "parallel_tool_calls",
    "user", "use_beam_search", "top_k", "min_p", "repetition_penalty", "length_penalty", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "bad_words", "echo", "add_generation_prompt",
    "continue_final_message", "add_special_tokens", "documents", "chat_template", "chat_template_kwargs",
    "mm_processor_kwargs", "structured_outputs", "priority", "request_id", "logits_processors",
    "return_tokens_as_token_ids", "return_token_ids", "cache_salt", "kv_transfer_params", "vllm_xargs",
})
