"""The VQA track's registry of selector versions: which versions exist, in order, and which one each builds on.

Read by the rules (the ``version`` wildcard, ``results/{dataset}/versions.json``'s pairs), checked against the
selector classes (:data:`leverplus.tracks.vqa.icd.selectors.SELECTORS`) and the config schema's enum (tests/test_registries.py).
No torch here: the Snakefile imports it at parse time.
"""
from __future__ import annotations

# version -> the version it builds on (None: the first), in the order the versions were introduced
BUILDS_ON: dict[str, str | None] = {
    "v0": None,        # GPT-2 over train-example indices + CLIP features (Lever-LM)
    "v1": "v0",        # bi-encoder pointer network
    "v2": "v1",        # v1 + query<->candidate cross-attention
    "v2_lora": "v2",   # v2 on CLIP vectors adapted with LoRA
    "v3": "v2",        # v2's network, RCE warm-up + offline GRPO (InfoScore reward)
    "v4": "v3",        # v3 with VQA accuracy mixed into the reward
}
VERSIONS: tuple[str, ...] = tuple(BUILDS_ON)
# results/{dataset}/versions.json: each version against the one it builds on
VERSION_PAIRS: tuple[tuple[str, str], ...] = tuple((v, b) for v, b in BUILDS_ON.items() if b is not None)
