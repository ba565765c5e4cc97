"""The audio track's pieces that need no caption model: the cascade sweep's selection and latency bookkeeping, the
edge's thread cap, the demo's char-BERT metric model (BERTScore + baseline, sentence similarity)."""
import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.audio.stages import cascade_point, cascade_thresholds, job_threads


def _arm(pred, ttft, total, tokens):
    n = len(pred)
    return pd.DataFrame({"id": [f"c{i}" for i in range(n)], "prediction": pred, "ttft_s": ttft, "total_s": total,
                         "output_tokens": tokens, "feature_s": [0.01] * n})


EDGE = _arm(["e0", "e1", "e2", "e3"], [1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0], [10, 11, 12, 13])
CLOUD = _arm(["c0", "c1", "c2", "c3"], [0.1, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5], [20, 21, 22, 23])
SCORES = pd.DataFrame({"id": [f"c{i}" for i in range(4)], "mean_logprob": [-3.0, -1.0, -2.0, -0.5],
                       "score_s": [0.2] * 4})


def test_cascade_endpoints_are_edge_only_and_cloud_only():
    lo = cascade_point(EDGE, CLOUD, SCORES, -np.inf)
    hi = cascade_point(EDGE, CLOUD, SCORES, np.inf)
    assert list(lo["prediction"]) == list(EDGE["prediction"]) and not lo["escalated"].any()
    assert list(hi["prediction"]) == list(CLOUD["prediction"]) and hi["escalated"].all()


def test_cascade_escalates_below_threshold_with_its_latency():
    p = cascade_point(EDGE, CLOUD, SCORES, -1.5)  # c0 (-3.0) and c2 (-2.0) escalate
    assert list(p["escalated"]) == [True, False, True, False]
    assert list(p["prediction"]) == ["c0", "e1", "c2", "e3"]
    assert list(p["output_tokens"]) == [20, 11, 22, 13]
    # kept: total = edge total + scoring; escalated: + cloud total. TTFT when the decision is known (issue 24
    # item 5): a kept draft reaches the user only after the edge finished AND the draft was scored (3.0 + 0.2),
    # never at the edge's own TTFT (1.0); an escalated answer's first token comes cloud TTFT later.
    np.testing.assert_allclose(p["total_s"], [3.7, 3.2, 3.7, 3.2])
    np.testing.assert_allclose(p["ttft_s"], [3.3, 3.2, 3.3, 3.2])
    assert (p["ttft_s"] <= p["total_s"]).all()


def test_cascade_point_on_quality_frames_has_no_latency():
    q = lambda df: df[["id", "prediction", "output_tokens"]].assign(timed=[True, False, True, False])  # noqa: E731
    p = cascade_point(q(EDGE), q(CLOUD), SCORES[["id", "mean_logprob"]], -1.5)
    assert list(p["prediction"]) == ["c0", "e1", "c2", "e3"] and list(p["timed"]) == [True, False, True, False]
    assert "total_s" not in p.columns and "ttft_s" not in p.columns


def test_timed_subset_seeded_and_in_manifest_order():
    from leverplus.tracks.audio.stages import timed_subset

    ids = [f"v{i:03d}" for i in range(300)]
    a = timed_subset(ids, 100, 0)
    assert len(a) == 100 == len(set(a)) and a == sorted(a) and a == timed_subset(ids, 100, 0)
    assert a != timed_subset(ids, 100, 1)
    assert timed_subset(ids, None, 0) == ids == timed_subset(ids, 300, 0) == timed_subset(ids, 500, 0)


# Known answers of the source document's own evaluation code, github.com/Ori1anna/Edge-cloud-SEC @
# 9a1317671f0dd35794c6ea2f1ae6077fe211ce8d, src/evaluation/metrics.py: EvaluationMetrics().compute_bleu([ref], hyp)
# and compute_cider([ref], hyp) run on these inputs (nltk 3.10.4), printed to full precision. The same code run on
# that commit's experiments/results/{edge_cpu_limited_test14,cloud_secap_chinese_test19}.json gives the document's
# 0.0214 / 0.0141 (BLEU) and 0.1988 / 0.1937 (CIDEr), and so do document_sentence_bleu / _cider (docs/audio.md).
DOCUMENT_KNOWN = [  # (output, references: the first is scored, document BLEU, document "CIDEr"), both 0-1
    ("男生语气很冲，听起来很生气", ["男生语气很冲，听起来很生气"], 1.0, 0.9999999999999998),
    ("悲伤", ["女生声音无力，显得很悲伤", "女生很悲伤"], 0.002130725927060655, 0.40824829046386296),
    ("女生声音无力，显得很平静", ["女生声音无力，显得很悲伤"], 0.8070557274927982, 0.8333333333333335),
    ("悲伤<|im_end|> ", ["女生声音无力，显得很悲伤"], 0.002130725927060655, 0.14907119849998599),  # BLEU cleans
    ("ABC很生气", ["abc很生气"], 1.0, 1.0000000000000002),  # lowercased
    ("", ["男生很生气"], 0.0, 0.0),
    ("男生 很 生气", ["男生很生气"], 0.10445522730720382, 0.7977240352174656),  # spaces are characters
    ("他很开心", ["她的声音愉快"], 0.0, 0.0),
]


def test_document_metrics_match_the_documents_own_code():
    """The BIASED columns are the document's code (character tokens, first reference, per clip): a correct bare
    emotion word scores ~0.2 BLEU, a sentence naming the wrong emotion 80.7 — known answers above."""
    from leverplus.metrics.text import document_bleu, document_cider

    hyps = [h for h, _, _, _ in DOCUMENT_KNOWN]
    refs = [r for _, r, _, _ in DOCUMENT_KNOWN]
    b, c = document_bleu(hyps, refs, n_resamples=10), document_cider(hyps, refs, n_resamples=10)
    np.testing.assert_allclose(b["per_item"], [100 * x for _, _, x, _ in DOCUMENT_KNOWN], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c["per_item"], [100 * x for _, _, _, x in DOCUMENT_KNOWN], rtol=1e-12, atol=1e-12)
    assert b["score"] == pytest.approx(np.mean(b["per_item"])) and c["score"] == pytest.approx(np.mean(c["per_item"]))
    assert b["settings"]["tok"] == "char-lower" and b["settings"]["refs"] == "first" and b["settings"]["biased"]
    assert "Edge-cloud-SEC@9a13176" in b["settings"]["source"] == c["settings"]["source"]


def test_cascade_thresholds_from_quantiles():
    pts = cascade_thresholds(SCORES["mean_logprob"].to_numpy(), [0.25, 0.5], [-1.25])
    assert [p["label"] for p in pts] == ["cascade_q25", "cascade_q50", "cascade_tm1p25"]
    rates = [cascade_point(EDGE, CLOUD, SCORES, p["threshold"])["escalated"].mean() for p in pts[:2]]
    assert rates == sorted(rates)


def test_job_threads_capped_by_slurm(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert job_threads(4) == 1
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    import os

    assert job_threads(64) == min(64, len(os.sched_getaffinity(0)))


CAPS = ["男生语气欢快，听起来很高兴", "女生语气低沉，听起来很悲伤", "男生大声说话，情绪十分生气",
        "女生平和地说话，情绪十分平静", "男生语调上扬，听起来很惊讶"]


@pytest.fixture(scope="module")
def char_bert(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from leverplus.tracks.audio.metric_models import materialize_metric_model

    d = tmp_path_factory.mktemp("cb") / "m"
    materialize_metric_model({"source": "demo_char_bert", "num_layers": 2, "baseline": "build", "seed": 0}, d,
                             corpus=CAPS * 4)
    return d


def test_char_bert_tokenizes_characters_and_bertscore_rescales(char_bert):
    from transformers import AutoTokenizer

    from leverplus.metrics.text import bertscore, read_baseline

    assert AutoTokenizer.from_pretrained(str(char_bert)).tokenize("男生高兴") == ["男", "生", "高", "兴"]
    P, R, F = read_baseline(char_bert / "bertscore_baseline.csv", 2)
    assert 0 < F < 1
    r = bertscore([CAPS[0], CAPS[1], "好"], [[CAPS[0]], [CAPS[0]], [CAPS[2]]], model_type=str(char_bert),
                  num_layers=2, baseline_path=str(char_bert / "bertscore_baseline.csv"), idf=True, n_resamples=10)
    f = r["per_item_f1"]
    assert f[0] == pytest.approx(100, abs=1e-3)  # identical
    assert f[0] > f[1] > f[2]  # shared characters ("语气，听起来很") beat none
    assert r["n_negative_f1"] >= 1


def test_sentence_similarity_max_over_references(char_bert):
    from leverplus.metrics.sentence_similarity import sentence_similarity

    r = sentence_similarity([CAPS[0], CAPS[1]], [[CAPS[2], CAPS[0]], [CAPS[3]]], model_dir=str(char_bert),
                            n_resamples=10)
    assert r["per_item"][0] == pytest.approx(100, abs=1e-4)
    assert r["per_item"][1] < 100 and r["settings"]["pooling"] == "mean" and r["n"] == 2


def test_timing_slot_serialises_timed_passes(tmp_path, monkeypatch):
    import threading
    import time

    from leverplus.tracks.audio.stages import timing_slot

    monkeypatch.setenv("LEVERPLUS_AUDIO_TIMING_LOCK", str(tmp_path / "timing.lock"))
    spans = {}

    def arm(name, hold):
        with timing_slot() as slot:
            t0 = time.perf_counter()
            time.sleep(hold)
            spans[name] = (t0, time.perf_counter(), slot.info)

    a = threading.Thread(target=arm, args=("a", 0.4))
    a.start()
    time.sleep(0.1)
    b = threading.Thread(target=arm, args=("b", 0.0))
    b.start()
    a.join(10)
    b.join(10)
    assert spans["b"][0] >= spans["a"][1]  # b's timed pass began only after a's ended
    assert spans["b"][2]["wait_s"] >= 0.2 and spans["a"][2]["held_s"] >= 0.4
    assert spans["a"][2]["lock"] == str(tmp_path / "timing.lock") and "loadavg_1min_at_start" in spans["a"][2]


# ---- the reversal detector (issue 24 item 7) ---------------------------------------------------------------------
def _result(verdicts: dict) -> dict:
    from leverplus.tracks.audio.report import QUALITY

    return {"pairs": [{"a": "cloud", "b": "edge", "metrics": {m: {"verdict": verdicts.get(m, "inside the noise")}
                                                             for m in QUALITY}}]}


def _scores(cloud: dict, edge: dict) -> dict:
    from leverplus.tracks.audio.report import QUALITY

    return {"cloud": {m: cloud.get(m, 0.5) for m in QUALITY}, "edge": {m: edge.get(m, 0.4) for m in QUALITY}}


def test_reversal_detector_flags_disagreement():
    """The fair metrics call cloud better, the biased BLEU (non-zero on both arms) does not: a reversal; a biased
    'better' that no fair metric shares is the other direction."""
    from leverplus.tracks.audio.report import FAIR, _verdicts

    v = _verdicts(_result({m: "better" for m in FAIR} | {"doc_cider": "better"}),
                  _scores({"doc_bleu": 1.2, "doc_cider": 0.3}, {"doc_bleu": 1.5, "doc_cider": 0.1}),
                  pairs=[("cloud", "edge")])["cloud_vs_edge"]
    assert v["reversal"] == [f"{f} vs doc_bleu" for f in FAIR] and v["degenerate"] == []
    w = _verdicts(_result({"doc_bleu": "better", "bleu": "better"}), _scores({"doc_bleu": 2.0}, {"doc_bleu": 0.5}),
                  pairs=[("cloud", "edge")])["cloud_vs_edge"]
    assert w["reversal"] == ["bleu vs doc_cider"]  # doc_cider (non-zero on both) does not share bleu's "better"
    assert w["biased_only"] == [f"doc_bleu vs {f}" for f in FAIR if f != "bleu"]


def test_reversal_detector_quiet_when_they_agree():
    from leverplus.tracks.audio.report import QUALITY, _verdicts

    v = _verdicts(_result({m: "better" for m in QUALITY}), _scores({"doc_bleu": 3.0, "doc_cider": 0.4}, {}),
                  pairs=[("cloud", "edge")])["cloud_vs_edge"]
    assert v["reversal"] == [] and v["biased_only"] == [] and v["degenerate"] == []
    v = _verdicts(_result({}), _scores({"doc_bleu": 1.0, "doc_cider": 0.2}, {"doc_bleu": 1.0, "doc_cider": 0.2}),
                  pairs=[("cloud", "edge")])["cloud_vs_edge"]  # nothing better anywhere: no disagreement
    assert v["reversal"] == [] and v["biased_only"] == []


def test_biased_metric_at_zero_on_both_arms_is_not_a_reversal():
    """On free-form references (SECap: 536 unique captions of 600) the document's whitespace-token BLEU/CIDEr is 0
    for every arm; a fair 'better' must not be flagged as a reversal by construction."""
    from leverplus.tracks.audio.report import FAIR, _verdicts

    v = _verdicts(_result({m: "better" for m in FAIR}),
                  _scores({"doc_bleu": 0.0, "doc_cider": 0.0}, {"doc_bleu": 0.0, "doc_cider": 0.0}),
                  pairs=[("cloud", "edge")])["cloud_vs_edge"]
    assert v["reversal"] == [] and v["degenerate"] == ["doc_bleu", "doc_cider"]


def _arms_verdict(cloud_hyps, edge_hyps, refs):
    """compare_arms + _verdicts on two arms' real captions: the BIASED columns from the document's code on the
    texts, every fair column a per-clip 'names the clip's emotion' score (a stand-in for a semantic metric)."""
    from leverplus.tracks.audio.demo import caption_emotion
    from leverplus.metrics.text import document_sentence_bleu, document_sentence_cider
    from leverplus.tracks.audio.report import FAIR, _verdicts
    from leverplus.report.comparison import MetricSpec, compare_arms

    hyps = {"cloud": cloud_hyps, "edge": edge_hyps}
    right = {a: [float(caption_emotion(h) == caption_emotion(r[0])) for h, r in zip(hs, refs)]
             for a, hs in hyps.items()}
    specs = [MetricSpec.from_per_item(m, right) for m in FAIR] + [
        MetricSpec.from_per_item("doc_bleu", {a: document_sentence_bleu(hs, refs) for a, hs in hyps.items()}),
        MetricSpec.from_per_item("doc_cider", {a: document_sentence_cider(hs, refs) for a, hs in hyps.items()})]
    result = compare_arms(["cloud", "edge"], specs, len(refs), pairs=[("cloud", "edge")], n_resamples=300, seed=0)
    scores = {a: {m: result["scores"][a][m]["score"] for m in result["scores"][a]} for a in ("cloud", "edge")}
    return _verdicts(result, scores, pairs=[("cloud", "edge")])["cloud_vs_edge"]


def _demo_clips(n=40):
    from leverplus.tracks.audio.demo import EMOTION_WORDS, EMOTIONS, GENDERS, free_form_caption

    rng = np.random.default_rng(7)
    clips = [(EMOTIONS[i % 5], GENDERS[i % 2]) for i in range(n)]
    refs = [[free_form_caption(e, g, rng)] for e, g in clips]
    wrong = [r[0].replace(next(w for w in EMOTION_WORDS[e] if w in r[0]), EMOTION_WORDS[EMOTIONS[(EMOTIONS.index(e)
             + 1) % 5]][0]) for (e, _), r in zip(clips, refs)]
    return clips, refs, wrong


def test_reversal_detector_on_arms_that_disagree():
    """The document's case on real captions: the cloud answers with the bare, right emotion word, the edge copies
    the reference's sentence but names the wrong emotion. A semantic fair metric calls the cloud better; the
    document's character BLEU / bag-of-characters cosine (its own code) call it worse: every fair metric is a
    reversal against both biased ones, with the paired differences in the table."""
    from leverplus.tracks.audio.report import BIASED, FAIR

    clips, refs, wrong = _demo_clips()
    v = _arms_verdict([e for e, _ in clips], wrong, refs)
    assert v["fair"] == {m: "better" for m in FAIR} and v["biased"] == {m: "worse" for m in BIASED}
    assert v["reversal"] == [f"{f} vs {b}" for f in FAIR for b in BIASED]
    assert v["biased_only"] == [] and v["degenerate"] == []
    rows = {r["metric"]: r for r in v["table"]}
    assert rows["bleu"]["diff"] == pytest.approx(1.0) and rows["bleu"]["n"] == 40  # every clip right vs wrong
    assert rows["doc_bleu"]["diff"] < -50 and rows["doc_bleu"]["ci95"][1] < 0 and rows["doc_bleu"]["kind"] == "BIASED"
    assert rows["doc_cider"]["b"] > rows["doc_cider"]["a"] > 0  # a correct bare word still shares characters
    assert all(0 <= r["p_value"] <= 0.01 for r in v["table"])


def test_reversal_detector_on_arms_that_agree():
    """Same clips, but the cloud now says the reference itself: fair and biased metrics all call it better, and
    the edge against itself changes nothing anywhere."""
    from leverplus.tracks.audio.report import QUALITY

    clips, refs, wrong = _demo_clips()
    v = _arms_verdict([r[0] for r in refs], wrong, refs)
    assert {**v["fair"], **v["biased"]} == {m: "better" for m in QUALITY}
    assert v["reversal"] == [] and v["biased_only"] == [] and v["degenerate"] == []
    same = _arms_verdict(wrong, wrong, refs)
    assert {r["verdict"] for r in same["table"]} == {"inside the noise"} and same["reversal"] == []
    assert all(r["diff"] == 0 for r in same["table"])


# ---- SECap's protocol (issue 24 item 6) --------------------------------------------------------------------------
def _jaccard(a, b):
    out = []
    for x, y in zip(a, b):
        A, B = set(x), set(y)
        out.append(len(A & B) / len(A | B) if A | B else 0.0)
    return np.array(out)


SECAP_CLIPS = [  # (reference, five generations) -- the input of the known-answer run below
    ("心情 快乐 舒畅", ["快乐而愉悦，心情舒畅", "情绪很舒畅", "情绪很舒畅", "心情快乐", "非常开心"]),
    ("悲伤逆流成河", ["悲伤", "伤心难过", "悲伤难过，逆流成河", "平静", "悲伤逆流成河"]),
    ("愤怒，语气激动", ["语气激动，很愤怒", "生气", "愤怒", "激动", "语气平和"]),
    ("惊讶", ["惊讶", "很惊讶", "吃惊", "惊讶", "意外"]),
    ("害怕，声音颤抖", ["声音颤抖，害怕", "恐惧", "害怕", "紧张，声音发抖", "颤抖"]),
    ("平静地 叙述", ["平静叙述", "语气平静", "平淡", "平静地叙述", "冷静"]),
]


def test_secap_protocol_matches_secaps_own_tool():
    """Known answer: SECap's tool/get_sentence_simi.py (github.com/thuhcsi/SECap @ 1743904e) run on these clips
    written as its result.txt (origin/result/result2..5 lines) with its SimiCal replaced by the same character
    Jaccard similarity printed simi_avg:44.74+19.06, acc5_avg:36.67+26.67, acc6_avg:33.33+21.08,
    acc8_avg:20.00+19.44."""
    from leverplus.tracks.audio.report import secap_protocol

    out = secap_protocol([g for _, g in SECAP_CLIPS], [r for r, _ in SECAP_CLIPS], _jaccard, keep=5,
                         model_label="jaccard")
    f = out["figures"]
    got = {k: (round(f[k]["mean"], 2), round(f[k]["std"], 2)) for k in ("simi", "acc5", "acc6", "acc8")}
    assert got == {"simi": (44.74, 19.06), "acc5": (36.67, 26.67), "acc6": (33.33, 21.08), "acc8": (20.0, 19.44)}
    assert "k:5|keep:5|thr:0.5/0.6/0.8|model:jaccard" in out["signature"]


def test_secap_protocol_drops_the_least_consistent_generations():
    """8 generations, 5 kept (SECap's readme): the three that agree least with the others go, wherever they stand
    (here first, fourth and seventh, so keeping the first five would keep two of them), the rest in their order."""
    from leverplus.tracks.audio.report import secap_protocol

    gens = [["悲伤", "开心", "很开心", "愤怒难平", "开心快乐", "非常开心", "平静", "开心的"]]
    kept = ["开心", "很开心", "开心快乐", "非常开心", "开心的"]
    out = secap_protocol(gens, ["开心"], _jaccard, keep=5)
    assert out["figures"]["simi"]["runs"] == pytest.approx([100 * x for x in _jaccard(["开心"] * 5, kept)])
    assert out["settings"]["generations_per_clip"] == 8 and out["settings"]["kept"] == 5


def test_secap_protocol_stage_on_the_tiny_models(char_bert, tmp_path, monkeypatch):
    """The optional target: k sampled captions per clip from a shipped demo model, scored with the dataset's
    similarity model, the protocol's settings in the signature and every generation kept in the file."""
    import json
    from types import SimpleNamespace

    import soundfile as sf

    from leverplus.tracks.audio.demo import synthesize
    from leverplus.tracks.audio.assets import shipped_model_dir
    from leverplus.tracks.audio.stages import secap_protocol_run

    rows = []
    for i, emo in enumerate(["高兴", "悲伤", "生气"]):
        wav = tmp_path / f"c{i}.wav"
        sf.write(wav, synthesize(emo, "女生", np.random.default_rng(i)), 16000, subtype="FLOAT")
        rows.append({"id": f"c{i}", "audio": str(wav), "references": [f"说话人{emo}"]})
    manifest = tmp_path / "eval.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "secap_protocol" / "edge.json"
    params = {"protocol": {"n_generations": 3, "keep": 2, "thresholds": [0.5, 0.6, 0.8],
                           "generation": {"prompt": "描述情绪", "system_prompt": None, "do_sample": True,
                                          "temperature": 0.7, "top_p": 0.9, "min_new_tokens": 0,
                                          "max_new_tokens": 8}},
              "similarity": {"source": "demo_char_bert", "pooling": "mean", "label": "demo_char_bert, mean pooling"},
              "model": {"source": "demo", "dtype": "float32"}, "model_name": "omni_edge_demo", "device": "cpu",
              "dtype": "float32", "batch_size": 4}
    secap_protocol_run(input=SimpleNamespace(manifest=str(manifest), model=str(shipped_model_dir("omni_edge")),
                                             similarity_model=str(char_bert)),
                       output=[str(out)], params=params, wildcards={"role": "edge"}, threads=1)
    res = json.loads(out.read_text())
    assert res["n"] == 3 and [len(g["captions"]) for g in res["generations"]] == [3, 3, 3]
    assert len(res["figures"]["simi"]["runs"]) == 2 and set(res["figures"]) == {"simi", "acc5", "acc6", "acc8"}
    assert res["signature"].startswith("secap-protocol|k:3|keep:2|thr:0.5/0.6/0.8|model:demo_char_bert")
    import re

    assert re.search(r"\|gen:[0-9a-f]{12}$", res["signature"]), res["signature"]  # once, the sampling digest
    assert res["device"]["device"] == "cpu"
