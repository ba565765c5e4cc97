"""Qwen2.5-VL adapter on a real (tiny) Qwen2.5-VL: answer mask, tokenisation, fast scoring vs the reference
forward, candidate scoring in both construct orders, batched generation, registry.

P̄ values are compared both absolutely (≤ 1e-5, the project's tolerance) and in log space (|Δ log P̄| ≤ 1e-5, i.e.
a relative bound), so the comparison stays strict for the smallest probabilities too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import extend, load_icl_model

TOL = 1e-5


def assert_scores_close(fast, ref):
    fast, ref = np.asarray(fast, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert fast.shape == ref.shape
    assert np.all(ref > 0) and np.all(fast > 0)
    assert np.max(np.abs(fast - ref)) <= TOL, (fast, ref)
    assert np.max(np.abs(np.log(fast) - np.log(ref))) <= TOL, (fast, ref)


def processor_encoding(model, icds, query, *, with_answer: bool):
    """The processor's encoding of the conversation in the adapter's own layout (its instruction included)."""
    msgs = model.layout.conversation(icds, query, with_answer=with_answer)
    text = model.processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=not with_answer)
    images = [load_image(p) for p in prompting.images_in_order(icds, query)]
    return model.processor(text=[text], images=images, return_tensors="pt")


# ---- answer mask ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_icds", [0, 1, 3])
@pytest.mark.parametrize("query_index", [0, 1, 2, 3, 9, 12, 15])  # one piece, words, punctuation, digits, non-ASCII
def test_answer_mask_covers_exactly_the_answer(qwen, vqa_examples, n_icds, query_index):
    query = vqa_examples[query_index]
    icds = [e for e in vqa_examples if e is not query][:n_icds]
    ids, mask = qwen.answer_mask(icds, query)
    assert len(ids) == len(mask)
    pos = [i for i, m in enumerate(mask) if m]
    assert pos, "empty answer mask"
    assert pos == list(range(pos[0], pos[-1] + 1)), "answer mask is not one contiguous span"
    assert qwen.tokenizer.decode([ids[i] for i in pos]) == query.answer
    # The span is the *last* assistant turn, closed by <|im_end|> (not scored) and nothing after but the newline.
    assert ids[pos[-1] + 1] == qwen.end_id
    assert ids[pos[0] - len(qwen._header) : pos[0]] == qwen._header
    assert qwen.end_id not in ids[pos[-1] + 2 :]
    # Same number of tokens as the answer tokenised on its own (byte-level BPE, the header ends in a newline).
    assert len(pos) == len(qwen.tokenizer(query.answer, add_special_tokens=False)["input_ids"])


def test_answer_mask_ignores_demonstrations_with_the_same_answer(qwen, vqa_examples):
    query, twin = vqa_examples[0], vqa_examples[11]
    assert query.answer == twin.answer
    ids, mask = qwen.answer_mask([twin, vqa_examples[3], twin], query)
    pos = [i for i, m in enumerate(mask) if m]
    answer_ids = qwen.tokenizer(query.answer, add_special_tokens=False)["input_ids"]
    # The answer's token ids occur three times in the sequence; only the last occurrence is masked.
    starts = [i for i in range(len(ids)) if ids[i : i + len(answer_ids)] == answer_ids]
    assert len(starts) == 3
    assert pos == list(range(starts[-1], starts[-1] + len(answer_ids)))


# ---- tokenisation equals the processor's ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_icds", [0, 1, 3])
@pytest.mark.parametrize("with_answer", [True, False])
def test_fast_tokenisation_equals_processor(qwen, vqa_examples, n_icds, with_answer):
    query = vqa_examples[5]
    icds = vqa_examples[7 : 7 + n_icds]
    enc = processor_encoding(qwen, icds, query, with_answer=with_answer)
    ours = qwen._tokenise(icds, query, with_answer=with_answer)
    assert ours == enc["input_ids"][0].tolist()
    n_img = int((enc["input_ids"][0] == qwen.image_token_id).sum())
    assert n_img == sum(qwen._n_image_tokens(p) for p in prompting.images_in_order(icds, query))
    if "mm_token_type_ids" in enc:
        # The fast path marks image tokens by id (`ids == image_token_id`); the processor's type ids must agree.
        assert (enc["mm_token_type_ids"][0] == 1).tolist() == [t == qwen.image_token_id for t in ours]
    if with_answer:
        ids, _ = qwen.answer_mask(icds, query)
        assert ids == ours


@pytest.mark.parametrize("n_icds", [0, 1, 3])
def test_assembled_positions_equal_get_rope_index_on_the_whole_row(qwen, vqa_examples, n_icds):
    """Rows are assembled from per-turn pieces; their M-RoPE ids must be the model's own for the whole row."""
    query = vqa_examples[4]
    icds = vqa_examples[8 : 8 + n_icds]
    enc = processor_encoding(qwen, icds, query, with_answer=True)
    ids = enc["input_ids"]
    want, _ = qwen.model.model.get_rope_index(
        ids, (ids == qwen.image_token_id).int(), image_grid_thw=enc["image_grid_thw"]
    )
    row = qwen._row(icds, query, with_answer=True)
    assert qwen._blockwise, "the Qwen2.5-VL template should decompose into turns"
    assert row.ids.tolist() == ids[0].tolist()
    assert np.array_equal(row.pos, want[:, 0].numpy())


def test_chat_segments_detect_a_template_that_does_not_decompose():
    from leverplus.tracks.vqa.models.chat_segments import ChatSegments

    def numbered(msgs, gen):  # a template that numbers the pictures: a turn's text depends on its position
        out, n = "<s>", 0
        for m in msgs:
            parts = []
            for c in m["content"]:
                if c["type"] == "image":
                    n += 1
                    parts.append(f"Picture {n}: <img>")
                else:
                    parts.append(c["text"])
            out += f"<|{m['role']}|>" + "".join(parts) + "\n"
        return out + ("<|assistant|>" if gen else "")

    def plain(msgs, gen):
        out = "<s>" + "".join(
            f"<|{m['role']}|>" + "".join("<img>" if c["type"] == "image" else c["text"] for c in m["content"]) + "\n"
            for m in msgs
        )
        return out + ("<|assistant|>" if gen else "")

    assert not ChatSegments(numbered).exact
    seg = ChatSegments(plain)
    assert seg.exact and seg.head == "<s>" and seg.generation_header == "<|assistant|>"


def test_whole_row_fallback_scores_like_the_reference(tiny_qwen_dir, vqa_examples):
    """With a template that does not decompose, rows are rendered and tokenised whole; scores are unchanged."""
    ex = vqa_examples
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=4)
    model._blockwise = False
    seqs, queries = [[], [ex[1]], [ex[2], ex[3]]], [ex[10], ex[11], ex[12]]
    enc = processor_encoding(model, seqs[2], queries[2], with_answer=True)
    assert model._tokenise(seqs[2], queries[2], with_answer=True) == enc["input_ids"][0].tolist()
    assert_scores_close(model.score(seqs, queries), [model.score_reference(s, q) for s, q in zip(seqs, queries)])
    assert not model._pieces


# ---- fast scoring vs the reference forward ---------------------------------------------------------------------------
def test_score_equals_reference_on_a_mixed_batch(tiny_qwen_dir, vqa_examples):
    ex = vqa_examples
    # Different queries, different images, 0–3 demonstrations, different answer lengths, a repeated image.
    seqs = [[], [ex[1]], [ex[2], ex[3]], [ex[4], ex[5], ex[6]], [ex[2]], [ex[7], ex[7]], [ex[8], ex[9]]]
    queries = [ex[10], ex[11], ex[12], ex[13], ex[14], ex[15], ex[2]]
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=4)  # 2 chunks: 4 + 3 rows
    fast = model.score(seqs, queries)
    ref = [model.score_reference(s, q) for s, q in zip(seqs, queries)]
    assert_scores_close(fast, ref)
    # Scores are a property of the row, not of the batch it was scored in.
    single = [model.score([s], [q])[0] for s, q in zip(seqs, queries)]
    assert_scores_close(single, ref)
    # The demonstrations matter to the model (otherwise the comparisons above would be weak).
    with_demo = model.score([[ex[3]], [ex[5]], []], [ex[10]] * 3)
    assert np.ptp(with_demo) > 1e-4


def test_score_rows_sharing_a_long_prefix(qwen, vqa_examples):
    """Rows that share all demonstrations except the last one (the `right`-order case) reuse the prefix KV."""
    ex = vqa_examples
    beam = [ex[1], ex[2]]
    seqs = [[*beam, c] for c in ex[3:8]] + [beam]
    queries = [ex[0]] * len(seqs)
    assert_scores_close(qwen.score(seqs, queries), [qwen.score_reference(s, q) for s, q in zip(seqs, queries)])


@pytest.mark.parametrize("order", ["left", "right"])
@pytest.mark.parametrize("beam_len", [0, 2])
def test_score_candidates_equals_reference(qwen, vqa_examples, order, beam_len):
    ex = vqa_examples
    query = ex[9]
    beam = [ex[1], ex[2]][:beam_len]
    cands = [ex[i] for i in (3, 4, 5, 12, 15)]
    fast = qwen.score_candidates(beam, cands, query, order)
    ref = [qwen.score_reference(extend(beam, c, order), query) for c in cands]
    assert_scores_close(fast, ref)


@pytest.mark.parametrize("order", ["left", "right"])
@pytest.mark.parametrize("batch_size", [3, 64])  # groups split across batches / several groups in one batch
def test_score_step_equals_reference_across_beams(tiny_qwen_dir, vqa_examples, order, batch_size):
    ex = vqa_examples
    query = ex[0]
    beams = [[ex[1]], [ex[2], ex[3]], [ex[4]], []]  # prefixes of different lengths, one empty beam
    cands = [[ex[5], ex[6], ex[7]], [ex[8], ex[12]], [ex[9], ex[15], ex[13], ex[14]], [ex[10]]]
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=batch_size)
    got = model.score_step(beams, cands, query, order)
    assert [len(g) for g in got] == [len(c) for c in cands]
    for beam, cs, g in zip(beams, cands, got):
        assert_scores_close(g, [model.score_reference(extend(beam, c, order), query) for c in cs])


@pytest.mark.parametrize("batch_size", [2, 32])
def test_zero_shot_row_carries_the_head_in_the_prefix_forward(tiny_qwen_dir, vqa_examples, batch_size):
    """Step 0 with `beam_rows`: the zero-shot row starts with the chat head the candidate rows share, so it runs
    whole as the step's one prefix forward (one row, no padding), is scored there, and its first tokens' cache
    serves the candidates; the candidate rows then run without it (issue 28: as a group of its own it made the
    prefix forward two rows padded to the whole zero-shot row, and ran again padded among the candidates)."""
    ex = vqa_examples
    query, cands = ex[0], [ex[5], ex[6], ex[12], ex[15]]
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=batch_size)
    shapes = []

    def watch(module, args, kwargs):
        shapes.append((tuple(kwargs["inputs_embeds"].shape[:2]), kwargs.get("past_key_values") is not None))

    handle = model.model.model.language_model.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        (got,), (base,) = model.score_step([[]], [cands], query, "right", beam_rows=True)
    finally:
        handle.remove()
    assert_scores_close(got, [model.score_reference([c], query) for c in cands])
    assert_scores_close([base], [model.score_reference([], query)])
    rows = [model._row([c], query, with_answer=True) for c in cands]
    zero = model._row([], query, with_answer=True)
    head = 0  # tokens every row shares, images told apart (the group's prefix)
    while all(r.ids[head] == zero.ids[head] for r in rows) and zero.ids[head] != model.image_token_id:
        head += 1
    own = [model._answer_span(r.ids)[1] - 1 - head for r in rows]
    batches = [((len(own[i : i + batch_size]), max(own[i : i + batch_size])), True) for i in range(0, 4, batch_size)]
    assert shapes == [((1, model._answer_span(zero.ids)[1] - 1), False), *batches]


def test_left_and_right_orders_score_different_sequences(qwen, vqa_examples):
    ex = vqa_examples
    left = qwen.score_candidates([ex[1]], [ex[2]], ex[9], "left")[0]
    right = qwen.score_candidates([ex[1]], [ex[2]], ex[9], "right")[0]
    assert left == pytest.approx(qwen.score_reference([ex[2], ex[1]], ex[9]), abs=TOL)
    assert right == pytest.approx(qwen.score_reference([ex[1], ex[2]], ex[9]), abs=TOL)
    assert abs(left - right) > 1e-6


def test_unknown_order_is_rejected(qwen, vqa_examples):
    with pytest.raises(ValueError, match="construct_order"):
        qwen.score_candidates([], [vqa_examples[1]], vqa_examples[0], "middle")


# ---- generation ----------------------------------------------------------------------------------------------------
def test_batched_generate_equals_single(tiny_qwen_dir, vqa_examples):
    ex = vqa_examples
    seqs = [[], [ex[1], ex[2]], [ex[3]], [ex[4], ex[5], ex[6]]]
    queries = [ex[7], ex[8], ex[9], ex[10]]
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=4)
    batched = model.generate(seqs, queries, max_new_tokens=6)
    single = [model.generate([s], [q], max_new_tokens=6)[0] for s, q in zip(seqs, queries)]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_generate_reproduces_greedy_decoding(qwen, vqa_examples):
    """The adapter's answer is the greedy continuation of the prompt (checked token by token with the model)."""
    icds, query = [vqa_examples[1]], vqa_examples[2]
    enc = processor_encoding(qwen, icds, query, with_answer=False)
    ids = enc["input_ids"]
    kw = {k: v for k, v in enc.items() if k in ("pixel_values", "image_grid_thw")}
    new = []
    with torch.no_grad():
        for _ in range(4):
            # Full uncached forward of prompt + answer so far; image tokens typed as the processor types them.
            mm = (ids == qwen.image_token_id).int()
            logits = qwen.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm, **kw)
            nxt = int(logits.logits[0, -1].argmax())
            if nxt == qwen.end_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    expected = qwen.tokenizer.decode(new, skip_special_tokens=True).strip()
    got = qwen.generate([icds], [query], max_new_tokens=4)[0]
    assert got == expected


# ---- registry ------------------------------------------------------------------------------------------------------
def test_registry_returns_the_qwen_adapter(tiny_qwen_dir):
    from leverplus.tracks.vqa.models.base import ICLModel, adapter_names
    from leverplus.tracks.vqa.models.qwen2_5_vl import Qwen25VLICL

    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    assert isinstance(model, Qwen25VLICL) and isinstance(model, ICLModel)
    assert "qwen2_5_vl" in adapter_names()


def test_registry_rejects_an_unknown_adapter(tiny_qwen_dir):
    with pytest.raises(ValueError, match=r"unknown model adapter 'qwen9'.*qwen2_5_vl"):
        load_icl_model("qwen9", str(tiny_qwen_dir))


def test_workflow_stages_load_the_adapter_from_a_model_config(tiny_qwen_dir):
    from leverplus.tracks.vqa.models.qwen2_5_vl import Qwen25VLICL
    from leverplus.tracks.vqa.stages.common import load_model

    model = load_model({"adapter": "qwen2_5_vl", "batch_size": 3, "trust_remote_code": False}, str(tiny_qwen_dir))
    assert isinstance(model, Qwen25VLICL) and model.batch_size == 3


def test_image_feature_cache_is_bounded_and_eviction_changes_no_score(tiny_qwen_dir, vqa_examples):
    """With a cache smaller than one image's features every image is re-encoded when needed: same scores, the
    cache never holds more than one image, and no pixel values are left behind."""
    ex = vqa_examples
    seqs, queries = [[ex[1], ex[2]], [ex[3]], [ex[2], ex[4], ex[1]]], [ex[5], ex[6], ex[7]]
    roomy = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=2)
    tight = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=2, image_cache_mb=1e-6)
    np.testing.assert_array_equal(tight.score(seqs, queries), roomy.score(seqs, queries))
    assert len(tight._features) == 1 and not tight._pending
    assert len(roomy._features) == 7 and not roomy._pending
    got = tight.score_step([[ex[1]], []], [[ex[2], ex[3]], [ex[4]]], ex[0], "right")
    want = roomy.score_step([[ex[1]], []], [[ex[2], ex[3]], [ex[4]]], ex[0], "right")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_tensor_lru_evicts_least_recently_used_first():
    from leverplus.tracks.vqa.models.feature_cache import TensorLRU

    cache = TensorLRU(max_mb=3 * 4 / 2**20)  # room for three float32 scalars
    for k in "abc":
        cache.put(k, torch.zeros(1))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", torch.zeros(1))
    assert cache.keys() == ["c", "a", "d"] and cache.nbytes == 12
    cache.put("big", torch.zeros(10))  # larger than the bound: kept alone (it is in use), the rest evicted
    assert cache.keys() == ["big"] and cache.get("b") is None


def test_float64_model_scores_in_float64(tiny_qwen_dir, vqa_examples):
    """The demo's VL computes in float64 so that P̄ (and the InfoScore rewards v3/v4 train on) is the same on every
    CPU: the fast path must not round its logits to float32 (it did, leaving 2.4e-7 between kernel sets)."""
    ex = vqa_examples
    m64 = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir), batch_size=4, dtype="float64")
    fast = m64.score([[ex[1], ex[2]], [ex[3]]], [ex[5], ex[6]])
    ref = [m64.score_reference([ex[1], ex[2]], ex[5]), m64.score_reference([ex[3]], ex[6])]
    assert np.abs(fast - ref).max() < 1e-12
