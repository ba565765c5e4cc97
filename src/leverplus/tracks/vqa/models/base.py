"""The one interface every in-context-learning model implements, and the registry that picks an adapter.

Scores are P̄(y | S ⊕ x) = exp(−mean token cross-entropy over the answer tokens y), the length-normalised answer
probability InfoScore is built on (design.md §3). `score_reference` is the straightforward path — one full forward
per sequence through the model's processor, images re-encoded every time — kept as the oracle that tests and the
benchmark compare the fast paths against.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.models.generation import GenerationSettings

ORDERS = ("left", "right")


def extend(beam: Sequence[VQAExample], cand: VQAExample, order: str) -> list[VQAExample]:
    """ICD sequence in prompt order after adding `cand`: `left` prepends it (Lever-LM's order), `right` puts it
    next to the query."""
    if order == "left":
        return [cand, *beam]
    if order == "right":
        return [*beam, cand]
    raise ValueError(f"construct_order must be one of {ORDERS}, got {order!r}")


class ICLModel(ABC):
    """A vision-language model used with in-context demonstrations."""

    name: str = "?"

    @abstractmethod
    def answer_mask(self, icds: Sequence[VQAExample], query: VQAExample) -> tuple[list[int], list[bool]]:
        """Token ids of the full scored sequence and a mask that is True exactly on the query answer's tokens."""

    @abstractmethod
    def score_reference(self, icds: Sequence[VQAExample], query: VQAExample) -> float:
        """P̄(answer | icds ⊕ query) with one full, uncached forward (the original algorithm)."""

    @abstractmethod
    def score(self, icd_seqs: Sequence[Sequence[VQAExample]], queries: Sequence[VQAExample]) -> np.ndarray:
        """P̄ for each (icd sequence, query) row, batched, image features cached."""

    def score_candidates(
        self, beam: Sequence[VQAExample], candidates: Sequence[VQAExample], query: VQAExample, order: str
    ) -> np.ndarray:
        """P̄(answer | extend(beam, c) ⊕ query) for every candidate c. Adapters override this to reuse the shared
        prefix; the default batches full sequences."""
        seqs = [extend(beam, c, order) for c in candidates]
        return self.score(seqs, [query] * len(seqs))

    def score_step(
        self,
        beams: Sequence[Sequence[VQAExample]],
        candidates: Sequence[Sequence[VQAExample]],
        query: VQAExample,
        order: str,
    ) -> list[np.ndarray]:
        """`score_candidates(beams[i], candidates[i], ...)` for every beam of one beam-search step. Adapters
        override this to batch rows of several beams together."""
        return [self.score_candidates(b, c, query, order) for b, c in zip(beams, candidates)]

    @abstractmethod
    def generate(
        self,
        icd_seqs: Sequence[Sequence[VQAExample]],
        queries: Sequence[VQAExample],
        generation: GenerationSettings | dict | None = None,
        *,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Answers under the explicit decoding settings `generation` (config `infer.generation`; None: the
        defaults of `GenerationSettings`, greedy), `max_new_tokens` overriding theirs; batched, equal to
        batch-size-1 answers. Nothing is taken from a checkpoint's own generation config."""

    def prompt_settings(self) -> dict:
        """The prompt format, instruction and answer post-processing this adapter applies (for the signature)."""
        return {}


_ADAPTERS: dict[str, Callable[..., ICLModel]] = {}


def register_adapter(name: str):
    def deco(factory):
        _ADAPTERS[name] = factory
        return factory

    return deco


def adapter_names() -> list[str]:
    _import_builtin_adapters()
    return sorted(_ADAPTERS)


def load_icl_model(adapter: str, path: str, **options) -> ICLModel:
    """Instantiate the adapter registered under `adapter` (config key `models.<name>.adapter`)."""
    _import_builtin_adapters()
    try:
        factory = _ADAPTERS[adapter]
    except KeyError:
        raise ValueError(f"unknown model adapter {adapter!r}; registered: {sorted(_ADAPTERS)}") from None
    return factory(path, **options)


def _import_builtin_adapters() -> None:
    from leverplus.tracks.vqa.models import qwen2_5_vl  # noqa: F401

    try:
        from leverplus.tracks.vqa.models import flamingo  # noqa: F401
    except ImportError:  # adapter module itself imports open_flamingo lazily; absence only hides nothing
        pass
