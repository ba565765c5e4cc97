"""Code fingerprints: a stage reruns when the library code it uses changes, not only when its script does.

Snakemake watches the mtime of a rule's script, not of the modules that script imports. Each rule therefore gets a
`code` param: the sha256 of the source files of the library modules/packages it depends on. Files are located with
importlib without importing them (no torch import at DAG-build time).
"""
from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path


def _files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: every .py below it
        return sorted(p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [origin]


@lru_cache(maxsize=None)
def code_fingerprint(*modules: str) -> str:
    h = hashlib.sha256()
    base = Path(importlib.util.find_spec("leverplus").origin).parent
    for path in sorted({p for m in modules for p in _files(m)}):
        h.update(str(path.relative_to(base.parent) if base.parent in path.parents else path.name).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]

