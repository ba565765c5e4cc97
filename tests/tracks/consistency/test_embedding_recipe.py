"""Qwen3-Embedding recipe on the shipped tiny Qwen3Model: instruction bytes, last-token pooling under left and right
padding, EOS handling, truncation, MRL, and refusal of checkpoints that would load with random weights."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from leverplus.tracks.consistency.assets import ASSETS, EMBEDDER, RERANKER
from leverplus.tracks.consistency.embedding import (EOS_TOKEN, EmbeddingRecipe, QwenEmbedder, format_query, last_token_pool,
                                        normalise, token_ids)
from leverplus.tracks.consistency.embedding_loading import ModelLoadError, load_checked

EMB = ASSETS / EMBEDDER
TEXTS = ["how do I sort a list in python", "怎么读取文件", "要解析 JSON，可以使用 json.loads(text)。", "x"]


@pytest.fixture(scope="module")
def embedder():
    return QwenEmbedder(EMB)


def test_query_instruction_is_byte_exact():
    assert format_query("q?") == ("Instruct: Given a web search query, retrieve relevant passages that answer the "
                                  "query\nQuery:q?")
    assert format_query("q", EmbeddingRecipe(task="T")).encode() == b"Instruct: T\nQuery:q"
    assert format_query("q", EmbeddingRecipe(task="T", separator="\n\n")) == "Instruct: T\n\nQuery:q"
    assert format_query("q", EmbeddingRecipe(instruction=False)) == "q"


def test_eos_as_the_tokenizer_appends_it_and_truncation_keeps_it(embedder):
    tok = embedder.tokenizer
    eos = tok.convert_tokens_to_ids(EOS_TOKEN)
    ids = token_ids(tok, TEXTS, EmbeddingRecipe())
    assert all(x[-1] == eos and x.count(eos) == 1 for x in ids)
    assert token_ids(tok, TEXTS, EmbeddingRecipe(eos="append")) == ids  # the first release's recipe, same ids
    none = token_ids(tok, TEXTS, EmbeddingRecipe(eos="none"))
    assert [x + [eos] for x in none] == ids
    short = token_ids(tok, TEXTS, EmbeddingRecipe(max_length=5))
    assert all(len(x) <= 5 and x[-1] == eos for x in short) and short[0] == ids[0][:4] + [eos]


def _reference(embedder, text: str) -> np.ndarray:
    """Hand-computed: the text alone (no padding), hidden state of its last token, L2-normalised."""
    ids = torch.tensor([token_ids(embedder.tokenizer, [text], embedder.recipe)[0]])
    with torch.inference_mode():
        h = embedder.model(input_ids=ids).last_hidden_state[0, -1].numpy().astype(np.float64)
    return h / np.linalg.norm(h)


def test_pooling_matches_reference_with_left_and_right_padding(embedder):
    ref = np.stack([_reference(embedder, t) for t in TEXTS])
    left = embedder.embed_texts(TEXTS)  # the recipe: one left-padded batch
    assert embedder.tokenizer.padding_side == "left"
    np.testing.assert_allclose(left, ref, atol=2e-5)
    ids = token_ids(embedder.tokenizer, TEXTS, embedder.recipe)
    width = max(map(len, ids))
    pad = embedder.tokenizer.pad_token_id
    right = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    with torch.inference_mode():
        h = embedder.model(input_ids=right, attention_mask=mask).last_hidden_state
    pooled = normalise(last_token_pool(h, mask).numpy())
    np.testing.assert_allclose(pooled, ref, atol=2e-5)
    # the pooled position is each row's last real token, not the last column
    assert not np.allclose(normalise(h[:, -1].numpy()), ref, atol=1e-3)


def test_mrl_truncates_then_renormalises(embedder):
    full = embedder.embed_texts(TEXTS)
    small = embedder.with_recipe(EmbeddingRecipe(dimensions=16)).embed_texts(TEXTS)
    assert small.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(np.linalg.norm(small, axis=1), 1, atol=1e-6)
    np.testing.assert_allclose(small, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-6)


def test_queries_carry_the_instruction_documents_do_not(embedder):
    q = embedder.embed_queries(["sort a list"])
    np.testing.assert_allclose(q, embedder.embed_texts([format_query("sort a list")]), atol=0)
    np.testing.assert_allclose(embedder.embed_documents(["sort a list"]), embedder.embed_texts(["sort a list"]), atol=0)
    assert not np.allclose(q, embedder.embed_texts(["sort a list"]))


def test_missing_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "broken"
    shutil.copytree(EMB, d)
    weights = load_file(d / "model.safetensors")
    dropped = sorted(k for k in weights if "layers.1.mlp" in k)[0]
    del weights[dropped]
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="missing .newly initialised.*" + dropped.replace(".", r"\.")):
        QwenEmbedder(d)


def test_causal_lm_checkpoint_as_sequence_classification_is_refused():
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    with pytest.raises(ModelLoadError, match="randomly initialised `score` head"):
        load_checked(AutoModelForSequenceClassification, ASSETS / RERANKER)
    assert load_checked(AutoModelForCausalLM, ASSETS / RERANKER) is not None


def test_sequence_classification_loading_is_refused_by_its_missing_weights_too(tmp_path):
    """Even without the architecture check, the random `score` head shows up in output_loading_info."""
    import json

    from transformers import AutoModelForSequenceClassification

    d = tmp_path / "rr"
    shutil.copytree(ASSETS / RERANKER, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["Qwen3ForSequenceClassification"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"score\.weight"):
        load_checked(AutoModelForSequenceClassification, d)
