"""leverplus.report.comparison: paired bootstrap over arms × metrics, verdicts, markdown."""
from __future__ import annotations

import time

import numpy as np
import pytest

from leverplus.metrics import stats
from leverplus.report.comparison import MetricSpec, compare_arms, comparison_markdown, verdict


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    return {
        "edge": base,
        "cloud": np.clip(base + 0.15 + 0.05 * rng.standard_normal(n), 0, None),  # clearly higher
        "cascade": base + 0.002 * rng.standard_normal(n),  # indistinguishable from edge
    }


def test_mean_metric_equals_stats_paired_bootstrap_exactly():
    vals = _data()
    spec = MetricSpec.from_per_item("acc", vals)
    res = compare_arms(list(vals), [spec], 200, pairs=[("cloud", "edge"), ("cascade", "edge")], n_resamples=500,
                       seed=7)
    for pair in res["pairs"]:
        want = stats.paired_bootstrap(vals[pair["a"]], vals[pair["b"]], n_resamples=500, seed=7)
        got = pair["metrics"]["acc"]
        assert got["diff"] == want["diff"] and got["ci95"] == want["ci95"] and got["p_value"] == want["p_value"]
        assert got["n"] == 200
    for arm, v in vals.items():
        assert res["scores"][arm]["acc"]["ci95"] == list(stats.bootstrap_ci(v, n_resamples=500, seed=7))
        assert res["scores"][arm]["acc"]["score"] == float(np.mean(v))
    assert (res["n_resamples"], res["seed"], res["confidence"], res["method"]) == (500, 7, 0.95,
                                                                                  "paired-bootstrap-percentile")


def test_verdict_orientation():
    vals = _data()
    specs = [MetricSpec.from_per_item("quality", vals),
             MetricSpec.from_per_item("latency", vals, higher_is_better=False)]
    res = compare_arms(list(vals), specs, 200, pairs=[("cloud", "edge"), ("edge", "cloud"), ("cascade", "edge")])
    by = {(p["a"], p["b"]): p["metrics"] for p in res["pairs"]}
    assert by["cloud", "edge"]["quality"]["verdict"] == "better"
    assert by["edge", "cloud"]["quality"]["verdict"] == "worse"
    assert by["cloud", "edge"]["latency"]["verdict"] == "worse"  # higher latency is worse
    assert by["edge", "cloud"]["latency"]["verdict"] == "better"
    assert by["cascade", "edge"]["quality"]["verdict"] == "inside the noise"
    assert by["cloud", "edge"]["quality"]["diff"] > 0 and by["cloud", "edge"]["quality"]["ci95"][0] > 0
    assert verdict([0.1, 0.5]) == "better" and verdict([0.1, 0.5], higher_is_better=False) == "worse"
    assert verdict([-0.5, -0.1]) == "worse" and verdict([-0.1, 0.1]) == "inside the noise"
    assert verdict([0.0, 0.2]) == "inside the noise"  # touching zero is not excluding it
    assert verdict([float("nan"), float("nan")]) == "undefined"


def test_identical_arms_are_inside_the_noise():
    v = _data()["edge"]
    res = compare_arms(["a", "b"], [MetricSpec.from_per_item("m", {"a": v, "b": v.copy()})], len(v), pairs=[("a", "b")])
    r = res["pairs"][0]["metrics"]["m"]
    assert r["diff"] == 0.0 and r["ci95"] == [0.0, 0.0] and r["p_value"] == 1.0 and r["verdict"] == "inside the noise"


def _bleu_stats(hyps, refs):
    from sacrebleu.metrics import BLEU

    bleu = BLEU(tokenize="13a")
    return bleu, np.asarray(bleu._extract_corpus_statistics(hyps, [refs]), dtype=float)


def test_corpus_metric_from_sufficient_statistics_matches_sacrebleu():
    import sacrebleu

    rng = np.random.default_rng(3)
    words = "the a fox dog runs quick lazy brown over jumps cat sits on mat".split()
    refs = [" ".join(rng.choice(words, size=8)) for _ in range(60)]
    sys_a = [" ".join(r.split()[: 6 + i % 3]) for i, r in enumerate(refs)]
    sys_b = [" ".join(rng.permutation(r.split())) for r in refs]
    bleu, st_a = _bleu_stats(sys_a, refs)
    _, st_b = _bleu_stats(sys_b, refs)

    def finalize(s):
        return bleu._compute_score_from_stats([int(x) for x in s]).score

    spec = MetricSpec.from_stats("bleu", {"a": st_a, "b": st_b}, finalize)
    assert spec.score("a", np.arange(60)) == pytest.approx(sacrebleu.corpus_bleu(sys_a, [refs]).score, abs=1e-9)
    idx = np.random.default_rng(0).integers(0, 60, 60)
    resampled = sacrebleu.corpus_bleu([sys_a[i] for i in idx], [[refs[i] for i in idx]]).score
    assert spec.score("a", idx) == pytest.approx(resampled, abs=1e-9)
    # the vectorised form agrees with the per-resample form, and a custom score gets the same resamples (paired)
    slow = MetricSpec("bleu", lambda arm, i: finalize({"a": st_a, "b": st_b}[arm][i].sum(axis=0)))
    fast = compare_arms(["a", "b"], [spec], 60, pairs=[("a", "b")], n_resamples=300)
    ref = compare_arms(["a", "b"], [slow], 60, pairs=[("a", "b")], n_resamples=300)
    assert fast["pairs"] == ref["pairs"] and fast["scores"] == ref["scores"]


def test_every_metric_and_arm_sees_the_same_resamples():
    seen = []

    def spy(arm, idx):
        seen.append((arm, tuple(idx)))
        return float(len(set(idx.tolist())))

    compare_arms(["x", "y"], [MetricSpec("m1", spy), MetricSpec("m2", spy)], 10, pairs=[("x", "y")], n_resamples=20)
    rows = [s for s in seen if s[1] != tuple(range(10))]
    blocks = next(stats.resample_indices(10, 20, 0))
    per_call = [r[1] for r in rows]
    # order: per resample block, metric, arm, row → every (metric, arm) walks the same rows
    assert len(per_call) == 80
    for k in range(4):
        assert per_call[k * 20 : (k + 1) * 20] == [tuple(r) for r in blocks]


def test_speed_1000_resamples_6_metrics_6_arms_300_items():
    rng = np.random.default_rng(0)
    arms = [f"arm{i}" for i in range(6)]
    specs = [MetricSpec.from_per_item(f"mean{j}", {a: rng.random(300) for a in arms}) for j in range(3)]
    specs += [MetricSpec.from_stats(f"ratio{j}", {a: rng.integers(0, 9, (300, 10)) for a in arms},
                                    lambda s: float(s[:4].sum() / max(s[4:].sum(), 1))) for j in range(3)]
    t0 = time.perf_counter()
    res = compare_arms(arms, specs, 300, pairs=[(a, "arm0") for a in arms[1:]], n_resamples=1000)
    assert time.perf_counter() - t0 < 15  # ~1 s on a free core
    assert len(res["pairs"]) == 5


def test_markdown_table_and_undefined_cells():
    vals = _data(50)
    specs = [MetricSpec.from_per_item("bleu", vals, label="BLEU (corpus, zh)", digits=1),
             MetricSpec("meteor", lambda arm, idx: float("nan"), label="METEOR", note="not applicable to zh"),
             MetricSpec.from_per_item("len", vals, higher_is_better=False, note="characters")]
    res = compare_arms(list(vals), specs, 50, pairs=[("cloud", "edge")], n_resamples=200)
    md = comparison_markdown(res, title="Demo", signature="audio|nrefs:1|tok:zh")
    assert md.startswith("# Demo\n") and "n = 50 items per arm" in md and "200 resamples" in md
    assert "| arm | BLEU (corpus, zh) ↑ | METEOR ↑ | len ↓ |" in md
    lo, hi = res["scores"]["cloud"]["bleu"]["ci95"]
    assert f"| cloud | {res['scores']['cloud']['bleu']['score']:.1f} [{lo:.1f}, {hi:.1f}] | n/a |" in md
    assert "| cloud − edge | BLEU (corpus, zh) |" in md and "| better |" in md and "| undefined |" in md
    assert "- METEOR: not applicable to zh" in md and "Signature: `audio|nrefs:1|tok:zh`" in md
    assert res["scores"]["edge"]["meteor"] == {"score": None, "n": 50, "ci95": [None, None]}


def test_bad_arguments():
    spec = MetricSpec.from_per_item("m", {"a": [1.0, 0.0], "b": [0.0, 1.0]})
    with pytest.raises(ValueError, match="pair"):
        compare_arms(["a", "b"], [spec], 2, pairs=[("a", "c")])
    with pytest.raises(ValueError, match="distinct"):
        compare_arms(["a", "a"], [spec], 2, pairs=[])
    with pytest.raises(ValueError, match="NaN"):
        MetricSpec.from_per_item("m", {"a": [1.0, float("nan")]})
