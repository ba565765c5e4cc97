"""Qwen3-Reranker recipe on the shipped tiny Qwen3ForCausalLM: prompt bytes, score = sigmoid(logit_yes − logit_no)
at the last position against a hand-computed single-sequence reference, left padding, truncation; the official
README snippet's scores on the shipped files (known answers); the tokenizer appends nothing; the model ranks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leverplus.tracks.consistency.assets import ASSETS, RERANKER
from leverplus.tracks.consistency.reranker import PREFIX, SUFFIX, QwenReranker, RerankRecipe, format_body

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


def test_reranker_ranks_clearly_better_than_chance_on_the_demo_corpus():
    """BUILD.json's evaluation: NDCG@5 against the qrels, its 95% CI above the random ranking's, and the paired
    difference's CI above 0.3; relevant vs irrelevant AUC above 0.85."""
    import json

    ev = json.loads((ASSETS / "BUILD.json").read_text())["evaluation_demo_corpus"]
    assert ev["embedder"]["recall_at_1"] > 3 * ev["embedder"]["chance_recall_at_1"]
    r = ev["reranker"]
    assert r["ndcg_at_5"]["ci95"][0] > r["random_ndcg_at_5"]["ci95"][1]
    assert r["ndcg_minus_random"]["ci95"][0] > 0.3 and r["ndcg_at_5"]["n"] == 48
    assert r["auc_relevant_vs_not"] > 0.85


# Known answers: the "Transformers Usage" reranker snippet of QwenLM/Qwen3-Embedding README.md @ f4ad0c43, run
# verbatim (only the model id replaced by the shipped tiny_qwen3_reranker directory) — its own two pairs, then its own
# format_instruction / process_inputs / compute_logits on the 21 rerank pairs of
# generate_corpus(seed=0, queries_per_topic=1, n_negatives=3, n_topics=3), in corpus order.
README_QUERIES = ["What is the capital of China?", "Explain gravity"]
README_DOCUMENTS = ["The capital of China is Beijing.",
                    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
                    "and is responsible for the movement of planets around the sun."]
README_SCORES = [0.15194499, 0.01333425]
DEMO_SCORES = [0.00348783, 0.88985479, 0.85963225, 0.91429788, 0.91274542, 0.00362131, 0.00248888, 0.81165344, 0.08408195, 0.05372171, 0.00348576, 0.77981776, 0.74024624, 0.81825608, 0.02623586, 0.81358284, 0.77070981, 0.00199577, 0.0267314, 0.79274446, 0.8043918]


def test_official_readme_snippet_scores_equal_the_project(reranker):
    from leverplus.tracks.consistency.demo import generate_corpus

    for q, d, want in zip(README_QUERIES, README_DOCUMENTS, README_SCORES):
        assert reranker.score(q, [d]).prob[0] == pytest.approx(want, abs=1e-5)
    c = generate_corpus(seed=0, queries_per_topic=1, n_negatives=3, n_topics=3)
    docs = {d["id"]: d["text"] for d in c["documents"]}
    qs = {q["id"]: q["text"] for q in c["queries"]}
    got = np.concatenate([reranker.score(qs[r["query_id"]], [docs[x] for x in r["candidates"]]).prob for r in c["rerank"]])
    assert len(got) == len(DEMO_SCORES) == 21
    assert np.max(np.abs(got - np.asarray(DEMO_SCORES))) < 1e-5


def test_tokenizer_appends_nothing_like_the_real_qwen3_reranker(reranker):
    tok = reranker.tokenizer
    for text in ("how to sort", DOCS[1], "<Instruct>: x\n<Query>: y\n<Document>: z"):
        assert tok(text)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.padding_side == "left"
