"""Chat backends for the local OpenAI-compatible server.

A chat backend turns ``messages`` + request ``settings`` into a stream: one text piece per generated token (possibly
``""`` while a multi-byte character or a possible stop string is incomplete), then one final dict
``{"prompt_tokens", "completion_tokens", "finish_reason"}``. Counts come from token ids, not from text.

:class:`CausalLMChatBackend` serves a transformers causal LM with its tokenizer's chat template. Decoding settings
come from the request only and are passed to ``generate`` as one explicit ``GenerationConfig`` (the checkpoint's own
``generation_config`` is replaced by a neutral one at load, so nothing is inherited): greedy when ``temperature`` is
0 or absent, sampling otherwise. The pieces are reusable by other backends (the Omni audio backend):
:func:`generation_config_from_settings` and :func:`stream_generate`.

Settings understood (OpenAI names, plus the vLLM extras): ``max_tokens`` / ``max_completion_tokens`` (default 16),
``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop`` (str or list), ``repetition_penalty``, ``min_tokens``,
``no_repeat_ngram_size``, ``n`` (1 only), ``presence_penalty`` / ``frequency_penalty`` (0 only). Anything else is
refused with a ``ValueError`` (→ HTTP 400): a silently ignored decoding setting is how comparisons go wrong.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ChatBackend",
    "CausalLMChatBackend",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_STALL_TIMEOUT_S",
    "GenerationError",
    "SUPPORTED_SETTINGS",
    "generation_config_from_settings",
    "make_chat_backend",
    "stream_generate",
]

DEFAULT_MAX_TOKENS = 16
# no token for this long (model lock wait included) fails the request instead of hanging it
DEFAULT_STALL_TIMEOUT_S = 600.0
_POLL_S = 0.25
_JOIN_TIMEOUT_S = 10.0


class GenerationError(RuntimeError):
    """``generate`` failed or stalled while serving a request (the server answers 500 / an in-stream error)."""
SUPPORTED_SETTINGS = frozenset({
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop",
    "repetition_penalty", "min_tokens", "no_repeat_ngram_size", "n", "presence_penalty", "frequency_penalty",
    "user",
})


@runtime_checkable
class ChatBackend(Protocol):
    model_name: str

    def stream(self, messages: list[dict], settings: dict) -> Iterator[str | dict]:
        """Text pieces, one per generated token; finally ``{"prompt_tokens", "completion_tokens", "finish_reason"}``."""
        ...


def _num(settings: dict, key: str, kind, default, *, lo=None, hi=None, lo_open=False):
    value = settings.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ValueError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{key} must be <= {hi}, got {value!r}")
    return value


def generation_config_from_settings(settings: dict, *, eos_token_id, pad_token_id, bos_token_id=None,
                                    default_max_tokens: int = DEFAULT_MAX_TOKENS):
    """``(GenerationConfig, seed | None, stop: list[str])`` from request settings; every field explicit.

    ``temperature`` 0 or absent → greedy (``do_sample=False``; ``top_p``/``top_k`` then must not ask for anything);
    otherwise multinomial sampling with the given ``temperature``/``top_p``/``top_k`` (``top_k`` 0/-1 = off).
    Raises ``ValueError`` for unknown or unsupported settings."""
    from transformers import GenerationConfig

    from leverplus.models.generation import NEUTRAL_PROCESSORS

    settings = dict(settings or {})
    unknown = sorted(set(settings) - SUPPORTED_SETTINGS)
    if unknown:
        raise ValueError(f"unsupported setting(s) {unknown}; supported: {sorted(SUPPORTED_SETTINGS - {'user'})}")
    if _num(settings, "n", int, 1) != 1:
        raise ValueError("n must be 1")
    for key in ("presence_penalty", "frequency_penalty"):
        if _num(settings, key, float, 0.0) != 0.0:
            raise ValueError(f"{key} is not supported (only 0)")
    if settings.get("max_tokens") is not None and settings.get("max_completion_tokens") is not None:
        raise ValueError("give max_tokens or max_completion_tokens, not both")
    max_key = "max_completion_tokens" if settings.get("max_completion_tokens") is not None else "max_tokens"
    max_new = _num(settings, max_key, int, default_max_tokens, lo=1)
    min_new = _num(settings, "min_tokens", int, 0, lo=0)
    if min_new > max_new:
        raise ValueError(f"min_tokens ({min_new}) > {max_key} ({max_new})")
    temperature = _num(settings, "temperature", float, 0.0, lo=0.0)
    top_p = _num(settings, "top_p", float, 1.0, lo=0.0, hi=1.0, lo_open=True)
    top_k = _num(settings, "top_k", int, 0, lo=-1)
    if top_k == -1:
        top_k = 0
    repetition_penalty = _num(settings, "repetition_penalty", float, 1.0, lo=0.0, lo_open=True)
    no_repeat = _num(settings, "no_repeat_ngram_size", int, 0, lo=0)
    seed = settings.get("seed")
    if seed is not None:
        seed = _num(settings, "seed", int, None, lo=0)
    stop = settings.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise ValueError("stop must be a string or a list of strings")
    stop = [s for s in stop if s]
    sample = temperature > 0
    if not sample and (top_p != 1.0 or top_k not in (0,)):
        # OpenAI/vLLM treat temperature 0 as greedy whatever top_p/top_k say; keep that, explicitly.
        top_p, top_k = 1.0, 0
    cfg = GenerationConfig(
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_p=top_p,
        top_k=top_k if top_k > 0 else None,
        num_beams=1,
        num_return_sequences=1,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat,
        **NEUTRAL_PROCESSORS,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
    )
    return cfg, seed, stop


class _TokenQueueStreamer:
    """A transformers streamer: ``put`` is called once with the prompt ids, then once per generated token."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        now = time.perf_counter()
        for t in ids:
            self.q.put(("token", int(t), now))

    def end(self):
        self.q.put(("end", None, time.perf_counter()))


class _Cancel:
    """A StoppingCriteria that ends generation when the consumer is gone or a stop string was reached."""

    def __init__(self):
        self.flag = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


def _holdback(text: str, stops: list[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                best = max(best, k)
                break
    return best


def stream_generate(model, tokenizer, model_inputs: dict, settings: dict, *, lock: threading.Lock | None = None,
                    default_max_tokens: int = DEFAULT_MAX_TOKENS,
                    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S) -> Iterator[str | dict]:
    """Run ``model.generate(**model_inputs)`` with the request's settings in a thread and yield one text piece per
    generated token, then the usage dict. ``model_inputs`` must hold ``input_ids`` of batch 1. Special tokens are
    not part of the text; the EOS token, when generated, counts in ``completion_tokens`` (as vLLM counts it).

    Never waits unboundedly: an exception in ``generate`` is raised here as :class:`GenerationError` (a 500 /
    in-stream error for the server, with the original type and message); no token (nor the end) for
    ``stall_timeout_s`` seconds (waiting for the model lock included; ``None`` = wait forever) cancels the
    generation and raises :class:`GenerationError`; a consumer that stops early cancels the generation and waits
    (bounded) for the thread, so the model lock is free for the next request."""
    import torch
    from transformers import StoppingCriteriaList

    gen_cfg = model.generation_config
    eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tokenizer.eos_token_id
    pad = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else tokenizer.pad_token_id
    cfg, seed, stops = generation_config_from_settings(settings, eos_token_id=eos, pad_token_id=pad,
                                                       default_max_tokens=default_max_tokens)
    input_ids = model_inputs["input_ids"]
    if input_ids.shape[0] != 1:
        raise ValueError("stream_generate serves one conversation at a time")
    prompt_tokens = int(input_ids.shape[1])
    eos_ids = set([eos] if isinstance(eos, int) else list(eos or []))
    streamer = _TokenQueueStreamer()
    cancel = _Cancel()
    errors: list[BaseException] = []
    stalled = threading.Event()
    lock = lock or threading.Lock()

    def run():
        try:
            with lock, torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                model.generate(**model_inputs, generation_config=cfg, streamer=streamer,
                               stopping_criteria=StoppingCriteriaList([cancel]))
        except BaseException as exc:  # noqa: BLE001 — re-raised in the consumer
            errors.append(exc)
        finally:
            streamer.end()  # always: the consumer must never wait for an end that cannot come

    def next_event():
        since = time.monotonic()
        while True:
            try:
                return streamer.q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            if not thread.is_alive() and streamer.q.empty():
                raise GenerationError("the generate thread ended without finishing the stream")
            if stall_timeout_s is not None and time.monotonic() - since >= stall_timeout_s:
                cancel.flag.set()
                stalled.set()
                raise GenerationError(f"generation stalled: no token for {stall_timeout_s:g} s "
                                      f"({len(ids)} generated); cancelled")

    thread = threading.Thread(target=run, name="generate", daemon=True)
    thread.start()
    ids: list[int] = []
    emitted = 0
    finish = "length"
    stop_hit = False
    ended = False
    try:
        while True:
            kind, tok, _ = next_event()
            if kind == "end":
                ended = True
                break
            if cancel.flag.is_set():
                continue  # a token generated after the stop string was found: not part of the answer
            ids.append(tok)
            if tok in eos_ids:
                finish = "stop"
                yield ""
                continue
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                yield ""  # an incomplete multi-byte character: wait for the next token
                continue
            hit = min((text.find(s) for s in stops if s in text), default=-1) if stops else -1
            if hit >= 0:
                finish = "stop"
                stop_hit = True
                cancel.flag.set()
                yield text[emitted:hit] if hit > emitted else ""
                emitted = max(emitted, hit)
                continue
            safe = len(text) - _holdback(text, stops)
            piece = text[emitted:safe] if safe > emitted else ""
            emitted = max(emitted, safe)
            yield piece
        thread.join(_JOIN_TIMEOUT_S)
        if errors:
            exc = errors[0]
            raise GenerationError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        if not stop_hit and ids:
            # flush what was held back (a trailing incomplete character, a stop-string prefix that never completed)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if len(text) > emitted:
                yield text[emitted:]
        yield {"prompt_tokens": prompt_tokens, "completion_tokens": len(ids), "finish_reason": finish}
    finally:
        if not ended:
            cancel.flag.set()  # the consumer went away (or the generation failed/stalled): stop generating
            if not stalled.is_set():  # a stuck thread is left to stop when it resumes (it is a daemon)
                thread.join(_JOIN_TIMEOUT_S)  # it stops at the next decoding step; bounded all the same


class CausalLMChatBackend:
    """A transformers causal LM (``AutoModelForCausalLM``) and its tokenizer's chat template, one request at a time."""

    def __init__(self, model_dir: str, *, model_name: str, dtype: str = "float32", device: str = "cpu",
                 chat_template_kwargs: dict | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from leverplus.models.generation import neutral_generation_config

        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
        self.model_name = model_name
        self.model_dir = str(model_dir)
        self.dtype = dtype
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{self.model_dir}: the tokenizer has no chat template")
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch_dtype).to(device).eval()
        own = self.model.generation_config
        eos = own.eos_token_id if own.eos_token_id is not None else self.tokenizer.eos_token_id
        pad = own.pad_token_id if own.pad_token_id is not None else self.tokenizer.pad_token_id
        self.model.generation_config = neutral_generation_config(eos_token_id=eos, pad_token_id=pad,
                                                                 bos_token_id=own.bos_token_id)
        self._lock = threading.Lock()

    def prompt_ids(self, messages: list[dict]):
        """Token ids of the chat-template prompt (with the generation prompt), shape [1, L]."""
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError("every message needs 'role' and 'content'")
            if not isinstance(m["content"], str):
                parts = m["content"]
                if not (isinstance(parts, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in parts)):
                    raise ValueError("this text model accepts string content or text parts only")
        msgs = [m if isinstance(m["content"], str) else
                {**m, "content": "".join(p.get("text", "") for p in m["content"])} for m in messages]
        enc = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_tensors="pt",
                                                 return_dict=True, **self.chat_template_kwargs)
        return enc["input_ids"].to(self.model.device)

    def stream(self, messages: list[dict], settings: dict) -> Iterator[str | dict]:
        input_ids = self.prompt_ids(messages)
        # validate settings before the generator starts, so a bad request fails before any byte is sent
        generation_config_from_settings(settings, eos_token_id=self.model.generation_config.eos_token_id,
                                        pad_token_id=self.model.generation_config.pad_token_id)
        import torch

        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return stream_generate(self.model, self.tokenizer, inputs, settings, lock=self._lock)

    def info(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_dir": self.model_dir, "dtype": self.dtype}


def make_chat_backend(model_dir: str, *, model_name: str, options: dict) -> CausalLMChatBackend:
    """Registry factory (``leverplus.serving.backends``): options ``dtype``, ``device``, ``chat_template_kwargs``."""
    allowed = {"dtype", "device", "chat_template_kwargs"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"causal_lm chat backend: unknown option(s) {unknown}; allowed: {sorted(allowed)}")
    return CausalLMChatBackend(model_dir, model_name=model_name, **options)
