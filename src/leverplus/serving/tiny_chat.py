"""A tiny text chat model of a real class (``Qwen2ForCausalLM``) for tests and demos that need "an LLM behind the API".

`build_tiny_chat_lm` writes a complete Hugging Face model directory — config, safetensors weights, the project's
tiny byte-level BPE tokenizer (:func:`leverplus.models.tiny.train_bpe_tokenizer`) and a Qwen2.5-style text chat
template — that loads back through ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``. Random init from
``seed`` (bit-identical on CPU): its answers mean nothing; they are deterministic under greedy decoding, which is
what the client/server tests need.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

__all__ = ["QWEN_TEXT_CHAT_TEMPLATE", "build_tiny_chat_lm"]

# Qwen2.5-Instruct's text layout: default system turn, `<|im_start|>role\n…<|im_end|>\n`, generation prompt.
QWEN_TEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_DEFAULT_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate the sentence into English, please.",
    "Score the translation from 0 to 100.",
    "请用中文描述说话人的情绪。他听起来很开心。",
    "def add(a, b): return a + b",
    "Hello! How are you today? I am fine, thank you.",
]


def build_tiny_chat_lm(out_dir: str | Path, corpus: Iterable[str] | None = None, *, seed: int = 0,
                       hidden_size: int = 64, num_hidden_layers: int = 2, vocab_size: int = 400,
                       init_std: float = 0.3) -> Path:
    """Build and ``save_pretrained`` a random-init tiny ``Qwen2ForCausalLM`` + tokenizer with a chat template.

    ``init_std`` (0.3, vs. the usual 0.02) makes the untrained model's greedy answer depend on the prompt and vary
    token by token, so text comparisons in tests are not vacuous (a 0.02 init repeats one token)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from leverplus.models.tiny import train_bpe_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = list(corpus) if corpus is not None else list(_DEFAULT_CORPUS)
    tok = train_bpe_tokenizer([*texts, "system\nYou are a helpful assistant.", "user\n", "assistant\n"] * 2,
                              vocab_size)
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    tok.chat_template = QWEN_TEXT_CHAT_TEMPLATE
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=pad, eos_token_id=eos,
        pad_token_id=pad,
        initializer_range=init_std,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg)
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "leverplus_tiny_chat.json").write_text(json.dumps(
        {"seed": seed, "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers, "vocab_size": vocab_size,
         "init_std": init_std},
        sort_keys=True, indent=2) + "\n")
    return out
