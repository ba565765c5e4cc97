"""A least-recently-used cache of tensors bounded by their total size: the per-image vision features the ICL
adapters keep between calls. A beam-search shard on a real dataset sees most of the train images, and one
Qwen2.5-VL-3B image is ~1.5 MB of bf16 features, so an unbounded cache would outgrow a GPU. Evicting a tensor only
drops the cache's reference; callers holding it keep a valid tensor.

The bound is the adapter's `image_cache_mb`, else the environment variable LEVERPLUS_IMAGE_CACHE_MB, else 8192 MB.
It changes no score (an evicted image is re-encoded when it is needed again), so it is a runtime knob, not a config
key that would rerun stages."""
from __future__ import annotations

import os
from collections import OrderedDict

import torch


DEFAULT_IMAGE_CACHE_MB = 8192


class TensorLRU:
    def __init__(self, max_mb: float):
        self.max_bytes = int(max_mb * 2**20)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.nbytes = 0

    @classmethod
    def for_images(cls, max_mb: float | None = None) -> TensorLRU:
        if max_mb is None:
            max_mb = float(os.environ.get("LEVERPLUS_IMAGE_CACHE_MB", DEFAULT_IMAGE_CACHE_MB))
        return cls(max_mb)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def keys(self) -> list[str]:
        """Cached keys, least recently used first."""
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> torch.Tensor | None:
        t = self._items.get(key)
        if t is not None:
            self._items.move_to_end(key)
        return t

    def put(self, key: str, t: torch.Tensor) -> None:
        if key in self._items:
            self.nbytes -= _size(self._items.pop(key))
        self._items[key] = t
        self.nbytes += _size(t)
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            self.nbytes -= _size(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
