"""Official VQA files -> project tables, from local paths and over HTTP (127.0.0.1 only)."""

import json
import posixpath
import urllib.parse
import zipfile
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from PIL import Image

from httpserver import serve_directory
from leverplus.core.download import MANIFEST_NAME
from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.data.vqa_official import (
    DATASET_SPEC_SCHEMA,
    FILE_NAMES,
    OFFICIAL_SOURCES,
    TABLE_SCHEMA,
    VQADataError,
    coco_image_name,
    majority_answer,
    prepare_vqa_dataset,
    read_vqa_split,
    resolve_http_files,
)

# question_id -> (image_id, question, 10 answers, expected majority)
TRAIN = {
    250: (25, "What animal is this?", ["cat"] * 3 + ["dog"] * 3 + ["cow"] * 4, "cow"),
    90: (9, "What color is the bus?", ["red", "blue", "blue", "red"] + [f"x{i}" for i in range(6)], "red"),
}
VAL = {
    420: (42, "Where is this?", ["beach"] * 10, "beach"),
    731: (73, "Who made this?", ["nike", "adidas"] * 5, "nike"),
}
SPLIT_DATA = {"train": TRAIN, "val": VAL}


def _questions_json(split, rows):
    return {
        "info": {"description": "fixture"},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": f"{split}2014",
        "questions": [{"image_id": img, "question": q, "question_id": qid} for qid, (img, q, _, _) in rows.items()],
    }


def _annotations_json(split, rows):
    return {
        "info": {"description": "fixture"},
        "data_subtype": f"{split}2014",
        "annotations": [
            {
                "question_id": qid,
                "image_id": img,
                "question_type": "what is",
                "answer_type": "other",
                "multiple_choice_answer": answers[0],
                "answers": [
                    {"answer": a, "raw_answer": a.upper(), "answer_confidence": "yes", "answer_id": i + 1}
                    for i, a in enumerate(answers)
                ],
            }
            for qid, (img, _, answers, _) in rows.items()
        ],
    }


def write_unpacked_fixture(root: Path, fmt: str) -> dict:
    """Official-format JSON files + COCO-named JPEGs; returns local paths per split."""
    paths = {"questions": {}, "annotations": {}, "images": {}}
    for split, rows in SPLIT_DATA.items():
        q = root / "json" / FILE_NAMES[fmt]["questions"].format(split=split)
        a = root / "json" / FILE_NAMES[fmt]["annotations"].format(split=split)
        q.parent.mkdir(parents=True, exist_ok=True)
        q.write_text(json.dumps(_questions_json(split, rows)))
        a.write_text(json.dumps(_annotations_json(split, rows)))
        img_dir = root / "coco" / f"{split}2014"
        img_dir.mkdir(parents=True, exist_ok=True)
        for img, *_ in rows.values():
            Image.new("RGB", (8, 6), (img, 2 * img, 255 - img)).save(img_dir / coco_image_name(split, img), "JPEG")
        paths["questions"][split] = str(q)
        paths["annotations"][split] = str(a)
        paths["images"][split] = str(img_dir)
    return paths


def write_zipped_fixture(root: Path, fmt: str) -> dict[str, str]:
    """Zip the fixture the way the official files are packaged; returns {file key: relative URL path}."""
    local = write_unpacked_fixture(root / "unpacked", fmt)
    serve = root / "serve"
    rel = {}
    for key in ("questions", "annotations"):
        for split in ("train", "val"):
            src = Path(local[key][split])
            url_name = posixpath.basename(urllib.parse.urlsplit(OFFICIAL_SOURCES[fmt]["files"][f"{key}_{split}"]["url"]).path)
            target = serve / fmt / url_name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(target, "w") as zf:
                zf.write(src, src.name)
            rel[f"{key}_{split}"] = f"{fmt}/{url_name}"
    for split in ("train", "val"):
        target = serve / "coco" / f"{split}2014.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as zf:
            for img in sorted(Path(local["images"][split]).iterdir()):
                zf.write(img, f"{split}2014/{img.name}")
        rel[f"images_{split}"] = f"coco/{split}2014.zip"
    return rel


def _check_tables(out_dir: Path, images_root: Path | None = None) -> None:
    for split, rows in SPLIT_DATA.items():
        table = pq.read_table(out_dir / f"{split}.parquet")
        assert table.schema.remove_metadata().equals(TABLE_SCHEMA), table.schema
        got = table.to_pylist()
        expected_ids = [str(q) for q in sorted(rows)]
        assert [r["id"] for r in got] == expected_ids
        for r in got:
            img, question, answers, majority = rows[int(r["id"])]
            assert r["image_id"] == img
            assert r["question"] == question
            assert r["answers"] == answers and len(r["answers"]) == 10
            assert r["answer"] == majority
            assert r["answer_type"] == "other" and r["question_type"] == "what is"
            p = Path(r["image"])
            assert p.is_absolute() and p.name == coco_image_name(split, img)
            assert p.parent.name == f"{split}2014"
            if images_root is not None:
                assert p.is_relative_to(images_root.resolve())
            assert load_image(p).size == (8, 6)


# --------------------------------------------------------------------------------------
# unit-level
# --------------------------------------------------------------------------------------


def test_majority_answer_ties_by_first_occurrence():
    assert majority_answer(["a", "b", "b", "a"]) == "a"
    assert majority_answer(["b", "a", "a", "b", "c"]) == "b"
    assert majority_answer(["x", "y", "y"]) == "y"
    with pytest.raises(ValueError):
        majority_answer([])


def test_official_sources_are_consistent():
    assert set(OFFICIAL_SOURCES) == set(FILE_NAMES) == {"okvqa", "vqav2"}
    keys = {f"{k}_{s}" for k in ("questions", "annotations", "images") for s in ("train", "val")}
    for src in OFFICIAL_SOURCES.values():
        assert set(src["files"]) == keys
        for entry in src["files"].values():
            assert urllib.parse.urlsplit(entry["url"]).scheme in ("http", "https")
            assert set(entry) == {"url", "sha256", "md5"}
        assert src["files"]["images_val"]["url"].endswith("/val2014.zip")
    # OK-VQA archives are named after the JSON file they contain
    for split in ("train", "val"):
        for kind in ("questions", "annotations"):
            url = OFFICIAL_SOURCES["okvqa"]["files"][f"{kind}_{split}"]["url"]
            assert url.endswith("/" + FILE_NAMES["okvqa"][kind].format(split=split) + ".zip")


def test_resolve_http_files_overrides():
    files = resolve_http_files(
        "vqav2", {"questions_val": "http://127.0.0.1:1/q.zip", "images_val": {"url": "http://h/i.zip", "sha256": "a" * 64}}
    )
    assert files["questions_val"] == {"url": "http://127.0.0.1:1/q.zip", "sha256": None, "md5": None}
    assert files["images_val"]["sha256"] == "a" * 64
    assert files["questions_train"] == OFFICIAL_SOURCES["vqav2"]["files"]["questions_train"]
    with pytest.raises(VQADataError, match="unknown file key"):
        resolve_http_files("okvqa", {"questions_test": "http://x"})
    with pytest.raises(VQADataError, match="unknown dataset format"):
        resolve_http_files("gqa")
    # the module-level defaults must not be mutated by overrides
    assert OFFICIAL_SOURCES["vqav2"]["files"]["images_val"]["sha256"] is None


@pytest.mark.parametrize(
    "spec",
    [
        {"source": "http", "format": "okvqa"},
        {"source": "http", "format": "vqav2", "files": {"images_val": {"url": "http://h/v.zip", "sha256": None}},
         "max_train": None, "max_val": 100, "download_dir": "data/raw/vqav2", "image_download_dir": "data/raw/coco"},
        {"source": "local", "format": "okvqa", "questions": {"train": "a", "val": "b"},
         "annotations": {"train": "c", "val": "d"}, "images": {"train": "e", "val": "f"}, "max_train": 5},
    ],
)
def test_schema_accepts(spec):
    jsonschema.validate(spec, DATASET_SPEC_SCHEMA)


@pytest.mark.parametrize(
    "spec",
    [
        {"source": "http"},  # no format
        {"source": "http", "format": "gqa"},
        {"source": "http", "format": "okvqa", "files": {"questions_test": "http://x/q.zip"}},
        {"source": "http", "format": "okvqa", "files": {"questions_val": "ftp://x/q.zip"}},
        {"source": "http", "format": "okvqa", "files": {"questions_val": {"url": "http://x", "sha256": "abc"}}},
        {"source": "http", "format": "okvqa", "max_train": 0},
        {"source": "http", "format": "okvqa", "questions": {"train": "a", "val": "b"}},
        {"source": "local", "format": "okvqa", "questions": {"train": "a"},
         "annotations": {"train": "c", "val": "d"}, "images": {"train": "e", "val": "f"}},
        {"source": "s3", "format": "okvqa"},
    ],
)
def test_schema_rejects(spec, tmp_path):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(spec, DATASET_SPEC_SCHEMA)
    with pytest.raises(VQADataError, match="invalid spec for dataset 'okvqa'"):
        prepare_vqa_dataset("okvqa", spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# local source
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["okvqa", "vqav2"])
def test_prepare_local(tmp_path, fmt):
    paths = write_unpacked_fixture(tmp_path / "src", fmt)
    # images given as the parent directory containing {split}2014/ also works
    paths["images"]["val"] = str(Path(paths["images"]["val"]).parent)
    # keys used by other sources of the project config (demo data) are ignored
    spec = {"source": "local", "format": fmt, **paths, "seed": 0, "n_train": 3000}
    prepare_vqa_dataset(fmt, spec, tmp_path / "out")
    _check_tables(tmp_path / "out", images_root=tmp_path / "src" / "coco")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["train.parquet", "val.parquet"]


def test_max_questions_takes_lowest_ids(tmp_path):
    paths = write_unpacked_fixture(tmp_path / "src", "okvqa")
    prepare_vqa_dataset("ok", {"source": "local", "format": "okvqa", **paths, "max_train": 1}, tmp_path / "out")
    train = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    assert [r["id"] for r in train] == ["90"]
    assert pq.read_table(tmp_path / "out" / "val.parquet").num_rows == 2


def test_missing_images_are_listed_and_nothing_written(tmp_path):
    paths = write_unpacked_fixture(tmp_path / "src", "okvqa")
    missing = Path(paths["images"]["val"]) / coco_image_name("val", 73)
    missing.unlink()
    with pytest.raises(VQADataError) as err:
        prepare_vqa_dataset("ok", {"source": "local", "format": "okvqa", **paths}, tmp_path / "out")
    msg = str(err.value)
    assert "ok/val" in msg and "1 of 2 referenced images are missing" in msg and str(missing.resolve()) in msg
    assert not (tmp_path / "out" / "train.parquet").exists()  # both splits validated before writing


def test_swapped_or_inconsistent_files_are_rejected(tmp_path):
    paths = write_unpacked_fixture(tmp_path / "src", "okvqa")
    with pytest.raises(VQADataError, match="data_subtype 'val2014', expected 'train2014'"):
        read_vqa_split(paths["questions"]["val"], paths["annotations"]["val"], paths["images"]["val"], "train")

    ann = json.loads(Path(paths["annotations"]["train"]).read_text())
    ann["annotations"][0]["answers"] = ann["annotations"][0]["answers"][:9]
    bad = tmp_path / "bad_ann.json"
    bad.write_text(json.dumps(ann))
    with pytest.raises(VQADataError, match="has 9 answers, expected 10"):
        read_vqa_split(paths["questions"]["train"], bad, paths["images"]["train"], "train")

    ann = json.loads(Path(paths["annotations"]["train"]).read_text())
    ann["annotations"] = ann["annotations"][:1]
    bad.write_text(json.dumps(ann))
    with pytest.raises(VQADataError, match="1 question\\(s\\) without annotation"):
        read_vqa_split(paths["questions"]["train"], bad, paths["images"]["train"], "train")

    with pytest.raises(VQADataError, match="questions file not found"):
        read_vqa_split(tmp_path / "nope.json", bad, paths["images"]["train"], "train")


# --------------------------------------------------------------------------------------
# HTTP source, end to end against 127.0.0.1
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["okvqa", "vqav2"])
def test_prepare_http_end_to_end(tmp_path, fmt):
    rel = write_zipped_fixture(tmp_path / "fixture", fmt)
    out = tmp_path / "data" / "datasets" / fmt
    coco = tmp_path / "data" / "raw" / "coco"
    with serve_directory(tmp_path / "fixture" / "serve") as srv:
        spec = {
            "source": "http",
            "format": fmt,
            "files": {key: srv.url_for(path) for key, path in rel.items()},
            "image_download_dir": str(coco),
            "max_train": None,
            "max_val": None,
        }
        prepare_vqa_dataset(fmt, spec, out, progress=False)
        _check_tables(out, images_root=coco)

        raw = out / "raw"  # default download_dir
        assert (raw / FILE_NAMES[fmt]["questions"].format(split="train")).is_file()
        manifest = json.loads((raw / MANIFEST_NAME).read_text())
        assert len(manifest) == 4 and all(len(e["sha256"]) == 64 for e in manifest.values())
        coco_manifest = json.loads((coco / MANIFEST_NAME).read_text())
        assert sorted(coco_manifest) == ["train2014.zip", "val2014.zip"]
        assert len(srv.requests_for("/coco/train2014.zip", "GET")) == 1

        # re-run: files present and verified against MANIFEST.json -> no downloads
        n = srv.request_count
        (out / "train.parquet").unlink()
        prepare_vqa_dataset(fmt, spec, out, progress=False)
        assert srv.request_count == n
        _check_tables(out, images_root=coco)
