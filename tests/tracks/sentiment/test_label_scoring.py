"""Label scoring (leverplus.tracks.sentiment.label_scoring) and prompt building (leverplus.tracks.sentiment.causal_lm) on tiny real
Qwen3 / Qwen2 causal LMs built locally (save_pretrained → from_pretrained), briefly trained so that scores differ
between items by more than the tolerances."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leverplus.tracks.sentiment.causal_lm import DEFAULT_TEMPLATE, build_prompt, domain_premise, load_causal_lm
from leverplus.tracks.sentiment.label_scoring import (auc_score, content_free_loglik, continuation, contextual_calibration,
                                            domain_loglik, label_loglik, label_token_counts, pmi_dc, score_labels,
                                            tokenize_pair)
from leverplus.tracks.sentiment.assets import PretrainSettings, TinyLMSize, build_tiny_causal_lm, pretrain

SIZE = TinyLMSize(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64)
CORPUS = ["质量不错，很喜欢，好评", "太差了，不推荐，差评", "还行吧，一般般", "物流很快，包装也好", "房间很脏，服务态度差",
          "性价比高，值得购买", "用了两天就坏了", "非常满意，正面评价", "消极的体验，负面", "积极推荐 positive"]
PAIRS = [["正面", "负面"], ["好评", "差评"], ["好评", "好"], ["positive", "negative"]]


def _tiny(tmp_path_factory, arch: str, tie: bool, set_pad: bool = True):
    d = tmp_path_factory.mktemp(f"{arch}_{'tied' if tie else 'untied'}")
    model, tok = build_tiny_causal_lm(d, CORPUS, arch=arch, tie_word_embeddings=tie, size=SIZE, seed=1,
                                      set_pad_token=True, save=False)
    docs = [build_prompt(tok, t, template=DEFAULT_TEMPLATE if arch == "qwen3" else {**DEFAULT_TEMPLATE,
            "enable_thinking": None}) + ("正面" if i % 2 == 0 else "负面") + "<|im_end|>" for i, t in enumerate(CORPUS)]
    pretrain(model, tok, docs * 4, PretrainSettings(steps=30, batch_size=8, lr=1e-2, warmup=5, max_tokens=96),
             log=lambda *_: None)
    torch.use_deterministic_algorithms(False)
    if not set_pad:
        tok.pad_token = None
        model.config.pad_token_id = None
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    return _tiny(tmp_path_factory, "qwen3", tie=True)


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    return _tiny(tmp_path_factory, "qwen2", tie=False, set_pad=False)


def _template(tok):
    return DEFAULT_TEMPLATE if "enable_thinking" in (tok.chat_template or "") else {**DEFAULT_TEMPLATE,
                                                                                      "enable_thinking": None}


def test_load_sets_missing_pad_token(qwen2_dir):
    import json

    cfg = json.loads((qwen2_dir / "config.json").read_text())
    assert cfg.get("pad_token_id") is None  # saved without one, like many Qwen checkpoints
    model, tok = load_causal_lm(qwen2_dir)
    assert tok.pad_token == "<|endoftext|>"
    assert model.config.pad_token_id == tok.pad_token_id is not None


def test_qwen3_thinking_pinned_and_think_block_in_context(qwen3_dir):
    _, tok = load_causal_lm(qwen3_dir)
    off = build_prompt(tok, "很好", template={**DEFAULT_TEMPLATE, "enable_thinking": False})
    on = build_prompt(tok, "很好", template={**DEFAULT_TEMPLATE, "enable_thinking": True})
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="enable_thinking"):
        build_prompt(tok, "很好", template={**DEFAULT_TEMPLATE, "enable_thinking": None})
    plain = build_prompt(tok, "很好", template={**DEFAULT_TEMPLATE, "use_chat_template": False})
    assert plain == "判断这条商品评论的情感。\n评论：很好\n情感："
    # the think block's tokens are context tokens: the label's first token is scored right after "</think>\n\n"
    ids, split = tokenize_pair(tok, off, "正面")
    assert tok.decode(ids[:split]) == off
    assert domain_premise(tok, template=DEFAULT_TEMPLATE).endswith("情感：<|im_end|>\n<|im_start|>assistant\n"
                                                                    "<think>\n\n</think>\n\n")


def test_continuation_rule():
    assert continuation("情感：", "正面") == "正面"  # no leading space for Chinese labels
    assert continuation("Sentiment:", "positive") == " positive"
    assert continuation("Sentiment: ", "positive") == "positive"
    assert continuation("</think>\n\n", "positive") == "positive"


def test_hand_checked_label_score_equals_direct_logit_sum(qwen3_dir):
    model, tok = load_causal_lm(qwen3_dir)
    context = build_prompt(tok, "质量不错", template=DEFAULT_TEMPLATE)
    label = "好评"
    ctx_ids = tok(context, add_special_tokens=False)["input_ids"]
    lab_ids = tok(label, add_special_tokens=False)["input_ids"]
    joint = tok(context + label, add_special_tokens=False)["input_ids"]
    assert joint == ctx_ids + lab_ids  # the context ends with "\n\n": no merge across the boundary here
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([joint])).logits[0].double(), -1)
    direct = sum(float(logp[len(ctx_ids) + k - 1, t]) for k, t in enumerate(lab_ids))
    for reuse in (True, False):
        got, counts = label_loglik(model, tok, [context], [label, "差评"], reuse_prefix=reuse, return_counts=True)
        assert abs(got[0, 0] - direct) <= 1e-5
        assert counts[0, 0] == len(lab_ids)
    assert direct < -0.5  # a real, non-trivial number


def test_split_at_context_length_when_tokens_merge(qwen3_dir):
    """A context ending mid-word: the joint tokenisation may merge across the boundary; the label's tokens are the
    ones reaching past len(context), taken from the joint sequence."""
    _, tok = load_causal_lm(qwen3_dir)
    for ctx, lab in [("性价", "比高"), ("质量不", "错"), ("abc", "def")]:
        ids, s = tokenize_pair(tok, ctx, lab)
        assert tok.decode(ids) == ctx + lab
        assert len(tok.decode(ids[:s])) <= len(ctx) < len(tok.decode(ids[:s + 1]))


@pytest.mark.parametrize("which", ["qwen3", "qwen2"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_prefix_reuse_equals_full_forward(which, batch_size, qwen3_dir, qwen2_dir):
    model, tok = load_causal_lm(qwen3_dir if which == "qwen3" else qwen2_dir)
    tpl = _template(tok)
    texts = CORPUS + ["好", "这个东西真的是非常非常不错的，我很喜欢，下次还来买"]
    ctx = [build_prompt(tok, t, template=tpl) for t in texts] + ["评论：一般\n情感："]
    for labels in PAIRS + [["正面", "负面", "好", "positive"]]:
        a = label_loglik(model, tok, ctx, labels, batch_size=batch_size, reuse_prefix=True)
        b = label_loglik(model, tok, ctx, labels, batch_size=batch_size, reuse_prefix=False)
        assert a.shape == (len(ctx), len(labels))
        assert np.max(np.abs(a - b)) <= 1e-5, labels
        assert np.ptp(a[:, 0]) > 1e-3  # items differ by far more than the tolerance


def test_calibration_shifts_margin_by_constant_and_leaves_auc(qwen3_dir):
    from sklearn.metrics import roc_auc_score

    model, tok = load_causal_lm(qwen3_dir)
    texts = CORPUS * 2
    y = np.array([1, 0, 1, 1, 0, 1, 0, 1, 0, 1] * 2)
    ctx = [build_prompt(tok, t, template=DEFAULT_TEMPLATE) for t in texts]
    for pair in PAIRS:
        ll = label_loglik(model, tok, ctx, pair)
        cf = content_free_loglik(model, tok, pair, template=DEFAULT_TEMPLATE)
        dom = domain_loglik(model, tok, pair, template=DEFAULT_TEMPLATE)
        raw = auc_score(ll)
        m0 = ll[:, 0] - ll[:, 1]
        for cal in (contextual_calibration(ll, cf), pmi_dc(ll, dom)):
            shift = (cal[:, 0] - cal[:, 1]) - m0
            assert np.ptp(shift) <= 1e-9  # a constant
            assert roc_auc_score(y, auc_score(cal)) == pytest.approx(roc_auc_score(y, raw), abs=1e-12)
    # the constants are not zero: calibration moves decisions, not the ranking
    assert abs(((contextual_calibration(ll, cf)[:, 0] - contextual_calibration(ll, cf)[:, 1]) - m0)[0]) > 1e-3


def test_length_normalised_and_counts(qwen3_dir):
    model, tok = load_causal_lm(qwen3_dir)
    ctx = [build_prompt(tok, t, template=DEFAULT_TEMPLATE) for t in CORPUS[:3]]
    sc = score_labels(model, tok, ctx, ["neutral", "好"])  # "neutral" is not in the tiny vocabulary: several tokens
    np.testing.assert_array_equal(sc.n_tokens, label_token_counts(tok, ctx, ["neutral", "好"]))
    np.testing.assert_allclose(sc.normalised("tokens"), sc.loglik / sc.n_tokens)
    np.testing.assert_allclose(sc.normalised("chars"), sc.loglik / np.array([[7, 1]]))
    assert sc.n_tokens[0, 0] > sc.n_tokens[0, 1]


def test_both_paths_batch_the_same_items_per_forward(qwen3_dir):
    """The fair benchmark: batch_size items (with all their labels) per step on both paths, so the full-forward
    baseline is not charged extra forwards (it was batch_size (item, label) rows per forward)."""
    from leverplus.tracks.sentiment.label_scoring import _full_forward_scores, _prefix_reuse_scores, _prepare

    model, tok = load_causal_lm(qwen3_dir)
    ctx = [build_prompt(tok, t, template=DEFAULT_TEMPLATE) for t in CORPUS[:8]]
    seqs, splits = _prepare(tok, ctx, ["正面", "负面"])
    calls = []
    hook = model.register_forward_hook(lambda m, a, k, o: calls.append(k["input_ids"].shape[0]), with_kwargs=True)
    try:
        _full_forward_scores(model, seqs, splits, 4, tok.pad_token_id)
        full = list(calls)
        calls.clear()
        _prefix_reuse_scores(model, seqs, splits, 4, tok.pad_token_id)
    finally:
        hook.remove()
    assert full == [8, 8]  # 2 steps of 4 items x 2 labels
    assert calls == [4, 8, 4, 8]  # per step: the 4 prefixes, then the 4 x 2 label continuations


def test_prefix_reuse_limit_is_the_token_position_ratio(qwen3_dir):
    from leverplus.tracks.sentiment.label_scoring import benchmark_prefix_reuse, prefix_reuse_limit

    model, tok = load_causal_lm(qwen3_dir)
    ctx = [build_prompt(tok, t, template=DEFAULT_TEMPLATE) for t in CORPUS[:6]]
    labels = ["正面", "负面"]
    full = reuse = 0
    for c in ctx:
        rows = [tokenize_pair(tok, c, continuation(c, lab)) for lab in labels]
        P = rows[0][1]  # the labels' first tokens differ here: the shared prefix is the context
        assert all(ids[:P] == rows[0][0][:P] for ids, _ in rows) and rows[0][0][P] != rows[1][0][P]
        full += sum(len(ids) for ids, _ in rows)
        reuse += P + sum(len(ids) - P for ids, _ in rows)
    lim = prefix_reuse_limit(tok, ctx, labels)
    assert lim["limit"] == round(full / reuse, 3) and 1.0 < lim["limit"] < 2.0
    res = benchmark_prefix_reuse(model, tok, ctx, labels, batch_size=4, repeats=1)
    assert res["analytic_limit"] == lim["limit"] and res["max_abs_diff"] <= 1e-5 and res["ratio"] > 0
