"""The generated demo dataset: schema, determinism, and the properties that make demonstration choice matter."""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pandas as pd
import pytest

from leverplus.tracks.vqa.data import demo
from leverplus.tracks.vqa.data.records import SPLIT_COLUMNS, examples, load_split
from leverplus.metrics.vqa import normalize_answer


def _digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    demo.generate_demo(out, seed=3, n_train=120, n_val=40)
    return out


def test_byte_identical_on_rerun(small, tmp_path):
    demo.generate_demo(tmp_path / "again", seed=3, n_train=120, n_val=40)
    assert _digest_tree(tmp_path / "again") == _digest_tree(small)
    # regenerating in place leaves every file as it was
    demo.generate_demo(small, seed=3, n_train=120, n_val=40)
    assert _digest_tree(small) == _digest_tree(tmp_path / "again")


def test_schema_and_paths(small):
    for split, n in (("train", 120), ("val", 40)):
        raw = pd.read_parquet(small / f"{split}.parquet")
        assert list(raw.columns[: len(SPLIT_COLUMNS)]) == SPLIT_COLUMNS
        assert {"class", "caption"} <= set(raw.columns)
        assert len(raw) == n and raw["id"].is_unique
        assert all(not Path(p).is_absolute() and (small / p).is_file() for p in raw["image"])
        assert all(len(a) == 10 and set(a) == {w} for a, w in zip(raw["answers"], raw["answer"]))
        df = load_split(small, split)
        assert len(examples(df)) == n


def test_images_are_the_configured_size_and_rarely_identical(small):
    from PIL import Image

    df = load_split(small, "train")
    sizes = {Image.open(p).size for p in df["image"][:20]}
    assert sizes == {(56, 56)}
    digests = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in df["image"]}
    assert len(digests) == len(df)


def test_answers_follow_a_per_dataset_naming_of_classes(small, tmp_path):
    df = pd.concat([load_split(small, "train"), load_split(small, "val")])
    naming = df.groupby("class")["answer"].agg(set)
    assert all(len(words) == 1 for words in naming)  # one word per class
    assert df.groupby("answer")["class"].nunique().max() == 1  # distinct words
    # answers survive the VQA answer normalisation, so exact match == VQA accuracy on this set
    assert all(normalize_answer(w) == w for w in df["answer"].unique())
    # another seed names the classes differently: the naming cannot be learnt into weights
    demo.generate_demo(tmp_path / "other", seed=4, n_train=120, n_val=10)
    other = load_split(tmp_path / "other", "train").groupby("class")["answer"].first()
    shared = [c for c in other.index if c in naming.index]
    assert sum(other[c] in naming[c] for c in shared) <= 1


def test_questions_name_colour_or_shape_of_the_class(small):
    df = load_split(small, "train")
    kinds = set()
    for q, c, cap in zip(df["question"], df["class"], df["caption"]):
        shape, colour = demo.class_parts(int(c))
        assert cap == demo.class_caption(int(c))
        has_colour, has_shape = f" {colour} " in q, f" {shape} " in q
        assert has_colour != has_shape, q  # exactly one of the two
        kinds.add("colour" if has_colour else "shape")
        others = [a for a in (*demo.SHAPES, *demo.COLOUR_NAMES) if a not in (shape, colour)]
        assert not any(f" {a} " in q for a in others)
    assert kinds == {"colour", "shape"}


def test_defaults_give_a_val_set_for_meaningful_cis():
    params = inspect.signature(demo.generate_demo).parameters
    assert params["n_val"].default >= 500
    assert params["image_size"].default == 56


def test_nonce_vocabulary_and_naming():
    import numpy as np

    vocab = demo.nonce_vocabulary()
    assert len(vocab) > 4000 and len(set(vocab)) == len(vocab)
    a = demo.draw_naming(np.random.default_rng(0), vocab)
    b = demo.draw_naming(np.random.default_rng(1), vocab)
    assert len(set(a)) == demo.N_CLASSES and a != b
