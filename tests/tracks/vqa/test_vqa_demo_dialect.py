"""Issue 22 item 1: the dialect demo — a third of the examples are named by another class's word, tied to the question
template (visible to a selector, not to image similarity) or to a hidden coin (the control); everything else is the
original demo's."""
from __future__ import annotations

import pandas as pd
import pytest

from leverplus.tracks.vqa.data import demo


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    out = {}
    for d in (None, "template", "hidden"):
        path = tmp_path_factory.mktemp(str(d))
        demo.generate_demo(path, seed=3, n_train=300, n_val=60, dialect=d)
        out[d] = path
    return out


def test_conditions_share_images_classes_and_questions(three):
    for split in ("train", "val"):
        base = pd.read_parquet(three[None] / f"{split}.parquet")
        assert "dialect" not in base.columns  # the original demo, column for column
        for d in ("template", "hidden"):
            t = pd.read_parquet(three[d] / f"{split}.parquet")
            for col in ("id", "image", "question", "question_type", "class", "caption"):
                assert t[col].tolist() == base[col].tolist(), (d, col)
            for p in base["image"]:
                assert (three[d] / p).read_bytes() == (three[None] / p).read_bytes()


def test_dialect_answers_follow_the_template_or_a_hidden_coin(three):
    base = pd.concat([pd.read_parquet(three[None] / f"{s}.parquet") for s in ("train", "val")])
    word = dict(zip(base["class"], base["answer"]))  # the standard naming
    for d in ("template", "hidden"):
        t = pd.concat([pd.read_parquet(three[d] / f"{s}.parquet") for s in ("train", "val")])
        for cls, dia, answer, answers in zip(t["class"], t["dialect"], t["answer"], t["answers"]):
            expect = word[demo.dialect_class(int(cls))] if dia else word[int(cls)]
            assert answer == expect and list(answers) == [expect] * 10
        share = t["dialect"].mean()
        assert 0.22 < share < 0.45, (d, share)
        if d == "template":
            assert (t["dialect"] == (t["question_type"] == demo.DIALECT_TEMPLATE)).all()
        else:  # the control: the coin is not the template
            assert not (t["dialect"] == (t["question_type"] == demo.DIALECT_TEMPLATE)).all()
    assert all(demo.dialect_class(c) != c and demo.dialect_class(c) % 4 == c % 4 for c in range(demo.N_CLASSES))
    with pytest.raises(ValueError, match="dialect"):
        demo.generate_demo(three[None] / "x", seed=3, n_train=10, n_val=10, dialect="colour")
