"""Reusable fixtures for tests that need "an API": a tiny real chat LM, served by the project's local server.

Other test modules import what they need (pytest picks fixtures up from the importing module's namespace)::

    from api_fixtures import tiny_chat_dir, chat_backend, api_server  # noqa: F401

* ``tiny_chat_dir`` (session): a saved random-init tiny ``Qwen2ForCausalLM`` + tokenizer + chat template
  (:func:`leverplus.serving.tiny_chat.build_tiny_chat_lm`), loaded back with ``from_pretrained`` by the backend.
* ``chat_backend`` (session): a :class:`~leverplus.serving.chat_backend.CausalLMChatBackend` on it, model name
  :data:`CHAT_MODEL`.
* ``hidden_state_backends`` (session): an embedding and a rerank backend computed from the same tiny model's
  hidden states (last-token pooling, L2 norm, MRL truncation; rerank = cosine) — real model outputs, used to
  exercise the embeddings/rerank routes of the client and server. The consistency track's real Qwen3-style
  recipes live in ``leverplus.serving.embedding_backend``.
* ``api_server`` (per test): an :class:`~leverplus.serving.server.OpenAICompatServer` on 127.0.0.1 serving all
  three, requiring the key :data:`API_KEY` (in the environment variable :data:`API_KEY_ENV` during the test), with
  a fresh request log and no faults.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

CHAT_MODEL = "tiny-chat"
EMBED_MODEL = "tiny-embed"
RERANK_MODEL = "tiny-rerank"
API_KEY = "sk-test-Zq8-SECRET-2c4e"
API_KEY_ENV = "LEVERPLUS_TEST_API_KEY"


class HiddenStateEmbedder:
    """Sentence vectors from a causal LM's last hidden state at the last token (left padding not needed: one text
    at a time), L2-normalised; ``dimensions`` truncates then re-normalises (MRL)."""

    def __init__(self, model, tokenizer, model_name: str):
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._lock = threading.Lock()

    def _vec(self, text: str) -> np.ndarray:
        import torch

        ids = self.tokenizer(text or " ", return_tensors="pt")["input_ids"]
        with self._lock, torch.inference_mode():
            h = self.model.model(input_ids=ids).last_hidden_state[0, -1]
        return h.float().numpy()

    def embed(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        vecs = np.stack([self._vec(t) for t in texts])
        if dimensions is not None:
            if dimensions > vecs.shape[1]:
                raise ValueError(f"dimensions {dimensions} > model dimension {vecs.shape[1]}")
            vecs = vecs[:, :dimensions]
        return (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)


class HiddenStateReranker:
    """Relevance = cosine of the (instruction + query) vector and each document's vector."""

    def __init__(self, embedder: HiddenStateEmbedder, model_name: str):
        self.embedder = embedder
        self.model_name = model_name

    def score(self, query: str, documents: list[str], instruction: str | None) -> list[float]:
        q = self.embedder.embed([f"{instruction}\n{query}" if instruction else query], None)[0]
        d = self.embedder.embed(documents, None)
        return [float(x) for x in d @ q]


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory):
    from leverplus.serving.tiny_chat import build_tiny_chat_lm

    return build_tiny_chat_lm(tmp_path_factory.mktemp("tiny_chat"), seed=0)


@pytest.fixture(scope="session")
def chat_backend(tiny_chat_dir):
    from leverplus.serving.chat_backend import CausalLMChatBackend

    return CausalLMChatBackend(str(tiny_chat_dir), model_name=CHAT_MODEL)


@pytest.fixture(scope="session")
def hidden_state_backends(chat_backend):
    emb = HiddenStateEmbedder(chat_backend.model, chat_backend.tokenizer, EMBED_MODEL)
    return emb, HiddenStateReranker(emb, RERANK_MODEL)


@pytest.fixture
def api_server(chat_backend, hidden_state_backends, monkeypatch):
    from leverplus.serving.server import OpenAICompatServer

    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    emb, rr = hidden_state_backends
    with OpenAICompatServer(api_key=API_KEY, chat=chat_backend, embeddings=emb, rerank=rr) as srv:
        yield srv


def api_config(srv, model: str = CHAT_MODEL, **kw):
    """An APIConfig for ``srv`` with fast retries (tests) and the key taken from :data:`API_KEY_ENV`."""
    from leverplus.api import APIConfig

    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 30.0)
    return APIConfig(base_url=srv.url, model=model, api_key_env=API_KEY_ENV, **kw)
