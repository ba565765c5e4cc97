"""Small helpers shared by stage functions."""
from __future__ import annotations

from pathlib import Path


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dataset_dir(split_path: str) -> Path:
    return Path(split_path).parent


def prompt_settings(params: dict):
    """The rule's `prompt` param (config `prompt`, JSON) as `PromptSettings`; the beam search and inference read
    it the same way, so scoring and generation build the identical prompt. A rule without the param stops: a silent
    default could give the beam search and inference different prompts."""
    from leverplus.tracks.vqa.models.prompting import PromptSettings

    if not isinstance(params.get("prompt"), dict):
        raise ValueError(f"this rule needs a `prompt` param (config `prompt` as JSON), got {params.get('prompt')!r}")
    return PromptSettings.from_config(params["prompt"])


def load_model(spec: dict, path: str, prompt=None):
    """The ICL model adapter of config `models.<name>` (`spec`), with the prompt settings `prompt` (a
    `PromptSettings`, a config `prompt` dict, or None for the defaults) fixed at construction."""
    from leverplus.tracks.vqa.models.base import load_icl_model
    from leverplus.tracks.vqa.models.prompting import PromptSettings

    if not isinstance(prompt, PromptSettings):
        prompt = PromptSettings.from_config(prompt)
    return load_icl_model(
        spec["adapter"],
        path,
        device=device(),
        dtype=spec.get("dtype", "float32"),
        batch_size=spec.get("batch_size", 16),
        trust_remote_code=spec.get("trust_remote_code", False),
        prompt=prompt,
    )
