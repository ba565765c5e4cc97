"""CLIP image and question-text features (L2-normalised) for a split table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..data.images import load_image
from .features import Features


def _as_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def encode_table(table: pd.DataFrame, encoder_dir: str, *, device: str = "cpu", batch_size: int = 64) -> Features:
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(encoder_dir).to(device).eval()
    processor = AutoProcessor.from_pretrained(encoder_dir)
    max_len = model.config.text_config.max_position_embeddings
    images, texts = [], []
    for lo in tqdm(range(0, len(table), batch_size), desc="encode", mininterval=5):
        chunk = table.iloc[lo : lo + batch_size]
        pix = processor.image_processor(images=[load_image(p) for p in chunk["image"]], return_tensors="pt")
        tok = processor.tokenizer(
            list(chunk["question"]), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        images.append(_as_tensor(model.get_image_features(pixel_values=pix["pixel_values"].to(device))))
        texts.append(
            _as_tensor(
                model.get_text_features(
                    input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device)
                )
            )
        )

    def norm(parts):
        x = torch.cat(parts).float()
        return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32)

    return Features(ids=list(table["id"]), image=norm(images), text=norm(texts))
