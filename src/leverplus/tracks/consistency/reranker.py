"""Qwen3-Reranker, the official recipe: a causal LM asked "yes" or "no", scored at the last position.

    <|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the Instruct
    provided. Note that the answer can only be "yes" or "no".<|im_end|>\\n<|im_start|>user\\n
    <Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}
    <|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n

Prefix, body and suffix are tokenised separately (no special tokens added) and concatenated, the body truncated to
`max_length` minus the prefix and suffix; batches are left-padded. score = sigmoid(logit_yes − logit_no) at the last
position (the official code's softmax over [no, yes] is the same number); the logit difference is kept too.

Loading goes through `AutoModelForCausalLM` with the weights checked (`embedding_loading.load_checked`): the
`AutoModelForSequenceClassification` route, which gives a random `score` head, is refused.
`separator` (`\\n` in the transformers example, `\\n\\n` in the vLLM example of the Qwen README), `use_instruction`
and `template` exist to reproduce drift. `template=False` is what vLLM's `/rerank` and `/score` do for an LLM
reranker without a score template (vllm/entrypoints/pooling/score/utils.py `get_score_prompt`): the query and the
document strings are concatenated and tokenised as they are (`tokenizer(query + document)`), no system prompt, no
`<Instruct>`/`<Query>`/`<Document>` labels, no assistant suffix — Qwen3-Reranker then scores near random.
`query_template` / `document_template` are the strings a client sends to such a server instead (vLLM's Qwen3-Reranker
example): their concatenation is PREFIX + body + SUFFIX, the official prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from leverplus.tracks.consistency.embedding import DEFAULT_TASK

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@dataclass(frozen=True)
class RerankRecipe:
    instruction: str = DEFAULT_TASK
    use_instruction: bool = True
    separator: str = "\n"
    max_length: int = 8192
    dtype: str = "float32"
    batch_size: int = 16
    template: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "RerankRecipe":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_(self, **changes) -> "RerankRecipe":
        return replace(self, **changes)


def format_body(query: str, document: str, recipe: RerankRecipe = RerankRecipe(), instruction: str | None = None) -> str:
    """`<Instruct>: {i}\\n<Query>: {q}\\n<Document>: {d}` (byte-exact); `instruction` overrides the recipe's."""
    sep = recipe.separator
    head = f"<Instruct>: {instruction or recipe.instruction}{sep}" if recipe.use_instruction else ""
    return f"{head}<Query>: {query}{sep}<Document>: {document}"


def query_template(query: str, recipe: RerankRecipe = RerankRecipe(), instruction: str | None = None) -> str:
    """What a client sends as `query` to a server that applies no template: PREFIX + the body up to the document."""
    sep = recipe.separator
    head = f"<Instruct>: {instruction or recipe.instruction}{sep}" if recipe.use_instruction else ""
    return f"{PREFIX}{head}<Query>: {query}{sep}"


def document_template(document: str) -> str:
    """What a client sends as each document to a server that applies no template: the document line + SUFFIX."""
    return f"<Document>: {document}{SUFFIX}"


@dataclass
class RerankScores:
    logit: np.ndarray  # logit_yes − logit_no, float64 [n]
    prob: np.ndarray  # sigmoid(logit), float64 [n]


class QwenReranker:
    """A Qwen3-Reranker checkpoint (`AutoModelForCausalLM`, weights checked) with one recipe, on `device`
    (`compute.device`: auto = CUDA when available)."""

    def __init__(self, model_dir: str | Path, recipe: RerankRecipe = RerankRecipe(), *, model=None, tokenizer=None,
                 device: str | None = "cpu"):
        from transformers import AutoModelForCausalLM

        from leverplus.tracks.consistency.embedding import load_tokenizer
        from leverplus.tracks.consistency.embedding_loading import load_checked, model_device, resolve_device

        self.model_dir = str(model_dir)
        self.recipe = recipe
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
        self.device = resolve_device(device)  # where it was placed (recorded with every result)
        self.model = model if model is not None else load_checked(AutoModelForCausalLM, model_dir, dtype=recipe.dtype,
                                                                  device=self.device)
        self._inputs_to = model_device(self.model)  # inputs follow the model
        tok = self.tokenizer
        self.yes_id, self.no_id = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
        if tok.unk_token_id is not None and tok.unk_token_id in (self.yes_id, self.no_id):
            raise ValueError(f"{model_dir}: the tokenizer has no single `yes`/`no` token")
        self.prefix_ids = tok.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = tok.encode(SUFFIX, add_special_tokens=False)

    def with_recipe(self, recipe: RerankRecipe) -> "QwenReranker":
        same = recipe.dtype == self.recipe.dtype
        return QwenReranker(self.model_dir, recipe, model=self.model if same else None, tokenizer=self.tokenizer,
                            device=self.device)

    def pair_ids(self, query: str, documents: list[str], instruction: str | None = None) -> list[list[int]]:
        if not self.recipe.template:  # vLLM without a score template: the strings as given, concatenated
            enc = self.tokenizer([query + d for d in documents], truncation=True, max_length=self.recipe.max_length)
            return [list(x) for x in enc["input_ids"]]
        budget = self.recipe.max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if budget < 1:
            raise ValueError(f"max_length={self.recipe.max_length} leaves no room after the prompt prefix and suffix")
        bodies = [format_body(query, d, self.recipe, instruction) for d in documents]
        enc = self.tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        return [self.prefix_ids + list(b) + self.suffix_ids for b in enc]

    def score_ids(self, ids: list[list[int]]) -> RerankScores:
        import torch

        logits = []
        with torch.inference_mode():
            for s in range(0, len(ids), self.recipe.batch_size):
                batch = self.tokenizer.pad({"input_ids": ids[s : s + self.recipe.batch_size]}, padding=True,
                                           return_tensors="pt")
                last = self.model(input_ids=batch["input_ids"].to(self._inputs_to),
                                  attention_mask=batch["attention_mask"].to(self._inputs_to)).logits[:, -1, :]
                logits.append((last[:, self.yes_id].float() - last[:, self.no_id].float()).double().cpu().numpy())
        logit = np.concatenate(logits) if logits else np.zeros(0)
        return RerankScores(logit=logit, prob=1.0 / (1.0 + np.exp(-logit)))

    def score(self, query: str, documents: list[str], instruction: str | None = None) -> RerankScores:
        return self.score_ids(self.pair_ids(query, documents, instruction))

    def count_tokens(self, query: str, documents: list[str], instruction: str | None = None) -> int:
        """Prompt tokens the model reads for these pairs (a server's `usage`)."""
        return sum(map(len, self.pair_ids(query, documents, instruction)))
