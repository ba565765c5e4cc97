"""Resumable, checksummed HTTP downloads and safe archive extraction.

Nothing here touches the network at import time; call these functions only
from rule bodies / scripts, never while the Snakemake DAG is being built.

Download protocol (:func:`download_url`)
----------------------------------------
* Bytes are streamed to ``<dest>.part``; the final ``<dest>`` only appears via
  an atomic ``os.replace`` after the transfer is complete and verified.
* If ``<dest>.part`` exists and ``resume=True``, the request carries
  ``Range: bytes=<size>-``.  A ``206`` whose ``Content-Range`` starts at that
  offset is appended; a ``200`` (server ignores ``Range``) truncates the part
  file and restarts from byte 0; a ``416`` whose total equals the part size
  means the part is already complete.
* Transient failures (connection errors, timeouts, truncated bodies, HTTP 408,
  429 and 5xx) are retried ``retries`` times with exponential backoff; every
  retry resumes from what is already in ``.part``.
* Checksums (``sha256`` and/or ``md5``) are computed while streaming and
  checked after completion.  On a mismatch the bytes are moved to
  ``<dest>.bad`` (kept for inspection, overwritten by the next failure), no
  ``.part`` is left behind -- so a re-run starts from scratch instead of
  "resuming" a corrupt file -- and :class:`ChecksumError` is raised.
* If ``<dest>`` already exists it is trusted when no checksum is given
  (it can only exist after a complete transfer) and verified otherwise; a
  mismatching existing file is re-downloaded.
* A ``<dest>.lock`` file (``fcntl.flock``) serialises concurrent downloads of
  the same destination by several processes.
* URLs are logged without their query string, and request headers (which may
  carry credentials) are never logged.

Trust on first use (:func:`fetch_resources`)
--------------------------------------------
Official dataset files do not publish checksums we could verify offline.  When
a resource has neither ``sha256`` nor ``md5``, :func:`fetch_resources` records
the sha256 it computed (plus size and URL) in ``<root>/MANIFEST.json``; later
runs verify the file against that record.  Delete the entry (or the manifest)
to accept a new upstream version deliberately.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

from leverplus.core.io import read_json, write_json

__all__ = [
    "ChecksumError",
    "DownloadError",
    "ExtractionError",
    "MANIFEST_NAME",
    "download_url",
    "extract_archive",
    "fetch_resources",
    "file_digest",
    "redact_url",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20  # file reads / copies
# Network reads: urllib3 discards a partially filled read buffer when the connection
# drops, so smaller reads bound what an interruption loses (and must re-fetch).
STREAM_CHUNK_SIZE = 1 << 16
MANIFEST_NAME = "MANIFEST.json"
_RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_CONTENT_RANGE_UNSAT_RE = re.compile(r"^bytes\s+\*/(\d+)$")


class DownloadError(RuntimeError):
    """A download failed (HTTP error, too many retries, protocol problem)."""


class ChecksumError(DownloadError):
    """Downloaded (or existing) bytes do not match the expected digest."""

    def __init__(self, path: Path, algorithm: str, expected: str, actual: str, kept_at: Path | None):
        self.path = Path(path)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        self.kept_at = kept_at
        where = f"; the downloaded bytes were kept at {kept_at}" if kept_at else ""
        super().__init__(
            f"{algorithm} mismatch for {self.path}: expected {expected}, got {actual}{where}"
        )


class ExtractionError(RuntimeError):
    """An archive could not be extracted safely."""


class _Transient(Exception):
    """Internal: a failure worth retrying."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``scheme://host/path`` of ``url``: drops user info, query string and fragment (may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, streamed in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()


def _normalise_digest(value: str | None, algorithm: str) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    size = hashlib.new(algorithm).digest_size * 2
    if not re.fullmatch(rf"[0-9a-f]{{{size}}}", v):
        raise ValueError(f"{algorithm} must be {size} hex characters, got {value!r}")
    return v


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        leave=True,
    )


class _Hashers:
    def __init__(self, algorithms: Iterable[str]):
        self.algorithms = sorted(set(algorithms))
        self.reset()

    def reset(self) -> None:
        self._h = {a: hashlib.new(a) for a in self.algorithms}

    def update(self, data: bytes) -> None:
        for h in self._h.values():
            h.update(data)

    def feed_file(self, path: Path) -> None:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK_SIZE), b""):
                self.update(chunk)

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self._h.items()}


def _verify_existing(path: Path, expected: Mapping[str, str]) -> dict[str, str] | None:
    """Digests of ``path`` if every expected digest matches, else ``None``."""
    hashers = _Hashers(set(expected) | {"sha256"})
    hashers.feed_file(path)
    digests = hashers.hexdigests()
    if all(digests[a] == v for a, v in expected.items()):
        return digests
    return None


# --------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------


def _attempt(
    session: Any,
    url: str,
    part: Path,
    hashers: _Hashers,
    *,
    resume: bool,
    timeout: float,
    headers: Mapping[str, str],
    progress: bool,
    desc: str,
) -> None:
    """One HTTP transfer into ``part``; raises ``_Transient`` for retryable problems."""
    import requests

    offset = part.stat().st_size if (resume and part.exists()) else 0
    if offset == 0 and part.exists():
        part.unlink()
    req_headers = dict(headers)
    req_headers["Accept-Encoding"] = "identity"  # byte offsets must refer to the raw file
    if offset:
        req_headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=req_headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"connection failed: {type(exc).__name__}") from exc

    with contextlib.closing(resp):
        status = resp.status_code
        if status == 416 and offset:
            m = _CONTENT_RANGE_UNSAT_RE.match(resp.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                log.info("%s: partial file is already complete (%d bytes)", desc, offset)
                hashers.reset()
                hashers.feed_file(part)
                return
            log.warning("%s: server rejected resume at byte %d; restarting", desc, offset)
            part.unlink()
            raise _Transient("range not satisfiable; restarting from scratch")
        if status in _RETRYABLE_STATUS:
            raise _Transient(f"HTTP {status}")
        if status not in (200, 206):
            raise DownloadError(f"HTTP {status} {resp.reason or ''} for {redact_url(url)}".rstrip())

        if status == 206:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
            if not offset or not m or int(m.group(1)) != offset:
                # A 206 we did not ask for, or for the wrong offset: do not trust it.
                if part.exists():
                    part.unlink()
                raise _Transient(
                    f"unexpected partial response (Content-Range {resp.headers.get('Content-Range')!r})"
                )
            total = None if m.group(3) == "*" else int(m.group(3))
            expected_body = int(m.group(2)) - offset + 1
            # resume: the hashers must reflect the bytes already on disk
            hashers.reset()
            hashers.feed_file(part)
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the Range request; restarting from byte 0", desc)
            offset = 0
            hashers.reset()
            length = resp.headers.get("Content-Length")
            expected_body = int(length) if length and length.isdigit() else None
            total = expected_body
            mode = "wb"

        received = 0
        bar = _progress_bar(total, offset, desc, progress)
        try:
            with open(part, mode) as fh:
                try:
                    for chunk in resp.iter_content(chunk_size=STREAM_CHUNK_SIZE):
                        if not chunk:
                            continue
                        fh.write(chunk)
                        hashers.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                    fh.flush()
                    raise _Transient(f"transfer interrupted after {offset + received} bytes") from exc
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            bar.close()
        if expected_body is not None and received != expected_body:
            raise _Transient(f"incomplete body: got {received} of {expected_body} bytes")


def _download(
    url: str,
    dest: Path,
    *,
    expected: Mapping[str, str],
    resume: bool,
    timeout: float,
    retries: int,
    progress: bool,
    headers: Mapping[str, str] | None,
    backoff: float,
) -> dict[str, str]:
    """Download ``url`` to ``dest`` (locked); returns the computed digests (always includes sha256)."""
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    bad = dest.with_name(dest.name + ".bad")
    shown = redact_url(url)

    with _file_lock(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            if not expected:
                log.info("%s exists; skipping download of %s", dest, shown)
                return {}
            digests = _verify_existing(dest, expected)
            if digests is not None:
                log.info("%s exists and matches its checksum; skipping", dest)
                return digests
            log.warning("%s exists but does not match its checksum; downloading it again", dest)

        if not resume and part.exists():
            part.unlink()
        hashers = _Hashers(set(expected) | {"sha256"})
        log.info("downloading %s -> %s", shown, dest)
        with requests.Session() as session:
            attempt = 0
            while True:
                try:
                    _attempt(
                        session,
                        url,
                        part,
                        hashers,
                        resume=resume,
                        timeout=timeout,
                        headers=headers or {},
                        progress=progress,
                        desc=dest.name,
                    )
                    break
                except _Transient as exc:
                    attempt += 1
                    if attempt > retries:
                        raise DownloadError(
                            f"giving up on {shown} after {attempt} attempt(s): {exc}"
                            + (f"; partial data kept in {part}" if part.exists() else "")
                        ) from exc
                    delay = min(backoff * (2 ** (attempt - 1)), 60.0)
                    log.warning(
                        "%s: %s; retry %d/%d in %.1fs", shown, exc, attempt, retries, delay
                    )
                    if not resume and part.exists():
                        part.unlink()
                    time.sleep(delay)

        digests = hashers.hexdigests()
        for algorithm, want in expected.items():
            if digests[algorithm] != want:
                os.replace(part, bad)
                raise ChecksumError(dest, algorithm, want, digests[algorithm], kept_at=bad)
        os.replace(part, dest)
        with contextlib.suppress(FileNotFoundError):
            bad.unlink()
        return digests


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    md5: str | None = None,
    resume: bool = True,
    timeout: float = 60,
    retries: int = 3,
    progress: bool = True,
    headers: Mapping[str, str] | None = None,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming and verifying (see module docstring).

    ``retries`` is the number of *additional* attempts after the first one.
    ``headers`` are sent with every request and never logged.
    Returns ``Path(dest)``.
    """
    expected = {
        k: v
        for k, v in (("sha256", _normalise_digest(sha256, "sha256")), ("md5", _normalise_digest(md5, "md5")))
        if v is not None
    }
    _download(
        url,
        Path(dest),
        expected=expected,
        resume=resume,
        timeout=timeout,
        retries=retries,
        progress=progress,
        headers=headers,
        backoff=backoff,
    )
    return Path(dest)


# --------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------


def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    raise ExtractionError(f"unsupported archive type: {path} (expected .zip, .tar, .tar.gz, .tgz)")


def _safe_member_path(name: str, archive: Path) -> PurePosixPath:
    """Validate an archive member name; returns its normalised relative path."""
    cleaned = name.replace("\\", "/")
    if cleaned.startswith("/") or re.match(r"^[A-Za-z]:", cleaned):
        raise ExtractionError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    norm = posixpath.normpath(cleaned)
    if norm == ".." or norm.startswith("../"):
        raise ExtractionError(f"refusing to extract {archive}: member {name!r} escapes the target directory")
    return PurePosixPath(norm)


def _marker_path(archive: Path, dest_dir: Path) -> Path:
    return dest_dir / f".extracted-{archive.name}.json"


def _archive_fingerprint(archive: Path) -> dict[str, Any]:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract_archive(
    path: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *, progress: bool = True
) -> list[Path]:
    """Extract a ``.zip`` / ``.tar[.gz|.bz2|.xz]`` into ``dest_dir``; returns the top-level entries.

    * Every member path is checked first: absolute paths and ``..`` escapes
      raise :class:`ExtractionError` before anything is written; tar links,
      devices and other special members are rejected too (only regular files
      and directories are extracted).
    * Members are extracted into a hidden temporary directory inside
      ``dest_dir`` and the top-level entries are then moved into place
      (replacing same-named leftovers from an earlier, interrupted run).
    * A marker ``dest_dir/.extracted-<archive name>.json`` (archive size and
      mtime) is written last; a re-run with an unchanged archive skips the work.
    """
    archive = Path(path)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    marker = _marker_path(archive, dest)
    kind = _archive_kind(archive)
    fingerprint = _archive_fingerprint(archive)

    with _file_lock(dest / f".extract-{archive.name}.lock"):
        if marker.exists():
            try:
                recorded = read_json(marker)
            except (OSError, ValueError):
                recorded = None
            if isinstance(recorded, dict) and {k: recorded.get(k) for k in fingerprint} == fingerprint:
                log.info("%s already extracted into %s; skipping", archive.name, dest)
                return [dest / t for t in recorded.get("top_level", [])]

        tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}.", dir=dest))
        try:
            top_level: list[str] = []
            if kind == "zip":
                with zipfile.ZipFile(archive) as zf:
                    infos = zf.infolist()
                    rels = [_safe_member_path(i.filename, archive) for i in infos]
                    for info, rel in zip(infos, rels):
                        if str(rel) == ".":
                            continue
                        # zip symlinks (unix mode S_IFLNK) would be written as plain files; reject them
                        if (info.external_attr >> 16) & 0o170000 == 0o120000:
                            raise ExtractionError(f"refusing to extract {archive}: member {info.filename!r} is a symlink")
                    from tqdm import tqdm

                    for info, rel in tqdm(
                        list(zip(infos, rels)), desc=f"extract {archive.name}", unit="file",
                        file=sys.stderr, disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 10.0,
                    ):
                        if str(rel) == ".":
                            continue
                        target = tmp.joinpath(*rel.parts)
                        if info.is_dir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, CHUNK_SIZE)
                    top_level = sorted({rel.parts[0] for rel in rels if str(rel) != "."})
            else:
                with tarfile.open(archive) as tf:
                    members = tf.getmembers()
                    rels = []
                    for m in members:
                        rel = _safe_member_path(m.name, archive)
                        if not (m.isfile() or m.isdir()):
                            raise ExtractionError(
                                f"refusing to extract {archive}: member {m.name!r} is not a regular file or directory"
                            )
                        rels.append(rel)
                    from tqdm import tqdm

                    for m, rel in tqdm(
                        list(zip(members, rels)), desc=f"extract {archive.name}", unit="file",
                        file=sys.stderr, disable=not progress, mininterval=0.5 if sys.stderr.isatty() else 10.0,
                    ):
                        if str(rel) == ".":
                            continue
                        target = tmp.joinpath(*rel.parts)
                        if m.isdir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        target.parent.mkdir(parents=True, exist_ok=True)
                        src = tf.extractfile(m)
                        if src is None:
                            raise ExtractionError(f"cannot read member {m.name!r} of {archive}")
                        with src, open(target, "wb") as out:
                            shutil.copyfileobj(src, out, CHUNK_SIZE)
                    top_level = sorted({rel.parts[0] for rel in rels if str(rel) != "."})

            for name in top_level:
                final = dest / name
                if final.is_symlink() or final.is_file():
                    final.unlink()
                elif final.is_dir():
                    shutil.rmtree(final)
                os.replace(tmp / name, final)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
            raise ExtractionError(f"cannot extract {archive}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

        write_json(marker, {**fingerprint, "top_level": top_level})
        log.info("extracted %s into %s (%s)", archive.name, dest, ", ".join(top_level))
        return [dest / t for t in top_level]


# --------------------------------------------------------------------------------------
# resource lists with a trust-on-first-use manifest
# --------------------------------------------------------------------------------------


def _default_dest_name(url: str) -> str:
    name = posixpath.basename(urllib.parse.urlsplit(url).path)
    if not name:
        raise ValueError(f"cannot derive a file name from {redact_url(url)}; give 'dest'")
    return urllib.parse.unquote(name)


def _safe_relative(dest: str) -> Path:
    rel = PurePosixPath(dest)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"resource 'dest' must be a relative path inside the download root, got {dest!r}")
    return Path(*rel.parts)


def fetch_resources(
    spec: Sequence[Mapping[str, Any]],
    root: str | os.PathLike[str],
    *,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
    manifest: bool = True,
) -> list[Path]:
    """Download (and optionally extract) a list of resources into ``root``.

    Each item: ``{"url": str, "sha256"?: str|None, "md5"?: str|None,
    "extract"?: bool, "dest"?: str}``.  ``dest`` is a path relative to
    ``root`` (default: the URL's file name); ``extract: true`` unpacks the
    archive into ``root``.  Returns the downloaded file paths, in order.

    With ``manifest=True`` (default), ``root/MANIFEST.json`` maps each ``dest``
    to ``{"url", "sha256", "size"}``.  Items without an explicit checksum are
    verified against the manifest when an entry exists, and recorded in it
    otherwise (trust on first use).  An explicit checksum always wins; the
    manifest is then updated with the verified sha256.
    """
    root_dir = Path(root)
    root_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = root_dir / MANIFEST_NAME
    results: list[Path] = []
    for i, item in enumerate(spec):
        unknown = set(item) - {"url", "sha256", "md5", "extract", "dest"}
        if unknown:
            raise ValueError(f"resource #{i}: unknown keys {sorted(unknown)}")
        if not item.get("url"):
            raise ValueError(f"resource #{i}: 'url' is required")
        url = str(item["url"])
        rel = _safe_relative(str(item.get("dest") or _default_dest_name(url)))
        dest = root_dir / rel
        key = rel.as_posix()

        expected = {
            k: v
            for k, v in (
                ("sha256", _normalise_digest(item.get("sha256"), "sha256")),
                ("md5", _normalise_digest(item.get("md5"), "md5")),
            )
            if v is not None
        }
        recorded: Mapping[str, Any] | None = None
        if manifest and manifest_path.exists():
            recorded = read_json(manifest_path).get(key)
        tofu = False
        if not expected and recorded and recorded.get("sha256"):
            expected = {"sha256": recorded["sha256"]}
            log.info("%s: verifying against sha256 recorded in %s", key, manifest_path)
        elif not expected:
            tofu = True

        digests = _download(
            url,
            dest,
            expected=expected,
            resume=True,
            timeout=timeout,
            retries=retries,
            progress=progress,
            headers=None,
            backoff=1.0,
        )
        if manifest and (tofu or (recorded or {}).get("sha256") != digests.get("sha256")):
            sha = digests.get("sha256") or file_digest(dest)
            with _file_lock(root_dir / (MANIFEST_NAME + ".lock")):
                current = read_json(manifest_path) if manifest_path.exists() else {}
                current[key] = {"url": redact_url(url), "sha256": sha, "size": dest.stat().st_size}
                write_json(manifest_path, current)
            if tofu:
                log.warning(
                    "%s: no published checksum; recorded sha256 %s in %s (trust on first use)",
                    key, sha, manifest_path,
                )
        if item.get("extract"):
            extract_archive(dest, root_dir, progress=progress)
        results.append(dest)
    return results
