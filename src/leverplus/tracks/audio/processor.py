"""Qwen2.5-Omni processor for audio+text, built without torchvision.

`Qwen2_5OmniProcessor` takes an image processor and a video processor besides the Whisper feature extractor and
the tokenizer, and every video processor in transformers needs torchvision (no CPU wheel on this project's
machines). `OmniAudioTextProcessor` keeps only the feature extractor and the tokenizer: audio-pad expansion
(`_process_audio`, ~25 audio tokens per second), the chat template and the tokenisation are the parent's own
code. It never imports torchvision (a test checks `sys.modules`). Audio goes in as ``audio=[16 kHz mono float32
arrays]``; the Whisper feature extractor (the checkpoint's own, `feature_extractor_of`) refuses any other rate.

Token names: the real Qwen2.5-Omni vocabulary's ``<|AUDIO|>``, ``<|audio_bos|>``, ``<|audio_eos|>`` (and the vision
ones the parent class reads), taken from the tokenizer's named special tokens where it has them.
"""
from __future__ import annotations

from transformers import ProcessorMixin, Qwen2_5OmniProcessor, WhisperFeatureExtractor

OMNI_TOKENS = {
    "image_token": "<|IMAGE|>",
    "audio_token": "<|AUDIO|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
}

# The shipped demo models' message layout (their own chat_template.jinja, written by `build_tiny_omni`):
# `<|im_start|>role\n…<|im_end|>\n`, each audio item as `<|audio_bos|><|AUDIO|><|audio_eos|>` (the processor
# expands the pad per clip), and a default system turn when the conversation has none. A real checkpoint brings its
# own template (chat_template.jinja / chat_template.json); `OFFICIAL_FALLBACK_TEMPLATE` is used only when it has
# none.
DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)
OMNI_AUDIO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Qwen2.5-Omni's own template (the checkpoint's chat_template.json, also in transformers' Qwen2.5-Omni processor
# tests) inserts "You are a helpful assistant." when a conversation has no system turn; a fallback for a checkpoint
# without a template keeps that turn (audio and text parts only), so a local arm and a served one (vLLM renders the
# checkpoint's template) see the same prompt.
OFFICIAL_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
OFFICIAL_FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n" + OFFICIAL_DEFAULT_SYSTEM_PROMPT
    + "<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class OmniAudioTextProcessor(Qwen2_5OmniProcessor):
    def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None, **kwargs):
        ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
        for attr, default in OMNI_TOKENS.items():
            token = getattr(tokenizer, attr, None) or default
            setattr(self, attr, token)
            if attr in ("image_token", "audio_token", "video_token"):
                setattr(self, attr + "_id", tokenizer.convert_tokens_to_ids(token))

    @property
    def model_input_names(self):
        return list(dict.fromkeys(
            self.tokenizer.model_input_names + self.feature_extractor.model_input_names + ["feature_attention_mask"]
        ))


def chat_template_of(model_dir, tokenizer) -> tuple[str, str]:
    """(template, where it came from): the directory's ``chat_template.jinja``, else ``chat_template.json``
    (``{"chat_template": …}``, as Qwen2.5-Omni ships it), else the tokenizer's, else `OFFICIAL_FALLBACK_TEMPLATE`."""
    import json
    from pathlib import Path

    d = Path(model_dir)
    if (d / "chat_template.jinja").is_file():
        return (d / "chat_template.jinja").read_text(encoding="utf-8"), "chat_template.jinja"
    if (d / "chat_template.json").is_file():
        try:
            data = json.loads((d / "chat_template.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{d / 'chat_template.json'}: not valid JSON ({exc})") from None
        template = data.get("chat_template") if isinstance(data, dict) else None
        if not isinstance(template, str) or not template:
            raise ValueError(f"{d / 'chat_template.json'}: no 'chat_template' string")
        return template, "chat_template.json"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template, "tokenizer_config.json"
    return OFFICIAL_FALLBACK_TEMPLATE, "fallback (Qwen2.5-Omni's layout and default system turn)"


def feature_extractor_of(model_dir) -> WhisperFeatureExtractor:
    """The checkpoint's own Whisper feature extractor (``preprocessor_config.json``, or the ``feature_extractor``
    entry of ``processor_config.json``), loaded by transformers as its own processor loads it: Qwen2.5-Omni's has
    ``chunk_length`` 300 / ``n_samples`` 4,800,000 (clips up to 300 s), not the class defaults (30 s). A directory
    without either file is refused rather than given hard-coded values."""
    from pathlib import Path

    d = Path(model_dir)
    if not ((d / "preprocessor_config.json").is_file() or (d / "processor_config.json").is_file()):
        raise FileNotFoundError(f"{d}: no preprocessor_config.json (or processor_config.json): the audio feature "
                                "extractor's settings (mel bins, chunk_length, n_samples) come from the checkpoint")
    fe = WhisperFeatureExtractor.from_pretrained(str(d))
    if int(fe.sampling_rate) != 16000:
        raise ValueError(f"{d}: feature extractor sampling_rate {fe.sampling_rate}, expected 16000")
    return fe


def build_processor(model_dir: str) -> OmniAudioTextProcessor:
    """The audio+text processor for a local model directory: the checkpoint's feature extractor
    (`feature_extractor_of`), its tokenizer, and its chat template (`chat_template_of`; the source is kept in
    ``processor.template_source``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    template, source = chat_template_of(model_dir, tokenizer)
    fe = feature_extractor_of(model_dir)
    processor = OmniAudioTextProcessor(feature_extractor=fe, tokenizer=tokenizer, chat_template=template)
    processor.template_source = source
    return processor
