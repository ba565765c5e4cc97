"""A local OpenAI-compatible HTTP server (stdlib ``ThreadingHTTPServer`` on 127.0.0.1) — "the API" for tests/demos.

Routes (under ``/v1``): ``GET /models``; ``POST /chat/completions`` (non-streaming, and SSE streaming with
``data: {chunk}\\n\\n`` lines, a final usage chunk when ``stream_options.include_usage``, then ``data: [DONE]``);
``POST /embeddings`` (``encoding_format`` float or base64, ``dimensions``); rerank at ``/v1/rerank``, ``/rerank``
and ``/v2/rerank`` (vLLM serves all three; Jina's and Cohere v2's shapes): ``documents`` as strings, Jina's
``{"text"}`` objects or vLLM's ``{"content": [{"type": "text", "text"}]}``, ``top_n`` absent/null/0 = all (vLLM),
``return_documents`` honoured (default true: each result carries ``{"document": {"text"}}`` as vLLM and Jina do),
results sorted by score, descending, each ``{"index", "relevance_score"}``; vLLM's score API at ``/v1/score`` and
``/score`` (``text_1``/``text_2``, ``queries``/``documents``, ``queries``/``items`` or ``data_1``/``data_2``; 1:N or N:N;
``data: [{"index", "object": "score", "score"}]``). ``usage`` counts the tokens the model read (backend
``count_tokens``), not whitespace words. Request bodies may come with ``Content-Length`` or chunked
(``Transfer-Encoding: chunked``). Errors have OpenAI's body shape
``{"error": {"message", "type", "code"}}``: 400 bad request, 401 wrong/missing key, 404 unknown route or model,
500 backend failure.

Backends are plain objects passed in (see docs/api.md):

* chat: a :class:`~leverplus.serving.chat_backend.ChatBackend` (``model_name``, ``stream(messages, settings)``), or a
  ``{model_name: backend}`` mapping to serve several;
* embeddings: an :class:`EmbeddingBackend` — ``embed(texts, dimensions) -> array [n, d]``;
* rerank: a :class:`RerankBackend` — ``score(query, documents, instruction) -> list[float]``.

An embeddings/rerank backend with a ``model_name`` attribute only answers to that model; without one it answers
to any. :class:`FaultPlan` injects failures for tests. Every request is recorded (``server.requests``; the
``Authorization`` header is never recorded, only whether it was accepted).
"""
from __future__ import annotations

import base64
import json
import logging
import socketserver
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Backend",
    "EmbeddingBackend",
    "FaultPlan",
    "OpenAICompatServer",
    "RecordedRequest",
    "RerankBackend",
]

log = logging.getLogger("leverplus.serving")


@runtime_checkable
class Backend(Protocol):
    """What every backend may carry: the model name it answers to (requests naming another model get a 404)."""

    model_name: str


@runtime_checkable
class EmbeddingBackend(Protocol):
    def embed(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        """float array ``[len(texts), d]`` (``d == dimensions`` when given; raise ``ValueError`` if unsupported)."""
        ...


@runtime_checkable
class RerankBackend(Protocol):
    def score(self, query: str, documents: list[str], instruction: str | None) -> list[float]:
        """One relevance score per document, in the order given."""
        ...


@dataclass
class FaultPlan:
    """Failures for the next requests (POSTs only; ``GET /models`` is never faulted), consumed in this order:

    * ``status``: one HTTP status per request, e.g. ``[503, 503]`` → the next two requests get 503 (with an OpenAI
      error body); ``retry_after`` (seconds) adds a ``Retry-After`` header to those answers;
    * ``delay_s`` for the next ``delays`` requests: sleep before answering (client timeouts);
    * ``malformed``: the next N requests get a 200 with a broken body (non-JSON, or a non-JSON SSE chunk);
    * ``cut_stream_after``: the next ``cuts`` streaming requests close the connection after that many content chunks,
      without ``[DONE]``;
    * ``rerank_top_n`` (persistent while set): rerank answers keep only that many results whatever ``top_n`` asks
      (a provider whose default top_n drops documents).
    """

    status: list[int] = field(default_factory=list)
    retry_after: float | None = None
    delay_s: float = 0.0
    delays: int = 0
    malformed: int = 0
    cut_stream_after: int | None = None
    cuts: int = 0
    rerank_top_n: int | None = None

    def __post_init__(self):
        self.status = list(self.status)
        self._lock = threading.Lock()

    def take(self) -> dict:
        """The fault for one request: ``{"status"?, "delay_s"?, "malformed"?, "cut_after"?}`` (possibly empty)."""
        with self._lock:
            out: dict[str, Any] = {}
            if self.status:
                out["status"] = self.status.pop(0)
                return out
            if self.delays > 0 and self.delay_s > 0:
                self.delays -= 1
                out["delay_s"] = self.delay_s
            if self.malformed > 0:
                self.malformed -= 1
                out["malformed"] = True
            elif self.cuts > 0 and self.cut_stream_after is not None:
                self.cuts -= 1
                out["cut_after"] = self.cut_stream_after
            return out


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: Any  # parsed JSON (None when absent or unparsable)
    authorized: bool
    status: int | None = None


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code


def _check_text_list(value, name: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise _HTTPError(400, f"'{name}' must be a string or a non-empty list of strings")
    return value


class OpenAICompatServer:
    """``with OpenAICompatServer(chat=backend, api_key="k") as srv: srv.url`` → ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, *, port: int = 0, api_key: str | None = None, chat=None, embeddings=None, rerank=None,
                 faults: FaultPlan | None = None, host: str = "127.0.0.1"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the local server only binds to the loopback interface")
        if chat is None:
            self.chat_backends: dict[str, Any] = {}
        elif isinstance(chat, Mapping):
            self.chat_backends = dict(chat)
        else:
            self.chat_backends = {chat.model_name: chat}
        self.embeddings = embeddings
        self.rerank = rerank
        self.faults = faults
        self._api_key = api_key
        self._host = host
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> "OpenAICompatServer":
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"app": self})
        self._httpd = _Server((self._host, self._port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-compat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def serve_forever(self) -> None:
        """Block until interrupted (for ``python -m leverplus.serving``)."""
        if self._thread is None:
            self.start()
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- bookkeeping ----------------------------------------------------------------------------------------------
    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Recorded requests to ``path`` (e.g. ``"/v1/embeddings"``)."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(rec)

    def model_names(self) -> list[str]:
        names = list(self.chat_backends)
        for b in (self.embeddings, self.rerank):
            name = getattr(b, "model_name", None)
            if name and name not in names:
                names.append(name)
        return names

    def _authorized(self, header: str | None) -> bool:
        if self._api_key is None:
            return True
        return header == f"Bearer {self._api_key}"


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that ``stop()`` can close idle keep-alive ones (a client's connection pool would
    otherwise hold a handler thread forever) and then wait for every handler thread: in-flight generations see the
    closed socket and cancel, so no orphaned ``generate`` thread outlives the server. The wait is bounded
    (``stop_timeout_s``): a handler stuck in a backend is logged and left behind (a daemon thread, so it cannot
    keep the interpreter alive either) rather than hanging ``stop()``."""

    daemon_threads = True
    block_on_close = True
    stop_timeout_s = 30.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._conns: set = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def server_close(self):
        import socket

        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        socketserver.TCPServer.server_close(self)  # the listening socket; handler threads are joined below, bounded
        deadline = time.monotonic() + self.stop_timeout_s
        threads = list(vars(self).get("_threads", ()))  # ThreadingMixIn tracks them (block_on_close)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.error("server stopped with %d handler thread(s) still running after %gs: %s",
                      len(stuck), self.stop_timeout_s, ", ".join(stuck))


class _Handler(BaseHTTPRequestHandler):
    app: OpenAICompatServer
    protocol_version = "HTTP/1.1"
    server_version = "leverplus-openai-compat/1"

    def log_message(self, fmt, *args):  # route access logs to logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    # ---- responses ------------------------------------------------------------------------------------------------
    def _send_json(self, status: int, obj: Any, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self._send_bytes(status, data, "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, type_: str | None = None, code: str | None = None,
                    headers: dict | None = None) -> None:
        if type_ is None:
            type_ = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                     429: "rate_limit_error"}.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self._send_json(status, {"error": {"message": message, "type": type_, "code": code}}, headers)

    # ---- dispatch -------------------------------------------------------------------------------------------------
    def do_GET(self):
        rec = RecordedRequest("GET", self.path, None, self.app._authorized(self.headers.get("Authorization")))
        self.app._record(rec)
        if not rec.authorized:
            rec.status = 401
            return self._send_error(401, _bad_key_message(self.headers.get("Authorization")), code="invalid_api_key")
        if self.path.rstrip("/") != "/v1/models":
            rec.status = 404
            return self._send_error(404, f"no route GET {self.path}")
        rec.status = 200
        created = int(time.time())
        self._send_json(200, {"object": "list", "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "leverplus"} for n in self.app.model_names()]})

    def _read_body(self) -> bytes:
        """The request body: `Content-Length` bytes, or the chunks of a `Transfer-Encoding: chunked` body."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self):
        try:
            raw = self._read_body()
        except ValueError:
            raw = b"\x00"  # a malformed chunk size: answered as a bad body below
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            bad_json = True
        else:
            bad_json = False
        rec = RecordedRequest("POST", self.path, body, self.app._authorized(self.headers.get("Authorization")))
        self.app._record(rec)
        fault = self.app.faults.take() if self.app.faults is not None else {}
        try:
            if "status" in fault:
                status = fault["status"]
                rec.status = status
                headers = {}
                if self.app.faults.retry_after is not None:
                    headers["Retry-After"] = f"{self.app.faults.retry_after:g}"
                phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"
                return self._send_error(status, f"injected fault: {phrase}", headers=headers)
            if fault.get("delay_s"):
                time.sleep(fault["delay_s"])
            if not rec.authorized:
                rec.status = 401
                return self._send_error(401, _bad_key_message(self.headers.get("Authorization")),
                                        code="invalid_api_key")
            if bad_json or not isinstance(body, dict):
                raise _HTTPError(400, "the request body must be a JSON object")
            route = self.path.split("?", 1)[0].rstrip("/")
            handler = {
                "/v1/chat/completions": self._chat,
                "/v1/embeddings": self._embeddings,
                "/v1/rerank": self._rerank,
                "/rerank": self._rerank,
                "/v2/rerank": self._rerank,
                "/v1/score": self._score,
                "/score": self._score,
            }.get(route)
            if handler is None:
                raise _HTTPError(404, f"no route POST {self.path}", "not_found_error")
            rec.status = 200
            handler(body, fault)
        except _HTTPError as err:
            rec.status = err.status
            self._send_error(err.status, err.message, err.type, err.code)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s", self.path)
        except Exception as exc:
            log.exception("backend failure on %s", self.path)
            rec.status = 500
            try:
                self._send_error(500, f"backend failure: {type(exc).__name__}: {exc}", "server_error")
            except OSError:
                pass

    def _model_backend(self, body: dict, backend, kind: str):
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _HTTPError(400, "'model' is required")
        if backend is None:
            raise _HTTPError(404, f"this server has no {kind} model", "not_found_error", "model_not_found")
        name = getattr(backend, "model_name", None)
        if name is not None and name != model:
            raise _HTTPError(404, f"the model '{model}' does not exist", "not_found_error", "model_not_found")
        return backend

    # ---- chat -----------------------------------------------------------------------------------------------------
    def _chat(self, body: dict, fault: dict) -> None:
        model = body.get("model")
        if not isinstance(model, str) or model not in self.app.chat_backends:
            if not isinstance(model, str) or not model:
                raise _HTTPError(400, "'model' is required")
            raise _HTTPError(404, f"the model '{model}' does not exist", "not_found_error", "model_not_found")
        backend = self.app.chat_backends[model]
        messages = body.get("messages")
        if not (isinstance(messages, list) and messages):
            raise _HTTPError(400, "'messages' must be a non-empty list")
        stream = bool(body.get("stream", False))
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise _HTTPError(400, "'stream_options' must be an object")
        settings = {k: v for k, v in body.items() if k not in ("model", "messages", "stream", "stream_options")}
        try:
            gen = backend.stream(messages, settings)
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not stream:
            pieces, usage = [], None
            try:
                for item in gen:
                    if isinstance(item, dict):
                        usage = item
                    else:
                        pieces.append(item)
            except ValueError as exc:
                raise _HTTPError(400, str(exc)) from None
            if fault.get("malformed"):
                return self._send_bytes(200, b'{"id": "broken", "choices": [', "application/json")
            usage = usage or {}
            self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "finish_reason": usage.get("finish_reason")}],
                "usage": _usage(usage),
            })
            return
        self._chat_sse(gen, cid, created, model, bool(stream_options.get("include_usage")), fault)

    def _chat_sse(self, gen, cid, created, model, include_usage, fault) -> None:
        def chunk(delta: dict, finish=None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def send(obj) -> None:
            data = obj if isinstance(obj, bytes) else json.dumps(obj, ensure_ascii=False).encode("utf-8")
            self.wfile.write(b"data: " + data + b"\n\n")
            self.wfile.flush()

        usage: dict = {}
        sent = 0
        try:
            send(chunk({"role": "assistant", "content": ""}))
            for item in gen:
                if isinstance(item, dict):
                    usage = item
                    continue
                if not item:
                    continue
                if fault.get("malformed"):
                    send(b'{"choices": [{"delta": {"content": ')
                    return
                if fault.get("cut_after") is not None and sent >= fault["cut_after"]:
                    return  # drop the connection mid-stream, without [DONE]
                send(chunk({"content": item}))
                sent += 1
            send(chunk({}, usage.get("finish_reason")))
            if include_usage:
                send({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [], "usage": _usage(usage)})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away mid-stream")
        except Exception as exc:
            log.exception("backend failure mid-stream")
            try:
                send({"error": {"message": f"backend failure: {type(exc).__name__}: {exc}", "type": "server_error",
                                "code": None}})
            except OSError:
                pass
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    # ---- embeddings -----------------------------------------------------------------------------------------------
    def _embeddings(self, body: dict, fault: dict) -> None:
        backend = self._model_backend(body, self.app.embeddings, "embedding")
        texts = _check_text_list(body.get("input"), "input")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise _HTTPError(400, f"encoding_format must be 'float' or 'base64', got {fmt!r}")
        dims = body.get("dimensions")
        if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
            raise _HTTPError(400, f"dimensions must be a positive integer, got {dims!r}")
        try:
            vecs = np.asarray(backend.embed(texts, dims), dtype=np.float32)
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise RuntimeError(f"embedding backend returned shape {vecs.shape} for {len(texts)} inputs")
        if fault.get("malformed"):
            return self._send_bytes(200, b'{"object": "list", "data": [{"index": 0, "embedding": [0.1,', "application/json")
        data = []
        for i, v in enumerate(vecs):
            emb = base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        count = getattr(backend, "count_tokens", None)
        n_tok = int(count(texts)) if count is not None else 0
        self._send_json(200, {"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}})

    # ---- rerank ---------------------------------------------------------------------------------------------------
    def _rerank(self, body: dict, fault: dict) -> None:
        backend = self._model_backend(body, self.app.rerank, "rerank")
        query = body.get("query")
        if not isinstance(query, str):
            raise _HTTPError(400, "'query' must be a string")
        docs = _score_texts(body.get("documents"), "documents")
        instruction = body.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise _HTTPError(400, "'instruction' must be a string")
        top_n = body.get("top_n")
        if top_n is None or top_n == 0:
            top_n = len(docs)  # vLLM: 0 (its default) returns every document
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
            raise _HTTPError(400, f"top_n must be a non-negative integer, got {top_n!r}")
        return_documents = body.get("return_documents", True)
        if not isinstance(return_documents, bool):
            raise _HTTPError(400, f"return_documents must be a boolean, got {return_documents!r}")
        try:
            scores = [float(s) for s in backend.score(query, docs, instruction)]
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        if len(scores) != len(docs):
            raise RuntimeError(f"rerank backend returned {len(scores)} scores for {len(docs)} documents")
        if fault.get("malformed"):
            return self._send_bytes(200, b'{"results": [{"index": 0, "relevance_', "application/json")
        if self.app.faults is not None and self.app.faults.rerank_top_n is not None:
            top_n = min(top_n, self.app.faults.rerank_top_n)
        order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[:top_n]
        results = [{"index": i, "relevance_score": scores[i], **({"document": {"text": docs[i]}} if return_documents else {})}
                   for i in order]
        n_tok = _count(backend, query, docs, instruction)
        self._send_json(200, {"id": f"rerank-{uuid.uuid4().hex[:16]}", "model": body["model"], "results": results,
                              "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}})

    def _score(self, body: dict, fault: dict) -> None:
        """vLLM's score API: one query against N documents (1:N) or N pairs (N:N), scores in input order."""
        backend = self._model_backend(body, self.app.rerank, "score")
        for a, b in (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2")):
            if a in body and b in body:
                left, right = _score_texts(body.get(a), a), _score_texts(body.get(b), b)
                break
        else:
            raise _HTTPError(400, "the score API needs 'text_1' and 'text_2' (or 'queries' and 'documents')")
        if len(left) > 1 and len(left) != len(right):
            raise _HTTPError(400, "Input lengths must be either 1:1, 1:N or N:N")
        pairs = list(zip(left * len(right) if len(left) == 1 else left, right))
        scores, n_tok = [], 0
        try:
            if len(left) == 1:
                scores = [float(s) for s in backend.score(left[0], right, None)]
                n_tok = _count(backend, left[0], right, None)
            else:
                for q, d in pairs:
                    scores.append(float(backend.score(q, [d], None)[0]))
                    n_tok += _count(backend, q, [d], None)
        except ValueError as exc:
            raise _HTTPError(400, str(exc)) from None
        if fault.get("malformed"):
            return self._send_bytes(200, b'{"data": [{"index": 0, "sco', "application/json")
        self._send_json(200, {"id": f"score-{uuid.uuid4().hex[:16]}", "object": "list", "created": int(time.time()),
                              "model": body["model"],
                              "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
                              "usage": {"prompt_tokens": n_tok, "total_tokens": n_tok}})


def _score_texts(value, name: str) -> list[str]:
    """Texts of a rerank/score field: a string, a list of strings or of `{"text"}` objects (Jina), or vLLM's
    `{"content": [{"type": "text", "text"}]}` (text parts only)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and isinstance(value.get("content"), list):
        value = value["content"]
    if not isinstance(value, list) or not value:
        raise _HTTPError(400, f"'{name}' must be a string or a non-empty list of strings or {{\"text\"}} objects")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, dict) and isinstance(v.get("text"), str) and v.get("type", "text") == "text":
            v = v["text"]
        if not isinstance(v, str):
            raise _HTTPError(400, f"'{name}[{i}]' must be a string or a {{\"text\": string}} object")
        out.append(v)
    return out


def _count(backend, query: str, docs: list[str], instruction) -> int:
    count = getattr(backend, "count_tokens", None)
    return int(count(query, docs, instruction)) if count is not None else 0


def _bad_key_message(header: str | None) -> str:
    """Like OpenAI's "Incorrect API key provided: …" — but unmasked, so tests can prove the client scrubs keys
    that a server echoes back."""
    if not header:
        return "Missing API key (expected 'Authorization: Bearer <key>')"
    presented = header[7:] if header.startswith("Bearer ") else header
    return f"Incorrect API key provided: {presented}"


def _usage(u: dict) -> dict:
    p = int(u.get("prompt_tokens") or 0)
    c = int(u.get("completion_tokens") or 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
