"""Issue 22 item 2: every version against similarity retrieval, its pool at random and the oracle, paired and
seed-aware, with verdicts and the minimum detectable difference; versions that share their seed's initialisation
compared seed-paired; the oracle baseline."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.retrieval import majority_answer, oracle_choice
from leverplus.core.io import write_json, write_parquet
from leverplus.metrics.stats import minimum_detectable_difference, seed_bootstrap
from leverplus.metrics.vqa import score_vqa
from leverplus.tracks.vqa.report.aggregate import aggregate
from leverplus.tracks.vqa.report.versions import compare_versions

N = 200
METRICS = {"vqa_stem": False, "vqa_eval": "official", "n_resamples": 400, "seed": 0}


# ---- statistics ----------------------------------------------------------------------------------------------------
def test_minimum_detectable_difference_known_answer():
    # (z_.975 + z_.8) / z_.975 × half-width: 1.959964 + 0.841621 = 2.801585
    assert minimum_detectable_difference([-1.0, 1.0]) == pytest.approx(2.801585 / 1.959964, rel=1e-6)
    assert minimum_detectable_difference([2.0, 6.0]) == pytest.approx(2 * 2.801585 / 1.959964, rel=1e-6)
    assert minimum_detectable_difference([-1.0, 1.0], power=0.5) == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError):
        minimum_detectable_difference([1.0, -1.0])


def _seed_effect_runs():
    """(5 seeds, N) accuracies: a seed effect shared by both versions (m_s of the first N − 10 questions right);
    B = A plus the last 10 questions, on every seed."""
    counts = [20, 60, 100, 140, 180]
    a = np.array([[1.0] * m + [0.0] * (N - m) for m in counts])
    b = a.copy()
    b[:, N - 10:] = 1.0
    return a, b


def test_seed_paired_bootstrap_keeps_the_shared_seed_effect_out_of_the_difference():
    a, b = _seed_effect_runs()
    indep = seed_bootstrap(b, a, n_resamples=500, seed=0)
    paired = seed_bootstrap(b, a, n_resamples=500, seed=0, paired_seeds=True)
    assert indep["diff"] == pytest.approx(0.05) and paired["diff"] == pytest.approx(0.05)
    # seed i of B is seed i of A plus the same 10 questions: the paired difference is the question-only one
    items = seed_bootstrap(b.mean(axis=0), a.mean(axis=0), n_resamples=500, seed=0)
    assert paired["ci95"] == pytest.approx(items["ci95"], abs=1e-12) and paired["ci95"][0] > 0
    assert indep["ci95"][0] < 0 < indep["ci95"][1]  # independent draws mix the seed effect into the difference
    assert paired["method"] == "paired-bootstrap-items-and-paired-seeds"
    with pytest.raises(ValueError, match="same number of seeds"):
        seed_bootstrap(b[:3], a, paired_seeds=True)


# ---- the oracle ----------------------------------------------------------------------------------------------------
def test_majority_answer_and_ties():
    assert majority_answer(["Two", "two", "three"]) == "two"
    assert majority_answer(["b", "a"]) == "a"


def test_oracle_picks_the_most_similar_same_answer_examples_then_fills():
    e = np.eye(4)
    img = np.array([e[0], 0.9 * e[0] + 0.1 * e[1], 0.5 * e[0] + 0.5 * e[1], e[1], e[2]])
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    pool = Features(ids=[f"t{i}" for i in range(5)], image=img, text=img)
    q = Features(ids=["q"], image=e[:1], text=e[:1])
    answers = [["x"] * 10, ["y"] * 10, ["x"] * 10, ["y"] * 10, ["x"] * 10]
    # the query's answer is "y": t1 (more similar) before t3, both ahead of the more similar "x" examples
    assert oracle_choice(q, pool, [["y"] * 10], answers, 2) == [["t1", "t3"]]
    # only two examples answer "y": the third pick is the most similar of the others
    assert oracle_choice(q, pool, [["y"] * 10], answers, 3) == [["t1", "t3", "t0"]]


# ---- aggregate and versions.md ------------------------------------------------------------------------------------
def _val() -> pd.DataFrame:
    return pd.DataFrame({"id": [f"q{i:03d}" for i in range(N)], "image": ["i.png"] * N, "question": ["Q?"] * N,
                         "answers": [["a"] * 10] * N, "answer": ["a"] * N})


def _write(path: Path, val: pd.DataFrame, right: np.ndarray, meta: dict) -> str:
    preds = ["a" if r else "b" for r in right]
    table = pd.DataFrame({"id": val["id"], "prediction": preds, "icd_ids": [[1, 2]] * N, "shot": meta["shot"]})
    write_parquet(path.with_suffix(".parquet"), table)
    score = score_vqa(table[["id", "prediction"]], val[["id", "answers"]], n_resamples=200, seed=0)
    write_json(path, {**meta, **score, "predictions": path.with_suffix(".parquet").name})
    return str(path)


@pytest.fixture()
def runs(tmp_path):
    val = _val()
    a, b = _seed_effect_runs()
    res = tmp_path / "results" / "demo" / "m"
    cell = {"kind": "selector", "model": "m", "sampler": "text_sim", "sample_num": 8, "shot": 2}
    infer = {"v2": [_write(res / "text_sim_8" / "v2" / f"seed{s}" / "shot2.json", val, a[s],
                           {**cell, "version": "v2", "seed": s}) for s in range(5)],
             "v3": [_write(res / "text_sim_8" / "v3" / f"seed{s}" / "shot2.json", val, b[s],
                           {**cell, "version": "v3", "seed": s}) for s in range(5)]}
    right = {"img_sim": 150, "text_sim": 40, "pool_random": 30, "random": 5, "oracle": 190}
    bases = [_write(res / "baseline" / r / "shot2.json", val, np.arange(N) < m,
                    {"kind": "baseline", "retriever": r, "model": "m", "shot": 2}) for r, m in right.items()]
    return val, infer, bases, tmp_path / "out"


def test_aggregate_compares_every_cell_with_similarity_pool_random_and_the_oracle(runs):
    val, infer, bases, out = runs
    res = aggregate(dataset="demo", version="v3", infer_jsons=infer["v3"], baseline_jsons=bases, beam_tables=[],
                    val=val, out_json=str(out / "v3.json"), out_md=str(out / "v3.md"), out_png=str(out / "v3.png"),
                    out_parquet=str(out / "v3.parquet"), metrics=METRICS)
    (row,) = res["cells"]
    assert row["score"] == 55.0
    for r, base in {"img_sim": 75.0, "text_sim": 20.0, "pool_random": 15.0, "random": 2.5, "oracle": 95.0}.items():
        v = row[f"vs_{r}"]
        assert v["diff"] == pytest.approx(55.0 - base, abs=1e-9)
        assert v["seeds"] == [5, 1]
        assert v["mdd"] == pytest.approx(minimum_detectable_difference(v["ci95"]), abs=0.01)
        assert v["verdict"] == ("inside the noise" if v["ci95"][0] <= 0 <= v["ci95"][1]
                                else ("better" if v["diff"] > 0 else "worse"))
    assert row["vs_oracle"]["verdict"] == "worse" and row["vs_random"]["verdict"] == "better"
    head = {(h["a"], h["b"]): h for h in res["headroom"]}
    assert head[("oracle", "img_sim")]["diff"] == 20.0 and head[("oracle", "text_sim")]["diff"] == 75.0
    assert head[("oracle", "img_sim")]["verdict"] == "better"
    md = (out / "v3.md").read_text()
    for title in ("image-similarity retrieval", "question-text-similarity retrieval", "the oracle", "Headroom",
                  "MDD"):
        assert title in md


def test_versions_md_has_every_version_vs_the_baselines_and_pairs_shared_seeds(runs):
    val, infer, bases, out = runs
    res = compare_versions(dataset="demo", pairs=[("v3", "v2")], infer_jsons=infer["v2"] + infer["v3"], val=val,
                           out_json=str(out / "versions.json"), out_md=str(out / "versions.md"), metrics=METRICS,
                           baseline_jsons=bases)
    (v3v2,) = res["comparisons"]
    # v3 and v2 share their seed's initialisation: seed-paired, the shared seed effect cancels -> a verdict
    assert v3v2["seed_pairing"] == "paired" and v3v2["diff"] == 5.0
    assert v3v2["ci95"] == v3v2["items_only"]["ci95"] and v3v2["verdict"] == "better"
    got = {(r["version"], r["vs"]) for r in res["vs_baselines"]}
    assert got == {(v, r) for v in ("v2", "v3") for r in ("img_sim", "text_sim", "pool_random", "oracle")}
    for r in res["vs_baselines"]:
        assert r["seeds"] == [[0, 1, 2, 3, 4], [0]] and r["seed_pairing"] == "independent"
        assert len(r["per_seed"]) == 5 and "mdd" in r and r["verdict"] in ("better", "worse", "inside the noise")
    by = {(r["version"], r["vs"]): r for r in res["vs_baselines"]}
    assert by[("v3", "oracle")]["diff"] == -40.0 and by[("v3", "oracle")]["verdict"] == "worse"
    md = (out / "versions.md").read_text()
    assert "v3 vs img_sim" in md and "5/5 paired" in md and "MDD" in md
    assert json.loads((out / "versions.json").read_text())["seed_paired_pairs"] == [["v3", "v2"]]


def test_unpaired_version_pairs_resample_seeds_independently(runs):
    val, infer, bases, out = runs
    infer_v1 = [p.replace("/v2/", "/v1/") for p in infer["v2"]]
    for src, dst in zip(infer["v2"], infer_v1):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(Path(src).read_text())
        Path(dst).with_suffix(".parquet").write_bytes(Path(src).with_suffix(".parquet").read_bytes())
        write_json(dst, {**doc, "version": "v1"})
    res = compare_versions(dataset="demo", pairs=[("v3", "v1")], infer_jsons=infer_v1 + infer["v3"], val=val,
                           out_json=str(out / "v.json"), out_md=str(out / "v.md"), metrics=METRICS)
    (row,) = res["comparisons"]
    assert row["seed_pairing"] == "independent" and row["verdict"] == "inside the noise"


def test_versions_png_shows_every_version_and_baseline_and_the_differences_vs_similarity(runs):
    val, infer, bases, out = runs
    png = out / "versions.png"
    res = compare_versions(dataset="demo", pairs=[("v3", "v2")], infer_jsons=infer["v2"] + infer["v3"], val=val,
                           out_json=str(out / "versions.json"), out_md=str(out / "versions.md"), metrics=METRICS,
                           baseline_jsons=bases, out_png=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by = {v["version"]: v for v in res["versions"]}
    assert by["v2"]["score"] == 50.0 and by["v3"]["score"] == 55.0 and by["v3"]["seeds"] == [0, 1, 2, 3, 4]
    assert by["v3"]["ci95"][0] < 55.0 < by["v3"]["ci95"][1]
    assert {b["retriever"] for b in res["baselines"]} == {"img_sim", "text_sim", "pool_random", "oracle"}
    from leverplus.tracks.vqa.report.plots import versions_figure

    fig = versions_figure(res)
    left, right = fig.axes[:2]
    assert [t.get_text() for t in left.get_yticklabels()][:2] == ["v2", "v3"]
    assert sorted(t.get_text() for t in right.get_yticklabels()) == [
        "v2 − img_sim", "v2 − text_sim", "v3 − img_sim", "v3 − text_sim"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_results_say_what_they_cost(runs, tmp_path):
    from leverplus.tracks.vqa.report.aggregate import cost_summary

    sel = tmp_path / "selector.json"
    sel.write_text(json.dumps({"training": {"wall_time_s": 12.5}}))
    got = cost_summary([{"cost": {"wall_s": 3.25}}, {"cost": {"wall_s": 1.0}}, {}], [{"cost": {"wall_s": 2.0}}],
                       [str(sel)])
    assert got == {"train_selector": {"wall_s": 12.5, "jobs": 1, "missing": 0},
                   "infer": {"wall_s": 4.2, "jobs": 2, "missing": 1},
                   "baselines": {"wall_s": 2.0, "jobs": 1, "missing": 0}}
    val, infer, bases, out = runs
    res = aggregate(dataset="demo", version="v3", infer_jsons=infer["v3"], baseline_jsons=bases, beam_tables=[],
                    val=val, out_json=str(out / "v3.json"), out_md=str(out / "v3.md"), out_png=str(out / "v3.png"),
                    out_parquet=str(out / "v3.parquet"), metrics=METRICS)
    assert res["cost"]["infer"] == {"wall_s": 0.0, "jobs": 0, "missing": 5}  # written without a cost record
