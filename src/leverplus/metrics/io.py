"""Reading predictions / references files and aligning them on ``id``.

Files are JSONL (``.jsonl``, ``.json``, ``.ndjson``; one JSON object per line)
or parquet (``.parquet``, ``.pq``).  Every error is a :class:`MetricsInputError`
(a ``ValueError``) with a message that names the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq"}


class MetricsInputError(ValueError):
    """A predictions/references file or frame cannot be scored as given."""


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a JSONL or parquet file into a DataFrame (``id`` cast to ``str``)."""
    path = Path(path)
    if not path.exists():
        raise MetricsInputError(f"{path}: file not found")
    if path.is_dir():
        raise MetricsInputError(f"{path}: is a directory, expected a .jsonl or .parquet file")
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        if path.stat().st_size == 0:
            raise MetricsInputError(f"{path}: file is empty")
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise MetricsInputError(f"{path}: not a readable parquet file ({exc})") from exc
    elif suffix in JSONL_SUFFIXES:
        df = _read_jsonl(path)
    else:
        raise MetricsInputError(
            f"{path}: unknown file type {suffix!r}; use .jsonl (one JSON object per line) or .parquet"
        )
    if len(df) == 0:
        raise MetricsInputError(f"{path}: file has no rows")
    if "id" in df.columns:
        df = df.assign(id=df["id"].astype(str))
    return df


def _read_jsonl(path: Path) -> pd.DataFrame:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MetricsInputError(
            f"{path}: not valid UTF-8 (byte {exc.start}, line {line}); re-encode the file as UTF-8"
        ) from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetricsInputError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise MetricsInputError(f"{path}: line {lineno} is not a JSON object")
        rows.append(obj)
    if not rows:
        raise MetricsInputError(f"{path}: file is empty (no JSON lines)")
    return pd.DataFrame(rows)


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MetricsInputError(
            f"{what}: missing column(s) {missing}; found columns {list(map(str, df.columns))}"
        )


def _check_ids(df: pd.DataFrame, what: str) -> pd.Series:
    ids = df["id"].astype(str)
    if ids.isna().any():
        raise MetricsInputError(f"{what}: column 'id' has missing values")
    dup = ids[ids.duplicated()].unique()
    if len(dup):
        raise MetricsInputError(f"{what}: duplicate id(s) {list(dup[:5])}{' ...' if len(dup) > 5 else ''}")
    return ids


def align(
    predictions: pd.DataFrame,
    references: pd.DataFrame,
    pred_columns: Sequence[str],
    ref_columns: Sequence[str],
    *,
    pred_name: str = "predictions",
    ref_name: str = "references",
) -> pd.DataFrame:
    """Join references onto predictions by string ``id``, keeping predictions' order.

    References may hold more ids than the predictions (only the predictions' ids
    are scored); a prediction id missing from the references is an error, as are
    duplicate ids and an empty predictions frame.  Extra columns are ignored.
    """
    if len(predictions) == 0:
        raise MetricsInputError(f"{pred_name}: no rows to score")
    if len(references) == 0:
        raise MetricsInputError(f"{ref_name}: no rows")
    require_columns(predictions, ["id", *pred_columns], pred_name)
    require_columns(references, ["id", *ref_columns], ref_name)
    pid = _check_ids(predictions, pred_name)
    rid = _check_ids(references, ref_name)
    missing = pid[~pid.isin(set(rid))]
    if len(missing):
        raise MetricsInputError(
            f"{len(missing)} id(s) in {pred_name} are not in {ref_name}, e.g. {list(missing[:5])}; "
            "the files do not belong together"
        )
    left = pd.DataFrame({"id": pid.to_numpy()})
    for c in pred_columns:
        left[c] = predictions[c].to_numpy()
    right = pd.DataFrame({"id": rid.to_numpy()})
    for c in ref_columns:
        right["__ref__" + c if c in pred_columns else c] = references[c].to_numpy()
    merged = left.merge(right, on="id", how="left", validate="one_to_one", sort=False)
    return merged


def as_str_list(value, what: str) -> list[str]:
    """A references cell (list/array of strings, or a single string) as ``list[str]``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, np.ndarray)):
        out = [str(v) for v in value]
        if not out:
            raise MetricsInputError(f"{what}: empty list of references")
        return out
    raise MetricsInputError(f"{what}: expected a list of strings, got {type(value).__name__}")


def as_text(value, what: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if not isinstance(value, str):
        raise MetricsInputError(f"{what}: expected a string, got {type(value).__name__}")
    return value
