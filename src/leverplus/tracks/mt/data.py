"""MT evaluation data: per language pair, segments (id, src, one or more refs) x systems (hyp), optional human scores.

One language pair is held as a *long* table, one row per segment x system::

    id (str) | src (str) | refs (list[str]) | system (str) | hyp (str) | human (float or NaN)

Inputs accepted (:func:`load_pair`):

* ``table``: one TSV / JSONL / parquet file in that long layout; references either as a list column ``refs``
  or as columns ``ref``, ``ref_2``, ``ref_3`` ... (TSV); optional ``human`` column (MQM or DA, higher = better;
  MQM given as penalties must be negated first -- the config says which kind it is).
* ``wmt``: WMT-style plain-text files, one segment per line: ``source``, ``references`` (list of files),
  ``systems`` (name -> file), optional ``human``: a TSV with columns ``system``, ``line`` (1-based) and ``score``,
  or mt-metrics-eval's ``<lp>.<name>.seg.score`` (``system<TAB>score`` lines, one per segment in order per system,
  ``None`` = no score).
* ``mtme``: one language pair of a google-research/mt-metrics-eval data directory (``root``, ``testset``, ``lp``,
  ``ref``, ``human``): ``sources/<lp>.txt``, ``references/<lp>.<ref>.txt``, ``system-outputs/<lp>/*.txt``,
  ``human-scores/<lp>.<human>.seg.score``.

Human scores may be partial (WMT MQM always has gaps): a missing cell is NaN and is filtered per cell by the
meta-evaluation, with a coverage note; a human file none of whose (system, segment) cells match the systems given is
an error naming both sides (mismatched system names must not turn every cell into NaN silently).

Bad input stops with :class:`MTDataError` naming the file and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

COLUMNS = ["id", "src", "refs", "system", "hyp", "human"]


class MTDataError(ValueError):
    pass


def _read_any(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise MTDataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".json"):
            rows = []
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise MTDataError(f"{path}: line {n}: not JSON ({exc.msg})") from None
            return pd.DataFrame(rows)
        if suffix in (".tsv", ".txt", ".csv"):
            return pd.read_csv(path, sep="," if suffix == ".csv" else "\t", dtype=str, keep_default_na=False,
                               quoting=3)
    except MTDataError:
        raise
    except Exception as exc:  # noqa: BLE001 (pyarrow / pandas parse errors)
        raise MTDataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    raise MTDataError(f"{path}: unknown format {suffix!r} (use .tsv, .jsonl or .parquet)")


def _refs_column(df: pd.DataFrame, where: str) -> pd.Series:
    if "refs" in df.columns:
        def as_list(v, i):
            if isinstance(v, str):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    v = [v]
            v = list(v) if v is not None and not isinstance(v, float) else []
            if not v or not all(isinstance(x, str) for x in v):
                raise MTDataError(f"{where}: row {i}: 'refs' must be a non-empty list of strings")
            return v
        return pd.Series([as_list(v, i) for i, v in enumerate(df["refs"])], index=df.index)
    ref_cols = sorted([c for c in df.columns if c == "ref" or c.startswith("ref_")], key=lambda c: (c != "ref", c))
    if not ref_cols:
        raise MTDataError(f"{where}: no reference column (expected 'refs' or 'ref', 'ref_2', ...)")
    return pd.Series([[str(r[c]) for c in ref_cols if isinstance(r[c], str) and r[c] != ""]
                      for _, r in df[ref_cols].iterrows()], index=df.index)


def load_table(path: str | Path) -> pd.DataFrame:
    """A long table file (TSV, JSONL or parquet) -> the canonical long table (validated)."""
    path = Path(path)
    df = _read_any(path)
    missing = [c for c in ("id", "src", "system", "hyp") if c not in df.columns]
    if missing:
        raise MTDataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    out = pd.DataFrame({"id": df["id"].astype(str), "src": df["src"], "refs": _refs_column(df, str(path)),
                        "system": df["system"].astype(str), "hyp": df["hyp"]})
    out["human"] = pd.to_numeric(df["human"].replace("", None), errors="coerce") if "human" in df.columns \
        else float("nan")
    if "human" in df.columns:
        bad = df["human"].notna() & (df["human"].astype(str) != "") & out["human"].isna()
        if bad.any():
            raise MTDataError(f"{path}: row {int(bad.idxmax())}: 'human' is not a number")
    return validate(out, str(path))


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise MTDataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MTDataError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def load_wmt(source: str | Path, references: list, systems: dict, human: str | Path | None = None) -> pd.DataFrame:
    """WMT-style plain-text files (one segment per line) -> the canonical long table (validated)."""
    src = _lines(Path(source))
    if not src:
        raise MTDataError(f"{source}: no lines")
    refs = []
    for r in references:
        lines = _lines(Path(r))
        if len(lines) != len(src):
            raise MTDataError(f"{r}: {len(lines)} lines but the source {source} has {len(src)}")
        refs.append(lines)
    if not refs:
        raise MTDataError(f"{source}: no reference files given")
    if not systems:
        raise MTDataError(f"{source}: no system files given")
    human_map = read_human(human) if human else {}
    if human:
        names = {str(k) for k in systems}
        hit = {s for s, _ in human_map} & names
        if not hit:
            raise MTDataError(f"{human}: none of its systems {sorted({s for s, _ in human_map})[:8]} match the "
                              f"systems given {sorted(names)[:8]}")
    rows = []
    for name, path in systems.items():
        hyp = _lines(Path(path))
        if len(hyp) != len(src):
            raise MTDataError(f"{path}: {len(hyp)} lines but the source {source} has {len(src)}")
        for i, (s, h) in enumerate(zip(src, hyp)):
            rows.append({"id": f"{i + 1}", "src": s, "refs": [r[i] for r in refs], "system": str(name), "hyp": h,
                         "human": human_map.get((str(name), i + 1), float("nan"))})
    return validate(pd.DataFrame(rows, columns=COLUMNS), str(source))


def read_mtme_scores(path: str | Path) -> dict[str, list[float]]:
    """mt-metrics-eval's score file (``sys<TAB>score`` per line, a system's lines in segment order; ``None`` =
    missing, read as NaN) -> {system: [scores]} (as its ``ReadScoreFile``)."""
    path = Path(path)
    out: dict[str, list[float]] = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise MTDataError(f"{path}: line {n}: expected 'system<TAB>score', got {line[:80]!r}")
        try:
            v = float("nan") if parts[1] == "None" else float(parts[1])
        except ValueError:
            raise MTDataError(f"{path}: line {n}: score {parts[1]!r} is not a number or None") from None
        out.setdefault(parts[0], []).append(v)
    return out


def read_human(path: str | Path) -> dict[tuple[str, int], float]:
    """{(system, 1-based line): score} from a ``system, line, score`` table or an mt-metrics-eval ``.score`` file
    (missing cells absent or NaN)."""
    path = Path(path)
    if path.name.endswith(".score"):
        return {(s, i + 1): v for s, vals in read_mtme_scores(path).items() for i, v in enumerate(vals)}
    h = _read_any(path)
    missing = [c for c in ("system", "line", "score") if c not in h.columns]
    if missing:
        raise MTDataError(f"{path}: missing column(s) {missing}")
    out = {}
    for i, r in h.iterrows():
        try:
            v = r["score"]
            v = float("nan") if v is None or str(v) in ("", "None", "nan") else float(v)
            out[(str(r["system"]), int(r["line"]))] = v
        except (TypeError, ValueError):
            raise MTDataError(f"{path}: row {i + 1}: line/score not numeric") from None
    return out


def load_mtme(root: str | Path, testset: str, lp: str, ref: str = "refA", human: str | None = "mqm",
              systems: list[str] | None = None, include_human_systems: bool = False) -> pd.DataFrame:
    """One language pair of an mt-metrics-eval data directory (``~/.mt-metrics-eval/mt-metrics-eval-v2`` once
    downloaded) -> the canonical long table.  Systems: every ``system-outputs/<lp>/*.txt`` (or ``systems``), less
    those named like a reference file (human translations) unless ``include_human_systems``; the reference used is
    never scored against itself.  ``human``: the ``<lp>.<human>.seg.score`` file (None = no human scores)."""
    d = Path(root) / testset
    refs_dir = d / "references"
    ref_names = {f.name.split(".")[-2] for f in refs_dir.glob(f"{lp}.*.txt")} if refs_dir.is_dir() else set()
    out_dir = d / "system-outputs" / lp
    if not out_dir.is_dir():
        raise MTDataError(f"{out_dir}: not found (mt-metrics-eval layout: <root>/<testset>/system-outputs/<lp>/)")
    files = {f.stem: f for f in sorted(out_dir.glob("*.txt"))}
    if systems is not None:
        unknown = [x for x in systems if x not in files]
        if unknown:
            raise MTDataError(f"{out_dir}: no output for system(s) {unknown}")
        files = {k: files[k] for k in systems}
    files = {k: v for k, v in files.items() if k != ref and (include_human_systems or k not in ref_names)}
    hum = d / "human-scores" / f"{lp}.{human}.seg.score" if human else None
    if hum is not None and not hum.is_file():
        raise MTDataError(f"{hum}: not found")
    return load_wmt(d / "sources" / f"{lp}.txt", [refs_dir / f"{lp}.{ref}.txt"], files, hum)


def human_coverage(df: pd.DataFrame) -> dict:
    """How many (segment, system) cells have a human score, and per system how many lack one."""
    h = pd.to_numeric(df["human"], errors="coerce")
    miss = df.assign(_m=h.isna()).groupby("system", sort=False)["_m"].sum()
    return {"cells": int(h.notna().sum()), "of_cells": int(len(df)),
            "missing_by_system": {str(k): int(v) for k, v in miss.items() if v}}


def validate(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Checks every language-pair table passes: non-empty, text fields are strings, (id, system) unique, every
    system covers the same segments, src and refs identical across the systems of a segment."""
    if len(df) == 0:
        raise MTDataError(f"{where}: no rows")
    for col in ("src", "hyp"):
        bad = [i for i, v in enumerate(df[col]) if not isinstance(v, str)]
        if bad:
            raise MTDataError(f"{where}: row {bad[0]}: {col!r} is not text ({df[col].iloc[bad[0]]!r})")
    for i, refs in enumerate(df["refs"]):
        if not refs or any((not isinstance(r, str)) or r.strip() == "" for r in refs):
            raise MTDataError(f"{where}: row {i}: empty reference")
    dup = df.duplicated(["id", "system"])
    if dup.any():
        r = df[dup].iloc[0]
        raise MTDataError(f"{where}: segment {r['id']!r} appears twice for system {r['system']!r}")
    ids = list(dict.fromkeys(df["id"]))
    for system, g in df.groupby("system", sort=False):
        if set(g["id"]) != set(ids):
            miss = sorted(set(ids) - set(g["id"]))[:3]
            raise MTDataError(f"{where}: system {system!r} lacks segment(s) {miss} (every system must cover every "
                              f"segment)")
    first = df.drop_duplicates("id").set_index("id")
    for col in ("src", "refs"):
        ref_val = df["id"].map(first[col].map(lambda v, col=col: json.dumps(list(v) if col == "refs" else v)))
        this = df[col].map(lambda v, col=col: json.dumps(list(v) if col == "refs" else v))
        if (ref_val != this).any():
            r = df[ref_val != this].iloc[0]
            raise MTDataError(f"{where}: segment {r['id']!r}: {col!r} differs between systems")
    human = pd.to_numeric(df["human"], errors="coerce") if "human" in df.columns else float("nan")
    out = df.assign(human=human)[COLUMNS].reset_index(drop=True)
    out["refs"] = out["refs"].map(list)
    return out


def load_pair(spec: dict) -> pd.DataFrame:
    """One language pair from its config block (``format: table`` with ``path``, or ``format: wmt``)."""
    fmt = spec.get("format", "table")
    if fmt == "table":
        return load_table(spec["path"])
    if fmt == "wmt":
        return load_wmt(spec["source"], list(spec["references"]), dict(spec["systems"]), spec.get("human"))
    if fmt == "mtme":
        return load_mtme(spec["root"], spec["testset"], spec["lp"], spec.get("ref", "refA"), spec.get("human", "mqm"),
                         spec.get("systems"))
    raise MTDataError(f"unknown MT input format {fmt!r} (table, wmt, mtme)")


def systems_of(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["system"]))


def segments_of(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["id"]))


def has_human(df: pd.DataFrame) -> bool:
    """Any human score at all (partial scores count: the meta-evaluation filters missing cells one by one)."""
    return bool(pd.to_numeric(df["human"], errors="coerce").notna().any())
