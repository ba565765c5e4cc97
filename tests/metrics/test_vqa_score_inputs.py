"""`leverplus score vqa` (and `compare --task vqa`) check their input: a non-list `answers`, a null prediction
and answers that are not strings stop with one line naming the file, the row and the problem; a question with other
than 10 answers is scored as the reference code scores it and reported (result and stderr)."""
from __future__ import annotations

import json

import pytest

from leverplus.cli import main


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


TEN = ["yes"] * 10


@pytest.fixture
def files(tmp_path):
    def make(preds, refs):
        return _jsonl(tmp_path / "pred.jsonl", preds), _jsonl(tmp_path / "ref.jsonl", refs)

    return make


def _run(capsys, pred, ref, *extra):
    rc = main(["score", "vqa", "--predictions", pred, "--references", ref, *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_answers_given_as_a_string_stop_with_file_row_and_problem(files, capsys):
    pred, ref = files([{"id": "a", "prediction": "yes"}, {"id": "b", "prediction": "yes"}],
                      [{"id": "a", "answers": TEN}, {"id": "b", "answers": "yes"}])
    rc, out, err = _run(capsys, pred, ref)
    assert rc == 2 and out == ""
    assert f"{ref}: row 2 (id 'b'): 'answers' is the string 'yes'" in err


def test_null_prediction_stops_with_file_row_and_problem(files, capsys):
    pred, ref = files([{"id": "a", "prediction": "yes"}, {"id": "b", "prediction": None}],
                      [{"id": "b", "answers": TEN}, {"id": "a", "answers": TEN}])
    rc, out, err = _run(capsys, pred, ref)
    assert rc == 2 and out == ""
    assert f"{pred}: row 2 (id 'b'): 'prediction' is null" in err


def test_non_string_answer_item_stops(files, capsys):
    pred, ref = files([{"id": "a", "prediction": "yes"}], [{"id": "a", "answers": ["yes"] * 9 + [None]}])
    rc, _, err = _run(capsys, pred, ref)
    assert rc == 2 and f"{ref}: row 1 (id 'a'): 'answers' holds a non-string item None" in err


def test_answer_count_other_than_ten_is_scored_as_the_reference_and_reported(files, capsys):
    # 3 answers, 2 of them "yes": leave-one-out matches 1, 1, 2 → min(1, m/3) = 1/3, 1/3, 2/3 → mean 4/9
    pred, ref = files([{"id": "a", "prediction": "yes"}, {"id": "b", "prediction": "yes"}],
                      [{"id": "a", "answers": ["yes", "yes", "no"]}, {"id": "b", "answers": TEN}])
    rc, out, err = _run(capsys, pred, ref)
    assert rc == 0
    res = json.loads(out)
    assert res["score"] == round(100 * (4 / 9 + 1) / 2, 2)
    warn = res["answer_count_warning"]
    assert warn["n_questions"] == 1 and warn["answer_counts"] == {"3": 1}
    assert warn["first"] == [{"id": "a", "row": 1, "answers": 3}]
    assert "1 question(s) without 10 answers" in err and ref in err


def test_ten_answers_give_no_warning(files, capsys):
    pred, ref = files([{"id": "a", "prediction": "yes"}], [{"id": "a", "answers": TEN}])
    rc, out, err = _run(capsys, pred, ref)
    assert rc == 0 and "answer_count_warning" not in json.loads(out) and err == ""


def test_compare_names_the_b_file_and_its_own_row(tmp_path, capsys):
    a = _jsonl(tmp_path / "a.jsonl", [{"id": "x", "prediction": "yes"}, {"id": "y", "prediction": "no"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"id": "y", "prediction": None}, {"id": "x", "prediction": "yes"}])
    ref = _jsonl(tmp_path / "r.jsonl", [{"id": "x", "answers": TEN}, {"id": "y", "answers": TEN}])
    rc = main(["compare", a, b, "--task", "vqa", "--references", ref])
    err = capsys.readouterr().err
    assert rc == 2 and f"{b}: row 1 (id 'y'): 'prediction' is null" in err
