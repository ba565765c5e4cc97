"""A tiny CLIP (transformers' `CLIPModel` class) built locally and trained contrastively on the demo dataset.

The text side learns from two kinds of text per training image: a caption naming what is drawn ("a red circle")
and the image's question ("What is the word for this red thing?"), so question embeddings carry what the question
says about the object (its colour or its shape) and image embeddings carry both. Neither ever sees an answer word.

Layout of the output directory: `config.json` + `model.safetensors` (loads with `CLIPModel.from_pretrained`), and
the processor files (`CLIPProcessor.from_pretrained` / `AutoProcessor.from_pretrained`): a CLIP-style BPE tokenizer
trained on the demo texts and the PIL `CLIPImageProcessor` path (no torchvision needed). The attention modules
are transformers' own, with `q_proj`/`k_proj`/`v_proj`/`out_proj`, so peft LoRA targets them as on a real CLIP.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from leverplus.tracks.vqa.data import demo


@dataclass(frozen=True)
class TinyCLIPSize:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    projection_dim: int = 64
    image_size: int = 56
    patch_size: int = 14
    max_text_len: int = 24
    vocab_size: int = 300  # BPE target, special tokens included


def clip_text_corpus() -> list[str]:
    adjectives = list(demo.SHAPES) + list(demo.COLOUR_NAMES)
    lines = [t.format(a=a) for t in demo.QUESTION_TEMPLATES.values() for a in adjectives]
    lines += [demo.class_caption(c) for c in range(demo.N_CLASSES)]
    return lines * 20


def bpe_merges(words: dict[tuple[str, ...], int], max_merges: int) -> list[tuple[str, str]]:
    """Plain BPE over symbol tuples with counts, ties broken by the pair itself, so the result never depends on
    hash order (the `tokenizers` trainer breaks ties arbitrarily)."""
    words = dict(words)
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        counts: dict[tuple[str, str], int] = {}
        for w, n in words.items():
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def train_clip_tokenizer(corpus: Sequence[str], vocab_size: int):
    """CLIP-style BPE (lower-cased words with `</w>` ends) learnt deterministically from `corpus`, wrapped as
    transformers' CLIPTokenizer."""
    import re

    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    counts: dict[tuple[str, ...], int] = {}
    for line in corpus:
        for word in re.findall(r"[a-z]+|[^\sa-z]", line.lower()):
            key = tuple(word[:-1]) + (word[-1] + "</w>",)
            counts[key] = counts.get(key, 0) + 1
    alphabet = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789?.,!'") | {c for w in counts for c in w[:-1]})
    base = specials + alphabet + [c + "</w>" for c in alphabet]
    merges = bpe_merges(counts, max(0, vocab_size - len(base)))
    vocab = {t: i for i, t in enumerate(base + [a + b for a, b in merges])}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def build_tiny_clip(out_dir: str | Path, *, size: TinyCLIPSize = TinyCLIPSize(), seed: int = 0):
    """Random-init tiny CLIPModel + CLIPProcessor, saved to `out_dir`; returns (model, processor)."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_clip_tokenizer(clip_text_corpus(), size.vocab_size)
    tok.model_max_length = size.max_text_len
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": size.image_size},
        crop_size={"height": size.image_size, "width": size.image_size},
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    common = dict(
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        projection_dim=size.projection_dim,
    )
    config = CLIPConfig(
        text_config=dict(
            common,
            vocab_size=len(tok),
            max_position_embeddings=size.max_text_len,
            bos_token_id=tok.convert_tokens_to_ids("<|startoftext|>"),
            eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
            pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        ),
        vision_config=dict(common, image_size=size.image_size, patch_size=size.patch_size),
        projection_dim=size.projection_dim,
        logit_scale_init_value=math.log(30.0),
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return model, processor


def _pixel_values(processor, paths: Sequence[str]) -> torch.Tensor:
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    return processor.image_processor(images=images, return_tensors="pt")["pixel_values"]


def _text_inputs(processor, texts: Sequence[str]):
    return processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")


def build_and_train_tiny_clip(
    out_dir: str | Path,
    train_parquet_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 400,
    batch_size: int = 128,
    lr: float = 2e-3,
    p_caption: float = 0.5,
    threads: int = 1,
    size: TinyCLIPSize = TinyCLIPSize(),
    log=print,
) -> Path:
    """Build the tiny CLIP and train it with a symmetric InfoNCE loss on (image, caption-or-question) pairs from
    `train_parquet_dir/train.parquet`; pairs whose texts are identical count as positives of each other."""
    from leverplus.tracks.vqa.data.records import load_split

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    out = Path(out_dir)
    model, processor = build_tiny_clip(out, size=size, seed=seed)
    df = load_split(train_parquet_dir, "train")
    captions = [demo.class_caption(int(c)) for c in df["class"]] if "caption" not in df else list(df["caption"])
    questions = list(df["question"])
    pixels = _pixel_values(processor, list(df["image"]))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = rng.choice(len(df), size=min(batch_size, len(df)), replace=False)
        use_cap = rng.random(len(idx)) < p_caption
        texts = [captions[i] if c else questions[i] for i, c in zip(idx, use_cap)]
        enc = _text_inputs(processor, texts)
        out_ = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels[idx])
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        logits = out_.logits_per_image  # (images, texts); symmetric in the identical-text relation
        loss = 0.5 * (
            torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log and ((step + 1) % 100 == 0 or step + 1 == steps):
            log(f"clip step {step + 1}/{steps} loss {float(loss.detach()):.3f} {time.perf_counter() - t0:.0f}s")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / "leverplus_tiny_clip.json").write_text(
        json.dumps(
            {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "p_caption": p_caption,
             "threads": threads, "size": asdict(size)},
            sort_keys=True, indent=2,
        )
        + "\n"
    )
    return out


@torch.no_grad()
def encode_split(clip_dir: str | Path, df, *, batch_size: int = 256) -> dict[str, np.ndarray]:
    """L2-normalised CLIP image and question embeddings of a loaded split (`records.load_split`)."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(clip_dir)
    img, txt = [], []
    for lo in range(0, len(df), batch_size):
        part = df.iloc[lo : lo + batch_size]
        img.append(model.get_image_features(pixel_values=_pixel_values(processor, list(part["image"]))))
        enc = _text_inputs(processor, list(part["question"]))
        txt.append(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    feats = {}
    for k, v in (("image", img), ("text", txt)):
        x = torch.cat([t if isinstance(t, torch.Tensor) else t.pooler_output for t in v]).float()
        feats[k] = torch.nn.functional.normalize(x, dim=-1).numpy().astype(np.float32)
    feats["img"] = feats["image"]
    return feats
