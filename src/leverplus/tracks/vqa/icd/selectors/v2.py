"""v2 — v1 plus ``cross_attn_layers`` layers of query↔candidate cross-attention before pointing.

Each layer, for every query and its own pool (padding masked out):

1. the query attends over its pool candidates        q ← LN(q + Attn(q, C, C))
2. every candidate attends to the (updated) query    C ← LN(C + Attn(C, q, q))
3. a position-wise feed-forward on both              x ← LN(x + FFN(x))

With a single query token, step 2's softmax has one key, so it adds a query-dependent vector (the value projection
of the query) to every candidate before the LayerNorm: it makes candidate encodings query-aware, while step 1 makes
the query pool-aware.  Cost is linear in the pool size, so a whole-train-set pool stays feasible.  The pointer
and the GRU query state are v1's, applied to the contextualised encodings.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from leverplus.tracks.vqa.icd.selectors.v1 import DEFAULTS as V1_DEFAULTS
from leverplus.tracks.vqa.icd.selectors.v1 import PointerSelector

DEFAULTS: dict[str, Any] = {
    **V1_DEFAULTS,
    "cross_attn_layers": 3,  # query↔candidate cross-attention layers
    "n_head": 4,  # heads per attention (must divide d_model)
}


class CrossAttentionLayer(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.query_reads_pool = nn.MultiheadAttention(d, n_head, dropout=dropout, batch_first=True)
        self.pool_reads_query = nn.MultiheadAttention(d, n_head, dropout=dropout, batch_first=True)
        self.query_norm = nn.LayerNorm(d)
        self.pool_norm = nn.LayerNorm(d)
        self.query_ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.pool_ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.query_ff_norm = nn.LayerNorm(d)
        self.pool_ff_norm = nn.LayerNorm(d)

    def forward(self, query: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor):
        """query (B, 1, d), candidates (B, P, d), mask (B, P) True = real candidate."""
        read, _ = self.query_reads_pool(query, candidates, candidates, key_padding_mask=~mask, need_weights=False)
        query = self.query_norm(query + read)
        read, _ = self.pool_reads_query(candidates, query, query, need_weights=False)
        candidates = self.pool_norm(candidates + read)
        query = self.query_ff_norm(query + self.query_ff(query))
        candidates = self.pool_ff_norm(candidates + self.pool_ff(candidates))
        return query, candidates


class CrossAttentionPointerSelector(PointerSelector):
    version = "v2"
    DEFAULTS = DEFAULTS

    def __init__(self, cfg: dict[str, Any], feat_dim: int):
        super().__init__(cfg, feat_dim)
        self.cross_layers = nn.ModuleList(
            CrossAttentionLayer(cfg["d_model"], cfg["n_head"], cfg["dropout"]) for _ in range(cfg["cross_attn_layers"])
        )

    def contextualise(self, query: torch.Tensor, candidates: torch.Tensor, mask: torch.Tensor):
        query = query.unsqueeze(1)
        for layer in self.cross_layers:
            query, candidates = layer(query, candidates, mask)
        return query.squeeze(1), candidates
