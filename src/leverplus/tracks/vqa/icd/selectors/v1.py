"""v1 — bi-encoder pointer network.

Two encoders (MLPs, not shared) map the query's example vector and every candidate's example vector (CLIP image ⊕
text features) into ``d_model``.  The query state starts as the encoded query and is updated by a GRU cell with
each chosen ICD, so step t sees the query and the ICDs already chosen.  At step t every candidate of the query's
pool is scored by a scaled dot product between the projected state and the candidate's encoding; the pointer
picks the argmax among candidates not chosen yet (masking is shared, see ``common``).

``contextualise`` is the hook v2 overrides to let query and candidates interact before pointing; here it is the
identity.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from leverplus.tracks.vqa.icd.selectors.common import COMMON_DEFAULTS, PoolBatch, Selector, batch_vectors, gather_positions

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "dropout": 0.1,  # dropout inside the query / candidate encoders
}


def mlp_encoder(in_dim: int, d: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d), nn.LayerNorm(d))


class PointerSelector(Selector):
    version = "v1"
    DEFAULTS = DEFAULTS

    def __init__(self, cfg: dict[str, Any], feat_dim: int):
        super().__init__(cfg, feat_dim)
        d = cfg["d_model"]
        self.query_encoder = mlp_encoder(feat_dim, d, cfg["dropout"])
        self.candidate_encoder = mlp_encoder(feat_dim, d, cfg["dropout"])
        self.state_cell = nn.GRUCell(d, d)
        self.pointer = nn.Linear(d, d)

    def contextualise(self, query: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor):
        return query, candidates

    def encode(self, batch: PoolBatch, query_src, pool_src):
        query_x, pool_x = batch_vectors(batch, query_src, pool_src)
        query = self.query_encoder(query_x)  # (B, d)
        candidates = self.candidate_encoder(pool_x)  # (B, P, d)
        return self.contextualise(query, candidates, batch.mask)

    def step_logits(self, state, prefix: torch.Tensor) -> torch.Tensor:
        query, candidates = state
        chosen = gather_positions(candidates, prefix)  # (B, T, d)
        states = [query]
        for t in range(prefix.shape[1]):
            states.append(self.state_cell(chosen[:, t], states[-1]))
        keys = self.pointer(torch.stack(states, dim=1))  # (B, T+1, d)
        return keys @ candidates.transpose(1, 2) / math.sqrt(candidates.shape[-1])
