"""The aggregate's paired tests use each cell's own scoring settings and the config's bootstrap settings.

Files are written as the infer/baseline stages write them (``shot{k}.json`` = meta + the score_vqa dict +
``predictions``; ``shot{k}.parquet`` = id, prediction, icd_ids, shot), and the aggregate's paired difference is
checked against what ``leverplus compare`` prints for the same two predictions files.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from leverplus.cli import main
from leverplus.core.io import write_json, write_parquet
from leverplus.metrics.io import MetricsInputError
from leverplus.metrics.vqa import score_vqa
from leverplus.tracks.vqa.report.aggregate import aggregate

N = 40
STEMMED = 12  # q00..q11: answers ["dogs"]*10 and the selector says "dogs": 1.0 unstemmed, 0.0 stemmed ("dog")


def _val() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    words = ["red", "blue", "two", "yes", "no", "cat"]
    answers = [["dogs"] * 10 for _ in range(STEMMED)]
    answers += [list(rng.choice(words, size=10)) for _ in range(N - STEMMED)]
    return pd.DataFrame({
        "id": [f"q{i:02d}" for i in range(N)], "image": [f"img{i}.jpg" for i in range(N)],
        "question": ["What is it?"] * N, "answers": answers, "answer": [a[0] for a in answers],
    })


def _predictions(val: pd.DataFrame, seed: int, first: str) -> list[str]:
    rng = np.random.default_rng(seed)
    out = [first] * STEMMED
    for a in val["answers"].iloc[STEMMED:]:
        out.append(str(a[rng.integers(10)]) if rng.random() < 0.6 else "banana")
    return out


def _write(path: Path, val: pd.DataFrame, preds: list[str], meta: dict, *, stem=False, vqa_eval="official",
           n_resamples=1000, seed=0) -> Path:
    table = pd.DataFrame({"id": val["id"], "prediction": preds, "icd_ids": [[1, 2]] * len(val), "shot": meta["shot"]})
    write_parquet(path.with_suffix(".parquet"), table)
    score = score_vqa(table[["id", "prediction"]], val[["id", "answers"]], stem=stem, vqa_eval=vqa_eval,
                      n_resamples=n_resamples, seed=seed)
    write_json(path, {**meta, **score, "predictions": path.with_suffix(".parquet").name})
    return path


@pytest.fixture()
def grid(tmp_path):
    val = _val()
    val_path = tmp_path / "data" / "vqav2" / "val.parquet"
    write_parquet(val_path, val)
    res = tmp_path / "results" / "vqav2" / "m"
    cell_meta = {"kind": "selector", "version": "v2", "model": "m", "sampler": "rand", "sample_num": 8, "shot": 2,
                 "pool": {"kind": "all"}, "construct_order": "right"}
    cell = _write(res / "rand_8" / "v2" / "shot2.json", val, _predictions(val, 1, "dogs"), cell_meta)
    bases = [
        _write(res / "baseline" / r / "shot2.json", val, _predictions(val, s, "cat"),
               {"kind": "baseline", "retriever": r, "model": "m", "shot": 2})
        for r, s in (("random", 2), ("pool_random", 3))
    ]
    return SimpleNamespace(tmp=tmp_path, val=val, val_path=val_path, cell=cell, bases=bases)


def _aggregate(g, metrics, infer=None, bases=None, tag="a"):
    out = g.tmp / "out" / tag
    return aggregate(
        dataset="vqav2", version="v2", infer_jsons=[str(p) for p in (infer or [g.cell])],
        baseline_jsons=[str(p) for p in (bases or g.bases)], beam_tables=[], val=g.val,
        out_json=str(out / "v2.json"), out_md=str(out / "v2.md"), out_png=str(out / "v2.png"),
        out_parquet=str(out / "v2.parquet"), metrics=metrics,
    )


def _compare(a: Path, b: Path, refs: Path, capsys, *extra) -> dict:
    assert main(["compare", str(a.with_suffix(".parquet")), str(b.with_suffix(".parquet")),
                 "--references", str(refs), *extra]) == 0
    return json.loads(capsys.readouterr().out)


METRICS = {"vqa_stem": False, "vqa_eval": "official", "n_resamples": 500, "seed": 3}


def test_paired_difference_equals_leverplus_compare(grid, capsys):
    result = _aggregate(grid, METRICS)
    (row,) = result["cells"]
    for retriever, base in zip(("random", "pool_random"), grid.bases):
        want = _compare(grid.cell, base, grid.val_path, capsys, "--n-resamples", "500", "--seed", "3")
        got = row[f"vs_{retriever}"]
        assert (got["diff"], got["ci95"], got["p_value"], got["n"]) == (
            want["diff"], want["ci95"], want["p_value"], want["n"])
        # and the paired difference is the difference of the cells' own scores (no other settings)
        assert got["diff"] == pytest.approx(row["score"] - json.loads(base.read_text())["score"], abs=0.011)
    assert result["paired_test"] == {"method": "paired-bootstrap-percentile", "n_resamples": 500, "seed": 3,
                                     "vqa_eval": "official", "stem": False, "mdd_power": 0.8,
                                     "verdict": "better/worse where the 95% CI excludes 0"}


def test_bootstrap_settings_come_from_the_metrics_slice(grid, capsys):
    a = _aggregate(grid, METRICS, tag="a")["cells"][0]["vs_random"]
    b = _aggregate(grid, {**METRICS, "seed": 4}, tag="b")["cells"][0]["vs_random"]
    c = _aggregate(grid, {**METRICS, "n_resamples": 200}, tag="c")["cells"][0]["vs_random"]
    assert a["diff"] == b["diff"] == c["diff"]
    assert a["ci95"] != b["ci95"] and a["ci95"] != c["ci95"]
    want = _compare(grid.cell, grid.bases[0], grid.val_path, capsys, "--n-resamples", "200", "--seed", "3")
    assert (c["ci95"], c["p_value"]) == (want["ci95"], want["p_value"])


def test_stemmed_cells_are_paired_stemmed(grid, tmp_path, capsys):
    res = grid.tmp / "stemmed"
    cell = _write(res / "cell" / "shot2.json", grid.val, _predictions(grid.val, 1, "dogs"),
                  json.loads(grid.cell.read_text()), stem=True)
    base = _write(res / "random" / "shot2.json", grid.val, _predictions(grid.val, 2, "cat"),
                  {"kind": "baseline", "retriever": "random", "model": "m", "shot": 2}, stem=True)
    row = _aggregate(grid, {**METRICS, "vqa_stem": True}, infer=[cell], bases=[base], tag="s")["cells"][0]
    want = _compare(cell, base, grid.val_path, capsys, "--stem", "--n-resamples", "500", "--seed", "3")
    assert row["vs_random"]["diff"] == want["diff"] and row["vs_random"]["ci95"] == want["ci95"]


def test_cells_scored_otherwise_than_the_baseline_are_not_paired(grid):
    other = _write(grid.tmp / "other" / "random" / "shot2.json", grid.val, _predictions(grid.val, 2, "cat"),
                   {"kind": "baseline", "retriever": "random", "model": "m", "shot": 2}, vqa_eval="official_2016")
    with pytest.raises(MetricsInputError, match=r"cannot be paired with .*random/shot2.json \(vqa_eval=official_2016"):
        _aggregate(grid, None, bases=[other])
    with pytest.raises(MetricsInputError, match=r"random/shot2.json: scored with vqa_eval=official_2016.*"
                                                r"config's metrics say vqa_eval=official, stem=no; rerun"):
        _aggregate(grid, METRICS, bases=[other])


def test_results_file_out_of_step_with_its_predictions_is_refused(grid):
    doc = json.loads(grid.cell.read_text())
    doc["score"] = round(doc["score"] + 1, 2)
    grid.cell.write_text(json.dumps(doc))
    with pytest.raises(MetricsInputError, match=r"shot2.json: score .* rescore to"):
        _aggregate(grid, METRICS)


def test_legacy_results_are_read_as_official_2016(grid):
    doc = json.loads(grid.bases[0].read_text())
    doc["settings"]["eval"] = "GT-Vision-Lab/VQA@c4e6a0e4e84b9702d99800d3393652d92b5df224"  # before vqa_eval existed
    grid.bases[0].write_text(json.dumps(doc))
    with pytest.raises(MetricsInputError, match="scored with vqa_eval=official_2016"):
        _aggregate(grid, METRICS)


def test_stage_passes_the_metrics_slice(grid, monkeypatch, capsys):
    from leverplus.tracks.vqa.stages.aggregate import aggregate as stage

    monkeypatch.chdir(grid.tmp)
    out = grid.tmp / "stage"
    output = SimpleNamespace(json=str(out / "v2.json"), md=str(out / "v2.md"), png=str(out / "v2.png"),
                             parquet=str(out / "v2.parquet"))
    inputs = SimpleNamespace(infer=[str(grid.cell)], baselines=[str(p) for p in grid.bases], beams=[])
    stage(input=inputs, output=output, params={"metrics": {**METRICS, "seed": 11}},
          wildcards={"dataset": "vqav2", "version": "v2"}, threads=1)
    got = json.loads(Path(output.json).read_text())
    assert got["paired_test"]["seed"] == 11 and got["paired_test"]["n_resamples"] == 500
    want = _compare(grid.cell, grid.bases[0], grid.val_path, capsys, "--n-resamples", "500", "--seed", "11")
    assert got["cells"][0]["vs_random"]["ci95"] == want["ci95"]
