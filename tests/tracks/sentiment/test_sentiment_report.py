"""Issue 27: several training seeds in the sentiment report (seed-aware CIs from metrics.stats.seed_bootstrap) and
Holm's correction on every family of pairwise tests (metrics.stats.holm, checked against statsmodels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leverplus.core.io import write_json
from leverplus.metrics import stats
from leverplus.tracks.sentiment.report import aggregate_sentiment, score_predictions

# statsmodels 0.14.4: multipletests(p, method="holm")[1], run on these inputs (ties and a p of 1 included)
HOLM_CASES = [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.2, 0.0001, 0.049, 0.049, 0.5, 0.012, 0.03, 1.0],
     [0.6000000000000001, 0.0008, 0.245, 0.245, 1.0, 0.084, 0.18, 1.0]),
]


@pytest.mark.parametrize("p, want", HOLM_CASES)
def test_holm_equals_statsmodels(p, want):
    np.testing.assert_allclose(stats.holm(p), want, rtol=1e-15, atol=0)


def test_holm_leaves_undefined_out_of_the_family():
    assert stats.holm([0.01, None, float("nan"), 0.04]) == [0.02, None, None, 0.04]


def _inputs(tmp_path, n=80, seeds=(0, 1, 2)):
    rng = np.random.default_rng(11)
    ids = [f"t{i:03d}" for i in range(n)]
    y = rng.integers(0, 2, n)
    refs = tmp_path / "test.parquet"
    pd.DataFrame({"id": ids, "text": ids, "label": np.where(y == 1, "pos", "neg")}).to_parquet(refs)
    (tmp_path / "manifest.json").write_text("{}")
    files = {"predictions": {}, "scores": {}, "records": {}}
    correct = {}
    for arm, runs, skill in (("zero_shot", [None], 0.5), ("head_last", list(seeds), 1.5), ("lora_head", list(seeds), 2.0)):
        for k in files:
            files[k][arm] = []
        correct[arm] = []
        for s in runs:
            m = rng.normal(0, 1.5, n) + skill * (2 * y - 1)
            pp = tmp_path / f"{arm}_{s}.parquet"
            pd.DataFrame({"id": ids, "prediction": np.where(m > 0, "pos", "neg"), "score": m}).to_parquet(pp)
            sp, rp = tmp_path / f"{arm}_{s}_scores.json", tmp_path / f"{arm}_{s}_record.json"
            write_json(sp, score_predictions(pp, refs, n_resamples=100, seed=0))
            write_json(rp, {"arm": arm, "seed": s})
            files["predictions"][arm].append(str(pp))
            files["scores"][arm].append(str(sp))
            files["records"][arm].append(str(rp))
            correct[arm].append(((m > 0) == (y == 1)).astype(float))
    return files, str(refs), str(tmp_path / "manifest.json"), {a: np.stack(c) for a, c in correct.items()}


def test_several_seeds_give_seed_aware_cis_and_holm(tmp_path):
    files, refs, manifest, correct = _inputs(tmp_path)
    arms = ["zero_shot", "head_last", "lora_head"]
    out = {k: str(tmp_path / f"comparison.{k}") for k in ("json", "md", "png")}
    res = aggregate_sentiment(dataset="t", arms=arms, sweeps={}, references=refs, manifest=manifest,
                              settings={"metrics": {"n_resamples": 200, "seed": 0}},
                              seeds={"zero_shot": [None], "head_last": [0, 1, 2], "lora_head": [0, 1, 2]},
                              out_json=out["json"], out_md=out["md"], out_png=out["png"], **files)
    sd = res["seeds"]
    for arm in arms:
        want = stats.seed_bootstrap(correct[arm], n_resamples=200, seed=0)
        got = sd["arms"][arm]["accuracy"]
        assert got["mean"] == pytest.approx(correct[arm].mean(), abs=1e-12)
        assert got["ci95"] == want["ci95"] and got["method"] == "bootstrap-items-and-seeds"
        assert len(sd["arms"][arm]["per_seed"]) == len(correct[arm])
    assert sd["arms"]["head_last"]["seeds"] == [0, 1, 2]
    pair = next(p for p in sd["pairs"] if (p["a"], p["b"]) == ("head_last", "lora_head"))
    want = stats.seed_bootstrap(correct["head_last"], correct["lora_head"], n_resamples=200, seed=0)
    assert pair["diff"] == pytest.approx(want["diff"]) and pair["ci95"] == want["ci95"] and pair["seeds"] == [3, 3]
    # the primary (first-seed) runs make the arms table
    assert res["comparison"]["scores"]["head_last"]["accuracy"]["score"] == pytest.approx(correct["head_last"][0].mean())
    # Holm within each family
    cells = [c for pr in res["comparison"]["pairs"] for c in pr["metrics"].values()]
    assert [c["p_holm"] for c in cells] == stats.holm([c["p_value"] for c in cells])
    assert [m["p_holm"] for m in res["mcnemar"]] == stats.holm([m["p_value"] for m in res["mcnemar"]])
    assert [p["p_holm"] for p in sd["pairs"]] == stats.holm([p["p_value"] for p in sd["pairs"]])
    fam = res["multiple_comparisons"]["families"]
    assert fam["paired_bootstrap"]["tests"] == 3 * 3 and fam["mcnemar"]["tests"] == 3 and fam["seed_aware"]["tests"] == 3
    md = Path(out["md"]).read_text(encoding="utf-8")
    assert "## Training seeds" in md and "p (Holm)" in md and "0, 1, 2" in md
