"""CLIP image and question-text features (L2-normalised) for a split table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.icd.features import Features


def _as_tensor(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def encode_table(table: pd.DataFrame, encoder_dir: str, *, device: str = "cpu", batch_size: int = 64,
                 dtype: str = "float32") -> Features:
    """L2-normalised CLIP image and text features of every row (stored as float32).

    Each example's features do not depend on which others share its forward: questions are padded to the text
    tower's maximum length (not to the longest question of the chunk). ``dtype`` float64 computes in double
    precision (the demo's setting): float32 features differ by ~7e-8 between two CPUs' kernel sets, float64 ones
    round to the same float32 values, so every stage below sees the same inputs on every CPU (issue 20)."""
    from transformers import AutoProcessor, CLIPModel

    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    model = CLIPModel.from_pretrained(encoder_dir).to(device, torch_dtype).eval()
    processor = AutoProcessor.from_pretrained(encoder_dir)
    max_len = model.config.text_config.max_position_embeddings
    images, texts = [], []
    for lo in tqdm(range(0, len(table), batch_size), desc="encode", mininterval=5):
        chunk = table.iloc[lo : lo + batch_size]
        pix = processor.image_processor(images=[load_image(p) for p in chunk["image"]], return_tensors="pt")
        tok = processor.tokenizer(
            list(chunk["question"]), padding="max_length", truncation=True, max_length=max_len, return_tensors="pt"
        )
        images.append(_as_tensor(model.get_image_features(pixel_values=pix["pixel_values"].to(device, torch_dtype))))
        texts.append(
            _as_tensor(
                model.get_text_features(
                    input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device)
                )
            )
        )

    def norm(parts):
        x = torch.cat(parts)
        return torch.nn.functional.normalize(x, dim=-1).cpu().numpy().astype(np.float32)

    return Features(ids=list(table["id"]), image=norm(images), text=norm(texts))
