"""Dataset records shared by every VQA stage.

A split is a parquet table with one row per question: `id` (str), `image` (path), `image_id`, `question`,
`answers` (the 10 human answers), `answer` (the most frequent of them; the answer shown in a demonstration and the
one InfoScore scores), `answer_type`, `question_type`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SPLIT_COLUMNS = ["id", "image", "image_id", "question", "answers", "answer", "answer_type", "question_type"]


@dataclass(frozen=True)
class VQAExample:
    id: str
    image: str
    question: str
    answer: str


def load_split(dataset_dir: str | Path, split: str) -> pd.DataFrame:
    path = Path(dataset_dir) / f"{split}.parquet"
    df = pd.read_parquet(path)
    missing = [c for c in ("id", "image", "question", "answers", "answer") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    df["id"] = df["id"].astype(str)
    root = Path(dataset_dir)
    df["image"] = [str(p if Path(p).is_absolute() else root / p) for p in df["image"]]
    return df.reset_index(drop=True)


def examples(df: pd.DataFrame) -> list[VQAExample]:
    return [
        VQAExample(str(r.id), str(r.image), str(r.question), str(r.answer))
        for r in df[["id", "image", "question", "answer"]].itertuples(index=False)
    ]
