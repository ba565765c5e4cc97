"""Build the project's VQA tables (OK-VQA, VQAv2) from the official release files.

Entry point for the Snakemake rule: :func:`prepare_vqa_dataset`.  It writes
``out_dir/train.parquet`` and ``out_dir/val.parquet`` (atomically), one row per
question, with exactly these columns (:data:`TABLE_SCHEMA`):

=============  =================  ==================================================
column         type               content
=============  =================  ==================================================
id             string             the official ``question_id``, as a string
image          string             absolute path of the COCO image file
image_id       int64              COCO image id
question       string             question text
answers        list<string>       the 10 human answers (``answers[*].answer``)
answer         string             most frequent of the 10; ties -> first occurrence
answer_type    string             official ``answer_type``
question_type  string             official ``question_type``
=============  =================  ==================================================

Rows are sorted by numeric question id; ``max_train`` / ``max_val`` keep the
first N rows of that order (a deterministic prefix, not a random sample).
Every referenced image must exist, otherwise :class:`VQADataError` lists the
first few missing files.  The question file's ``data_subtype`` (e.g.
``val2014``) must match the split, which catches swapped train/val files.

Sources (see :data:`DATASET_SPEC_SCHEMA`)
-----------------------------------------
``source: http``
    Files come from :data:`OFFICIAL_SOURCES` (``files`` may override any
    entry with a URL string or ``{"url", "sha256", "md5"}``).  Question and
    annotation zips go to ``download_dir`` (default ``out_dir/raw``), COCO
    image zips to ``image_download_dir`` (default: ``download_dir``; point
    both datasets at one shared directory to download COCO only once), and
    are extracted there: images end up in ``<image_download_dir>/{split}2014/``.
    No official checksum can be verified offline, so the defaults carry
    ``sha256: None`` and :func:`leverplus.core.download.fetch_resources`
    records the sha256 of the first download in ``MANIFEST.json`` in the
    download directory (trust on first use); later runs verify against it.
``source: local``
    Paths to already-present files (``okvqa_local`` style): ``questions``,
    ``annotations`` and ``images``, each ``{"train": ..., "val": ...}``.  An
    images entry is the directory holding ``COCO_{split}2014_*.jpg``; if it
    has a ``{split}2014/`` subdirectory, that one is used.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa

from leverplus.core.download import fetch_resources
from leverplus.core.io import write_parquet

__all__ = [
    "DATASET_SPEC_SCHEMA",
    "FILE_NAMES",
    "OFFICIAL_SOURCES",
    "SPLITS",
    "TABLE_COLUMNS",
    "TABLE_SCHEMA",
    "VQADataError",
    "coco_image_name",
    "majority_answer",
    "prepare_vqa_dataset",
    "read_vqa_split",
    "resolve_http_files",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
N_ANSWERS = 10
#: The exact Arrow schema of the written tables.
TABLE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.string()),
        ("image_id", pa.int64()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("answer", pa.string()),
        ("answer_type", pa.string()),
        ("question_type", pa.string()),
    ]
)
TABLE_COLUMNS = tuple(TABLE_SCHEMA.names)

_OKVQA_BASE = "https://okvqa.allenai.org/static/data"
_VQAV2_BASE = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa"
_COCO_BASE = "http://images.cocodataset.org/zips"


def _entry(url: str) -> dict[str, Any]:
    # No checksum is published for these files; see the TOFU note in the module docstring.
    return {"url": url, "sha256": None, "md5": None}


#: Official download locations.  Keys of ``files``: ``{questions,annotations,images}_{train,val}``.
OFFICIAL_SOURCES: dict[str, dict[str, Any]] = {
    "okvqa": {
        "homepage": "https://okvqa.allenai.org/",
        "files": {
            "questions_train": _entry(f"{_OKVQA_BASE}/OpenEnded_mscoco_train2014_questions.json.zip"),
            "questions_val": _entry(f"{_OKVQA_BASE}/OpenEnded_mscoco_val2014_questions.json.zip"),
            "annotations_train": _entry(f"{_OKVQA_BASE}/mscoco_train2014_annotations.json.zip"),
            "annotations_val": _entry(f"{_OKVQA_BASE}/mscoco_val2014_annotations.json.zip"),
            "images_train": _entry(f"{_COCO_BASE}/train2014.zip"),
            "images_val": _entry(f"{_COCO_BASE}/val2014.zip"),
        },
    },
    "vqav2": {
        "homepage": "https://visualqa.org/download.html",
        "files": {
            "questions_train": _entry(f"{_VQAV2_BASE}/v2_Questions_Train_mscoco.zip"),
            "questions_val": _entry(f"{_VQAV2_BASE}/v2_Questions_Val_mscoco.zip"),
            "annotations_train": _entry(f"{_VQAV2_BASE}/v2_Annotations_Train_mscoco.zip"),
            "annotations_val": _entry(f"{_VQAV2_BASE}/v2_Annotations_Val_mscoco.zip"),
            "images_train": _entry(f"{_COCO_BASE}/train2014.zip"),
            "images_val": _entry(f"{_COCO_BASE}/val2014.zip"),
        },
    },
}

#: Names of the JSON files inside the official archives.
FILE_NAMES: dict[str, dict[str, str]] = {
    "okvqa": {
        "questions": "OpenEnded_mscoco_{split}2014_questions.json",
        "annotations": "mscoco_{split}2014_annotations.json",
    },
    "vqav2": {
        "questions": "v2_OpenEnded_mscoco_{split}2014_questions.json",
        "annotations": "v2_mscoco_{split}2014_annotations.json",
    },
}

_FILE_KEYS = [f"{kind}_{split}" for kind in ("questions", "annotations", "images") for split in SPLITS]
_DIGEST = {
    "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$"},
    "md5": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{32}$"},
}
_URL = {"type": "string", "pattern": "^https?://"}
_PER_SPLIT_PATH = {
    "type": "object",
    "properties": {s: {"type": "string", "minLength": 1} for s in SPLITS},
    "required": list(SPLITS),
    "additionalProperties": False,
}
_MAX = {"type": ["integer", "null"], "minimum": 1}

#: JSON-schema fragment for one dataset entry (merge under the datasets mapping of config.schema.yaml).
DATASET_SPEC_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "description": "Download the official files (OFFICIAL_SOURCES, optionally overridden) and build tables.",
            "properties": {
                "source": {"const": "http"},
                "format": {"enum": sorted(FILE_NAMES)},
                "files": {
                    "type": "object",
                    "propertyNames": {"enum": _FILE_KEYS},
                    "additionalProperties": {
                        "oneOf": [
                            _URL,
                            {
                                "type": "object",
                                "properties": {"url": _URL, **_DIGEST},
                                "required": ["url"],
                                "additionalProperties": False,
                            },
                        ]
                    },
                },
                "download_dir": {"type": "string", "minLength": 1},
                "image_download_dir": {"type": "string", "minLength": 1},
                "max_train": _MAX,
                "max_val": _MAX,
            },
            "required": ["source", "format"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "Use official-format files already on disk.",
            "properties": {
                "source": {"const": "local"},
                "format": {"enum": sorted(FILE_NAMES)},
                "questions": _PER_SPLIT_PATH,
                "annotations": _PER_SPLIT_PATH,
                "images": _PER_SPLIT_PATH,
                "max_train": _MAX,
                "max_val": _MAX,
            },
            "required": ["source", "format", "questions", "annotations", "images"],
            "additionalProperties": False,
        },
    ]
}


class VQADataError(ValueError):
    """The official files are missing, malformed or inconsistent."""


# --------------------------------------------------------------------------------------
# table building
# --------------------------------------------------------------------------------------


def coco_image_name(split: str, image_id: int) -> str:
    """``COCO_{split}2014_{image_id:012d}.jpg``."""
    return f"COCO_{split}2014_{int(image_id):012d}.jpg"


def majority_answer(answers: list[str]) -> str:
    """Most frequent answer string; ties are broken by first occurrence in ``answers``."""
    if not answers:
        raise ValueError("no answers")
    counts = Counter(answers)
    best = max(counts.values())
    for a in answers:
        if counts[a] == best:
            return a
    raise AssertionError("unreachable")


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise VQADataError(f"{what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        raise VQADataError(f"{what} file {path} is not valid JSON: {exc}") from exc


def _images_dir_for(images: Path, split: str) -> Path:
    sub = images / f"{split}2014"
    return sub if sub.is_dir() else images


def read_vqa_split(
    questions_path: str | os.PathLike[str],
    annotations_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    split: str,
    *,
    max_questions: int | None = None,
    check_images: bool = True,
    label: str = "",
) -> Any:
    """Join an official questions file with its annotations; returns a ``pyarrow.Table``.

    ``images_dir`` is the folder holding ``COCO_{split}2014_*.jpg`` (a
    ``{split}2014/`` subfolder is used if present).  See the module docstring
    for the columns, ordering and checks.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    where = f"{label}/{split}" if label else split
    qpath, apath = Path(questions_path), Path(annotations_path)
    qdata = _load_json(qpath, "questions")
    adata = _load_json(apath, "annotations")
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise VQADataError(f"{qpath}: expected an object with a 'questions' list")
    if not isinstance(adata, dict) or not isinstance(adata.get("annotations"), list):
        raise VQADataError(f"{apath}: expected an object with an 'annotations' list")
    for path, data in ((qpath, qdata), (apath, adata)):
        subtype = data.get("data_subtype")
        if subtype is not None and subtype != f"{split}2014":
            raise VQADataError(
                f"{where}: {path} has data_subtype {subtype!r}, expected '{split}2014' (train/val files swapped?)"
            )

    questions: dict[int, dict[str, Any]] = {}
    for q in qdata["questions"]:
        try:
            qid = int(q["question_id"])
            questions_entry = {"image_id": int(q["image_id"]), "question": str(q["question"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise VQADataError(f"{qpath}: malformed question record {q!r}: {exc!r}") from exc
        if qid in questions:
            raise VQADataError(f"{qpath}: duplicate question_id {qid}")
        questions[qid] = questions_entry

    annotations: dict[int, dict[str, Any]] = {}
    for a in adata["annotations"]:
        try:
            qid = int(a["question_id"])
            answers = [str(x["answer"]) for x in a["answers"]]
            entry = {
                "image_id": int(a["image_id"]),
                "answers": answers,
                "answer_type": str(a["answer_type"]),
                "question_type": str(a["question_type"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise VQADataError(f"{apath}: malformed annotation record for {a.get('question_id', '?')!r}: {exc!r}") from exc
        if len(answers) != N_ANSWERS:
            raise VQADataError(f"{apath}: question {qid} has {len(answers)} answers, expected {N_ANSWERS}")
        if qid in annotations:
            raise VQADataError(f"{apath}: duplicate annotation for question_id {qid}")
        annotations[qid] = entry

    only_q = sorted(set(questions) - set(annotations))
    only_a = sorted(set(annotations) - set(questions))
    if only_q or only_a:
        raise VQADataError(
            f"{where}: questions and annotations do not match: {len(only_q)} question(s) without annotation "
            f"(e.g. {only_q[:5]}), {len(only_a)} annotation(s) without question (e.g. {only_a[:5]})"
        )

    qids = sorted(questions)
    if max_questions is not None:
        qids = qids[: int(max_questions)]
    img_dir = _images_dir_for(Path(images_dir), split).resolve()

    cols: dict[str, list[Any]] = {c: [] for c in TABLE_COLUMNS}
    for qid in qids:
        q, a = questions[qid], annotations[qid]
        if q["image_id"] != a["image_id"]:
            raise VQADataError(
                f"{where}: question {qid} has image_id {q['image_id']} but its annotation says {a['image_id']}"
            )
        cols["id"].append(str(qid))
        cols["image"].append(str(img_dir / coco_image_name(split, q["image_id"])))
        cols["image_id"].append(q["image_id"])
        cols["question"].append(q["question"])
        cols["answers"].append(a["answers"])
        cols["answer"].append(majority_answer(a["answers"]))
        cols["answer_type"].append(a["answer_type"])
        cols["question_type"].append(a["question_type"])

    if check_images:
        unique = sorted(set(cols["image"]))
        missing = [p for p in unique if not os.path.isfile(p)]
        if missing:
            shown = "\n  ".join(missing[:5])
            raise VQADataError(
                f"{where}: {len(missing)} of {len(unique)} referenced images are missing under {img_dir}, "
                f"e.g.:\n  {shown}"
            )
    return pa.table({c: cols[c] for c in TABLE_COLUMNS}, schema=TABLE_SCHEMA)


# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------


def resolve_http_files(fmt: str, overrides: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Official file entries for ``fmt`` with ``overrides`` applied (URL string or dict)."""
    if fmt not in OFFICIAL_SOURCES:
        raise VQADataError(f"unknown dataset format {fmt!r}; known: {sorted(OFFICIAL_SOURCES)}")
    files = copy.deepcopy(OFFICIAL_SOURCES[fmt]["files"])
    for key, value in (overrides or {}).items():
        if key not in files:
            raise VQADataError(f"unknown file key {key!r} in 'files'; known: {sorted(files)}")
        if isinstance(value, str):
            files[key] = {"url": value, "sha256": None, "md5": None}
        elif isinstance(value, Mapping) and value.get("url"):
            files[key] = {"url": value["url"], "sha256": value.get("sha256"), "md5": value.get("md5")}
        else:
            raise VQADataError(f"files.{key} must be a URL or an object with 'url', got {value!r}")
    return files


def _find_extracted(root: Path, name: str) -> Path:
    candidates = [root / name, *sorted(root.glob(f"*/{name}"))]
    for c in candidates:
        if c.is_file():
            return c
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise VQADataError(f"{name} not found in {root} after extraction (present: {present[:20]})")


_KNOWN_KEYS = frozenset(k for branch in DATASET_SPEC_SCHEMA["oneOf"] for k in branch["properties"])


def _source_spec(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Validated copy of the keys this module reads.  Keys no source uses (e.g. the
    project's ``seed``/``n_train`` for demo data) are dropped; keys of the *other*
    source (``questions`` with ``source: http``) are rejected."""
    relevant = {k: v for k, v in spec.items() if k in _KNOWN_KEYS}
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - project dependency
        return relevant
    try:
        jsonschema.validate(relevant, DATASET_SPEC_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise VQADataError(f"invalid spec for dataset {name!r}: {exc.message}") from None
    return relevant


def _http_inputs(
    name: str, spec: Mapping[str, Any], out_dir: Path, progress: bool
) -> dict[str, dict[str, Path]]:
    fmt = spec["format"]
    files = resolve_http_files(fmt, spec.get("files"))
    dl = Path(spec.get("download_dir") or out_dir / "raw")
    img_dl = Path(spec.get("image_download_dir") or dl)

    def resource(key: str) -> dict[str, Any]:
        e = files[key]
        return {"url": e["url"], "sha256": e.get("sha256"), "md5": e.get("md5"), "extract": True}

    log.info("%s: fetching question/annotation files into %s", name, dl)
    fetch_resources([resource(f"{k}_{s}") for k in ("questions", "annotations") for s in SPLITS], dl, progress=progress)
    log.info("%s: fetching COCO images into %s", name, img_dl)
    fetch_resources([resource(f"images_{s}") for s in SPLITS], img_dl, progress=progress)

    names = FILE_NAMES[fmt]
    return {
        s: {
            "questions": _find_extracted(dl, names["questions"].format(split=s)),
            "annotations": _find_extracted(dl, names["annotations"].format(split=s)),
            "images": img_dl / f"{s}2014",
        }
        for s in SPLITS
    }


def prepare_vqa_dataset(
    name: str, spec: Mapping[str, Any], out_dir: str | os.PathLike[str], *, progress: bool = True
) -> None:
    """Build ``out_dir/train.parquet`` and ``out_dir/val.parquet`` for dataset ``name``.

    ``spec`` follows :data:`DATASET_SPEC_SCHEMA` (other keys are ignored).  Downloads (``source: http``)
    happen here, i.e. inside the rule's job, never at DAG-construction time.
    Both tables are built and validated before either file is written.
    """
    spec = _source_spec(spec, name)
    out = Path(out_dir)
    if spec["source"] == "http":
        inputs = _http_inputs(name, spec, out, progress)
    else:
        inputs = {
            s: {
                "questions": Path(spec["questions"][s]),
                "annotations": Path(spec["annotations"][s]),
                "images": Path(spec["images"][s]),
            }
            for s in SPLITS
        }
    tables = {}
    for s in SPLITS:
        tables[s] = read_vqa_split(
            inputs[s]["questions"],
            inputs[s]["annotations"],
            inputs[s]["images"],
            s,
            max_questions=spec.get(f"max_{s}"),
            label=name,
        )
        log.info("%s/%s: %d questions, %d images", name, s, tables[s].num_rows, len(set(tables[s].column("image").to_pylist())))
    for s in SPLITS:
        write_parquet(out / f"{s}.parquet", tables[s])
