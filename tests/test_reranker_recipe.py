"""Qwen3-Reranker recipe on the shipped tiny Qwen3ForCausalLM: prompt bytes, score = sigmoid(logit_yes − logit_no)
at the last position against a hand-computed single-sequence reference, left padding, truncation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leverplus.models.consistency_assets import ASSETS, RERANKER
from leverplus.models.reranker import PREFIX, SUFFIX, QwenReranker, RerankRecipe, format_body

DOCS = ["To sort a list, call sorted(items, key=len).", "要读取文件，可以使用 open(path).read()。", "x", "# reverse\nresult = text[::-1]"]


@pytest.fixture(scope="module")
def reranker():
    return QwenReranker(ASSETS / RERANKER)


def test_prompt_strings_are_byte_exact():
    assert PREFIX == ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
                      'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
                      "<|im_start|>user\n")
    assert SUFFIX == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert format_body("q", "d", RerankRecipe(instruction="I")) == "<Instruct>: I\n<Query>: q\n<Document>: d"
    assert format_body("q", "d", RerankRecipe(instruction="I", separator="\n\n")) == "<Instruct>: I\n\n<Query>: q\n\n<Document>: d"
    assert format_body("q", "d", RerankRecipe(use_instruction=False)) == "<Query>: q\n<Document>: d"
    assert format_body("q", "d", RerankRecipe(instruction="I"), instruction="J").startswith("<Instruct>: J\n")


def test_score_is_sigmoid_of_yes_minus_no_at_the_last_position(reranker):
    tok = reranker.tokenizer
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    assert tok.convert_ids_to_tokens([yes, no]) == ["yes", "no"]
    got = reranker.score("how to sort a list", DOCS)  # one left-padded batch
    for i, d in enumerate(DOCS):
        ids = (tok.encode(PREFIX, add_special_tokens=False)
               + tok.encode(format_body("how to sort a list", d), add_special_tokens=False)
               + tok.encode(SUFFIX, add_special_tokens=False))
        with torch.inference_mode():
            last = reranker.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
        diff = float(last[yes] - last[no])
        assert got.logit[i] == pytest.approx(diff, abs=1e-4)
        assert got.prob[i] == pytest.approx(1 / (1 + np.exp(-diff)), abs=1e-5)
        # the official softmax over [no, yes] is the same number
        assert got.prob[i] == pytest.approx(float(torch.softmax(last[[no, yes]], 0)[1]), abs=1e-5)


def test_truncation_cuts_the_body_and_keeps_prefix_and_suffix(reranker):
    short = reranker.with_recipe(RerankRecipe(max_length=len(reranker.prefix_ids) + len(reranker.suffix_ids) + 5))
    ids = short.pair_ids("q", ["a long document " * 20])[0]
    assert len(ids) == short.recipe.max_length
    assert ids[: len(short.prefix_ids)] == short.prefix_ids and ids[-len(short.suffix_ids):] == short.suffix_ids
    with pytest.raises(ValueError, match="no room"):
        reranker.with_recipe(RerankRecipe(max_length=10)).pair_ids("q", ["d"])


def test_reranker_ranks_better_than_chance_on_the_demo_corpus():
    import json

    ev = json.loads((ASSETS / "BUILD.json").read_text())["evaluation_demo_corpus"]
    assert ev["embedder"]["recall_at_1"] > 3 * ev["embedder"]["chance_recall_at_1"]
    assert ev["reranker"]["ndcg_at_5"] > ev["reranker"]["chance_ndcg_at_5"]
