"""Embedding and rerank backends of the local OpenAI-compatible server (consistency track).

They serve `leverplus.tracks.consistency.embedding.QwenEmbedder` and `leverplus.tracks.consistency.reranker.QwenReranker` to the server's
protocols (`embed(texts, dimensions)`, `score(query, documents, instruction)`), each under a recipe that can differ
from the local one in exactly the ways real deployments drift (the `options` of the factories):

| option        | embeddings | rerank | drift it reproduces                                                 |
|---------------|------------|--------|---------------------------------------------------------------------|
| `dtype`       | yes        | yes    | precision: `float32`, `bfloat16`, `float16`                         |
| `separator`   | (client)   | yes    | prompt separator: `\\n` (transformers example) vs `\\n\\n` (vLLM's)   |
| `instruction` | (client)   | yes    | rerank: the `<Instruct>` line present (true) or left out (false)    |
| `eos`         | yes        | —      | `tokenizer` / `append` / `none`: the end token appended or not      |
| `template`    | —          | yes    | true: the server applies the Qwen3 prompt (SiliconFlow-style); false: |
|               |            |        | vLLM without a score template — `query + document` scored as sent   |
| `max_length`  | yes        | yes    | truncation length                                                   |
| `batch_size`  | yes        | yes    | requests are batched in order (numerics may move in the last bits)  |

Embedding requests carry finished strings: the query instruction (and its separator) is the caller's formatting,
so those two causes are client-side for `/v1/embeddings`. With `template: false` the request's `instruction` field is
ignored, as vLLM (which has no such field) ignores it. `device` places the served model (`compute.device`).
`count_tokens` gives the server's `usage` (tokens the model reads, not whitespace words).
"""
from __future__ import annotations

import numpy as np

from leverplus.tracks.consistency.embedding import EmbeddingRecipe, QwenEmbedder
from leverplus.tracks.consistency.reranker import QwenReranker, RerankRecipe

EMBEDDING_OPTIONS = {"dtype", "eos", "max_length", "batch_size"}
RERANK_OPTIONS = {"dtype", "separator", "instruction", "max_length", "batch_size", "default_instruction", "template"}


def _check(options: dict, allowed: set[str], what: str) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"{what} backend: unknown option(s) {unknown}; known: {sorted(allowed)}")


def embedding_recipe(options: dict) -> EmbeddingRecipe:
    _check(options, EMBEDDING_OPTIONS, "embeddings")
    return EmbeddingRecipe.from_dict(options)


def rerank_recipe(options: dict) -> RerankRecipe:
    _check(options, RERANK_OPTIONS, "rerank")
    d = dict(options)
    if "instruction" in d:
        d["use_instruction"] = bool(d.pop("instruction"))
    if "default_instruction" in d:
        d["instruction"] = d.pop("default_instruction")
    return RerankRecipe.from_dict(d)


class QwenEmbeddingBackend:
    def __init__(self, embedder: QwenEmbedder, *, model_name: str | None = None):
        self.embedder = embedder
        self.model_name = model_name

    def embed(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        if dimensions is not None:
            d = self.embedder.model.config.hidden_size
            if not 1 <= int(dimensions) <= d:
                raise ValueError(f"dimensions must be in 1..{d}")
        vecs = self.embedder.embed_texts(list(texts))
        if dimensions is not None:
            from leverplus.tracks.consistency.embedding import normalise

            vecs = normalise(vecs, int(dimensions))
        return vecs

    def count_tokens(self, texts: list[str]) -> int:
        return self.embedder.count_tokens(texts)


class QwenRerankBackend:
    def __init__(self, reranker: QwenReranker, *, model_name: str | None = None):
        self.reranker = reranker
        self.model_name = model_name

    def score(self, query: str, documents: list[str], instruction: str | None) -> list[float]:
        if not documents:
            raise ValueError("documents must not be empty")
        return [float(p) for p in self.reranker.score(query, list(documents), self._instruction(instruction)).prob]

    def _instruction(self, instruction: str | None) -> str | None:
        return instruction if self.reranker.recipe.template else None

    def count_tokens(self, query: str, documents: list[str], instruction: str | None = None) -> int:
        return self.reranker.count_tokens(query, list(documents), self._instruction(instruction))


def make_embedding_backend(model_dir: str, *, model_name: str, options: dict, device: str | None = "cpu") -> QwenEmbeddingBackend:
    return QwenEmbeddingBackend(QwenEmbedder(model_dir, embedding_recipe(options), device=device), model_name=model_name)


def make_rerank_backend(model_dir: str, *, model_name: str, options: dict, device: str | None = "cpu") -> QwenRerankBackend:
    return QwenRerankBackend(QwenReranker(model_dir, rerank_recipe(options), device=device), model_name=model_name)
