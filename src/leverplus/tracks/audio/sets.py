"""Audio-caption evaluation sets -> one manifest, ``data/audio/{dataset}/eval.jsonl``: one row per clip with
``id``, ``audio`` (absolute path of the clip) and ``references`` (list of caption strings).

Sources
-------
``demo``      AUDIO-MODEL's generator (:func:`leverplus.tracks.audio.demo.generate_demo`); the val split is evaluated.
``secap``     the public SECap test set in its published layout (github.com/thuhcsi/SECap): a repository root
              holding ``dataset/wav.scp`` (Kaldi-style ``<fid> <path>`` per line), ``dataset/fid2captions.json``
              (``{fid: caption | [captions]}``) and ``dataset/wav/<fid>.wav``. The wav.scp lines read
              ``<fid> dataset/wav/<fid>.wav``: relative to the REPOSITORY ROOT, as SECap's own dataloader
              (``dataloader/dataloader.py``) joins them, not to wav.scp's folder. The root is ``path`` (a local
              checkout) or an archive fetched by URL with a checksum (``url`` + ``sha256``, extracted under
              ``data/raw/audio/<dataset>``; ``leverplus.core.download``), plus ``subdir`` inside it (a GitHub
              archive's ``SECap-main``). ``relative_to: wav_scp`` reads relative paths against wav.scp's folder
              instead (other Kaldi sets). Its audio has no license file, so it is only ever read in place, never
              copied into the repository.
``manifest``  any other set: a JSONL or parquet file with ``id``, ``audio`` (relative to the manifest's directory
              or absolute) and ``references`` (list of strings, or one string).

Every problem stops with :class:`AudioSetError` naming the file and what is wrong with it, before anything is
written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from leverplus.core.io import atomic_write


SECAP_WAV_SCP = "dataset/wav.scp"  # SECap's published layout, relative to its repository root
SECAP_CAPTIONS = "dataset/fid2captions.json"


class AudioSetError(ValueError):
    """An audio set's files cannot be used as given (the message names the file and the problem)."""


def _refs(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if hasattr(value, "tolist") and not isinstance(value, list):
        value = value.tolist()
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise AudioSetError(f"{where}: references must be a non-empty list of strings (or one string), got {value!r}")
    refs = [r.strip() for r in value]
    if any(not r for r in refs):
        raise AudioSetError(f"{where}: empty reference caption")
    return refs


def _resolve(audio: str, base: Path, where: str, check: bool) -> str:
    if not isinstance(audio, str) or not audio.strip():
        raise AudioSetError(f"{where}: audio path missing")
    p = Path(audio)
    p = p if p.is_absolute() else base / p
    if check and not p.is_file():
        raise AudioSetError(f"{where}: audio file not found: {p}")
    return str(p.resolve())


def _finish(rows: list[dict], source: Path) -> pd.DataFrame:
    if not rows:
        raise AudioSetError(f"{source}: no clips")
    ids = [r["id"] for r in rows]
    dup = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if dup:
        raise AudioSetError(f"{source}: duplicate id(s) {dup[:5]}")
    return pd.DataFrame(rows, columns=["id", "audio", "references"])


def read_wav_scp(path: str | os.PathLike, *, check_files: bool = True,
                 relative_to: str | os.PathLike | None = None) -> dict[str, str]:
    """Kaldi ``wav.scp``: ``<fid> <path>`` per line (blank lines and ``#`` comments skipped; a UTF-8 byte-order
    mark is removed, never kept in the first fid). Relative paths are joined with ``relative_to`` (SECap: its
    repository root) or, when None, with wav.scp's folder. Piped commands (``… |``) are refused: this loader reads
    files, it does not run shell commands."""
    path = Path(path)
    if not path.is_file():
        raise AudioSetError(f"{path}: wav.scp not found")
    base = path.parent if relative_to is None else Path(relative_to)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AudioSetError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise AudioSetError(f"{path}:{n}: expected '<fid> <wav path>', got {line!r}")
        fid, wav = parts[0], parts[1].strip()
        if wav.endswith("|"):
            raise AudioSetError(f"{path}:{n}: piped commands are not supported ({wav!r}); point to a wav file")
        if fid in out:
            raise AudioSetError(f"{path}:{n}: duplicate fid {fid!r}")
        try:
            out[fid] = _resolve(wav, base, f"{path}:{n}", check_files)
        except AudioSetError as exc:
            other = path.parent / wav
            if not Path(wav).is_absolute() and base != path.parent and other.is_file():
                raise AudioSetError(f"{exc} (relative paths are read against {base}; the file exists relative to "
                                    f"wav.scp's folder: set relative_to: wav_scp)") from None
            raise

    if not out:
        raise AudioSetError(f"{path}: no entries")
    return out


def load_secap(wav_scp: str | os.PathLike, captions: str | os.PathLike, *, check_files: bool = True,
               relative_to: str | os.PathLike | None = None) -> pd.DataFrame:
    """SECap test set -> manifest frame (ids in wav.scp order). Every wav.scp fid needs a caption. Relative wav
    paths are joined with ``relative_to`` (SECap's published set: its repository root), else wav.scp's folder."""
    wavs = read_wav_scp(wav_scp, check_files=check_files, relative_to=relative_to)
    captions = Path(captions)
    if not captions.is_file():
        raise AudioSetError(f"{captions}: fid2captions.json not found")
    try:
        caps = json.loads(captions.read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AudioSetError(f"{captions}: not valid JSON ({exc})") from None
    if not isinstance(caps, dict):
        raise AudioSetError(f"{captions}: expected a JSON object {{fid: caption}}, got {type(caps).__name__}")
    missing = [f for f in wavs if f not in caps]
    if missing:
        raise AudioSetError(f"{captions}: no caption for {len(missing)} fid(s) of {wav_scp}, e.g. {missing[:3]}")
    rows = [{"id": f, "audio": p, "references": _refs(caps[f], f"{captions} fid {f!r}")} for f, p in wavs.items()]
    return _finish(rows, Path(wav_scp))


def load_manifest(path: str | os.PathLike, *, check_files: bool = True) -> pd.DataFrame:
    """A JSONL/parquet manifest with ``id``, ``audio``, ``references`` -> manifest frame with absolute paths."""
    from leverplus.metrics.io import MetricsInputError, read_table

    path = Path(path)
    try:
        df = read_table(path)
    except MetricsInputError as exc:
        raise AudioSetError(str(exc)) from None
    missing = [c for c in ("id", "audio", "references") if c not in df.columns]
    if missing:
        raise AudioSetError(f"{path}: missing column(s) {missing}; a manifest needs id, audio, references")
    rows = []
    for i, r in enumerate(df.itertuples(index=False)):
        where = f"{path} row {i + 1} (id {r.id!r})"
        rows.append({"id": str(r.id), "audio": _resolve(r.audio, path.parent, where, check_files),
                     "references": _refs(r.references, where)})
    return _finish(rows, path)


def write_manifest(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Atomic JSONL (UTF-8, one object per line)."""
    with atomic_write(path) as fh:
        for r in df.itertuples(index=False):
            fh.write(json.dumps({"id": r.id, "audio": r.audio, "references": list(r.references)}, ensure_ascii=False))
            fh.write("\n")


def _secap_files(spec: Mapping[str, Any], raw_root: Path) -> tuple[Path, Path, Path | None]:
    """(wav.scp, fid2captions.json, the folder relative wav paths are joined with: the SECap root, or None for
    wav.scp's own folder)."""
    if spec.get("path"):
        root = Path(spec["path"]).expanduser()
        if not root.is_dir():
            raise AudioSetError(f"{root}: SECap directory not found (audio.datasets.<name>.path)")
    elif spec.get("url"):
        from leverplus.core.download import fetch_resources

        fetch_resources([{"url": spec["url"], "sha256": spec.get("sha256"), "extract": True}], raw_root)
        root = raw_root
    else:
        raise AudioSetError("SECap needs `path` (a local directory) or `url` (+ `sha256`)")
    root = root / spec.get("subdir", "")
    relative_to = spec.get("relative_to", "root")
    if relative_to not in ("root", "wav_scp"):
        raise AudioSetError(f"secap relative_to must be 'root' or 'wav_scp', got {relative_to!r}")
    return (root / spec.get("wav_scp", SECAP_WAV_SCP), root / spec.get("captions", SECAP_CAPTIONS),
            root if relative_to == "root" else None)


def prepare_audio_set(spec: Mapping[str, Any], out_manifest: str | os.PathLike, *, raw_root: str | os.PathLike) -> dict:
    """Materialise the evaluation manifest of one dataset spec (``audio.datasets.<name>``)."""
    out_manifest = Path(out_manifest)
    source = spec["source"]
    if source == "demo":
        from leverplus.tracks.audio.demo import generate_demo

        demo_dir = out_manifest.parent / "demo"
        counts = generate_demo(demo_dir, seed=spec["seed"], n_train=spec["n_train"], n_val=spec["n_val"])
        df = load_manifest(demo_dir / "val.jsonl")
    elif source == "secap":
        wav_scp, caps, rel = _secap_files(spec, Path(raw_root))
        df = load_secap(wav_scp, caps, relative_to=rel)
        counts = {"test": len(df)}
    elif source == "manifest":
        df = load_manifest(spec["manifest"])
        counts = {"eval": len(df)}
    else:
        raise AudioSetError(f"unknown audio dataset source {source!r} (demo, secap, manifest)")
    if spec.get("limit"):
        df = df.iloc[: int(spec["limit"])].reset_index(drop=True)
    write_manifest(out_manifest, df)
    return {"source": source, "n_eval": len(df), "counts": counts}
