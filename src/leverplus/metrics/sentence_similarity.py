"""Sentence similarity as SECap scores its captions: the cosine of two sentence embeddings of a local encoder
(SECap used text2vec, ``shibing624/text2vec-base-chinese``: a BERT with mean pooling over the attention mask).

Per item: the cosine between the hypothesis and each reference, the best reference kept, x100 (SECap reports
e.g. 71.52). Corpus score: the mean over items; the CI resamples the per-item values.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from leverplus.metrics import stats
from leverplus.metrics.signature import ci_settings, make_signature


def embed(texts: Sequence[str], model_dir: str | os.PathLike, *, pooling: str = "mean", batch_size: int = 64,
          max_length: int = 128) -> np.ndarray:
    """L2-normalised sentence embeddings [n, d] (float64) from a local transformers encoder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i: i + batch_size]), padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            if pooling == "mean":
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                v = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            elif pooling == "cls":
                v = hidden[:, 0]
            else:
                raise ValueError(f"unknown pooling {pooling!r} (mean, cls)")
            out.append(v.double().numpy())
    e = np.concatenate(out) if out else np.zeros((0, 1))
    return e / np.clip(np.linalg.norm(e, axis=1, keepdims=True), 1e-12, None)


def sentence_similarity(hyps: Sequence[str], refs_per_item: Sequence[Sequence[str]], *, model_dir: str,
                        pooling: str = "mean", model_label: str | None = None, n_resamples: int = 1000,
                        seed: int = 0) -> dict:
    flat = [r for refs in refs_per_item for r in refs]
    eh = embed(list(hyps), model_dir, pooling=pooling)
    er = embed(flat, model_dir, pooling=pooling)
    per, k = np.empty(len(hyps)), 0
    for i, refs in enumerate(refs_per_item):
        per[i] = 100 * float(np.max(er[k: k + len(refs)] @ eh[i]))
        k += len(refs)
    lo, hi = stats.bootstrap_ci(per, n_resamples=n_resamples, seed=seed)
    settings = {"model": model_label or os.path.basename(os.path.normpath(model_dir)), "pooling": pooling,
                "multi_ref": "max", "scale": 100, **ci_settings(n_resamples, seed)}
    return {"metric": "sentence_similarity", "score": float(per.mean()), "n": len(hyps), "ci95": [lo, hi],
            "per_item": [float(x) for x in per], "settings": settings,
            "signature": make_signature("sentence_similarity", settings)}
