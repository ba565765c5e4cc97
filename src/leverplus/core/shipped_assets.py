"""The one shipped-asset helper of every track that ships built demo models (VQA demo, audio, consistency,
sentiment): each asset directory holds one folder per model and a ``BUILD.json`` whose ``models.<name>.sha256``
maps every shipped file to its sha256; the rest of the record (command, settings, versions, evaluation, timings)
documents the build.

* :func:`file_digests` -- ``{file: sha256}`` of a model folder (what ``BUILD.json`` records);
* :func:`write_build` -- ``BUILD.json``, written atomically (sorted keys, indent 2);
* :func:`shipped_digest` -- a short digest of the recorded sha256 values only, which workflow rules take as a
  parameter so that new weights rerun a track while a bit-identical rebuild (different ``train_seconds``,
  ``build_seconds``, evaluation or versions) does not;
* :func:`verify` / :func:`diff_digests` -- the files whose sha256 differ between a rebuild and the shipped record;
* :func:`versions` -- the package versions a build records.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
from pathlib import Path


def file_digests(model_dir: str | Path, *, drop_dirs: bool = False) -> dict[str, str]:
    """``{file name: sha256}`` of the files directly in ``model_dir`` (sorted); ``drop_dirs`` first deletes its
    sub-folders (training leftovers such as checkpoints), so that what is hashed is what ships."""
    from leverplus.core.download import file_digest

    model_dir = Path(model_dir)
    if drop_dirs:
        for p in list(model_dir.iterdir()):
            if p.is_dir():
                shutil.rmtree(p)
    return {p.name: file_digest(p) for p in sorted(model_dir.iterdir()) if p.is_file()}


def read_build(assets: str | Path) -> dict:
    path = Path(assets) / "BUILD.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the build record ({err})") from None
    if not isinstance(record.get("models"), dict) or not all(
            isinstance(m, dict) and isinstance(m.get("sha256"), dict) for m in record["models"].values()):
        raise ValueError(f"{path}: expected 'models': {{name: {{'sha256': {{file: digest}}}}}}")
    return record


def write_build(out: str | Path, record: dict, *, ensure_ascii: bool = False) -> Path:
    """Write ``out/BUILD.json`` atomically (sorted keys, indent 2, trailing newline)."""
    from leverplus.core.io import atomic_write

    path = Path(out) / "BUILD.json"
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=ensure_ascii) + "\n")
    return path


def shipped_digest(assets: str | Path) -> str:
    """16 hex digits over the sha256 values recorded in ``assets/BUILD.json`` ("absent" without one): it changes
    when the shipped files change, not when a rebuild reproduces them (timings, evaluation, versions and every
    other field of the record are left out)."""
    if not (Path(assets) / "BUILD.json").is_file():
        return "absent"
    files = {name: rec["sha256"] for name, rec in read_build(assets)["models"].items()}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def diff_digests(want: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> list[str]:
    """``model/file`` for every file whose sha256 differs, is missing or is extra, over ``{model: {file: sha}}``."""
    return sorted(f"{m}/{f}" for m in sorted(set(want) | set(got))
                  for f in set(want.get(m, {})) | set(got.get(m, {}))
                  if want.get(m, {}).get(f) != got.get(m, {}).get(f))


def verify(built: str | Path, shipped: str | Path) -> list[str]:
    """Files whose sha256 differs between a rebuild's BUILD.json and the shipped one (empty: bit-identical)."""
    want = {m: r["sha256"] for m, r in read_build(shipped)["models"].items()}
    got = {m: r["sha256"] for m, r in read_build(built)["models"].items()}
    return diff_digests(want, got)


def versions(*modules: str, **named: str) -> dict[str, str]:
    """``{"python": ..., module: module.__version__}`` for the given import names; ``named`` maps a record key to an
    import name (``pillow="PIL"``)."""
    out = {"python": sys.version.split()[0]}
    for key, mod in [(m, m) for m in modules] + list(named.items()):
        out[key] = importlib.import_module(mod).__version__
    return out
