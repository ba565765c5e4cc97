"""Qwen3-Embedding, the official recipe, as one readable file.

* Queries carry an instruction, `Instruct: {task}\\nQuery:{query}` (no space after `Query:`); documents go in bare.
* The current Qwen3-Embedding tokenizer appends `<|endoftext|>` itself (its post-processor); the model is pooled at
  that last token. `eos` says how the end of sequence is made: `tokenizer` (as the tokenizer does it, the default),
  `append` (the first release's recipe: tokenise without special tokens, truncate to `max_length - 1`, append
  `<|endoftext|>` unless it is already there), `none` (no end token: what a server with an older tokenizer or
  `add_special_tokens=False` sends).
* Left padding, last-token pooling (the last attended position, so right-padded batches pool the same token), L2
  normalisation; MRL: keep the first `dimensions` components, then re-normalise.
* Truncation at `max_length` tokens, the end token kept.

`separator` (between the instruction and `Query:`) and `instruction` (off: queries go in bare) exist to reproduce the
ways a deployment drifts from the recipe (see `leverplus.serving.embedding_backend` and the consistency diagnosis).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
EOS_TOKEN = "<|endoftext|>"
EOS_MODES = ("tokenizer", "append", "none")


@dataclass(frozen=True)
class EmbeddingRecipe:
    task: str = DEFAULT_TASK
    instruction: bool = True
    separator: str = "\n"
    eos: str = "tokenizer"
    max_length: int = 8192
    dtype: str = "float32"
    dimensions: int | None = None
    batch_size: int = 16

    def __post_init__(self):
        if self.eos not in EOS_MODES:
            raise ValueError(f"eos {self.eos!r}: expected one of {', '.join(EOS_MODES)}")
        if self.max_length < 2:
            raise ValueError("max_length must be at least 2")
        if self.dimensions is not None and self.dimensions < 1:
            raise ValueError("dimensions must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "EmbeddingRecipe":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def with_(self, **changes) -> "EmbeddingRecipe":
        return replace(self, **changes)


def format_query(query: str, recipe: EmbeddingRecipe = EmbeddingRecipe()) -> str:
    """The text a query is embedded as: `Instruct: {task}\\nQuery:{query}` (byte-exact), or bare without instruction."""
    if not recipe.instruction:
        return query
    return f"Instruct: {recipe.task}{recipe.separator}Query:{query}"


def last_token_pool(hidden, attention_mask):
    """Hidden state at each row's last attended position (left padding: the last column; right padding: the last 1)."""
    import torch

    width = attention_mask.shape[1]
    last = width - 1 - torch.flip(attention_mask, dims=[1]).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def normalise(x: np.ndarray, dimensions: int | None = None) -> np.ndarray:
    """L2-normalise rows; with `dimensions`, truncate first (MRL) and re-normalise."""
    x = np.asarray(x, dtype=np.float32)
    if dimensions is not None:
        if dimensions > x.shape[1]:
            raise ValueError(f"dimensions={dimensions} exceeds the model's {x.shape[1]}")
        x = x[:, :dimensions]
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, np.float32(1e-12))


def token_ids(tokenizer, texts: list[str], recipe: EmbeddingRecipe) -> list[list[int]]:
    """Token ids per text, truncated to `max_length`, with the end token made as `recipe.eos` says."""
    if recipe.eos == "tokenizer":
        return [list(x) for x in tokenizer(texts, truncation=True, max_length=recipe.max_length)["input_ids"]]
    bare = tokenizer(texts, add_special_tokens=False)["input_ids"]
    if recipe.eos == "none":
        return [list(x)[: recipe.max_length] for x in bare]
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    out = []
    for ids in bare:
        ids = list(ids)
        if not ids or ids[-1] != eos_id:
            ids = ids[: recipe.max_length - 1] + [eos_id]
        out.append(ids[: recipe.max_length])
    return out


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left", trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = EOS_TOKEN
    return tok


class QwenEmbedder:
    """A Qwen3-Embedding checkpoint (`AutoModel`, weights checked) with one recipe, on `device` (`compute.device`:
    auto = CUDA when available); `embed_*` return float32 [n, d] on the CPU."""

    def __init__(self, model_dir: str | Path, recipe: EmbeddingRecipe = EmbeddingRecipe(), *, model=None, tokenizer=None,
                 device: str | None = "cpu"):
        from transformers import AutoModel

        from leverplus.tracks.consistency.embedding_loading import load_checked, model_device, resolve_device

        self.model_dir = str(model_dir)
        self.recipe = recipe
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
        self.device = resolve_device(device)  # where it was placed (recorded with every result)
        self.model = model if model is not None else load_checked(AutoModel, model_dir, dtype=recipe.dtype,
                                                                  device=self.device)
        self._inputs_to = model_device(self.model)  # inputs follow the model

    def with_recipe(self, recipe: EmbeddingRecipe) -> "QwenEmbedder":
        """The same weights under another recipe (reloaded, on the same device, only when the precision changes)."""
        same = recipe.dtype == self.recipe.dtype
        return QwenEmbedder(self.model_dir, recipe, model=self.model if same else None, tokenizer=self.tokenizer,
                            device=self.device)

    def embed_texts(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Embed texts exactly as given (no instruction added), in batches of `batch_size`, in order."""
        import torch

        texts = list(texts)
        ids = token_ids(self.tokenizer, texts, self.recipe)
        out = []
        starts = range(0, len(ids), self.recipe.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", unit="batch")
        with torch.inference_mode():
            for s in starts:
                batch = self.tokenizer.pad({"input_ids": ids[s : s + self.recipe.batch_size]}, padding=True,
                                           return_tensors="pt")
                mask = batch["attention_mask"].to(self._inputs_to)
                hidden = self.model(input_ids=batch["input_ids"].to(self._inputs_to), attention_mask=mask).last_hidden_state
                out.append(last_token_pool(hidden, mask).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return normalise(np.concatenate(out), self.recipe.dimensions)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for these texts (a server's `usage`)."""
        return sum(map(len, token_ids(self.tokenizer, list(texts), self.recipe)))

    def embed_queries(self, queries: list[str], **kw) -> np.ndarray:
        return self.embed_texts([format_query(q, self.recipe) for q in queries], **kw)

    def embed_documents(self, documents: list[str], **kw) -> np.ndarray:
        return self.embed_texts(documents, **kw)
