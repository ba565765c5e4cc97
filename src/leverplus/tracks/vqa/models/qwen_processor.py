"""Qwen2.5-VL processor for image+text when torchvision is absent.

transformers' `Qwen2_5_VLProcessor` insists on a video processor, and every video processor in transformers needs
torchvision, for which no CPU wheel exists on this project's CPU machines. This subclass drops only the video
attribute: text/image tokenisation, image-pad expansion, `mm_token_type_ids` and the chat template are the
parent's own code. With torchvision installed (GPU boxes) `load_processor` returns the stock processor.
"""
from __future__ import annotations

from transformers import ProcessorMixin, Qwen2_5_VLProcessor


class Qwen2_5_VLImageTextProcessor(Qwen2_5_VLProcessor):
    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def load_processor(path: str):
    """The stock Qwen2.5-VL processor where it can be built, else the image+text subclass."""
    try:
        import torchvision  # noqa: F401

        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)
    except ImportError:
        return Qwen2_5_VLImageTextProcessor.from_pretrained(path)
