"""Batch operations on a language model's KV cache, for both cache formats a Flamingo LM may return.

transformers' own models return a `Cache` object (`DynamicCache`, …) that has the batch operations as methods.
Remote-code models written for older transformers — MosaicGPT, the LM of OpenFlamingo-3B — return the legacy
format instead: a list (or tuple) with one `(key, value)` tuple per layer, in a layout of their own (MosaicGPT:
(batch, seq, d_model); older transformers MPT/Bloom: (batch × heads, …)). Such a model indexes and updates the
container it is given, so it must get its own format back: converting it to a `DynamicCache` would hand it an
object it cannot read. Operations on the legacy format therefore keep the container types and never assume a
layout beyond "the leading dimension of every tensor holds the rows".
"""
from __future__ import annotations

import torch


def is_legacy_cache(cache) -> bool:
    """A per-layer list/tuple of tuples of tensors (an initialised-but-empty layer is an empty tuple)."""
    return isinstance(cache, (list, tuple)) and all(
        isinstance(layer, tuple) and all(isinstance(t, torch.Tensor) for t in layer) for layer in cache
    )


def repeat_prefix_cache(cache, n: int):
    """The cache of a single-row prefix, repeated for `n` rows; returns the cache to pass on.

    A `Cache` object is repeated in place (`batch_repeat_interleave`) and returned. A legacy cache is rebuilt
    with every tensor tiled `n` times along its leading dimension, in the container types it came in. The
    source holds one row, so tiling is right whether the leading dimension is the batch or batch × heads."""
    if n < 1:
        raise ValueError(f"cannot repeat a KV cache {n} times")
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(n)
        return cache
    if is_legacy_cache(cache):
        return type(cache)(
            tuple(t.repeat(n, *([1] * (t.dim() - 1))) for t in layer) for layer in cache
        )
    raise TypeError(
        f"unsupported KV cache of type {type(cache).__name__}: expected a transformers Cache or a list/tuple of "
        "per-layer (key, value) tuples"
    )
