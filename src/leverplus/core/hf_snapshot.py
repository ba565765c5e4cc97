"""Materialise a model directory (Hugging Face layout) under ``data/models/``.

Two sources (see :data:`MODEL_SPEC_SCHEMA`):

``{"source": "hf", "repo_id": "org/name", "revision": "<commit|branch|tag>",
"allow_patterns": [...], "ignore_patterns": [...], "endpoint": "https://..."}``
    ``huggingface_hub.snapshot_download`` into a hidden staging directory next
    to ``dest`` (``.<name>.download``; re-runs resume there), checked for
    ``config.json`` and then renamed to ``dest``.  The token comes only from
    the ``HF_TOKEN`` environment variable (``token=False`` otherwise, so a
    token cached by ``hf auth login`` is never picked up implicitly) and is
    never logged.  The endpoint is ``spec["endpoint"]``, else ``$HF_ENDPOINT``,
    else the library default.  Pin ``revision`` to a commit hash for
    reproducibility; a branch name only triggers a warning.

``{"source": "local", "path": "/models/foo", "link": "symlink" | "copy"}``
    ``path`` must be a directory containing a valid ``config.json``.  By
    default ``dest`` becomes a *symlink* to the absolute, resolved ``path``
    (no disk cost; the model must stay where it is).  ``link: "copy"`` copies
    the directory instead (staging dir + rename).

A ``.leverplus-model.json`` marker (the spec) is written inside materialised
(downloaded / copied) directories, so re-running with the same spec is a
no-op and a changed spec replaces the directory.  ``dest`` is only ever
replaced when it is a symlink or carries that marker; anything else raises
:class:`ModelMaterializationError` instead of deleting unknown data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from leverplus.core.io import canonical_json, read_json, write_json

__all__ = [
    "MODEL_SPEC_SCHEMA",
    "MARKER_NAME",
    "ModelMaterializationError",
    "materialize_model",
    "validate_model_dir",
]

log = logging.getLogger(__name__)

MARKER_NAME = ".leverplus-model.json"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")

MODEL_SPEC_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "description": "Download a snapshot from the Hugging Face Hub (token: env HF_TOKEN only).",
            "properties": {
                "source": {"const": "hf"},
                "repo_id": {"type": "string", "pattern": r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$"},
                "revision": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Commit hash (recommended), branch or tag.",
                },
                "allow_patterns": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "ignore_patterns": {"type": "array", "items": {"type": "string"}},
                "endpoint": {"type": "string", "pattern": "^https?://"},
                "layout": {"enum": ["hf", "checkpoint"], "description": "checkpoint: weights-only repo"},
            },
            "required": ["source", "repo_id"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "Use a model directory that already exists locally (HF layout, config.json).",
            "properties": {
                "source": {"const": "local"},
                "path": {"type": "string", "minLength": 1},
                "link": {"enum": ["symlink", "copy"], "default": "symlink"},
                "layout": {"enum": ["hf", "checkpoint"], "description": "checkpoint: weights without config.json"},
            },
            "required": ["source", "path"],
            "additionalProperties": False,
        },
    ]
}


class ModelMaterializationError(RuntimeError):
    """The model could not be downloaded / linked, or is not an HF-layout directory."""


def validate_model_dir(path: str | os.PathLike[str], layout: str = "hf") -> Path:
    """Check that ``path`` is a directory with a parseable ``config.json`` (layout ``hf``) or with weight files
    anywhere below it (layout ``checkpoint``, e.g. an OpenFlamingo checkpoint); returns it."""
    p = Path(path)
    if not p.exists():
        raise ModelMaterializationError(f"model directory {p} does not exist")
    if not p.is_dir():
        raise ModelMaterializationError(f"model path {p} is not a directory")
    if layout == "checkpoint":
        if not any(next(p.rglob(pattern), None) for pattern in ("*.safetensors", "*.pt", "*.bin")):
            raise ModelMaterializationError(f"{p} holds no *.safetensors / *.pt / *.bin weight files")
        return p
    cfg = p / "config.json"
    if not cfg.is_file():
        raise ModelMaterializationError(
            f"{p} is not a Hugging Face model directory: config.json is missing"
        )
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelMaterializationError(f"{cfg} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelMaterializationError(f"{cfg} must contain a JSON object")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")) and not any(p.glob("*.pt")):
        log.warning("%s has no *.safetensors / *.bin weight files (config-only model?)", p)
    return p


_KNOWN_KEYS = frozenset(k for branch in MODEL_SPEC_SCHEMA["oneOf"] for k in branch["properties"])
_KEYS_BY_SOURCE = {
    branch["properties"]["source"]["const"]: frozenset(branch["properties"]) for branch in MODEL_SPEC_SCHEMA["oneOf"]
}


def _source_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The keys this module reads, validated; foreign keys of the project's model entry
    (``adapter``, ``dtype``, ``batch_size``, ...) and keys of the other source (the project
    schema's ``revision: main`` default on a ``local`` model) are dropped so they neither fail
    validation nor invalidate an existing materialisation."""
    keys = _KEYS_BY_SOURCE.get(spec.get("source"), _KNOWN_KEYS)
    relevant = {k: v for k, v in spec.items() if k in keys}
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is a project dependency
        return relevant
    try:
        jsonschema.validate(relevant, MODEL_SPEC_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise ModelMaterializationError(f"invalid model spec {relevant!r}: {exc.message}") from None
    return relevant


def _read_marker(dest: Path) -> dict[str, Any] | None:
    marker = dest / MARKER_NAME
    if dest.is_symlink() or not marker.is_file():
        return None
    try:
        data = read_json(marker)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_replaceable(dest: Path) -> None:
    """Remove ``dest`` if it is ours to replace (symlink or marked directory)."""
    if dest.is_symlink():
        dest.unlink()
    elif dest.is_dir():
        if _read_marker(dest) is None:
            raise ModelMaterializationError(
                f"{dest} exists and was not created by materialize_model (no {MARKER_NAME}); "
                "refusing to replace it - remove it manually"
            )
        shutil.rmtree(dest)
    elif dest.exists():
        raise ModelMaterializationError(f"{dest} exists and is not a directory; refusing to replace it")


def _install_dir(staging: Path, dest: Path, spec: Mapping[str, Any]) -> None:
    write_json(staging / MARKER_NAME, {"spec": dict(spec)})
    if dest.exists() or dest.is_symlink():
        _remove_replaceable(dest)
    os.replace(staging, dest)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _hub_error_message(exc: BaseException) -> str:
    """Walk the exception chain for the most specific hub / HTTP error."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    try:
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:  # pragma: no cover
        HfHubHTTPError = ()  # type: ignore[assignment]
    def summary(e: BaseException) -> str:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        return " ".join(lines[:2])[:400]

    for e in chain:
        if HfHubHTTPError and isinstance(e, HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", None)
            text = summary(e) or type(e).__name__
            return f"{type(e).__name__} (HTTP {status}): {text}" if status else f"{type(e).__name__}: {text}"
    text = summary(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _materialize_hf(spec: Mapping[str, Any], dest: Path) -> Path:
    from huggingface_hub import snapshot_download

    repo_id = spec["repo_id"]
    revision = spec.get("revision") or "main"
    if not _COMMIT_RE.match(revision):
        log.warning(
            "model %s: revision %r is not a commit hash; the snapshot may change upstream", repo_id, revision
        )
    endpoint = spec.get("endpoint") or os.environ.get("HF_ENDPOINT") or None
    token = os.environ.get("HF_TOKEN") or None

    staging = dest.with_name(f".{dest.name}.download")
    if staging.exists() and _read_marker(staging) is not None:
        shutil.rmtree(staging)  # leftover of a completed-but-not-renamed run with maybe another spec
    staging.parent.mkdir(parents=True, exist_ok=True)
    where = endpoint or "the default Hugging Face endpoint"
    log.info(
        "downloading model %s@%s from %s (token: %s)", repo_id, revision, where, "HF_TOKEN" if token else "none"
    )
    try:
        snapshot_download(
            repo_id,
            revision=revision,
            local_dir=staging,
            allow_patterns=list(spec["allow_patterns"]) if spec.get("allow_patterns") else None,
            ignore_patterns=list(spec["ignore_patterns"]) if spec.get("ignore_patterns") else None,
            token=token if token else False,
            endpoint=endpoint,
        )
    except Exception as exc:  # noqa: BLE001 - re-raised with context below
        reason = _scrub(_hub_error_message(exc), token)
        hint = ""
        status = None
        cur: BaseException | None = exc
        while cur is not None and status is None:
            status = getattr(getattr(cur, "response", None), "status_code", None)
            cur = cur.__cause__ or cur.__context__
        if status in (401, 403) or "RepositoryNotFound" in reason or "GatedRepo" in reason:
            hint = " (private or gated repo? set the HF_TOKEN environment variable)"
        raise ModelMaterializationError(
            f"cannot download model {repo_id!r} at revision {revision!r} from {where}: {reason}{hint}"
        ) from None
    try:
        if spec.get("layout", "hf") == "hf":  # "checkpoint": a bare weights repo (OpenFlamingo), no config.json
            validate_model_dir(staging)
    except ModelMaterializationError as exc:
        raise ModelMaterializationError(
            f"snapshot of {repo_id}@{revision} is not a usable model directory ({exc}); "
            "check allow_patterns / ignore_patterns"
        ) from None
    _install_dir(staging, dest, spec)
    return dest


def _materialize_local(spec: Mapping[str, Any], dest: Path) -> Path:
    src = validate_model_dir(Path(spec["path"]).expanduser(), spec.get("layout", "hf")).resolve()
    link = spec.get("link", "symlink")
    if dest.resolve() == src and not dest.is_symlink():
        raise ModelMaterializationError(f"model source {src} and destination {dest} are the same directory")
    if link == "symlink":
        if dest.is_symlink() and Path(os.readlink(dest)) == src:
            log.info("%s already links to %s", dest, src)
            return dest
        if dest.exists() or dest.is_symlink():
            _remove_replaceable(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = dest.with_name(f".{dest.name}.link-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        os.symlink(src, tmp_link, target_is_directory=True)
        os.replace(tmp_link, dest)
        log.info("linked %s -> %s", dest, src)
        return dest
    # copy
    staging = dest.with_name(f".{dest.name}.copy-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    try:
        shutil.copytree(src, staging, symlinks=False)
        _install_dir(staging, dest, spec)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("copied %s -> %s", src, dest)
    return dest


def materialize_model(spec: Mapping[str, Any], dest: str | os.PathLike[str]) -> Path:
    """Make ``dest`` an HF-layout model directory as described by ``spec``; returns ``Path(dest)``.

    Keys outside :data:`MODEL_SPEC_SCHEMA` (e.g. the project's ``adapter``,
    ``dtype``) are ignored.  Idempotent: a ``dest`` already materialised from an
    identical spec is left alone.
    Raises :class:`ModelMaterializationError` with a readable message on any failure.
    """
    spec = _source_spec(spec)
    dest_path = Path(dest)
    existing = _read_marker(dest_path)
    if existing is not None and canonical_json(existing.get("spec")) == canonical_json(spec):
        if (dest_path / "config.json").is_file():
            log.info("%s is already materialised from the same spec; skipping", dest_path)
            return dest_path
    if spec["source"] == "hf":
        return _materialize_hf(spec, dest_path)
    return _materialize_local(spec, dest_path)
