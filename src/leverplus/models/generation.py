"""Decoding settings for answer generation: one explicit record, from config `infer.generation`.

Nothing is inherited from a checkpoint. A Hugging Face checkpoint ships a `generation_config.json` whose values
transformers' `generate` merges into every call where the caller left a field unset (the real
Qwen2.5-VL-3B-Instruct ships ``do_sample: true, top_k: 1, top_p: 0.001, temperature: 0.1,
repetition_penalty: 1.05``), and a repetition penalty is applied in greedy mode too — over the prompt, so the
demonstrations' answer tokens are penalised. `GenerationSettings` holds every setting that changes an answer;
`hf_generation_config` turns it into a fresh `transformers.GenerationConfig` with every logits processor set to
its neutral value, and the adapters also replace the model's own `generation_config` by a neutral one, so the
merge has nothing left to take from the checkpoint.

Only deterministic decoding is offered (`do_sample` must be false): results must depend on the config and the data
alone. Greedy (`num_beams` 1) or beam search (`num_beams` > 1, `length_penalty`: a finished beam's score is its
summed log-probability divided by (generated length ** length_penalty); 0 = the plain sum, as OpenFlamingo's and
Lever-LM's VQA evaluations use; `early_stopping` is always transformers' default False). `min_new_tokens` forbids the
stop tokens before that many new tokens (Qwen-VL's VQA evaluation uses 1). `preset` names the published protocol
(`leverplus.tracks.vqa.models.presets`) the settings were filled from, or None. The settings are recorded in every results file
(`as_dict`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

DEFAULT_MAX_NEW_TOKENS = 8


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    num_beams: int = 1
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0  # only read by beam search (num_beams > 1)
    min_new_tokens: int = 0
    preset: str | None = None  # the protocol these settings come from (config `preset`), recorded with them

    def __post_init__(self):
        if self.do_sample is not False:
            raise ValueError("generation.do_sample must be false: only deterministic decoding is supported")
        if not (isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1):
            raise ValueError(f"generation.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not (isinstance(self.num_beams, int) and self.num_beams >= 1):
            raise ValueError(f"generation.num_beams must be an integer >= 1, got {self.num_beams!r}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"generation.repetition_penalty must be > 0, got {self.repetition_penalty!r}")
        if not (isinstance(self.min_new_tokens, int) and 0 <= self.min_new_tokens <= self.max_new_tokens):
            raise ValueError(
                f"generation.min_new_tokens must be an integer in [0, max_new_tokens], got {self.min_new_tokens!r}"
            )
        if self.preset is not None and not isinstance(self.preset, str):
            raise ValueError(f"generation.preset must be a preset name or null, got {self.preset!r}")

    @classmethod
    def from_config(cls, block: dict | None) -> GenerationSettings:
        """From config `infer.generation` (absent keys take the defaults above; unknown keys are an error)."""
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"infer.generation: unknown key(s) {unknown}; allowed: {sorted(known)}")
        if "repetition_penalty" in block:
            block["repetition_penalty"] = float(block["repetition_penalty"])
        if "length_penalty" in block:
            block["length_penalty"] = float(block["length_penalty"])
        return cls(**block)

    def with_overrides(self, max_new_tokens: int | None = None) -> GenerationSettings:
        return self if max_new_tokens is None else replace(self, max_new_tokens=max_new_tokens)

    @property
    def is_greedy(self) -> bool:
        return self.num_beams == 1 and self.repetition_penalty == 1.0

    @property
    def is_beam_search(self) -> bool:
        return self.num_beams > 1

    def as_dict(self) -> dict:
        return asdict(self)


def resolve(settings: GenerationSettings | dict | None, max_new_tokens: int | None = None) -> GenerationSettings:
    """The settings a `generate` call runs with: `settings` (or the defaults), `max_new_tokens` overriding."""
    if settings is None:
        settings = GenerationSettings()
    elif isinstance(settings, dict):
        settings = GenerationSettings.from_config(settings)
    return settings.with_overrides(max_new_tokens)


def neutral_generation_config(*, eos_token_id, pad_token_id, bos_token_id=None):
    """A `GenerationConfig` that carries only the special token ids (what replaces a checkpoint's own)."""
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=eos_token_id, pad_token_id=pad_token_id, bos_token_id=bos_token_id)


# Every logits processor / output option that no decoding setting of ours uses, at its neutral value: passed
# explicitly into each fresh GenerationConfig (VQA answers, audio captions, the local server's chat), so nothing of a
# checkpoint's generation_config can fill them in.
NEUTRAL_PROCESSORS = dict(
    encoder_repetition_penalty=1.0,
    encoder_no_repeat_ngram_size=0,
    bad_words_ids=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
    forced_bos_token_id=None,
    forced_eos_token_id=None,
    exponential_decay_length_penalty=None,
    sequence_bias=None,
    renormalize_logits=False,
    remove_invalid_values=False,
    use_cache=True,
    return_dict_in_generate=False,
    output_scores=False,
)


def hf_generation_config(settings: GenerationSettings, *, eos_token_id, pad_token_id, bos_token_id=None):
    """A fresh `GenerationConfig` with every setting explicit: the decoding strategy from `settings`, every other
    logits processor at its neutral value, and no sampling parameters (they are unused with do_sample false and
    left unset so transformers has nothing to warn about)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens,
        do_sample=False,
        num_beams=settings.num_beams,
        num_return_sequences=1,
        repetition_penalty=settings.repetition_penalty,
        length_penalty=settings.length_penalty,
        early_stopping=False,
        no_repeat_ngram_size=0,
        **NEUTRAL_PROCESSORS,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
    )
