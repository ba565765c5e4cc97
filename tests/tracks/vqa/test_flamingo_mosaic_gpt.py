"""The OpenFlamingo-3B path: a Flamingo whose language model behaves like MosaicGPT remote code (legacy
list-of-tuples KV cache, boolean attention masks, loaded with trust_remote_code), built locally.

transformers' native MPT (test_flamingo_adapter.py) returns a `DynamicCache` and takes integer masks, so those
tests cannot see what the real 3B's language model does from the second beam-search step on."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from PIL import Image

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.icd.infoscore import beam_search_anchor
from leverplus.tracks.vqa.models import flamingo as fl
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import ICLModel, load_icl_model
from leverplus.tracks.vqa.models.kv_cache import repeat_prefix_cache

pytestmark = pytest.mark.skipif(importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed")

CORPUS = [
    "What color is the cat? black white brown",
    "How many dogs are there? 2 3 two",
    "Is it raining? yes no",
    "What is on the table? a red apple",
    "Where is the dog? on the sofa",
] * 8
QA = [
    ("What color is the cat?", "black"),
    ("How many dogs are there?", "2"),
    ("Is it raining?", "yes"),
    ("What is on the table?", "a red apple"),
    ("Where is the dog?", "on the sofa"),
    ("What color is the cat?", "white"),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from leverplus.tracks.vqa.models.tiny_flamingo import TinyFlamingoSize, build_tiny_flamingo

    # a wider init than 0.02 so log P̄ moves by ~0.1-0.7 with the demonstrations: the equalities are not vacuous
    size = TinyFlamingoSize(lang_init_std=0.3)
    return build_tiny_flamingo(tmp_path_factory.mktemp("tiny_mosaic"), CORPUS, seed=0, size=size, lang="mosaic_gpt")


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_icl_model("flamingo", str(model_dir))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("mosaic_images")
    out = []
    for i, (q, a) in enumerate(QA):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (30 + 3 * i, 44, 3), dtype=np.uint8)).save(p)
        out.append(VQAExample(str(i), str(p), q, a))
    return out


class ReferenceScorer(ICLModel):
    """Every P̄ from one `Flamingo.forward` over the full sequence: no KV cache, no shared prefix."""

    def __init__(self, adapter):
        self.adapter = adapter

    def answer_mask(self, icds, query):
        return self.adapter.answer_mask(icds, query)

    def score_reference(self, icds, query):
        return self.adapter.score_reference(icds, query)

    def score(self, icd_seqs, queries):
        return np.array([self.adapter.score_reference(s, q) for s, q in zip(icd_seqs, queries)])

    def generate(self, icd_seqs, queries, *args, **kwargs):
        raise NotImplementedError


def test_language_model_is_remote_code_with_legacy_cache(model_dir, adapter, examples):
    """The stand-in behaves as MosaicGPT does: loaded from the directory's own source file, a list of
    (key, value) tuples in (batch, seq, d_model) layout, and integer masks refused."""
    assert fl.FlamingoSpec.read(model_dir).trust_remote_code
    assert (model_dir / "lang" / "tiny_mosaic_gpt.py").is_file()
    assert any(c.__module__.startswith("transformers_modules") for c in type(adapter.lm).__mro__)  # remote code
    assert fl._decoder_layers_attr(adapter.lm, None) == "transformer.blocks"
    lm_forward = super(fl.BoolAttentionMask, adapter.lm).forward  # FlamingoLMMixin → the LM, no mask conversion
    ids = torch.tensor([[adapter.media_id, 5, 6]])
    adapter._condition(adapter._media([[examples[0].image]]))
    try:
        out = lm_forward(input_ids=ids, attention_mask=torch.ones_like(ids, dtype=torch.bool), use_cache=True)
        with pytest.raises(RuntimeError, match="boolean"):
            lm_forward(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    finally:
        adapter.lm.clear_conditioned_layers()
    cache = out.past_key_values
    assert isinstance(cache, list) and len(cache) == len(adapter.lm._get_decoder_layers())
    assert all(isinstance(kv, tuple) and kv[0].shape == (1, 3, adapter.lm.config.d_model) for kv in cache)
    assert not hasattr(cache, "batch_repeat_interleave")


def test_repeat_prefix_cache_keeps_the_legacy_format():
    k, v = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    legacy = [(k, v), (k + 1, v + 1)]
    got = repeat_prefix_cache(legacy, 3)
    assert isinstance(got, list) and all(isinstance(layer, tuple) for layer in got)
    for (k0, v0), (k3, v3) in zip(legacy, got):
        assert k3.shape == (3, 5, 8)
        for row in range(3):
            torch.testing.assert_close(k3[row], k0[0], rtol=0, atol=0)
            torch.testing.assert_close(v3[row], v0[0], rtol=0, atol=0)
    assert isinstance(repeat_prefix_cache(tuple(legacy), 2), tuple)
    # batch × heads fused layouts (old transformers MPT/Bloom): rows are blocks of heads, kept in order
    fused = [(torch.arange(4.0).view(4, 1, 1), torch.arange(4.0).view(4, 1, 1))]
    assert repeat_prefix_cache(fused, 2)[0][0].flatten().tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    with pytest.raises(TypeError, match="unsupported KV cache"):
        repeat_prefix_cache({"k": k}, 2)


def test_repeat_prefix_cache_uses_the_cache_object_method():
    from transformers import DynamicCache

    cache = DynamicCache()
    k = torch.randn(1, 2, 4, 3)
    cache.update(k, k + 1, 0)
    got = repeat_prefix_cache(cache, 3)
    assert got is cache and cache.layers[0].keys.shape == (3, 2, 4, 3)


def test_beam_search_right_order_equals_full_forward(adapter, examples):
    """InfoScore beam search, construct_order right, 3 steps: the cached shared-prefix path (prefix run once, its
    legacy cache tiled per row) gives the beams and scores of full forwards without any cache."""
    anchor, pool = examples[3], [examples[i] for i in (0, 1, 2, 4, 5)]
    adapter._latents.clear()
    adapter.batch_size = 8
    fast = beam_search_anchor(adapter, anchor, pool, beam_size=2, shot_num=3, order="right")
    assert adapter.last_shared_prefix > 0  # the legacy-cache path ran
    ref = beam_search_anchor(ReferenceScorer(adapter), anchor, pool, beam_size=2, shot_num=3, order="right")
    (fast_beams, fast_base, fast_means), (ref_beams, ref_base, ref_means) = fast, ref
    assert [b.picked for b in fast_beams] == [b.picked for b in ref_beams]
    assert math.isclose(math.log(fast_base), math.log(ref_base), abs_tol=1e-5)
    np.testing.assert_allclose(
        np.log([b.p_bar for b in fast_beams]), np.log([b.p_bar for b in ref_beams]), rtol=0, atol=1e-5
    )
    # P̄ is ~1e-4 here, so InfoScores are ~1e-5: compare them relative to their size
    np.testing.assert_allclose(
        [b.step_scores for b in fast_beams], [b.step_scores for b in ref_beams], rtol=1e-3, atol=1e-9
    )
    np.testing.assert_allclose(fast_means, ref_means, rtol=1e-3, atol=1e-9)
    # the demonstrations move log P̄ far more than the tolerance, so a wrong cache could not pass
    assert max(abs(math.log(b.p_bar) - math.log(ref_base)) for b in ref_beams) > 0.05


def _generate_without_cache(adapter, icds, query, max_new_tokens):
    """Greedy answer from full `Flamingo.forward` passes (every image re-encoded, no KV cache)."""
    text = adapter._text(icds, query, with_answer=False)[0]
    ids = adapter.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    pix = [adapter.image_transform(load_image(p)) for p in prompting.images_in_order(icds, query)]
    vision_x = torch.stack(pix)[None, :, None]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = adapter.model(vision_x=vision_x, lang_x=ids, attention_mask=torch.ones_like(ids)).logits
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            if nxt in adapter.stop_ids:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return adapter._decode_answer(new)


def test_generation_through_the_legacy_cache_equals_full_forward(adapter, examples):
    e = examples
    seqs, queries = [[e[0]], [e[0], e[1], e[2]], []], [e[3], e[4], e[1]]
    adapter.batch_size = 8
    got = adapter.generate(seqs, queries, max_new_tokens=5)  # left-padded batch, cache grown step by step
    ref = [_generate_without_cache(adapter, s, q, 5) for s, q in zip(seqs, queries)]
    assert got == ref
