"""A tiny causal LM with the interface of MosaicML's remote-code `MosaicGPT` — the language model of
OpenFlamingo-3B-vitl-mpt1b (`anas-awadalla/mpt-1b-redpajama-200b`, file `mosaic_gpt.py`) — for tests.

transformers' native `MptForCausalLM` (what `tiny_flamingo` builds by default) returns a `DynamicCache` and takes
integer masks, which hides how the real 3B's language model behaves. This one reproduces that model's interface,
as read in its source:

* written as remote code: `build_tiny_flamingo(lang="mosaic_gpt")` copies this file into the language model's
  directory, whose `config.json` names it in `auto_map`; loading needs `trust_remote_code=True`;
* class name containing `MosaicGPT` and its blocks at `transformer.blocks` (OpenFlamingo's decoder-layer table),
  embeddings at `transformer.wte`, no `get_input_embeddings` (OpenFlamingo's factory patches one in), output
  projection tied to `wte` through `F.linear`;
* `forward(input_ids, past_key_values, attention_mask, prefix_mask, sequence_id, return_dict,
  output_attentions, output_hidden_states, use_cache)`; `use_cache` defaults to `config.use_cache` (False);
* `past_key_values` is a plain **list** with one `(key, value)` tuple per block, each of shape
  (batch, seq, d_model) — not transformers' (batch, heads, seq, head_dim) nor a `Cache` object; with
  `use_cache` and no cache a list of empty tuples is started; the list given is updated in place and returned;
* the attention mask must be boolean: it is applied with `masked_fill(~attention_mask)`, which rejects integer
  masks (OpenFlamingo's eval passes `attention_mask.bool()`);
* ALiBi position bias (no position embeddings), each block called as
  `block(x, past_key_value=, attn_bias=, attention_mask=, is_causal=)` returning `(x, past_key_value)`.

Self-contained (torch and transformers only) so that transformers can load it from a model directory.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class TinyMosaicGPTConfig(PretrainedConfig):
    model_type = "tiny_mosaic_gpt"

    def __init__(
        self,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        expansion_ratio: int = 4,
        max_seq_len: int = 2048,
        vocab_size: int = 512,
        alibi_bias_max: int = 8,
        init_std: float = 0.02,
        use_cache: bool = False,
        **kwargs,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.expansion_ratio = expansion_ratio
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.alibi_bias_max = alibi_bias_max
        self.init_std = init_std
        self.use_cache = use_cache
        kwargs.setdefault("tie_word_embeddings", False)  # tied by F.linear(x, wte.weight), not by transformers
        super().__init__(**kwargs)


def alibi_slopes(n_heads: int, bias_max: int) -> torch.Tensor:
    return 1.0 / 2 ** (torch.arange(1, n_heads + 1, dtype=torch.float32) * (bias_max / n_heads))


class TinyMosaicBlock(nn.Module):
    def __init__(self, config: TinyMosaicGPTConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.ln_1 = nn.LayerNorm(d)
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d)
        self.up_proj = nn.Linear(d, config.expansion_ratio * d, bias=False)
        self.down_proj = nn.Linear(config.expansion_ratio * d, d, bias=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, S, d) → (B, H, S, d/H)
        b, s, d = t.shape
        return t.view(b, s, self.n_heads, d // self.n_heads).transpose(1, 2)

    def forward(self, x, past_key_value=None, attn_bias=None, attention_mask=None, is_causal=True):
        q, k, v = self.Wqkv(self.ln_1(x)).chunk(3, dim=-1)
        if past_key_value is not None:
            if len(past_key_value) != 0:
                k = torch.cat([past_key_value[0], k], dim=1)
                v = torch.cat([past_key_value[1], v], dim=1)
            past_key_value = (k, v)
        s_q, s_k = q.shape[1], k.shape[1]
        scores = self._heads(q) @ self._heads(k).transpose(-1, -2) / math.sqrt(q.shape[-1] // self.n_heads)
        if attn_bias is not None:
            scores = scores + attn_bias[:, :, -s_q:, -s_k:]
        if is_causal:
            causal = torch.ones(s_q, s_k, dtype=torch.bool, device=x.device).tril(diagonal=s_k - s_q)
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        att = (scores.softmax(-1) @ self._heads(v)).transpose(1, 2).reshape(x.shape)
        x = x + self.out_proj(att)
        x = x + self.down_proj(F.gelu(self.up_proj(self.ln_2(x))))
        return x, past_key_value


class TinyMosaicGPT(PreTrainedModel):
    config_class = TinyMosaicGPTConfig
    base_model_prefix = "model"

    def __init__(self, config: TinyMosaicGPTConfig):
        super().__init__(config)
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.d_model),
                "blocks": nn.ModuleList([TinyMosaicBlock(config) for _ in range(config.n_layers)]),
                "ln_f": nn.LayerNorm(config.d_model),
            }
        )
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)

    def _attn_bias(self, s_k: int, attention_mask, device, dtype) -> torch.Tensor:
        slopes = alibi_slopes(self.config.n_heads, self.config.alibi_bias_max).to(device, dtype)
        distance = torch.arange(1 - s_k, 1, device=device, dtype=dtype)  # key offset from the last key
        bias = (slopes[:, None] * distance[None]).view(1, self.config.n_heads, 1, s_k)
        if attention_mask is not None:
            bias = bias.masked_fill(~attention_mask.view(-1, 1, 1, s_k), torch.finfo(dtype).min)
        return bias

    def forward(
        self,
        input_ids: torch.LongTensor,
        past_key_values=None,
        attention_mask=None,
        prefix_mask=None,
        sequence_id=None,
        return_dict=None,
        output_attentions=None,
        output_hidden_states=None,
        use_cache=None,
        **kwargs,
    ):
        if return_dict is False:
            raise NotImplementedError("return_dict False is not implemented for TinyMosaicGPT")
        if output_attentions or output_hidden_states:
            raise NotImplementedError("output_attentions / output_hidden_states are not implemented")
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        x = self.transformer["wte"](input_ids)
        past_len = past_key_values[0][0].size(1) if past_key_values is not None and len(past_key_values[0]) else 0
        s_k = past_len + input_ids.shape[1]
        if attention_mask is not None and attention_mask.shape[-1] != s_k:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} keys, expected {s_k}")
        attn_bias = self._attn_bias(s_k, attention_mask, x.device, x.dtype)
        if use_cache and past_key_values is None:
            past_key_values = [() for _ in range(self.config.n_layers)]
        for b_idx, block in enumerate(self.transformer["blocks"]):
            past_key_value = past_key_values[b_idx] if past_key_values is not None else None
            x, past_key_value = block(
                x, past_key_value=past_key_value, attn_bias=attn_bias, attention_mask=None, is_causal=True
            )
            if past_key_values is not None:
                past_key_values[b_idx] = past_key_value
        logits = F.linear(self.transformer["ln_f"](x), self.transformer["wte"].weight)
        return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)
