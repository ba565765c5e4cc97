"""The local OpenAI-compatible server ("the API" for tests and demos) and its backends (see docs/api.md).

Imports are lazy so that ``import leverplus.serving`` does not pull in torch/transformers.
"""
from __future__ import annotations

__all__ = [
    "Backend",
    "CausalLMChatBackend",
    "ChatBackend",
    "EmbeddingBackend",
    "FaultPlan",
    "OpenAICompatServer",
    "RerankBackend",
]

_WHERE = {
    "Backend": "server",
    "EmbeddingBackend": "server",
    "FaultPlan": "server",
    "OpenAICompatServer": "server",
    "RecordedRequest": "server",
    "RerankBackend": "server",
    "CausalLMChatBackend": "chat_backend",
    "ChatBackend": "chat_backend",
}


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'leverplus.serving' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"leverplus.serving.{mod}"), name)
