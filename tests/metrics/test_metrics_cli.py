"""``leverplus score`` / ``leverplus compare``: rescoring reproduces the pipeline's number."""

import json
from pathlib import Path

import pandas as pd
import pytest

from leverplus.cli import main
from leverplus.metrics.io import read_table
from leverplus.metrics.vqa import score_vqa

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


@pytest.fixture()
def pipeline_files(tmp_path):
    """Parquet files shaped like the pipeline's: predictions with extra columns, the dataset's val.parquet."""
    preds = read_table(FIX / "vqa_predictions.jsonl")
    val = read_table(FIX / "vqa_val.jsonl")
    p, r = tmp_path / "shot2.parquet", tmp_path / "val.parquet"
    preds.to_parquet(p)
    val.to_parquet(r)
    # what the pipeline writes into its results JSON: exactly the score_vqa dict
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"vqa": score_vqa(pd.read_parquet(p), pd.read_parquet(r))}))
    return p, r, results


def _run(args, capsys):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_vqa_reproduces_pipeline_results(pipeline_files, capsys):
    p, r, results = pipeline_files
    rc, out, _ = _run(["score", "vqa", "--predictions", str(p), "--references", str(r)], capsys)
    assert rc == 0
    got = json.loads(out)
    want = json.loads(results.read_text())["vqa"]
    assert got == want  # score, n, ci95, signature, settings: all identical
    assert got["score"] == 54.29 and got["n"] == 7  # default official (a013f00); see test_metrics_vqa.py
    assert got["settings"]["eval"] == "official"


# printed by each variant's reference code on the fixture (see FIXTURE_REFERENCE in test_metrics_vqa.py)
FIXTURE_SCORES = {"official": 54.29, "official_2016": 68.57, "lever_lm": 82.86}


@pytest.mark.parametrize("variant", list(FIXTURE_SCORES))
def test_cli_vqa_eval_option(pipeline_files, capsys, variant):
    p, r, _ = pipeline_files
    rc, out, _ = _run(["score", "vqa", "--predictions", str(p), "--references", str(r), "--vqa-eval", variant], capsys)
    assert rc == 0
    got = json.loads(out)
    assert got["score"] == FIXTURE_SCORES[variant]
    assert got == score_vqa(pd.read_parquet(p), pd.read_parquet(r), vqa_eval=variant)
    assert f"eval:{variant}|" in got["signature"]


def test_cli_unknown_vqa_eval_is_refused(pipeline_files, capsys):
    p, r, _ = pipeline_files
    with pytest.raises(SystemExit) as exc:
        main(["score", "vqa", "--predictions", str(p), "--references", str(r), "--vqa-eval", "vqav3"])
    assert exc.value.code == 2
    assert "invalid choice: 'vqav3'" in capsys.readouterr().err


def test_cli_out_file(pipeline_files, tmp_path, capsys):
    p, r, _ = pipeline_files
    out = tmp_path / "o" / "score.json"
    assert main(["score", "vqa", "--predictions", str(p), "--references", str(r), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["score"] == 54.29


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b'{"id": "q1"}\n', "missing column"),
        (b'{"id": "zz", "prediction": "yes"}\n', "vqa_val.jsonl, e.g. ['zz']"),
        (b'{"id": "q1", "prediction": "caf\xe9"}\n', "UTF-8"),
        (b'{"id": "q1", "prediction": \n', "not valid JSON"),
    ],
)
def test_cli_clear_errors(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    rc, out, err = _run(["score", "vqa", "--predictions", str(bad), "--references", str(FIX / "vqa_val.jsonl")], capsys)
    assert rc == 2 and out == ""
    assert message in err


def test_cli_caption_jsonl(capsys):
    rc, out, _ = _run(["score", "caption", "--predictions", str(FIX / "caption_predictions.jsonl"),
                       "--references", str(FIX / "caption_references.jsonl"), "--metrics", "bleu,chrf",
                       "--n-resamples", "20"], capsys)
    assert rc == 0
    m = json.loads(out)["metrics"]
    assert m["bleu"]["score"] == pytest.approx(48.530827, abs=1e-6)  # sacrebleu test_bleu.py
    assert round(m["chrf"]["score"], 2) == 59.73  # sacrebleu README


def test_cli_classification_and_latency(capsys):
    rc, out, _ = _run(["score", "classification", "--predictions", str(FIX / "classification_predictions.jsonl"),
                       "--references", str(FIX / "classification_references.jsonl"), "--pos-label", "2",
                       "--n-resamples", "20"], capsys)
    assert rc == 0 and json.loads(out)["auc_roc"]["score"] == pytest.approx(0.75)  # sklearn roc_curve doc
    rc, out, _ = _run(["score", "latency", "--predictions", str(FIX / "latency_predictions.jsonl"),
                       "--n-resamples", "20"], capsys)
    assert rc == 0 and json.loads(out)["metrics"]["decode_rate_tok_s"]["mean"] == pytest.approx(10.0)


@pytest.mark.parametrize("variant", list(FIXTURE_SCORES))
def test_cli_compare_vqa(tmp_path, capsys, variant):
    preds = read_table(FIX / "vqa_predictions.jsonl")
    b = preds.copy()
    b["prediction"] = "no answer"  # scores 0 on every question
    b = b.iloc[::-1]  # other order: compare aligns by id
    bp = tmp_path / "b.jsonl"
    b[["id", "prediction"]].to_json(bp, orient="records", lines=True)
    rc, out, _ = _run(["compare", str(FIX / "vqa_predictions.jsonl"), str(bp), "--references",
                       str(FIX / "vqa_val.jsonl"), "--n-resamples", "200", "--vqa-eval", variant], capsys)
    assert rc == 0
    r = json.loads(out)
    want = FIXTURE_SCORES[variant]
    assert r["score_a"] == want and r["score_b"] == 0.0 and r["diff"] == want
    assert f"eval:{variant}|" in r["signature"]
    assert r["ci95"][0] > 0 and r["p_value"] < 0.05 and r["n"] == 7


def test_cli_compare_classification_mcnemar(tmp_path, capsys):
    refs = tmp_path / "r.jsonl"
    refs.write_text("".join(json.dumps({"id": str(i), "label": 1}) + "\n" for i in range(14)))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    # A wrong / B right on 12 items, A right / B wrong on 2 (Armitage & Berry discordant counts)
    a.write_text("".join(json.dumps({"id": str(i), "prediction": 0 if i < 12 else 1}) + "\n" for i in range(14)))
    b.write_text("".join(json.dumps({"id": str(i), "prediction": 1 if i < 12 else 0}) + "\n" for i in range(14)))
    rc, out, _ = _run(["compare", str(a), str(b), "--references", str(refs), "--task", "classification",
                       "--n-resamples", "50"], capsys)
    assert rc == 0
    mc = json.loads(out)["mcnemar"]
    assert (mc["b01"], mc["b10"]) == (12, 2) and mc["p_value"] == pytest.approx(0.0129, abs=1e-4)
