"""The audio track's pieces that need no caption model: the cascade sweep's selection and latency bookkeeping, the
edge's thread cap, the demo's char-BERT metric model (BERTScore + baseline, sentence similarity)."""
import numpy as np
import pandas as pd
import pytest

from leverplus.stages.audio import cascade_point, cascade_thresholds, job_threads


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
    from leverplus.stages.audio import timed_subset

    ids = [f"v{i:03d}" for i in range(300)]
    a = timed_subset(ids, 100, 0)
    assert len(a) == 100 == len(set(a)) and a == sorted(a) and a == timed_subset(ids, 100, 0)
    assert a != timed_subset(ids, 100, 1)
    assert timed_subset(ids, None, 0) == ids == timed_subset(ids, 300, 0) == timed_subset(ids, 500, 0)


def test_document_metrics_are_exact_match_on_unspaced_chinese():
    """The document's BLEU / CIDEr (whitespace tokens, first reference): an unspaced Chinese caption is one token,
    so only an exact copy of the first reference scores (17.78 = 100 * 0.1**0.75 with method-1 smoothing; 2.5),
    while the fair metrics credit a correct one-word answer."""
    from leverplus.metrics.text import corpus_chrf, document_bleu, document_cider

    refs = [["男生语气很冲，听起来很生气", "男生很生气"], ["女生声音无力，显得很悲伤"], ["女生很高兴", "女生声音轻快"]]
    hyps = ["男生语气很冲，听起来很生气", "悲伤", "女生声音轻快"]  # exact copy; right one-word answer; 2nd ref only
    b, c = document_bleu(hyps, refs, n_resamples=10), document_cider(hyps, refs, n_resamples=10)
    assert b["per_item"] == pytest.approx([100 * 0.1 ** 0.75, 0.0, 0.0])
    assert c["per_item"] == pytest.approx([2.5, 0.0, 0.0])
    assert b["settings"]["tok"] == "whitespace" and b["settings"]["refs"] == "first" and b["settings"]["biased"]
    # spaced text is split: partial credit appears (2 of 3 words, 1 of 2 bigrams; the empty orders are smoothed)
    assert 0 < document_bleu(["男生 很 生气"], [["男生 很 高兴"]], n_resamples=10)["score"] < 50
    assert corpus_chrf(["悲伤"], [refs[1]], n_resamples=10)["score"] > 0  # chrF credits the one-word answer


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
    from leverplus.data.audio_metric_models import materialize_metric_model

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

    from leverplus.stages.audio import timing_slot

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
