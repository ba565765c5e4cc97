"""Signature strings: every reported score carries the settings that change it.

In the spirit of sacrebleu's ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0``
a signature is ``name|key:value|key:value|...`` with keys in insertion order.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=None)
def package_version(dist: str) -> str:
    """Installed distribution version (from package metadata, not ``__version__``,
    because e.g. bert-score 0.3.13 still reports ``__version__ == '0.3.12'``)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not-installed"


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    return str(value).replace("|", "/")


def make_signature(name: str, settings: dict) -> str:
    """``name|k1:v1|k2:v2`` (booleans as yes/no, ``|`` inside values replaced by ``/``)."""
    return "|".join([name, *(f"{k}:{_fmt(v)}" for k, v in settings.items())])


def parse_signature(signature: str) -> tuple[str, dict[str, str]]:
    """Inverse of :func:`make_signature` (values come back as strings)."""
    name, *parts = signature.split("|")
    out = {}
    for part in parts:
        key, _, value = part.partition(":")
        out[key] = value
    return name, out


def ci_settings(n_resamples: int, seed: int, confidence: float = 0.95) -> dict:
    return {"ci": f"bootstrap-percentile-{int(round(confidence * 100))}", "resamples": n_resamples, "seed": seed}
