"""Qwen2.5-Omni processor for audio+text, built without torchvision.

`Qwen2_5OmniProcessor` takes an image processor and a video processor besides the Whisper feature extractor and
the tokenizer, and every video processor in transformers needs torchvision (no CPU wheel on this project's
machines). `OmniAudioTextProcessor` keeps only the feature extractor and the tokenizer: audio-pad expansion
(`_process_audio`, ~25 audio tokens per second), the chat template and the tokenisation are the parent's own
code. It never imports torchvision (a test checks `sys.modules`). Audio goes in as ``audio=[16 kHz mono float32
arrays]``; the Whisper feature extractor refuses any other rate and pads features to 30 s.

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

# Qwen2.5-Omni's message layout: `<|im_start|>role\n…<|im_end|>\n`, each audio item as
# `<|audio_bos|><|AUDIO|><|audio_eos|>` (the processor expands the pad per clip), the default system turn when
# the conversation has none.
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


def build_processor(model_dir: str) -> OmniAudioTextProcessor:
    """The audio+text processor for a local model directory: WhisperFeatureExtractor(feature_size=128), the
    directory's tokenizer, and its chat template (`chat_template.jinja`, else the tokenizer's, else this module's)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    else:
        template = getattr(tokenizer, "chat_template", None) or OMNI_AUDIO_CHAT_TEMPLATE
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000)
    return OmniAudioTextProcessor(feature_extractor=fe, tokenizer=tokenizer, chat_template=template)
