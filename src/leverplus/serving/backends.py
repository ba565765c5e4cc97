"""Registry of backend factories for ``python -m leverplus.serving`` (lm-eval style: names, not string dispatch).

A factory is ``factory(model_dir: str, *, model_name: str, options: dict) -> backend`` and lives in its track's
module, imported only when chosen (so a missing optional module fails only when asked for, with a clear message):

=================  ============  ==========================================================
slot               name          factory
=================  ============  ==========================================================
chat               causal_lm     ``leverplus.serving.chat_backend:make_chat_backend``
chat               omni          ``leverplus.serving.omni_backend:make_chat_backend``
embeddings         default       ``leverplus.serving.embedding_backend:make_embedding_backend``
rerank             default       ``leverplus.serving.embedding_backend:make_rerank_backend``
=================  ============  ==========================================================

``options`` is the JSON object given on the command line (``--chat-options '{"dtype": "bfloat16"}'``), passed
through untouched: each factory documents and validates its own keys (e.g. precision, prompt separators,
instruction on/off — what the consistency track injects as a drift cause).
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BACKEND_FACTORIES", "SLOTS", "make_backend"]

SLOTS = ("chat", "embeddings", "rerank")

BACKEND_FACTORIES: dict[tuple[str, str], str] = {
    ("chat", "causal_lm"): "leverplus.serving.chat_backend:make_chat_backend",
    ("chat", "omni"): "leverplus.serving.omni_backend:make_chat_backend",
    ("embeddings", "default"): "leverplus.serving.embedding_backend:make_embedding_backend",
    ("rerank", "default"): "leverplus.serving.embedding_backend:make_rerank_backend",
}


def make_backend(slot: str, name: str, model_dir: str, *, model_name: str, options: dict | None = None) -> Any:
    """Build the backend registered as ``(slot, name)``."""
    target = BACKEND_FACTORIES.get((slot, name))
    if target is None:
        known = sorted(n for s, n in BACKEND_FACTORIES if s == slot)
        raise ValueError(f"no {slot} backend named {name!r}; registered: {known}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ValueError(f"{slot} backend {name!r} needs {module_name}, which is not installed/built yet") from None
        raise
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"{module_name} has no factory {attr}() for the {slot} backend {name!r}")
    return factory(str(model_dir), model_name=model_name, options=dict(options or {}))
