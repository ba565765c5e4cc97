"""ICD selectors: models that pick, for a query, a sequence of in-context demonstrations from a candidate pool.

=========  ==========================================================================================
version    model (one module each; shared parts in ``common``)
=========  ==========================================================================================
v0         GPT-2 over train-example indices, CLIP features added to the index embeddings (Lever-LM)
v1         bi-encoder pointer network (query and candidate MLP encoders, GRU query state, dot-product pointer)
v2         v1 + query↔candidate cross-attention layers (residual + LayerNorm)
v2_lora    v2 on example vectors from the CLIP encoder itself, adapted with LoRA (peft)
v3         v2's network, RCE warm-up + offline GRPO over the beams (reward: the beam's InfoScore gain)
v4         v3 with an end-to-end reward: VQA accuracy of the anchor's generated answer mixed in (beam_rewards)
=========  ==========================================================================================

Use::

    stats = train_selector("v2", beam=beam, pools=pools, train_features=feats, cfg=cfg, out_dir=out)
    selector = load_selector(out)
    icds = selector.select(val_feats, pool_ids, train_feats, shot=2)   # per query, ids in selection order

Each version's ``DEFAULTS`` documents its configuration keys.  Saved selectors are ``model.safetensors`` (trained
parameters) + ``selector.json`` (version, resolved config, constructor arguments, training stats).
"""
from __future__ import annotations

from pathlib import Path

from leverplus.tracks.vqa.icd.selectors.common import CONFIG_FILE, WEIGHTS_FILE, Selector, compute_dtype, resolve_config
from leverplus.tracks.vqa.icd.selectors.v0 import GPT2Selector
from leverplus.tracks.vqa.icd.selectors.v1 import PointerSelector
from leverplus.tracks.vqa.icd.selectors.v2 import CrossAttentionPointerSelector
from leverplus.tracks.vqa.icd.selectors.v2_lora import LoRAPointerSelector
from leverplus.tracks.vqa.icd.selectors.v3 import GRPOPointerSelector
from leverplus.tracks.vqa.icd.selectors.v4 import EndToEndGRPOPointerSelector
from leverplus.tracks.vqa.icd.versions import VERSIONS

SELECTORS: dict[str, type[Selector]] = {
    cls.version: cls for cls in (GPT2Selector, PointerSelector, CrossAttentionPointerSelector, LoRAPointerSelector,
                                 GRPOPointerSelector, EndToEndGRPOPointerSelector)
}

if tuple(SELECTORS) != VERSIONS:  # one registry: the selector classes are the versions the rules know, in order
    raise ImportError(f"selector classes {tuple(SELECTORS)} differ from leverplus.tracks.vqa.icd.versions.VERSIONS {VERSIONS}")

KNOWN_CONFIG_KEYS: set[str] = {key for cls in SELECTORS.values() for key in cls.DEFAULTS}


def selector_class(version: str) -> type[Selector]:
    try:
        return SELECTORS[version]
    except KeyError:
        raise ValueError(f"unknown selector version {version!r}; known: {sorted(SELECTORS)}") from None


def config_for(version: str, cfg: dict | None) -> dict:
    """The version's DEFAULTS overlaid with the (shared) ``selector`` config slice."""
    return resolve_config(selector_class(version).DEFAULTS, cfg, KNOWN_CONFIG_KEYS)


def load_selector(out_dir: str | Path, *, encoder_dir: str | None = None) -> Selector:
    """Rebuild a trained selector from ``out_dir``.  ``encoder_dir`` overrides the CLIP directory recorded at
    training time (v2_lora only)."""
    from leverplus.core.io import read_json

    out = Path(out_dir)
    meta = read_json(out / CONFIG_FILE)
    cls = selector_class(meta["version"])
    init = dict(meta.get("init", {}))
    if encoder_dir is not None:
        if "encoder_dir" not in init:
            raise ValueError(f"selector {meta['version']} does not use an encoder directory")
        init["encoder_dir"] = str(encoder_dir)
    cfg = config_for(meta["version"], meta["config"])
    with compute_dtype(cfg):
        model = cls(cfg, meta["feat_dim"], **init)
    model.load_weights(out / WEIGHTS_FILE)
    model.eval()
    return model


def train_selector(version: str, *, beam, pools, train_features, cfg: dict, out_dir, encoder_dir=None,
                   train_table=None, seed: int = 0, rewards=None) -> dict:
    """Train a selector and save it to ``out_dir``; see :func:`leverplus.tracks.vqa.icd.selector_training.train_selector`."""
    from leverplus.tracks.vqa.icd.selector_training import train_selector as _train

    return _train(version, beam=beam, pools=pools, train_features=train_features, cfg=cfg, out_dir=out_dir,
                  encoder_dir=encoder_dir, train_table=train_table, seed=seed, rewards=rewards)


__all__ = ["SELECTORS", "Selector", "config_for", "load_selector", "selector_class", "train_selector"]
