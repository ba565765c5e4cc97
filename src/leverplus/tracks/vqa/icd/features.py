"""Cached encoder features of a dataset split: L2-normalised CLIP image and text (question) embeddings, one row
per example, saved as safetensors with the example ids in the file's metadata."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Features:
    ids: list[str]
    image: np.ndarray  # (N, D) float32, L2-normalised
    text: np.ndarray  # (N, D) float32, L2-normalised

    def index_of(self) -> dict[str, int]:
        return {i: k for k, i in enumerate(self.ids)}


def save_features(path: str | Path, feats: Features, meta: dict | None = None) -> None:
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"ids": json.dumps(feats.ids), "meta": json.dumps(meta or {}, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {"image": np.ascontiguousarray(feats.image, np.float32), "text": np.ascontiguousarray(feats.text, np.float32)},
            tmp,
            metadata=metadata,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_features(path: str | Path) -> Features:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        ids = json.loads(f.metadata()["ids"])
        return Features(ids=ids, image=f.get_tensor("image"), text=f.get_tensor("text"))
