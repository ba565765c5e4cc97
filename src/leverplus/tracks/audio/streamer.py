"""A `generate` streamer that timestamps every generated *token* (not decoded text chunks).

transformers calls `streamer.put` once with the prompt ids, then once per decoding step with the new token
(synchronously, inside the decoding loop, on CPU and CUDA alike), and `end()` when done. `TokenTimestampStreamer`
skips the prompt call and records `time.perf_counter()` and the token id at every later call; an optional
`on_token` callback receives each id as it arrives (the local server streams from it).
"""
from __future__ import annotations

import time
from collections.abc import Callable

from transformers.generation.streamers import BaseStreamer


class TokenTimestampStreamer(BaseStreamer):
    def __init__(self, on_token: Callable[[int], None] | None = None):
        self.token_ids: list[int] = []
        self.token_times: list[float] = []
        self.prompt_seen = False
        self.ended = False
        self._on_token = on_token

    def put(self, value) -> None:
        now = time.perf_counter()
        if not self.prompt_seen:
            self.prompt_seen = True  # the first call carries the prompt
            return
        ids = value.reshape(-1).tolist()
        if len(ids) != 1:
            raise ValueError(f"TokenTimestampStreamer supports batch size 1 and num_beams 1, got {len(ids)} ids")
        self.token_ids.append(int(ids[0]))
        self.token_times.append(now)
        if self._on_token is not None:
            self._on_token(int(ids[0]))

    def end(self) -> None:
        self.ended = True
