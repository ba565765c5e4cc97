"""Tiny models of the real architecture classes, built locally from configs (no hub).

`build_tiny_qwen2_5_vl` writes a complete Hugging Face model directory — config, safetensors weights,
a byte-level BPE tokenizer trained on a given corpus, the Qwen2-VL image processor and a chat template with
Qwen2.5-VL's message layout — that loads back through `Qwen2_5_VLForConditionalGeneration.from_pretrained` and
`AutoProcessor.from_pretrained` exactly like the 3B checkpoint does.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Special tokens of the Qwen2.5-VL vocabulary that the processor and chat template rely on.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Same message layout as the Qwen2.5-VL-Instruct template: default system turn, `<|im_start|>role\n…<|im_end|>\n`,
# each image as `<|vision_start|><|image_pad|><|vision_end|>` (the processor expands the pad per image grid).
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyQwenVLSize:
    """Dimensions of a tiny Qwen2.5-VL; the defaults run a forward pass in milliseconds on one CPU core."""

    vocab_size: int = 512  # BPE merges target; special tokens are added on top
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    vision_depth: int = 2
    vision_hidden_size: int = 64
    vision_heads: int = 2
    vision_intermediate_size: int = 128
    image_size: int = 56  # images are resized to image_size² pixels → (image_size/28)² image tokens
    # real-size builds (models/real_size.py) set these; the defaults keep the tiny models as they were
    vocab_rows: int | None = None  # embedding rows (the real vocabulary size); None: the tokenizer's length
    fullatt_block_indexes: tuple[int, ...] | None = None  # None: the last vision block only
    min_pixels: int | None = None  # image processor bounds; None: image_size² (every image resized to it)
    max_pixels: int | None = None
    rope_theta: float = 10000.0
    max_position_embeddings: int = 4096


# fields added for real-size builds: left out of a size's record while at their defaults, so the records (and the
# shipped demo models' sha256s) of the tiny models stay what they were
REAL_SIZE_FIELDS = ("vocab_rows", "fullatt_block_indexes", "min_pixels", "max_pixels", "rope_theta",
                    "max_position_embeddings", "expansion_ratio")


def size_record(size) -> dict:
    """`asdict(size)` without the real-size fields that are at their defaults (see REAL_SIZE_FIELDS)."""
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(size)}
    return {k: v for k, v in asdict(size).items() if not (k in REAL_SIZE_FIELDS and v == defaults[k])}


def train_bpe_tokenizer(corpus: Iterable[str], vocab_size: int):
    """Byte-level BPE (the Qwen2 tokenizer family) trained on `corpus`, wrapped as a `Qwen2Tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab = model_json["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    return tok


def tiny_qwen2_5_vl_config(vocab_size: int, size: TinyQwenVLSize, token_ids: dict[str, int]):
    from transformers import Qwen2_5_VLConfig

    head_dim = size.hidden_size // size.num_attention_heads
    half = head_dim // 2
    t = half // 4
    mrope_section = [t, (half - t) // 2, half - t - (half - t) // 2]
    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        max_position_embeddings=size.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": size.rope_theta, "mrope_section": mrope_section},
        tie_word_embeddings=True,
        bos_token_id=token_ids["<|endoftext|>"],
        eos_token_id=token_ids["<|im_end|>"],
        pad_token_id=token_ids["<|endoftext|>"],
    )
    vision_config = dict(
        depth=size.vision_depth,
        hidden_size=size.vision_hidden_size,
        intermediate_size=size.vision_intermediate_size,
        num_heads=size.vision_heads,
        out_hidden_size=size.hidden_size,
        fullatt_block_indexes=list(size.fullatt_block_indexes or [size.vision_depth - 1]),
        window_size=112,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_qwen2_5_vl(
    out_dir: str | Path,
    corpus: Iterable[str],
    *,
    size: TinyQwenVLSize = TinyQwenVLSize(),
    seed: int = 0,
) -> Path:
    """Build a random-init tiny Qwen2.5-VL + processor and `save_pretrained` it into `out_dir`."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from leverplus.tracks.vqa.models.qwen_processor import Qwen2_5_VLImageTextProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    template_words = ["system\nYou are a helpful assistant.", "user\n", "assistant\n"]
    tokenizer = train_bpe_tokenizer([*corpus, *template_words], size.vocab_size)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    pixels = size.image_size * size.image_size
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=size.min_pixels or pixels,
        max_pixels=size.max_pixels or pixels,
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    processor = Qwen2_5_VLImageTextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_VL_CHAT_TEMPLATE
    )
    config = tiny_qwen2_5_vl_config(max(len(tokenizer), size.vocab_rows or 0), size, token_ids)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = token_ids["<|im_end|>"]
    model.generation_config.pad_token_id = token_ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "leverplus_tiny.json").write_text(
        json.dumps({"seed": seed, "size": size_record(size)}, sort_keys=True, indent=2) + "\n"
    )
    return out
