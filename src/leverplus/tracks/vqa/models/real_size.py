"""Random-initialised models of the users' real sizes, for measuring costs without their weights.

`build_arch(name, out_dir)` writes a complete model directory of the published architecture — every layer, width,
head count, vocabulary row count and the vision tower as the released checkpoint has them, and the image processor
at the resolution the real processor uses — with random weights, through the same tiny builders the tests use
(`models/tiny.py`, `models/tiny_flamingo.py`), so it loads through the adapters' real `from_pretrained` path.

What is not real: the weights (random: scores mean nothing, costs are what is measured) and the tokenizer's merges
(a byte-level BPE trained on the bench text, so a text costs a few more tokens than with the real 151k / 50k
vocabularies; the embedding and LM-head matrices still have the real row counts). Image tokens — most of every
VQA prompt — are exactly the real processor's: Qwen2.5-VL keeps the native resolution (min_pixels 3136,
max_pixels 12845056, 14-px patches merged 2×2, i.e. one token per 28×28 pixels), OpenFlamingo resizes to 224².

Sources of the numbers: Qwen/Qwen2.5-VL-3B-Instruct config.json (text 36 × 2048, 16 heads / 2 KV heads, MLP
11008, vocab 151936, rope θ 1e6; vision 32 × 1280, 16 heads, MLP 3420, window 112, full attention in blocks
7/15/23/31); OpenFlamingo-3B-vitl-mpt1b: CLIP ViT-L/14 (24 × 1024, 16 heads, MLP 4096, 224 px) + MPT-1B
(24 × 2048, 16 heads, expansion 4, vocab 50432), gated cross-attention after every decoder layer.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from leverplus.models.tiny import TinyQwenVLSize
from leverplus.tracks.vqa.models.tiny_flamingo import TinyFlamingoSize

ARCHS: dict[str, dict] = {
    "qwen2.5_vl_3B": {
        "adapter": "qwen2_5_vl",
        "size": TinyQwenVLSize(
            vocab_size=4096,  # BPE merges of the bench tokenizer (not the real vocabulary; see module docstring)
            hidden_size=2048,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            intermediate_size=11008,
            vision_depth=32,
            vision_hidden_size=1280,
            vision_heads=16,
            vision_intermediate_size=3420,
            vocab_rows=151936,
            fullatt_block_indexes=(7, 15, 23, 31),
            min_pixels=3136,
            max_pixels=12845056,
            rope_theta=1000000.0,
            max_position_embeddings=128000,
        ),
        "published": "Qwen/Qwen2.5-VL-3B-Instruct",
    },
    "flamingo_3B": {
        "adapter": "flamingo",
        "size": TinyFlamingoSize(
            vocab_size=4096,
            d_model=2048,
            n_heads=16,
            n_layers=24,
            vision_hidden_size=1024,
            vision_layers=24,
            vision_heads=16,
            vision_intermediate_size=4096,
            image_size=224,
            patch_size=14,
            cross_attn_every_n_layers=1,
            max_seq_len=2048,
            gate_init=1.0,
            vocab_rows=50432,
            expansion_ratio=4,
            tokenizer_len=50277,  # GPT-NeoX-20B's; + Flamingo's 3 tokens = the 50280-row embedding and LM head
        ),
        "published": "openflamingo/OpenFlamingo-3B-vitl-mpt1b (CLIP ViT-L/14 + MPT-1B)",
    },
}

# the shrunken twins the tests build: the same builder and code path, every width divided
TEST_ARCHS: dict[str, dict] = {
    "qwen2.5_vl_3B@test": {
        "adapter": "qwen2_5_vl",
        "size": TinyQwenVLSize(
            vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vision_depth=4, vision_hidden_size=32, vision_heads=2,
            vision_intermediate_size=64, vocab_rows=1024, fullatt_block_indexes=(1, 3), min_pixels=3136,
            max_pixels=12845056, rope_theta=1000000.0, max_position_embeddings=128000,
        ),
        "published": "test twin",
    },
    "flamingo_3B@test": {
        "adapter": "flamingo",
        "size": TinyFlamingoSize(
            vocab_size=512, d_model=64, n_heads=4, n_layers=2, vision_hidden_size=32, vision_layers=2,
            vision_heads=2, vision_intermediate_size=64, image_size=224, patch_size=14, vocab_rows=1024,
        ),
        "published": "test twin",
    },
}


# mid-size twins for validating the cost model in minutes (issue 28): real image sizes, vocabulary rows and head
# widths, every model width divided by 4 and depth by 3
MID_ARCHS: dict[str, dict] = {
    "qwen2.5_vl_3B@mid": {
        "adapter": "qwen2_5_vl",
        "size": TinyQwenVLSize(
            vocab_size=4096, hidden_size=512, num_hidden_layers=12, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=2752, vision_depth=8, vision_hidden_size=320, vision_heads=5,
            vision_intermediate_size=856, vocab_rows=151936, fullatt_block_indexes=(7,), min_pixels=3136,
            max_pixels=12845056, rope_theta=1000000.0, max_position_embeddings=128000,
        ),
        "published": "mid twin (widths / 4, depths / 3)",
    },
    "flamingo_3B@mid": {
        "adapter": "flamingo",
        "size": TinyFlamingoSize(
            vocab_size=4096, d_model=512, n_heads=4, n_layers=8, vision_hidden_size=256, vision_layers=8,
            vision_heads=4, vision_intermediate_size=1024, image_size=224, patch_size=14, vocab_rows=50432,
            expansion_ratio=4, tokenizer_len=50277,
        ),
        "published": "mid twin (widths / 4, depths / 3)",
    },
}


def arch_spec(name: str) -> dict:
    table = {**ARCHS, **TEST_ARCHS, **MID_ARCHS}
    if name not in table:
        raise ValueError(f"unknown --arch {name!r}; known: {', '.join(sorted(ARCHS))}")
    return table[name]


def arch_digest(name: str, corpus: list[str], seed: int) -> str:
    spec = arch_spec(name)
    blob = json.dumps({"arch": name, "size": asdict(spec["size"]), "corpus": corpus, "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_arch(name: str, out_dir: str | Path, corpus: list[str], *, seed: int = 0) -> Path:
    """Write the random-init model directory of `name` into `out_dir` (reused when its stamp matches)."""
    out = Path(out_dir)
    stamp = out / "leverplus_arch.json"
    digest = arch_digest(name, corpus, seed)
    if stamp.exists() and json.loads(stamp.read_text()).get("digest") == digest:
        return out
    spec = arch_spec(name)
    out.mkdir(parents=True, exist_ok=True)
    if spec["adapter"] == "qwen2_5_vl":
        from leverplus.models.tiny import build_tiny_qwen2_5_vl

        build_tiny_qwen2_5_vl(out, corpus, size=spec["size"], seed=seed)
    else:
        from leverplus.tracks.vqa.models.tiny_flamingo import build_tiny_flamingo

        build_tiny_flamingo(out, corpus, seed, size=spec["size"], lang="mpt")
    stamp.write_text(json.dumps({"arch": name, "digest": digest, "published": spec["published"]}, indent=2) + "\n")
    return out


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
