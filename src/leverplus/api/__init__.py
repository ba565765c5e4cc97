"""The project's one OpenAI-compatible API client (see docs/api.md)."""
from leverplus.api.client import (
    APIConfig,
    APIError,
    ChatStreamResult,
    OpenAICompatClient,
    audio_content_part,
    request_key,
)

__all__ = [
    "APIConfig",
    "APIError",
    "ChatStreamResult",
    "OpenAICompatClient",
    "audio_content_part",
    "request_key",
]
