"""A tiny OpenFlamingo of the real architecture classes, built locally (no hub), for tests and the demo.

Same families as OpenFlamingo-3B-vitl-mpt1b: a CLIP ViT vision tower (transformers `CLIPVisionModel`), an MPT causal
LM (transformers `MptForCausalLM`; the 3B uses MosaicML's remote-code MPT-1B, same block layout
``transformer.blocks``), a GPT-NeoX byte-level BPE tokenizer trained on a given corpus, and open_flamingo's own
`Flamingo` (perceiver resampler + gated cross-attention after every decoder layer) assembled by
`flamingo.assemble_flamingo`.

Written like the real checkpoint is distributed — backbones and tokenizer as they are *before* Flamingo touches
them, plus the OpenFlamingo checkpoint of trainable weights:

    out_dir/leverplus_flamingo.json   loader parameters (vision_backend "hf_clip")
    out_dir/vision/                   CLIPVisionModel + CLIPImageProcessor (save_pretrained)
    out_dir/lang/                     MptForCausalLM (save_pretrained, original vocabulary)
    out_dir/tokenizer/                GPT-NeoX tokenizer without the Flamingo tokens
    out_dir/checkpoint.safetensors    perceiver, gated cross-attention, resized LM embeddings
    out_dir/leverplus_tiny.json       seed and sizes

The cross-attention gates are initialised away from OpenFlamingo's 0 (tanh(0) = 0 would make the images invisible
to the LM), so tests see the vision path.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from leverplus.tracks.vqa.models.flamingo import FlamingoSpec, assemble_flamingo, trainable_state
from leverplus.models.tiny import size_record

# Prompt skeleton added to every training corpus so the template's words are whole tokens, as in a real vocabulary.
TEMPLATE_TEXT = ["Question: Short answer:", "Question:what is it? Short answer:yes"]


@dataclass(frozen=True)
class TinyFlamingoSize:
    vocab_size: int = 512
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 64
    image_size: int = 28
    patch_size: int = 14
    cross_attn_every_n_layers: int = 1
    max_seq_len: int = 2048
    gate_init: float = 1.0
    lang_init_std: float | None = None  # None: the language model's default init (0.02)
    vocab_rows: int | None = None  # LM embedding rows (the real vocabulary size); None: the tokenizer's length
    expansion_ratio: int = 4
    # the real tokenizer's length before Flamingo's tokens (GPT-NeoX-20B: 50277): the trained vocabulary is padded
    # with entries no merge produces, so after open_flamingo's resize to len(tokenizer) the embedding and LM head
    # have the real row count (OpenFlamingo-3B: 50280) and not the trained vocabulary's few hundred; None: as trained
    tokenizer_len: int | None = None


def train_neox_tokenizer(corpus: Iterable[str], vocab_size: int, pad_to: int | None = None):
    """Byte-level BPE trained on `corpus`, as a `GPTNeoXTokenizer` (the family of MPT-1B's tokenizer):
    `<|endoftext|>` is bos/eos/unk, no pad token (open_flamingo's factory adds one). `pad_to`: vocabulary entries
    that no merge produces (never emitted) appended until the tokenizer has that length."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPTNeoXTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus) + TEMPLATE_TEXT, trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    vocab = dict(model_json["vocab"])
    if pad_to is not None:
        if pad_to < len(vocab):
            raise ValueError(f"tokenizer_len {pad_to} is below the trained vocabulary's {len(vocab)} entries")
        i = 0
        while len(vocab) < pad_to:  # "Ā" is byte 0x00 in the byte-level alphabet: no text produces these merges
            vocab.setdefault(f"ĀĀunused{i}", len(vocab))
            i += 1
    tok = GPTNeoXTokenizer(vocab=vocab, merges=merges, pad_token=None)
    if pad_to is not None and len(tok) != pad_to:
        raise ValueError(f"padded tokenizer has {len(tok)} entries, wanted {pad_to}")
    return tok


LANG_FAMILIES = ("mpt", "mosaic_gpt")


def _tiny_lang(lang: str, size: TinyFlamingoSize, vocab_size: int, eos: int):
    """The language model before Flamingo touches it: transformers' native MPT, or the remote-code MosaicGPT
    stand-in (`tiny_mosaic_gpt`, saved with its source file and `auto_map`, as the real 3B's LM is)."""
    if lang == "mpt":
        from transformers import MptConfig, MptForCausalLM

        model = MptForCausalLM(
            MptConfig(
                d_model=size.d_model,
                n_heads=size.n_heads,
                n_layers=size.n_layers,
                expansion_ratio=size.expansion_ratio,
                max_seq_len=size.max_seq_len,
                vocab_size=vocab_size,
                no_bias=True,
                **({} if size.lang_init_std is None else {"initializer_range": size.lang_init_std}),
                bos_token_id=eos,
                eos_token_id=eos,
            )
        ).eval()
        model.generation_config.do_sample = False
        return model
    if lang == "mosaic_gpt":
        from leverplus.tracks.vqa.models.tiny_mosaic_gpt import TinyMosaicGPT, TinyMosaicGPTConfig

        # save_pretrained then copies tiny_mosaic_gpt.py beside the weights and names it in config.json's auto_map
        TinyMosaicGPTConfig.register_for_auto_class()
        TinyMosaicGPT.register_for_auto_class("AutoModelForCausalLM")
        config = TinyMosaicGPTConfig(
            d_model=size.d_model,
            n_heads=size.n_heads,
            n_layers=size.n_layers,
            max_seq_len=size.max_seq_len,
            vocab_size=vocab_size,
            **({} if size.lang_init_std is None else {"init_std": size.lang_init_std}),
            bos_token_id=eos,
            eos_token_id=eos,
        )
        return TinyMosaicGPT(config).eval()
    raise ValueError(f"unknown tiny Flamingo language model {lang!r}; known: {', '.join(LANG_FAMILIES)}")


def build_tiny_flamingo(
    out_dir: str | Path,
    corpus: Iterable[str],
    seed: int = 0,
    *,
    size: TinyFlamingoSize = TinyFlamingoSize(),
    lang: str = "mpt",
) -> Path:
    """`lang`: "mpt" (transformers' `MptForCausalLM`) or "mosaic_gpt" (remote code with MosaicGPT's interface:
    legacy list-of-tuples KV cache, boolean masks; the model directory then says `trust_remote_code: true`)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    tokenizer = train_neox_tokenizer(corpus, size.vocab_size, size.tokenizer_len)
    tokenizer.save_pretrained(out / "tokenizer")

    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=size.vision_hidden_size,
            intermediate_size=size.vision_intermediate_size,
            num_hidden_layers=size.vision_layers,
            num_attention_heads=size.vision_heads,
            image_size=size.image_size,
            patch_size=size.patch_size,
            hidden_act="quick_gelu",  # OpenAI CLIP's activation
        )
    ).eval()
    vision.save_pretrained(out / "vision", safe_serialization=True)
    CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size}, crop_size={"height": size.image_size, "width": size.image_size}
    ).save_pretrained(out / "vision")

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    lang_model = _tiny_lang(lang, size, max(len(tokenizer), size.vocab_rows or 0), eos)
    lang_model.save_pretrained(out / "lang", safe_serialization=True)

    spec = FlamingoSpec(
        vision_backend="hf_clip",
        vision_path="vision",
        lang_encoder_path="lang",
        tokenizer_path="tokenizer",
        checkpoint="checkpoint.safetensors",
        cross_attn_every_n_layers=size.cross_attn_every_n_layers,
        trust_remote_code=lang == "mosaic_gpt",
    )
    model = assemble_flamingo(vision, lang_model, tokenizer, spec)
    with torch.no_grad():
        for layer in model.lang_encoder.gated_cross_attn_layers:
            if layer is not None:
                layer.attn_gate.fill_(size.gate_init)
                layer.ff_gate.fill_(size.gate_init)
    save_file(trainable_state(model), str(out / "checkpoint.safetensors"))
    spec.write(out)
    (out / "leverplus_tiny.json").write_text(
        json.dumps({"seed": seed, "size": size_record(size), "lang": lang}, sort_keys=True, indent=2) + "\n"
    )
    return out
