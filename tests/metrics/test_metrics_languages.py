"""One language -> tokenisation table (leverplus.metrics.languages), one implementation per metric: a hypothesis
identical to its reference scores each metric's maximum in every script, on every path that scores text -- the
caption CLI (``leverplus score caption``), the MT track's families (``mt.score_lexical`` / ``mt.score_rouge``) and
the audio report's arm scoring (``ArmData`` / ``point_values``).  Before the table was shared, caption ROUGE of
identical Hindi, Thai or Japanese strings was 0 (rouge_score's ASCII-only tokenizer), Thai caption BLEU was
below 100 (13a leaves an unspaced Thai sentence one token) and the audio scoring could only tokenise Chinese."""

import json

import numpy as np
import pandas as pd
import pytest

from leverplus.cli import main
from leverplus.metrics import languages
from leverplus.tracks.mt import metrics as mt

# two distinct sentences of at least four tokens per script (CIDEr-D's idf needs two documents and 4-grams)
TEXTS = {
    "en": ["The old man walked slowly to the market this morning.", "A small red bird sang on the roof all day."],
    "hi": ["बूढ़ा आदमी आज सुबह धीरे-धीरे बाज़ार गया।", "एक छोटी लाल चिड़िया पूरे दिन छत पर गाती रही।"],
    "th": ["ครูซื้อหนังสือเล่มใหม่ที่ตลาดเมื่อเช้านี้", "นกสีแดงตัวเล็กร้องเพลงบนหลังคาทั้งวัน"],
    "zh": ["老人今天早上慢慢地走到市场。", "一只红色的小鸟整天在屋顶上唱歌。"],
    "ja": ["老人は今朝ゆっくりと市場へ歩いて行きました。", "小さな赤い鳥が一日中屋根の上で歌っていました。"],
}
MAX = {"bleu": 100.0, "chrf": 100.0, "chrf++": 100.0, "ter": 0.0, "rouge1": 100.0, "rouge2": 100.0,
       "rougeL": 100.0, "cider_d": 10.0}
FAST = {"n_resamples": 10}


@pytest.mark.parametrize("lang", list(TEXTS))
def test_identical_text_scores_the_maximum_through_the_cli(lang, tmp_path, capsys):
    preds, refs = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    pd.DataFrame({"id": ["a", "b"], "prediction": TEXTS[lang]}).to_json(preds, orient="records", lines=True)
    pd.DataFrame({"id": ["a", "b"], "references": [[t] for t in TEXTS[lang]]}).to_json(refs, orient="records",
                                                                                       lines=True)
    rc = main(["score", "caption", "--predictions", str(preds), "--references", str(refs), "--lang", lang,
               "--metrics", "bleu,chrf,chrf++,ter,rouge,cider", "--n-resamples", "10"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)["metrics"]
    for metric, best in MAX.items():
        key = "cider" if metric == "cider_d" else metric
        assert got[key]["score"] == pytest.approx(best), (lang, metric, got[key]["score"])


@pytest.mark.parametrize("lang", list(TEXTS))
def test_identical_text_scores_the_maximum_in_the_mt_track(lang):
    pair = f"de-{lang}" if lang != "de" else "en-de"
    df = pd.DataFrame({"id": ["a", "b"], "src": ["x", "y"], "refs": [[t] for t in TEXTS[lang]],
                       "system": ["s", "s"], "hyp": TEXTS[lang], "human": [np.nan, np.nan]})
    _, lexical = mt.score_lexical(df, pair, **FAST)
    _, rouge = mt.score_rouge(df, pair, **FAST)
    for metric in ("bleu", "chrf", "chrf++", "ter", "rouge1", "rouge2", "rougeL"):
        score = (lexical if metric in lexical else rouge)[metric]["s"]["score"]
        assert score == pytest.approx(MAX[metric]), (lang, metric, score)


@pytest.mark.parametrize("lang", list(TEXTS))
def test_identical_text_scores_the_maximum_in_the_audio_report(lang):
    from leverplus.tracks.audio.report import ArmData, point_values

    ids = ["a", "b"]
    refs = pd.DataFrame({"id": ids, "references": [[t] for t in TEXTS[lang]]})
    preds = pd.DataFrame({"id": ids, "prediction": TEXTS[lang]})
    items = preds.assign(bertscore_f1=[1.0, 1.0], sentence_similarity=[1.0, 1.0])
    timing = pd.DataFrame({"id": ids, "ttft_s": [0.1, 0.1], "total_s": [0.2, 0.2]})
    arm = ArmData("edge", preds, timing, items, refs, ids, short_chars=6, lang=lang)
    got = point_values(arm, short_chars=6)
    assert got["bleu"]["score"] == pytest.approx(100) and got["chrf"]["score"] == pytest.approx(100)
    assert got["cider_d"]["score"] == pytest.approx(10) and np.allclose(arm.cider_items, 10)
    # the bootstrap's per-item rows give the same corpus scores
    assert arm.bleu_obj._compute_score_from_stats(arm.bleu_rows.sum(0)).score == pytest.approx(100)


def test_one_table_every_path():
    """The caption path and the MT track read the same table (no second copy to drift)."""
    from leverplus.metrics import text

    assert mt.LANGS is languages.LANGS and mt.script_tokens is languages.script_tokens
    for lang in languages.LANGS:
        if lang in ("ja", "ko"):
            continue  # needs MeCab: checked where the test environment has it below
        assert text.bleu_tokenizer_for(lang) == mt.bleu_tokenizer(lang)
        assert text.sacrebleu_metric("ter", lang=lang).asian_support == mt.ter_asian(lang)
    assert text.bleu_tokenizer_for("hi") == "intl"  # was 13a on the caption path
    assert text.bleu_tokenizer_for("zh-CN") == "zh" and text.bleu_tokenizer_for("Chinese") == "zh"
    assert text.bleu_tokenizer_for(None) == "13a"
    with pytest.raises(languages.UnsupportedLanguage, match="supported are"):
        text.bleu_tokenizer_for("xx")  # no silent 13a on the caption path either
