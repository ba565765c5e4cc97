"""Qwen2/Qwen3-class causal LMs for the sentiment track: loading and prompt building.

`load_causal_lm` loads a checkpoint directory through the real transformers classes (``trust_remote_code`` off) and
makes sure a pad token exists — Qwen configs often lack ``pad_token_id``, and batched sequence classification needs
it (Qwen's seq-cls head pools the rightmost non-pad token and raises for batch > 1 without it).

`build_prompt` renders the scored context of one review. With ``use_chat_template`` the tokenizer's own chat template
is applied with ``add_generation_prompt=True``; Qwen3's template reads ``enable_thinking`` and, when it is False,
appends an empty think block (``<think>\\n\\n</think>\\n\\n``) after the assistant header. That block is part of the
returned string, so it is part of the context the label is scored after. A template that reads ``enable_thinking``
must be given the value explicitly (``True``/``False``); leaving it ``None`` stops with an error, so the scored
context never depends on a template default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "DEFAULT_TEMPLATE",
    "load_causal_lm",
    "ensure_pad_token",
    "build_prompt",
    "render_prompt",
    "answer_cue",
    "domain_premise",
    "fill_instruction",
    "template_reads_thinking",
]

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe")

# The demo's prompt (also what the shipped tiny LM is evaluated with in its BUILD.json).
DEFAULT_TEMPLATE: dict[str, Any] = {
    "use_chat_template": True,
    "enable_thinking": False,
    "system": None,
    "instruction": "判断这条商品评论的情感。\n评论：{text}\n情感：",
}

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def ensure_pad_token(model, tokenizer) -> int:
    """Set a pad token when the tokenizer has none (``<|endoftext|>`` if the vocabulary has it, else EOS) and copy
    its id into ``model.config.pad_token_id`` (and the generation config). Returns the pad id."""
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        if "<|endoftext|>" in vocab:
            tokenizer.pad_token = "<|endoftext|>"
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            raise ValueError("tokenizer has neither a pad token, <|endoftext|> nor an EOS token to pad with")
    pad_id = tokenizer.pad_token_id
    if model is not None:
        model.config.pad_token_id = pad_id
        gen = getattr(model, "generation_config", None)
        if gen is not None and gen.pad_token_id is None:
            gen.pad_token_id = pad_id
    return pad_id


def _check_model_type(model_dir: Path) -> str:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{model_dir}: model_type {mt!r} is not a Qwen2/Qwen3-class causal LM "
                         f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    return mt


def load_causal_lm(model_dir: str | Path, *, dtype: str = "float32", device: str | None = None):
    """``(model, tokenizer)`` of a Qwen2/Qwen3-class checkpoint directory, eval mode, pad token set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (not a model directory)")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {sorted(_DTYPES)}")
    _check_model_type(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, _DTYPES[dtype]),
                                                 trust_remote_code=False)
    ensure_pad_token(model, tokenizer)
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def template_reads_thinking(tokenizer) -> bool:
    tpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tpl, dict):
        tpl = " ".join(tpl.values())
    return bool(tpl) and "enable_thinking" in tpl


def fill_instruction(instruction: str, text: str) -> str:
    """The instruction with ``{text}`` replaced by the review (literal replacement, no other format fields);
    without a ``{text}`` slot the review follows the instruction on a new line."""
    if "{text}" in instruction:
        return instruction.replace("{text}", text)
    return f"{instruction}\n{text}" if instruction else text


def build_prompt(tokenizer, text: str, *, template: Mapping[str, Any]) -> str:
    """The scored context of one review under ``template`` =
    ``{"use_chat_template": bool, "enable_thinking": bool | None, "system": str | None, "instruction": str}``."""
    return render_prompt(tokenizer, fill_instruction(str(template.get("instruction", "")), text), template=template)


def answer_cue(template: Mapping[str, Any]) -> str:
    """The part of the instruction after the ``{text}`` slot (e.g. ``"\n情感："``), stripped of leading newlines:
    the domain premise of PMI_DC (Holtzman et al. 2021) is the prompt with only this cue as the user turn."""
    instruction = str(template.get("instruction", ""))
    return instruction.split("{text}")[-1].lstrip("\n") if "{text}" in instruction else instruction


def domain_premise(tokenizer, *, template: Mapping[str, Any]) -> str:
    """The domain-premise context of PMI_DC: the same prompt frame (system turn, chat template, think block) with the
    answer cue as the whole user content and no review."""
    return render_prompt(tokenizer, answer_cue(template), template=template)


def render_prompt(tokenizer, user: str, *, template: Mapping[str, Any]) -> str:
    """``user`` (already filled) rendered as the scored context: chat template with the generation prompt, or the
    plain text (after the system line, if any)."""
    unknown = set(template) - {"use_chat_template", "enable_thinking", "system", "instruction"}
    if unknown:
        raise ValueError(f"template: unknown keys {sorted(unknown)}")
    system = template.get("system")
    if not template.get("use_chat_template", False):
        return f"{system}\n{user}" if system else user
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template.use_chat_template is true but the tokenizer has no chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    kwargs: dict[str, Any] = {}
    thinking = template.get("enable_thinking")
    if template_reads_thinking(tokenizer):
        if thinking is None:
            raise ValueError("template.enable_thinking must be true or false: this chat template reads "
                             "enable_thinking (Qwen3), and the scored context must not depend on its default")
        kwargs["enable_thinking"] = bool(thinking)
    elif thinking is not None:
        kwargs["enable_thinking"] = bool(thinking)  # ignored by templates that do not read it
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
