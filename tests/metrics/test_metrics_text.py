"""Text metrics against their reference implementations' published values."""

import pytest

from leverplus.metrics.text import (
    bleu_tokenizer_for,
    cider_d,
    corpus_bleu,
    corpus_chrf,
    corpus_ter,
    length_stats,
    rouge,
)
from leverplus.metrics.languages import script_tokens, tokens

# sacrebleu README / test/test_bleu.py example (per item: its two references)
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
REFS = [
    ["The dog bit the man.", "The dog had bit the man."],
    ["It was not unexpected.", "No one was surprised."],
    ["The man bit him first.", "The man had bitten the dog."],
]
FAST = {"n_resamples": 50}


def test_corpus_bleu_sacrebleu_test_values():
    # mjpost/sacrebleu test/test_bleu.py test_corpus_bleu_cases: default 48.530827, intl 43.91623493
    r = corpus_bleu(HYPS, REFS, **FAST)
    assert r["score"] == pytest.approx(48.530827, abs=1e-6)
    assert r["settings"]["sacrebleu"] == "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    assert corpus_bleu(HYPS, REFS, tokenize="intl", **FAST)["score"] == pytest.approx(43.91623493, abs=1e-6)
    # same file: empty hypotheses are kept and score 0.0
    assert corpus_bleu(["", "", ""], REFS, **FAST)["score"] == 0.0
    lo, hi = r["ci95"]
    assert lo <= r["score"] <= hi


def test_bleu_tokenizer_by_language():
    # issue 3: 'zh' tokenizer for Chinese, '13a' otherwise
    assert bleu_tokenizer_for("zh") == "zh" and bleu_tokenizer_for("zh-CN") == "zh"
    assert bleu_tokenizer_for("en") == "13a" and bleu_tokenizer_for(None) == "13a"
    r = corpus_bleu(["我爱北京天安门"], [["我爱北京天安门"]], lang="zh", **FAST)
    assert r["score"] == pytest.approx(100.0) and "tok:zh" in r["signature"]


def test_variable_number_of_references():
    # sacrebleu README: variable references give nrefs:var; identical hyp/ref still score 100
    r = corpus_bleu(["a b c d e", "f g h i j"], [["a b c d e"], ["f g h i j", "x"]], **FAST)
    assert r["score"] == pytest.approx(100.0)
    assert "nrefs:var" in r["settings"]["sacrebleu"]


def test_chrf_values():
    # sacrebleu README: chrF2 = 59.73 on the README example (defaults 6/0/beta 2)
    r = corpus_chrf(HYPS, REFS, **FAST)
    assert round(r["score"], 2) == 59.73
    assert "nc:6|nw:0" in r["settings"]["sacrebleu"]
    # sacrebleu test/test_chrf.py test_cases_effective_order (beta=3, no eps smoothing)
    assert corpus_chrf(["a b c"], [["abc"]], beta=3, **FAST)["score"] == pytest.approx(100.0, abs=1e-4)
    assert corpus_chrf(["aa"], [["ab"]], beta=3, **FAST)["score"] == pytest.approx(25.0, abs=1e-4)
    assert corpus_chrf(["a", "b"], [["a"], ["c"]], beta=3, **FAST)["score"] == pytest.approx(50.0, abs=1e-4)


def test_chrf_plus_plus():
    # chrF++ (word_order=2) of an exact match is 100 and of disjoint strings 0 (definition)
    assert corpus_chrf(["the cat sat"], [["the cat sat"]], word_order=2, **FAST)["score"] == pytest.approx(100.0)
    r = corpus_chrf(["xyz"], [["abc"]], word_order=2, **FAST)
    assert r["score"] == 0.0 and r["metric"] == "chrf++" and "nw:2" in r["settings"]["sacrebleu"]


def test_ter_sacrebleu_test_values():
    # mjpost/sacrebleu test/test_ter.py: a single shift -> 1/8; empty hypothesis -> 1 (x100)
    assert corpus_ter(["d e f g h a b c"], [["a b c d e f g h"]], **FAST)["score"] == pytest.approx(12.5, abs=1e-3)
    assert corpus_ter([""], [["a"]], **FAST)["score"] == pytest.approx(100.0)
    assert corpus_ter(["aaaa bbbb cccc dddd"], [["aaaa bbbb cccc dddd"]], **FAST)["score"] == 0.0


def test_cjk_characters_are_tokens_for_rouge_and_cider():
    """The one CJK test (was three): one token per CJK character (and kana), Latin runs kept, punctuation dropped;
    ROUGE and CIDEr-D score those tokens; jieba is the word-level option."""
    assert script_tokens("我爱Python编程。") == ["我", "爱", "python", "编", "程"]
    assert script_tokens("市場へ歩いた") == ["市", "場", "へ", "歩", "い", "た"]
    assert "python" in tokens("我爱Python编程", "zh", mode="jieba")
    # hand-derived (Lin 2004): chars ref 猫坐在垫子上 (6), hyp 猫在垫子上 (5); LCS = 5, unigram overlap = 5
    # -> P = 1, R = 5/6, F = 10/11; bigrams: ref 5, hyp 4, overlap 3 (在垫 垫子 子上) -> P 3/4, R 3/5, F 2/3
    r = rouge(["猫在垫子上"], [["猫坐在垫子上"]], lang="zh", **FAST)
    assert r["rougeL"]["score"] == pytest.approx(100 * 10 / 11)
    assert r["rouge1"]["score"] == pytest.approx(100 * 10 / 11)
    assert r["rouge2"]["score"] == pytest.approx(100 * 2 / 3)
    # rouge_score's default tokenizer deletes non [a-z0-9] characters: the same pair scores 0
    assert rouge(["猫在垫子上"], [["猫坐在垫子上"]], tokenizer="default", **FAST)["rougeL"]["score"] == 0.0
    # CIDEr-D: '猫坐垫子' vs itself is 4 character tokens -> 10 for image 0, 0 for image 1
    z = cider_d(["猫坐垫子", "狗"], [["猫坐垫子"], ["鸟飞天空"]], lang="zh", **FAST)
    assert z["score"] == pytest.approx(5.0) and z["settings"]["seg"] == "script"


def test_rouge_english_and_multi_reference():
    # rouge_score README-style example: prediction 'testing' vs target 'testing one two': P 1, R 1/3 -> F 0.5;
    # with several references score_multi keeps the best F
    r = rouge(["testing"], [["testing one two", "something else"]], **FAST)
    assert r["rouge1"]["score"] == pytest.approx(50.0)


def test_cider_d_hand_values():
    # CIDEr-D (pycocoevalcap): idf = log(N_images) - log(df); an n-gram order with no n-grams scores 0;
    # 10 x mean over n=1..4. Image 0: hyp == its only ref and its n-grams appear in no other image ->
    # similarity 1 for n=1..4 -> 10. Image 1: no overlap -> 0. Corpus = 5.0
    r = cider_d(["a b c d", "a b c d"], [["a b c d"], ["p q r s"]], **FAST)
    assert r["score"] == pytest.approx(5.0)
    # same with 3-token sentences: no 4-grams -> image 0 scores 10 * 3/4 = 7.5, corpus 3.75
    assert cider_d(["x y z", "x y z"], [["x y z"], ["p q r"]], **FAST)["score"] == pytest.approx(3.75)


def test_length_stats():
    # hand-derived: lengths 3, 7, 0 -> mean 10/3, median 3, p10 = 0.6, p90 = 6.2 (linear), share <= 6 chars 2/3
    s = length_stats(["abc", "一二三四五六七", "  "])
    assert s["mean"] == pytest.approx(10 / 3) and s["median"] == 3.0
    assert s["p10"] == pytest.approx(0.6) and s["p90"] == pytest.approx(6.2)
    assert s["share_le_6"] == pytest.approx(2 / 3)
