"""One OpenAI-compatible client for every track: chat (streamed and not), embeddings, rerank.

What it guarantees (see docs/api.md):

* **Keys from the environment only.** ``APIConfig.api_key_env`` names the variable; the key is read when a request
  is sent, never stored in the config, the cache or a log line, and scrubbed from every error message.
* **Retries.** Connection errors, timeouts, HTTP 429 and 5xx are retried up to ``max_retries`` times with
  exponential backoff (``backoff_s * 2**attempt``); a ``Retry-After`` header (seconds) replaces the backoff.
  Any other 4xx and malformed bodies raise :class:`APIError` at once (retrying cannot fix them).
* **Rate limit.** ``rate_limit_per_s`` spaces request *starts* (retries included) at least ``1/rate`` apart.
* **Cache.** Non-streaming calls (``chat``, ``embeddings`` per batch, ``rerank``) are cached under ``cache_dir``
  as one JSON file per request, named by the sha256 of the canonical request ``{"endpoint", "model", "body"}``
  (the base URL and the key are not part of it), written atomically (:func:`leverplus.core.io.write_json`), so a rerun
  sends no request and a failure leaves no partial file. Only successful, validated responses are stored.
* **Streaming** (``chat_stream``) asks for ``stream_options.include_usage``, timestamps every non-empty content
  delta on the ``time.perf_counter`` clock, and returns only a complete stream (a failure after the first delta
  retries the whole request; nothing half-done is returned). Never cached: its timings are the measurement.
* **Errors** are :class:`APIError` with one line: endpoint, HTTP status or ``timeout``/``connection error``/
  ``malformed response``, and a body excerpt.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from leverplus.core.io import canonical_json, read_json, write_json

__all__ = [
    "APIConfig",
    "APIError",
    "ChatStreamResult",
    "OpenAICompatClient",
    "audio_content_part",
    "request_key",
]

log = logging.getLogger("leverplus.api")

_EXCERPT = 300
_MAX_RETRY_AFTER_S = 120.0


class APIError(RuntimeError):
    """A failed API call: ``"<endpoint>: <HTTP status | timeout | connection error | malformed response>: <excerpt>"``.

    Attributes: ``endpoint``, ``status`` (int or None), ``kind`` (``"http"``, ``"timeout"``, ``"connection"``,
    ``"malformed"``, ``"config"``), ``retriable`` (whether the retry policy retries it), ``retry_after`` (seconds
    from a ``Retry-After`` header, or None)."""

    def __init__(self, endpoint: str, kind: str, detail: str = "", *, status: int | None = None,
                 retriable: bool = False, retry_after: float | None = None):
        self.endpoint = endpoint
        self.kind = kind
        self.status = status
        self.retriable = retriable
        self.retry_after = retry_after
        what = {
            "http": f"HTTP {status}",
            "timeout": "timeout",
            "connection": "connection error",
            "malformed": "malformed response",
            "config": "configuration error",
        }.get(kind, kind)
        detail = " ".join(str(detail).split())
        if len(detail) > _EXCERPT:
            detail = detail[:_EXCERPT] + "…"
        super().__init__(f"{endpoint}: {what}" + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class APIConfig:
    """Where and how to call an OpenAI-compatible API. ``from_dict`` reads a config block (unknown keys are an
    error). The key itself is never part of the config: ``api_key_env`` is the NAME of the variable holding it."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 0.5
    rate_limit_per_s: float | None = None
    cache_dir: str | None = None
    batch_size: int = 32  # inputs per /embeddings request

    def __post_init__(self):
        if not isinstance(self.base_url, str) or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"api.base_url must be an http(s) URL, got {self.base_url!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("api.model must be a non-empty string")
        if self.api_key_env is not None and (not isinstance(self.api_key_env, str) or not self.api_key_env):
            raise ValueError("api.api_key_env must be the name of an environment variable (or null)")
        if not self.timeout_s > 0:
            raise ValueError(f"api.timeout_s must be > 0, got {self.timeout_s!r}")
        if not (isinstance(self.max_retries, int) and self.max_retries >= 0):
            raise ValueError(f"api.max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not self.backoff_s >= 0:
            raise ValueError(f"api.backoff_s must be >= 0, got {self.backoff_s!r}")
        if self.rate_limit_per_s is not None and not self.rate_limit_per_s > 0:
            raise ValueError(f"api.rate_limit_per_s must be > 0 or null, got {self.rate_limit_per_s!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"api.batch_size must be an integer >= 1, got {self.batch_size!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "APIConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"api: unknown key(s) {unknown}; allowed: {sorted(known)}")
        missing = [k for k in ("base_url", "model") if k not in d]
        if missing:
            raise ValueError(f"api: missing key(s) {missing}")
        for k in ("timeout_s", "backoff_s"):
            if k in d:
                d[k] = float(d[k])
        if d.get("rate_limit_per_s") is not None:
            d["rate_limit_per_s"] = float(d["rate_limit_per_s"])
        if d.get("cache_dir") is not None:
            d["cache_dir"] = str(d["cache_dir"])
        return cls(**d)

    def as_dict(self) -> dict:
        """The config as recorded in results (it holds no secret: only the variable's name)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class ChatStreamResult:
    text: str
    request_start: float
    first_token_time: float | None
    end_time: float
    token_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.request_start

    @property
    def total_s(self) -> float:
        return self.end_time - self.request_start


def request_key(endpoint: str, model: str, body: dict) -> str:
    """sha256 of the canonical request: the cache file name."""
    return hashlib.sha256(canonical_json({"endpoint": endpoint, "model": model, "body": body}).encode()).hexdigest()


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), _MAX_RETRY_AFTER_S))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, min(parsedate_to_datetime(value).timestamp() - time.time(), _MAX_RETRY_AFTER_S))
        except (TypeError, ValueError):
            return None


def _status_error(endpoint: str, status: int, text: str, headers=None) -> APIError:
    message = text
    try:
        err = json.loads(text).get("error")
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
        elif isinstance(err, str):
            message = err
    except (ValueError, AttributeError):
        pass
    retriable = status == 429 or status >= 500
    return APIError(endpoint, "http", message, status=status, retriable=retriable, retry_after=_retry_after(headers))


class OpenAICompatClient:
    """See the module docstring. One instance per API; thread-safe counters; ``close()`` or use ``with``."""

    def __init__(self, cfg: APIConfig, *, sleep: Callable[[float], None] = time.sleep):
        import httpx

        self.cfg = cfg
        self._sleep = sleep
        self._base = cfg.base_url.rstrip("/")
        self._http = httpx.Client(timeout=httpx.Timeout(cfg.timeout_s), follow_redirects=False)
        self._oa = None  # the openai client, built on first embeddings call
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._stats = {"requests_sent": 0, "cache_hits": 0, "retries": 0}
        self._cache = Path(cfg.cache_dir) if cfg.cache_dir else None
        if cfg.api_key_env is not None:
            self._key()  # fail early, naming the variable, if it is unset

    # ---- bookkeeping ----------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def close(self) -> None:
        self._http.close()
        if self._oa is not None:
            self._oa.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _key(self) -> str | None:
        if self.cfg.api_key_env is None:
            return None
        key = os.environ.get(self.cfg.api_key_env)
        if not key:
            raise APIError(self._base, "config", f"environment variable {self.cfg.api_key_env} (api.api_key_env) "
                           "is not set or empty")
        return key

    def _headers(self) -> dict:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _scrub(self, err: APIError) -> APIError:
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key and key in str(err):
            scrubbed = APIError(err.endpoint, err.kind, "", status=err.status, retriable=err.retriable,
                                retry_after=err.retry_after)
            scrubbed.args = (str(err).replace(key, "***"),)
            return scrubbed
        return err

    def _throttle(self) -> None:
        rate = self.cfg.rate_limit_per_s
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_slot)
            self._next_slot = start + 1.0 / rate
        if start > now:
            self._sleep(start - now)

    # ---- retry loop -----------------------------------------------------------------------------------------------
    def _with_retries(self, endpoint: str, attempt_fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            self._throttle()
            self._count("requests_sent")
            try:
                return attempt_fn()
            except APIError as err:
                err = self._scrub(err)
                if not err.retriable or attempt >= self.cfg.max_retries:
                    if err.retriable and self.cfg.max_retries:
                        err.args = (f"{err.args[0]} (after {attempt + 1} attempts)",)
                    raise err from None
                wait = err.retry_after if err.retry_after is not None else self.cfg.backoff_s * (2**attempt)
                log.warning("%s; retry %d/%d in %.2fs", err, attempt + 1, self.cfg.max_retries, wait)
                self._count("retries")
                attempt += 1
                if wait > 0:
                    self._sleep(wait)

    def _http_error(self, endpoint: str, exc: Exception) -> APIError:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return APIError(endpoint, "timeout", f"no response within {self.cfg.timeout_s:g}s "
                            f"({type(exc).__name__})", retriable=True)
        if isinstance(exc, (httpx.TransportError, httpx.StreamError)):
            return APIError(endpoint, "connection", f"{type(exc).__name__}: {exc}", retriable=True)
        raise exc

    def _post_json(self, path: str, body: dict) -> dict:
        """One POST attempt returning the parsed JSON object, or raising APIError."""
        import httpx

        endpoint = f"POST {self._base}{path}"
        try:
            resp = self._http.post(self._base + path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._http_error(endpoint, exc) from None
        if resp.status_code >= 400:
            raise _status_error(endpoint, resp.status_code, resp.text, resp.headers)
        try:
            data = resp.json()
        except ValueError:
            raise APIError(endpoint, "malformed", f"body is not JSON: {resp.text!r}") from None
        if not isinstance(data, dict):
            raise APIError(endpoint, "malformed", f"expected a JSON object, got {type(data).__name__}")
        return data

    # ---- cache ----------------------------------------------------------------------------------------------------
    def _cached(self, path: str, body: dict, fetch: Callable[[], Any]) -> Any:
        """``fetch()`` (which must return a validated JSON-able response) through the on-disk cache."""
        if self._cache is None:
            return fetch()
        key = request_key(path, self.cfg.model, body)
        file = self._cache / f"{key}.json"
        if file.exists():
            try:
                entry = read_json(file)
                response = entry["response"]
            except (ValueError, KeyError, TypeError):
                log.warning("cache file %s is unreadable; refetching", file)
            else:
                self._count("cache_hits")
                return response
        response = fetch()
        write_json(file, {"request": {"endpoint": path, "model": self.cfg.model, "body": body}, "response": response})
        return response

    # ---- chat -----------------------------------------------------------------------------------------------------
    def _chat_body(self, messages: list[dict], settings: dict, stream: bool) -> dict:
        settings = dict(settings or {})
        reserved = {"model", "messages", "stream", "stream_options"} & set(settings)
        if reserved:
            raise ValueError(f"settings may not set {sorted(reserved)}: the client sets them")
        body = {"model": self.cfg.model, "messages": messages, **settings, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(self, messages: list[dict], *, settings: dict) -> dict:
        """Non-streaming chat completion: ``{"text", "usage", "finish_reason", "raw"}``; cached."""
        path = "/chat/completions"
        body = self._chat_body(messages, settings, stream=False)
        endpoint = f"POST {self._base}{path}"

        def attempt():
            data = self._post_json(path, body)
            try:
                choice = data["choices"][0]
                text = choice["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise APIError(endpoint, "malformed", f"no choices[0].message.content in {json.dumps(data)[:200]}") from None
            if text is not None and not isinstance(text, str):
                raise APIError(endpoint, "malformed", "choices[0].message.content is not a string")
            return data

        data = self._cached(path, body, lambda: self._with_retries(endpoint, attempt))
        choice = data["choices"][0]
        return {"text": choice["message"]["content"] or "", "usage": data.get("usage"),
                "finish_reason": choice.get("finish_reason"), "raw": data}

    def chat_stream(self, messages: list[dict], *, settings: dict) -> ChatStreamResult:
        """Streamed chat completion with per-delta arrival times; see the module docstring. Never cached."""
        path = "/chat/completions"
        body = self._chat_body(messages, settings, stream=True)
        endpoint = f"POST {self._base}{path} (stream)"
        return self._with_retries(endpoint, lambda: self._stream_once(path, body, endpoint))

    def _stream_once(self, path: str, body: dict, endpoint: str) -> ChatStreamResult:
        import httpx

        pieces: list[str] = []
        token_times: list[float] = []
        usage = None
        finish_reason = None
        done = False
        start = time.perf_counter()
        try:
            with self._http.stream("POST", self._base + path, json=body, headers=self._headers()) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _status_error(endpoint, resp.status_code, resp.text, resp.headers)
                for line in resp.iter_lines():
                    line = line.strip()
                    if not line or line.startswith(":"):
                        continue  # keep-alive / SSE comment
                    if not line.startswith("data:"):
                        if line.startswith(("event:", "id:", "retry:")):
                            continue
                        raise APIError(endpoint, "malformed", f"not an SSE data line: {line!r}")
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise APIError(endpoint, "malformed", f"SSE chunk is not JSON: {payload!r}") from None
                    if not isinstance(chunk, dict):
                        raise APIError(endpoint, "malformed", f"SSE chunk is not an object: {payload!r}")
                    if "error" in chunk or chunk.get("object") == "error":  # vLLM: {"object": "error", ...}
                        err = chunk.get("error", chunk)
                        raise APIError(endpoint, "http", f"error in stream: {json.dumps(err)}",
                                       status=None, retriable=False)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        content = delta.get("content")
                        if content:
                            if not isinstance(content, str):
                                raise APIError(endpoint, "malformed", "delta.content is not a string")
                            token_times.append(time.perf_counter())
                            pieces.append(content)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise self._http_error(endpoint, exc) from None
        end = time.perf_counter()
        if not done:
            raise APIError(endpoint, "connection", f"stream ended without [DONE] after {len(pieces)} deltas",
                           retriable=True)
        prompt_tokens = completion_tokens = None
        if usage is not None:
            try:
                prompt_tokens = int(usage["prompt_tokens"])
                completion_tokens = int(usage["completion_tokens"])
            except (KeyError, TypeError, ValueError):
                raise APIError(endpoint, "malformed", f"usage chunk without token counts: {usage!r}") from None
        return ChatStreamResult(
            text="".join(pieces),
            request_start=start,
            first_token_time=token_times[0] if token_times else None,
            end_time=end,
            token_times=token_times,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    # ---- embeddings -----------------------------------------------------------------------------------------------
    def _openai(self):
        if self._oa is None:
            import openai

            self._oa = openai.OpenAI(
                base_url=self._base,
                api_key=self._key() or "EMPTY",  # the SDK insists on a key; unauthenticated servers ignore it
                timeout=self.cfg.timeout_s,
                max_retries=0,  # retries are ours (one policy, counted)
            )
        return self._oa

    def _embed_once(self, batch: list[str], dimensions: int | None, endpoint: str) -> dict:
        import openai

        kwargs = {"input": batch, "model": self.cfg.model, "encoding_format": "float"}
        if dimensions is not None:
            kwargs["dimensions"] = dimensions
        client = self._openai()
        try:
            resp = client.embeddings.create(**kwargs)
        except openai.APITimeoutError:
            raise APIError(endpoint, "timeout", f"no response within {self.cfg.timeout_s:g}s", retriable=True) from None
        except openai.APIConnectionError as exc:
            raise APIError(endpoint, "connection", f"{type(exc).__name__}: {exc}", retriable=True) from None
        except openai.APIStatusError as exc:
            raise _status_error(endpoint, exc.status_code, exc.response.text, exc.response.headers) from None
        except (openai.APIResponseValidationError, ValueError, TypeError) as exc:
            raise APIError(endpoint, "malformed", f"{type(exc).__name__}: {exc}") from None
        try:
            data = resp.model_dump(mode="json")
            rows = sorted(data["data"], key=lambda r: int(r["index"]))
            vectors = [[float(x) for x in r["embedding"]] for r in rows]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise APIError(endpoint, "malformed", f"embeddings response without data[].index/embedding ({exc})") from None
        if [int(r["index"]) for r in rows] != list(range(len(batch))):
            raise APIError(endpoint, "malformed", f"expected indices 0..{len(batch) - 1}, got "
                           f"{[r['index'] for r in rows]}")
        dims = {len(v) for v in vectors}
        if len(dims) != 1 or 0 in dims:
            raise APIError(endpoint, "malformed", f"embeddings of unequal or zero length {sorted(dims)}")
        if dimensions is not None and dims != {dimensions}:
            raise APIError(endpoint, "malformed", f"asked for dimensions={dimensions}, got {sorted(dims)}")
        return {"embeddings": vectors, "usage": data.get("usage")}

    def embeddings(self, inputs: list[str], *, dimensions: int | None = None) -> np.ndarray:
        """float32 ``[len(inputs), d]``, in input order; ``encoding_format="float"`` sent explicitly; cached per batch."""
        inputs = list(inputs)
        if not inputs:
            raise ValueError("embeddings: no inputs")
        if not all(isinstance(t, str) for t in inputs):
            raise TypeError("embeddings: inputs must be strings")
        path = "/embeddings"
        endpoint = f"POST {self._base}{path}"
        out = []
        for i in range(0, len(inputs), self.cfg.batch_size):
            batch = inputs[i : i + self.cfg.batch_size]
            body = {"model": self.cfg.model, "input": batch, "encoding_format": "float"}
            if dimensions is not None:
                body["dimensions"] = dimensions
            resp = self._cached(path, body, lambda b=batch: self._with_retries(
                endpoint, lambda: self._embed_once(b, dimensions, endpoint)))
            out.append(np.asarray(resp["embeddings"], dtype=np.float32))
        dims = {a.shape[1] for a in out}
        if len(dims) != 1:
            raise APIError(endpoint, "malformed", f"batches returned different dimensions {sorted(dims)}")
        return np.concatenate(out, axis=0)

    # ---- rerank ---------------------------------------------------------------------------------------------------
    RERANK_PROTOCOLS = ("jina", "cohere_v2", "vllm_score")

    def rerank(self, query: str, documents: list[str], *, instruction: str | None = None,
               protocol: str = "jina") -> list[float]:
        """Relevance score of every document, in the order given (results realigned by ``index``); cached.

        ``protocol`` picks the request shape (all POST ``{base_url}/<path>``):

        * ``jina`` — ``/rerank`` ``{model, query, documents: [str], top_n: len(documents), return_documents: false}``
          (Jina's API; vLLM's ``/rerank`` and ``/v1/rerank`` take it too, ignoring ``return_documents``);
        * ``cohere_v2`` — ``/rerank`` ``{model, query, documents: [str], top_n: len(documents)}`` with a ``…/v2``
          base URL (Cohere v2 has no ``return_documents``; vLLM serves the same body at ``/v2/rerank``);
        * ``vllm_score`` — ``/score`` ``{model, text_1: query, text_2: documents}``, answered
          ``data: [{index, score}]``.

        ``instruction`` is sent as an extra field (honoured by the project's server and SiliconFlow-style providers,
        ignored by vLLM). Scores must be JSON numbers and finite: a string, a boolean, NaN or infinity is a malformed
        response, never a score."""
        documents = list(documents)
        if not documents:
            raise ValueError("rerank: no documents")
        if protocol not in self.RERANK_PROTOCOLS:
            raise ValueError(f"rerank: protocol {protocol!r}; known: {', '.join(self.RERANK_PROTOCOLS)}")
        n = len(documents)
        if protocol == "vllm_score":
            path, body, list_key, score_key = "/score", {"model": self.cfg.model, "text_1": query,
                                                         "text_2": documents}, "data", "score"
        else:
            path, list_key, score_key = "/rerank", "results", "relevance_score"
            body = {"model": self.cfg.model, "query": query, "documents": documents, "top_n": n}
            if protocol == "jina":
                body["return_documents"] = False
        if instruction is not None:
            body["instruction"] = instruction
        endpoint = f"POST {self._base}{path}"

        def attempt():
            data = self._post_json(path, body)
            results = data.get(list_key)
            if not isinstance(results, list):
                raise APIError(endpoint, "malformed", f"no {list_key!r} list in {json.dumps(data)[:200]}")
            scores: list[float | None] = [None] * n
            for r in results:
                raw = r.get(score_key) if isinstance(r, dict) else None
                idx = r.get("index") if isinstance(r, dict) else None
                if isinstance(idx, bool) or not isinstance(idx, int):
                    raise APIError(endpoint, "malformed", f"result without an integer index: {r!r}")
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not np.isfinite(raw):
                    raise APIError(endpoint, "malformed", f"result {idx}: {score_key} must be a finite JSON number, "
                                   f"got {raw!r}")
                if not 0 <= idx < n or scores[idx] is not None:
                    raise APIError(endpoint, "malformed", f"result index {idx} out of range or repeated (n={n})")
                scores[idx] = float(raw)
            missing = [i for i, s in enumerate(scores) if s is None]
            if missing:
                raise APIError(endpoint, "malformed", f"no score for document indices {missing[:10]} "
                               f"({len(results)} results for {n} documents)")
            return {"scores": scores, "usage": data.get("usage")}

        resp = self._cached(path, body, lambda: self._with_retries(endpoint, attempt))
        return [float(s) for s in resp["scores"]]


def audio_content_part(wav_16k_mono: np.ndarray, sr: int = 16000) -> dict:
    """An OpenAI ``input_audio`` content part: the waveform as base64 WAV, PCM16, mono."""
    import soundfile as sf

    wav = np.asarray(wav_16k_mono)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"audio_content_part: expected a non-empty 1-D mono waveform, got shape {wav.shape}")
    if not np.isfinite(wav).all():
        raise ValueError("audio_content_part: waveform has NaN/inf samples")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav.astype(np.float64), -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(buf.getvalue()).decode("ascii"),
                                                   "format": "wav"}}
