"""Small helpers shared by stage functions."""
from __future__ import annotations

from pathlib import Path


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dataset_dir(split_path: str) -> Path:
    return Path(split_path).parent


def load_model(spec: dict, path: str):
    from ..models.base import load_icl_model

    return load_icl_model(
        spec["adapter"],
        path,
        device=device(),
        dtype=spec.get("dtype", "float32"),
        batch_size=spec.get("batch_size", 16),
        trust_remote_code=spec.get("trust_remote_code", False),
    )
