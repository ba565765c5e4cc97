"""v2_lora — v2 whose example vectors come from the CLIP encoder itself, adapted with LoRA (peft) while the
selector trains, instead of from cached frozen features.

* LoRA (``lora`` config: r 16, alpha 32, dropout 0.1, bias none) on CLIP's attention projections q/k/v/out_proj,
  in both the vision and the text tower.  Every CLIP base weight is frozen; only the LoRA matrices and the v2
  selector head train, and only those are saved (the base weights are read from ``encoder_dir`` at load time).
* An example vector is, as for the frozen features, the L2-normalised projected CLIP image embedding followed by the
  L2-normalised projected text embedding of the question.
* What LoRA cannot change is computed once per example and cached: the vision tower's input states (the
  resized/cropped image, rescaled and normalised in torch exactly as the image processor would, through the frozen
  patch/position embeddings and the pre-LayerNorm, all before the first LoRA layer; computed for that example
  alone) and the question's token ids.
* Questions are encoded at one fixed length per source: the longest question of the source rounded up to
  ``TEXT_LENGTH_MULTIPLE`` tokens (at most the text tower's maximum), so encodings never depend on which examples
  share a forward. CLIP's text tower is causal and pools at the first end-of-text token, so the padding it drops
  never reached the pooled vector; the vectors equal those at the full length to float rounding (bit for bit on the
  demo's CLIP, 16 of 24 positions). LoRA's dropout in the text tower draws its mask at the full length and keeps
  the used positions (:class:`FullLengthDropout`), so training draws the masks it drew at the full length.
* Training encodes, per optimiser step, exactly the distinct examples of the batch: its queries and their
  candidate pools — at most ``batch_size × (1 + pool size)`` images and questions.  Lower ``batch_size`` if that
  does not fit in memory.
* Inference encodes each distinct query and pool example once (no grad, chunks of ``encode_batch_size``), then
  selects as v2 does.  ``query_table`` / ``pool_table`` (split tables with ``id``, ``image``, ``question``) are
  required by ``select``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from leverplus.tracks.vqa.icd.selectors.common import FeatureSource, Source
from leverplus.tracks.vqa.icd.selectors.v2 import DEFAULTS as V2_DEFAULTS
from leverplus.tracks.vqa.icd.selectors.v2 import CrossAttentionPointerSelector

TEXT_LENGTH_MULTIPLE = 8  # questions are encoded at the source's longest, rounded up to this (see the docstring)

DEFAULTS: dict[str, Any] = {
    **V2_DEFAULTS,
    "lora": {
        "r": 16,  # LoRA rank
        "alpha": 32,  # LoRA alpha (scaling = alpha / r)
        "dropout": 0.1,  # dropout on the LoRA branch
        "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"],  # CLIP attention projections
    },
    "encode_batch_size": 64,  # examples per CLIP forward at inference (no effect on results)
}


class ClipEncoder:
    """A CLIP model directory (``CLIPModel`` weights, image processor, tokenizer) with the preprocessing split into
    the frozen part (cached per example) and the differentiable part (``embed``)."""

    def __init__(self, encoder_dir: str | Path):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.dir = str(encoder_dir)
        self.model = CLIPModel.from_pretrained(self.dir)
        self.image_processor = AutoImageProcessor.from_pretrained(self.dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.dir)
        self.max_text_length = int(self.model.config.text_config.max_position_embeddings)
        self.mean = torch.tensor(self.image_processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(self.image_processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = float(self.image_processor.rescale_factor)

    @property
    def dim(self) -> int:
        return 2 * int(self.model.config.projection_dim)

    def pixels_uint8(self, image_path: str) -> torch.Tensor:
        """Resized and centre-cropped image, (3, H, W) uint8 — the part of preprocessing LoRA cannot change."""
        from PIL import Image

        with Image.open(image_path) as img:
            out = self.image_processor(images=[img.convert("RGB")], do_rescale=False, do_normalize=False,
                                       return_tensors="np")["pixel_values"][0]
        return torch.from_numpy(np.ascontiguousarray(out.astype(np.uint8)))

    def tokens(self, question: str) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer([question], padding="max_length", truncation=True, max_length=self.max_text_length,
                             return_tensors="pt")
        return enc["input_ids"][0], enc["attention_mask"][0]

    def text_length(self, questions: Sequence[str]) -> int:
        """The fixed token length a source of these questions encodes at: the longest, rounded up to
        ``TEXT_LENGTH_MULTIPLE``, at most the text tower's maximum."""
        if not questions:
            return self.max_text_length
        enc = self.tokenizer(list(questions), padding="max_length", truncation=True,
                             max_length=self.max_text_length, return_tensors="pt")
        longest = int(enc["attention_mask"].sum(dim=1).max())
        return min(self.max_text_length, -(-longest // TEXT_LENGTH_MULTIPLE) * TEXT_LENGTH_MULTIPLE)

    def image_states(self, model, pixels: torch.Tensor) -> torch.Tensor:
        """(n, tokens, hidden) input states of the vision encoder's layers: rescale + normalise, the patch and
        position embeddings and the pre-LayerNorm — every step before the first LoRA layer (all frozen)."""
        dtype = torch.get_default_dtype()  # the selector's compute dtype (common.compute_dtype)
        pixel_values = (pixels.to(dtype) * self.scale - self.mean.to(dtype)) / self.std.to(dtype)
        vision = _clip_model(model).vision_model
        return vision.pre_layrnorm(vision.embeddings(pixel_values))

    def embed_states(self, model, image_states: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, 2·projection_dim) example vectors through ``model`` (the LoRA-wrapped CLIP) from vision input
        states (:meth:`image_states`): the vision encoder's layers, CLS pooling, post-LayerNorm and projection as
        ``CLIPModel.get_image_features`` runs them, and the text tower on the token ids."""
        clip = _clip_model(model)
        hidden = clip.vision_model.encoder(inputs_embeds=image_states).last_hidden_state
        image = clip.visual_projection(clip.vision_model.post_layernorm(hidden[:, 0, :]))
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return torch.cat([torch.nn.functional.normalize(image, dim=-1),
                          torch.nn.functional.normalize(text, dim=-1)], dim=-1)

    def embed(self, model, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(n, 2·projection_dim) example vectors through ``model`` (a CLIP, LoRA-wrapped or not) from uint8
        pixels (:meth:`pixels_uint8`) and token ids (:meth:`tokens`)."""
        return self.embed_states(model, self.image_states(model, pixels), input_ids, attention_mask)


def _clip_model(model):
    """The ``CLIPModel`` inside a peft wrapper (its LoRA layers injected), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class FullLengthDropout(torch.nn.Module):
    """Dropout on (n, length, d) inputs that draws its mask for (n, ``full_length``, d) and keeps the first
    ``length`` positions: the random stream and the mask of every kept position are those ``nn.Dropout`` draws for
    inputs padded to ``full_length`` (CPU dropout: a Bernoulli mask divided by 1 − p, times the input)."""

    def __init__(self, p: float, full_length: int):
        super().__init__()
        self.p = float(p)
        self.full_length = int(full_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.dim() != 3 or x.shape[1] >= self.full_length:
            return torch.nn.functional.dropout(x, self.p, self.training)
        noise = torch.empty((x.shape[0], self.full_length, x.shape[2]), dtype=x.dtype, device=x.device)
        noise.bernoulli_(1 - self.p)
        noise.div_(1 - self.p)
        return x * noise[:, : x.shape[1]]

    def extra_repr(self) -> str:
        return f"p={self.p}, full_length={self.full_length}"


class ClipSource(Source):
    """Example vectors encoded on demand by the selector's (LoRA-adapted) CLIP, with the frozen part of each
    example (vision input states, token ids) cached the first time it is used, computed for that example alone."""

    def __init__(self, selector: "LoRAPointerSelector", table: pd.DataFrame, ids: Sequence[str] | None = None):
        table = _by_id(table)
        ids = list(table.index) if ids is None else [str(i) for i in ids]
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise KeyError(f"ids missing from the split table: {missing[:5]}")
        super().__init__(ids)
        self.selector = selector
        self.images = table.loc[ids, "image"].astype(str).tolist()
        self.questions = table.loc[ids, "question"].astype(str).tolist()
        self.text_length = selector.encoder.text_length(self.questions)  # every question encoded at this length
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _frozen_inputs(self, row: int):
        if row not in self._inputs or self._inputs[row][0].dtype != torch.get_default_dtype():
            enc = self.selector.encoder
            with torch.no_grad():
                states = enc.image_states(self.selector.clip, enc.pixels_uint8(self.images[row])[None])[0]
            self._inputs[row] = (states, *enc.tokens(self.questions[row]))
        return self._inputs[row]

    def encode_rows(self, rows: Sequence[int]) -> torch.Tensor:
        states, ids, mask = (torch.stack(x) for x in zip(*(self._frozen_inputs(r) for r in rows)))
        n = self.text_length
        return self.selector.encoder.embed_states(self.selector.clip, states, ids[:, :n], mask[:, :n])

    def vectors(self, rows: torch.Tensor) -> torch.Tensor:
        unique, inverse = torch.unique(rows.flatten(), return_inverse=True)
        vec = self.encode_rows(unique.tolist())
        return vec[inverse].view(*rows.shape, -1)

    def frozen_snapshot(self, chunk: int) -> FeatureSource:
        """Every row encoded once (no grad), in fixed row order and chunk size."""
        with torch.no_grad():
            parts = [self.encode_rows(range(s, min(s + chunk, len(self.ids)))) for s in range(0, len(self.ids), chunk)]
        return FeatureSource(self.ids, torch.cat(parts))


def _by_id(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("id", "image", "question") if c not in table.columns]
    if missing:
        raise ValueError(f"split table lacks columns {missing}")
    out = table.assign(id=table["id"].astype(str)).set_index("id", drop=False)
    if not out.index.is_unique:
        raise ValueError("split table has duplicate ids")
    return out


class LoRAPointerSelector(CrossAttentionPointerSelector):
    version = "v2_lora"
    DEFAULTS = DEFAULTS

    def __init__(self, cfg: dict[str, Any], feat_dim: int, encoder_dir: str):
        from peft import LoraConfig, get_peft_model

        encoder = ClipEncoder(encoder_dir)
        if feat_dim != encoder.dim:
            raise ValueError(f"feature dim {feat_dim} ≠ 2 × CLIP projection_dim ({encoder.dim})")
        super().__init__(cfg, feat_dim)
        self.encoder = encoder
        self.encoder_dir = str(encoder_dir)
        lora = cfg["lora"]
        self.clip = get_peft_model(encoder.model, LoraConfig(
            r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]), bias="none",
        ))
        encoder.model = None  # the wrapped model lives in self.clip (one copy, registered as a submodule)
        self.clip.to(torch.get_default_dtype())  # the compute dtype (the checkpoint's own may differ)
        for name, module in self.clip.named_modules():  # text-tower LoRA dropout: the full-length masks
            if ".text_model." in f".{name}." and name.endswith("lora_dropout"):
                for adapter, drop in list(module.items()):
                    if isinstance(drop, torch.nn.Dropout):
                        module[adapter] = FullLengthDropout(drop.p, encoder.max_text_length)

    @classmethod
    def for_training(cls, cfg, train_features, *, encoder_dir=None, train_table=None):
        if encoder_dir is None or train_table is None:
            raise ValueError("v2_lora needs encoder_dir and train_table to re-encode examples with LoRA")
        from transformers import CLIPConfig

        dim = 2 * int(CLIPConfig.from_pretrained(encoder_dir).projection_dim)
        model = cls(cfg, dim, encoder_dir=str(encoder_dir))
        return model, ClipSource(model, train_table)

    def init_kwargs(self) -> dict[str, Any]:
        return {"encoder_dir": self.encoder_dir}

    def query_source(self, query_features, query_table=None):
        if query_table is None:
            raise ValueError("v2_lora.select needs query_table (id, image, question) to encode the queries")
        return ClipSource(self, query_table, query_features.ids).frozen_snapshot(self.cfg["encode_batch_size"])

    def pool_source(self, pool_features, needed_ids, pool_table=None):
        if pool_table is None:
            raise ValueError("v2_lora.select needs pool_table (id, image, question) to encode the candidates")
        return ClipSource(self, pool_table, needed_ids).frozen_snapshot(self.cfg["encode_batch_size"])
