"""Small threaded HTTP servers on 127.0.0.1 for tests (no network access needed).

Two context managers, usable from any test module::

    from httpserver import serve_directory, serve_fake_hf_hub

    with serve_directory(tmp_path, drop_after=1000) as srv:
        url = srv.url_for("file.bin")
        ...
        assert srv.requests[1].header("Range") == "bytes=1000-"

``serve_directory(root, ...)`` serves the files under ``root`` (GET and HEAD),
honouring single-range ``Range: bytes=a-b`` requests with ``206`` +
``Content-Range`` (``416`` when unsatisfiable).  Options:

* ``ignore_range=True``: behave like a server without range support (always ``200`` + full body).
* ``drop_after=N``: the first GET whose body is longer than ``N`` bytes sends the
  full ``Content-Length`` header but only ``N`` body bytes, then closes the
  connection (a mid-transfer network failure).  Later requests are served normally.
* ``fail_first=K`` / ``fail_status=503``: answer the first ``K`` requests with an error status.
* ``status_overrides={"/path": 404}``: fixed status for given URL paths.

The returned :class:`LocalHTTPServer` records every request (``srv.requests``,
``srv.request_count``, ``srv.requests_for(path)``) thread-safely.

``serve_fake_hf_hub(repo_id, files, ...)`` emulates the few Hugging Face Hub
endpoints ``huggingface_hub.snapshot_download`` uses (revision info, recursive
tree listing, ``resolve`` HEAD/GET), optionally requiring a bearer token.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import posixpath
import re
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["LocalHTTPServer", "RecordedRequest", "serve_directory", "serve_fake_hf_hub"]

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # URL path without the query string
    query: str
    headers: dict[str, str]  # keys lower-cased

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        return self.headers.get(name.lower(), default)


@dataclass
class LocalHTTPServer:
    base_url: str
    _requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url_for(self, relpath: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(relpath.lstrip('/'))}"

    def record(self, req: RecordedRequest) -> int:
        with self._lock:
            self._requests.append(req)
            return len(self._requests)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def requests_for(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        if not path.startswith("/"):
            path = "/" + path
        return [r for r in self.requests if r.path == path and (method is None or r.method == method)]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LeverPlusTestServer/1.0"

    # set per server
    state: LocalHTTPServer
    options: dict[str, Any]
    shared: dict[str, Any]  # mutable counters shared across handler instances

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    # --- helpers -------------------------------------------------------
    def _record(self) -> tuple[int, str]:
        parsed = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parsed.path)
        n = self.state.record(
            RecordedRequest(self.command, path, parsed.query, {k.lower(): v for k, v in self.headers.items()})
        )
        return n, path

    def _send_simple(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_bytes(self, data: bytes, extra_headers: dict[str, str] | None = None) -> None:
        """Send ``data`` honouring Range and the drop/ignore options."""
        size = len(data)
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        headers = dict(extra_headers or {})
        if rng and not self.options.get("ignore_range"):
            m = _RANGE_RE.match(rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:  # suffix range: last N bytes
                    start = max(0, size - int(m.group(2)))
                end = min(end, size - 1)
                if start >= size or start > end:
                    self._send_simple(416, headers={"Content-Range": f"bytes */{size}"})
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if not self.options.get("ignore_range"):
            headers.setdefault("Accept-Ranges", "bytes")
        body = data[start : end + 1]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        drop_after = self.options.get("drop_after")
        if drop_after is not None and len(body) > drop_after:
            with self.shared["lock"]:
                should_drop = not self.shared["dropped"]
                self.shared["dropped"] = True
            if should_drop:
                self.wfile.write(body[:drop_after])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
        self.wfile.write(body)

    def _maybe_fail(self, n: int, path: str) -> bool:
        overrides = self.options.get("status_overrides") or {}
        if path in overrides:
            self._send_simple(overrides[path], b"forced status\n")
            return True
        if n <= self.options.get("fail_first", 0):
            self._send_simple(self.options.get("fail_status", 503), b"temporary failure\n")
            return True
        return False


class _DirectoryHandler(_Handler):
    root: Path

    def do_GET(self) -> None:
        n, path = self._record()
        if self._maybe_fail(n, path):
            return
        rel = posixpath.normpath(path).lstrip("/")
        if rel.startswith("..") or rel == ".":
            self._send_simple(404, b"not found\n")
            return
        target = self.root / rel
        if not target.is_file():
            self._send_simple(404, b"not found\n")
            return
        self._send_bytes(target.read_bytes(), {"Content-Type": "application/octet-stream"})

    do_HEAD = do_GET


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def _run(handler_cls: type[_Handler]) -> Iterator[LocalHTTPServer]:
    httpd = _ThreadingServer(("127.0.0.1", 0), handler_cls)
    host, port = httpd.server_address[:2]
    handler_cls.state.base_url = f"http://{host}:{port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield handler_cls.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_directory(
    root: str | Path,
    *,
    ignore_range: bool = False,
    drop_after: int | None = None,
    fail_first: int = 0,
    fail_status: int = 503,
    status_overrides: dict[str, int] | None = None,
) -> Iterator[LocalHTTPServer]:
    """Serve ``root`` on ``http://127.0.0.1:<ephemeral port>`` for the duration of the block."""
    state = LocalHTTPServer(base_url="")
    handler_cls = type(
        "DirectoryHandler",
        (_DirectoryHandler,),
        {
            "root": Path(root),
            "state": state,
            "options": {
                "ignore_range": ignore_range,
                "drop_after": drop_after,
                "fail_first": fail_first,
                "fail_status": fail_status,
                "status_overrides": status_overrides,
            },
            "shared": {"lock": threading.Lock(), "dropped": False},
        },
    )
    with _run(handler_cls) as srv:
        yield srv


# --------------------------------------------------------------------------------------
# Fake Hugging Face Hub
# --------------------------------------------------------------------------------------


class _FakeHubHandler(_Handler):
    repo_id: str
    repo_type: str  # "model" or "dataset"
    commit: str
    files: dict[str, bytes]
    token: str | None

    def _authorized(self) -> bool:
        if self.token is None:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.token}"

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        self._send_simple(status, body, hdrs)

    def _not_found(self, code: str, message: str) -> None:
        self._json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _known_revision(self, rev: str) -> bool:
        return rev in (self.commit, "main")

    def do_GET(self) -> None:
        n, path = self._record()
        if self._maybe_fail(n, path):
            return
        if not self._authorized():
            self._json(401, {"error": "Invalid credentials"}, {"X-Error-Code": "RepoNotFound"})
            return
        dataset = self.repo_type == "dataset"
        api_prefix = f"/api/{'datasets' if dataset else 'models'}/{self.repo_id}/"
        if path.startswith(api_prefix):
            rest = path[len(api_prefix) :]
            kind, _, rev = rest.partition("/")
            rev = rev.split("/", 1)[0]
            if not self._known_revision(rev):
                self._not_found("RevisionNotFound", f"Invalid rev id: {rev}")
                return
            if kind == "revision":
                self._json(
                    200,
                    {
                        "id": self.repo_id,
                        "modelId": self.repo_id,
                        "sha": self.commit,
                        "private": False,
                        "siblings": [{"rfilename": p} for p in sorted(self.files)],
                    },
                )
                return
            if kind == "tree":
                listing = [
                    {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                    for p, b in sorted(self.files.items())
                ]
                self._json(200, listing)
                return
        if path.startswith("/api/"):
            self._not_found("RepoNotFound", "Repository not found")
            return
        resolve_prefix = f"/{'datasets/' if dataset else ''}{self.repo_id}/resolve/"
        if path.startswith(resolve_prefix):
            rev, _, filename = path[len(resolve_prefix) :].partition("/")
            if not self._known_revision(rev):
                self._not_found("RevisionNotFound", f"Invalid rev id: {rev}")
                return
            if filename not in self.files:
                self._not_found("EntryNotFound", f"{filename} does not exist")
                return
            data = self.files[filename]
            self._send_bytes(
                data,
                {
                    "X-Repo-Commit": self.commit,
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                },
            )
            return
        self._not_found("RepoNotFound", "Repository not found")

    do_HEAD = do_GET


@contextlib.contextmanager
def serve_fake_hf_hub(
    repo_id: str,
    files: dict[str, bytes],
    *,
    commit: str = "0123456789abcdef0123456789abcdef01234567",
    token: str | None = None,
    fail_first: int = 0,
    fail_status: int = 503,
    repo_type: str = "model",
) -> Iterator[LocalHTTPServer]:
    """Serve one model repo (``repo_type="dataset"``: one dataset repo, under ``/api/datasets/`` and
    ``/datasets/<repo>/resolve/``) the way the Hub API does (enough for ``snapshot_download``).

    ``revision`` may be ``"main"`` or ``commit``; anything else yields a
    ``RevisionNotFound`` 404.  With ``token`` set, requests without
    ``Authorization: Bearer <token>`` get a 401.
    """
    state = LocalHTTPServer(base_url="")
    handler_cls = type(
        "FakeHubHandler",
        (_FakeHubHandler,),
        {
            "repo_id": repo_id,
            "repo_type": repo_type,
            "commit": commit,
            "files": dict(files),
            "token": token,
            "state": state,
            "options": {"fail_first": fail_first, "fail_status": fail_status},
            "shared": {"lock": threading.Lock(), "dropped": False},
        },
    )
    with _run(handler_cls) as srv:
        yield srv
