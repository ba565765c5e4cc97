"""Loading an embedding or reranker checkpoint so that a wrong class or a damaged checkpoint stops the run.

`from_pretrained` fills any parameter the checkpoint lacks with a fresh random init and only warns. That is how the
source document's 8B reranker "failed": the checkpoint is a causal LM scored by its yes/no logits, and loading it
as `AutoModelForSequenceClassification` gave a random `score` head. `load_checked` asks for
`output_loading_info=True` and refuses any missing, mismatched or erroring weight, and refuses a causal-LM
checkpoint loaded as sequence classification outright, naming the right recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")


class ModelLoadError(RuntimeError):
    """A checkpoint that would load with newly initialised (random) weights, or with the wrong model class."""


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def checkpoint_architectures(model_dir: str | Path) -> list[str]:
    cfg = Path(model_dir) / "config.json"
    if not cfg.is_file():
        raise ModelLoadError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    return list(json.loads(cfg.read_text()).get("architectures") or [])


def resolve_device(spec: str | None = "auto") -> str:
    """Where an embedder/reranker runs: :func:`leverplus.core.runtime.resolve_device` (None = auto)."""
    from leverplus.core.runtime import resolve_device as resolve

    return resolve(spec, default="auto")


def place(model, device: str):
    """Move a loaded model to `device` (every embedder/reranker goes through here; inputs follow the model)."""
    return model.to(device)


def model_device(model) -> str:
    return str(next(model.parameters()).device)


def load_checked(auto_cls, model_dir: str | Path, *, dtype: str = "float32", device: str | None = None):
    """`auto_cls.from_pretrained(model_dir)` in eval mode on `device` (resolved by `resolve_device`; None = cpu), or
    `ModelLoadError` when any weight would be random."""
    name = getattr(auto_cls, "__name__", str(auto_cls))
    archs = checkpoint_architectures(model_dir)
    if "SequenceClassification" in name and any(a.endswith("ForCausalLM") for a in archs):
        raise ModelLoadError(
            f"{model_dir}: a causal-LM checkpoint ({', '.join(archs)}) loaded as {name} would get a randomly "
            "initialised `score` head; Qwen3-Reranker is scored by its yes/no logits at the last position "
            "(leverplus.tracks.consistency.reranker, AutoModelForCausalLM)"
        )
    model, info = auto_cls.from_pretrained(
        str(model_dir), dtype=torch_dtype(dtype), output_loading_info=True, trust_remote_code=False
    )
    problems = []
    for key, what in (("missing_keys", "missing (newly initialised)"), ("mismatched_keys", "shape-mismatched"),
                      ("error_msgs", "loading errors")):
        found = sorted(map(str, info.get(key) or []))
        if found:
            shown = ", ".join(found[:5]) + (f", … ({len(found)} in all)" if len(found) > 5 else "")
            problems.append(f"{what}: {shown}")
    if problems:
        raise ModelLoadError(
            f"{model_dir}: loading as {type(model).__name__} leaves weights random — " + "; ".join(problems)
            + f" (checkpoint architectures: {', '.join(archs) or 'unknown'})"
        )
    model.eval()
    return place(model, resolve_device(device) if device is not None else "cpu")
