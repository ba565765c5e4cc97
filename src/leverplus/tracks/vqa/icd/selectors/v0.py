"""v0 — Lever-LM's selector: a small GPT-2 that "writes" a sequence of ICDs.

Vocabulary: one token per train example (in the order of the training ``Features``) plus one QUERY token.  The
embedding of an ICD is its index embedding plus a linear projection of its example vector (CLIP image ⊕ text
features).  A sequence is ``[QUERY + proj(query vector), ICD₁, ICD₂, …]``; the hidden state at position t scores
the next ICD.  The output embedding of a candidate is its input embedding (GPT-2's tied LM head, plus the same
feature projection), and the logits are restricted to the query's pool — computed only for the pool rows of the
LM head, which equals taking the full-vocabulary logits and discarding the rest.

No BOS/EOS tokens: every sequence starts with the QUERY token, whose position doubles as BOS, and its length is
fixed by ``shot``, so an EOS could never be chosen from a pool.

Index embeddings of train examples start at zero, so an example that never occurs in a training pool (the whole
train set can be the pool at inference) is scored by its features alone instead of by random noise.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from leverplus.tracks.vqa.icd.selectors.common import COMMON_DEFAULTS, FeatureSource, PoolBatch, Selector, batch_vectors, gather_positions

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "n_layer": 2,  # GPT-2 blocks
    "n_head": 4,  # attention heads per block (must divide d_model)
    "dropout": 0.1,  # GPT-2 embedding / residual / attention dropout
    "max_shot": 8,  # longest ICD sequence it trains on or selects (GPT-2 n_positions = max_shot + 1)
}


class GPT2Selector(Selector):
    version = "v0"
    DEFAULTS = DEFAULTS

    def __init__(self, cfg: dict[str, Any], feat_dim: int, vocab_ids: Sequence[str]):
        from transformers import GPT2Config, GPT2LMHeadModel

        super().__init__(cfg, feat_dim)
        self.vocab_ids = [str(i) for i in vocab_ids]
        self.vocab = {i: k for k, i in enumerate(self.vocab_ids)}
        self.query_token = len(self.vocab_ids)
        d = cfg["d_model"]
        self.gpt = GPT2LMHeadModel(GPT2Config(
            vocab_size=len(self.vocab_ids) + 1,
            n_positions=cfg["max_shot"] + 1,
            n_embd=d,
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            n_inner=4 * d,
            resid_pdrop=cfg["dropout"],
            embd_pdrop=cfg["dropout"],
            attn_pdrop=cfg["dropout"],
            tie_word_embeddings=True,
            bos_token_id=None,  # no text vocabulary: GPT-2's default ids would point outside ours
            eos_token_id=None,
        ))
        with torch.no_grad():
            self.gpt.transformer.wte.weight[: self.query_token].zero_()
        self.feature_proj = nn.Linear(feat_dim, d)

    @classmethod
    def for_training(cls, cfg, train_features, *, encoder_dir=None, train_table=None):
        src = FeatureSource.from_features(train_features)
        return cls(cfg, src.dim, vocab_ids=src.ids), src

    def init_kwargs(self) -> dict[str, Any]:
        return {"vocab_ids": self.vocab_ids}

    def _vocab_of_rows(self, src: FeatureSource) -> torch.Tensor:
        """Vocabulary index of every row of a pool source (cached on the source); −1 for ids outside the
        vocabulary, which are an error only if a pool uses them."""
        if "v0_vocab" not in src.cache:
            src.cache["v0_vocab"] = torch.tensor([self.vocab.get(i, -1) for i in src.ids], dtype=torch.long)
        return src.cache["v0_vocab"]

    def encode(self, batch: PoolBatch, query_src, pool_src):
        query_x, pool_x = batch_vectors(batch, query_src, pool_src)
        tokens = self._vocab_of_rows(pool_src)[batch.pool_rows]
        unknown = (tokens < 0) & batch.mask
        if unknown.any():
            b, p = unknown.nonzero()[0].tolist()
            raise KeyError(f"pool id {pool_src.ids[int(batch.pool_rows[b, p])]!r} is not in v0's vocabulary "
                           "(the train split it was trained on)")
        lm_rows = self.gpt.lm_head.weight  # tied to the input token embeddings
        candidates = lm_rows[tokens.clamp_min(0)] + self.feature_proj(pool_x)  # (B, P, d)
        query = lm_rows[self.query_token] + self.feature_proj(query_x)  # (B, d)
        return query, candidates

    def step_logits(self, state, prefix: torch.Tensor) -> torch.Tensor:
        query, candidates = state
        if prefix.shape[1] >= self.cfg["max_shot"]:
            raise ValueError(f"v0 was built for at most max_shot={self.cfg['max_shot']} ICDs")
        inputs = torch.cat([query.unsqueeze(1), gather_positions(candidates, prefix)], dim=1)
        hidden = self.gpt.transformer(inputs_embeds=inputs).last_hidden_state  # (B, T+1, d)
        return hidden @ candidates.transpose(1, 2)
