"""Partial human scores (issue 25): mt-metrics-eval's files with None, per-cell filtering with a coverage note,
an error when no human cell matches the systems."""

import numpy as np
import pytest

from leverplus.tracks.mt import data
from leverplus.tracks.mt import demo as mt_demo


def _mtme_dir(tmp_path, df, lp="en-hi", missing=(("sys_b", 3),), rename=None):
    """An mt-metrics-eval-style directory (root/wmtX/...) for the demo table; one human cell written as None."""
    d = tmp_path / "wmtX"
    first = df[df["system"] == "sys_a"]
    (d / "sources").mkdir(parents=True)
    (d / "references").mkdir()
    (d / "system-outputs" / lp).mkdir(parents=True)
    (d / "human-scores").mkdir()
    (d / "sources" / f"{lp}.txt").write_text("\n".join(first["src"]) + "\n", encoding="utf-8")
    (d / "references" / f"{lp}.refA.txt").write_text("\n".join(r[0] for r in first["refs"]) + "\n",
                                                      encoding="utf-8")
    # the reference as a "system" too, as mt-metrics-eval ships human translations among the outputs
    (d / "system-outputs" / lp / "refA.txt").write_text("\n".join(r[0] for r in first["refs"]) + "\n",
                                                        encoding="utf-8")
    lines = []
    for s, g in df.groupby("system", sort=False):
        (d / "system-outputs" / lp / f"{s}.txt").write_text("\n".join(g["hyp"]) + "\n", encoding="utf-8")
        for k, v in enumerate(g["human"]):
            name = (rename or {}).get(s, s)
            lines.append(f"{name}\t{'None' if (s, k) in missing else v}")
    (d / "human-scores" / f"{lp}.mqm.seg.score").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


@pytest.fixture(scope="module")
def en_hi():
    return mt_demo.generate_pair("en-hi", 12, 0)[data.COLUMNS]


def test_mtme_loader_reads_none_as_missing(tmp_path, en_hi):
    root = _mtme_dir(tmp_path, en_hi)
    df = data.load_pair({"format": "mtme", "root": str(root), "testset": "wmtX", "lp": "en-hi"})
    assert set(df["system"]) == set(en_hi["system"])  # refA (the reference) is not scored against itself
    cov = data.human_coverage(df)
    assert cov == {"cells": len(en_hi) - 1, "of_cells": len(en_hi), "missing_by_system": {"sys_b": 1}}
    assert data.has_human(df)  # partial scores are kept (they were dropped whole before)
    raw = data.read_mtme_scores(root / "wmtX" / "human-scores" / "en-hi.mqm.seg.score")
    assert np.isnan(raw["sys_b"][3]) and len(raw["sys_b"]) == 12


def test_human_file_matching_no_system_is_an_error(tmp_path, en_hi):
    ren = {s: s.upper() for s in en_hi["system"].unique()}
    root = _mtme_dir(tmp_path, en_hi, rename=ren)
    with pytest.raises(data.MTDataError, match=r"en-hi\.mqm\.seg\.score: none of its systems .*SYS_A.* match"):
        data.load_pair({"format": "mtme", "root": str(root), "testset": "wmtX", "lp": "en-hi"})


def test_partial_human_kept_with_a_coverage_note(tmp_path, en_hi):
    """One missing cell out of 60: vs_human is still computed (on the other 59 cells) and the report says so."""
    from leverplus.tracks.mt import metrics as mt
    from leverplus.tracks.mt import stages as stage

    root = _mtme_dir(tmp_path, en_hi)
    df = data.load_pair({"format": "mtme", "root": str(root), "testset": "wmtX", "lp": "en-hi"})
    lex, _ = mt.score_lexical(df, "en-hi", n_resamples=10)
    cfg = {"meta_eval": {"max_missing": 0.2, "n_resamples": 20, "seed": 0, "n_permutations": 20, "alpha": 0.05},
           "bleu_tokenize": None}
    ss, notes, _ = stage.pair_scores("en-hi", [lex], df, cfg)
    assert "human" in ss.metrics and ss.cells["human"] == len(df) - 1
    assert any(n.startswith("human: scores for 59 of 60") and "sys_b 1" in n for n in notes)
    from leverplus.metrics import meta_eval as me

    full = me.matrices_pairwise(ss, coefficients=["pearson", "acc23"], groupings=["none", "item"], n_resamples=20)
    vh = stage.vs_human(ss, [m for m in ss.metrics if m != "human"], cfg["meta_eval"], full)
    assert np.isfinite(vh["none"]["pearson"]["metrics"]["chrf"]["value"])
    acc = vh["item"]["acc23"]["metrics"]["chrf"]
    assert "epsilon" in acc and acc["value"] >= acc["acc23_eps0"] - 1e-12  # tie-calibrated, never below epsilon 0
    assert vh["none"]["pearson"]["cluster_test"].startswith("PERM-BOTH, one-sided")


def test_cli_meta_eval_human_mtme_file(tmp_path, en_hi):
    import json

    from leverplus.cli import main
    from leverplus.tracks.mt import metrics as mt

    root = _mtme_dir(tmp_path, en_hi)
    df = data.load_pair({"format": "mtme", "root": str(root), "testset": "wmtX", "lp": "en-hi"})
    seg, _ = mt.score_lexical(df, "en-hi", n_resamples=10)
    seg.assign(lang_pair="en-hi").to_parquet(tmp_path / "seg.parquet")
    hum = root / "wmtX" / "human-scores" / "en-hi.mqm.seg.score"
    assert main(["meta-eval", "--scores", str(tmp_path / "seg.parquet"), "--human", str(hum), "--resamples", "10",
                 "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert "human" in m["metrics"] and m["coverage_cells"]["human"] == 59 and "59 of 60" in m["notes"][0]
    bad = tmp_path / "bad.seg.score"
    bad.write_text("\n".join(f"OTHER\t{v}" for v in range(12)) + "\n")
    assert main(["meta-eval", "--scores", str(tmp_path / "seg.parquet"), "--human", str(bad)]) == 2


def test_vs_human_cluster_uses_the_one_sided_p(en_hi):
    """WMT significance clusters are one-sided (H1: the best metric correlates better): p_vs_best is
    mt-metrics-eval's one-sided permutation p, the two-sided one kept beside it."""
    from leverplus.metrics import meta_eval as me
    from leverplus.tracks.mt import metrics as mt
    from leverplus.tracks.mt import stages as stage

    lex, _ = mt.score_lexical(en_hi, "en-hi", n_resamples=10)
    m = {"max_missing": 0.2, "n_resamples": 20, "seed": 0, "n_permutations": 200, "alpha": 0.05}
    ss, _, _ = stage.pair_scores("en-hi", [lex], en_hi, {"meta_eval": m, "bleu_tokenize": None})
    full = me.matrices_pairwise(ss, coefficients=["pearson"], groupings=["none"], n_resamples=20)
    vh = stage.vs_human(ss, [x for x in ss.metrics if x != "human"], m, full)["none"]["pearson"]
    best = vh["ranking"][0]
    for other in vh["ranking"][1:]:
        t = me.perm_both_pairwise(ss, ("human", best), ("human", other), coef="pearson", grouping="none",
                                  n_permutations=200, seed=0)
        r = vh["metrics"][other]
        assert r["p_vs_best"] == t["p_one_sided"] and r["p_vs_best_two_sided"] == t["p_value"]
        assert (other in vh["best_cluster"]) == (t["p_one_sided"] >= 0.05)
