"""OpenFlamingo adapter (the `open_flamingo` package, imported lazily by the loader).

Prompt (OpenFlamingo's own VQA evaluation format): every demonstration is
``<image>Question:{q} Short answer:{a}<|endofchunk|>``, the demonstrations are concatenated without separator and the
query follows in the same format — with its answer and ``<|endofchunk|>`` when scored, ending at ``Short answer:``
when generating. No BOS token is added (OpenFlamingo's GPT-NeoX tokenizer adds none either).

Answer mask: the full scored string is tokenised once, with character offsets, and the mask is True exactly on the
tokens whose character span overlaps the query answer's span ``[a0, a1)`` in that string. The trailing
``<|endofchunk|>`` is scored only with config ``prompt.flamingo_score_eoc: true`` (Lever-LM's ``get_info_score``;
preset ``lever_lm_vqa``); by default it is not (same definition as the Qwen2.5-VL adapter, which does not score its
end-of-turn token, so both models' InfoScores measure the answer alone). The end boundary is always clean (``<|endofchunk|>`` is a special token and splits the text); the start
boundary is clean unless an answer begins with punctuation that the tokenizer merges with the prompt's final ``:``
(GPT-2-style pre-tokenisation groups runs of punctuation) — such a straddling token is scored, so the answer's first
character is never dropped. Offsets are read from an untrimmed copy of the tokenizer (no post-processor), so
whitespace tokens keep their span; the copy's ids are checked against the tokenizer's own.

P̄ = exp(−mean cross-entropy over the masked tokens), computed from the logits of the preceding positions.

Model directory (``leverplus_flamingo.json``; relative paths are resolved against the model directory)::

    {
      "vision_backend": "open_clip" | "hf_clip",
      "clip_vision_encoder_path": "ViT-L-14",         # open_clip only
      "clip_vision_encoder_pretrained": "openai",     # open_clip only
      "vision_path": "vision",                        # hf_clip only: CLIPVisionModel + CLIPImageProcessor dir
      "vision_tokens_ln_post": false,                 # hf_clip only, see below
      "lang_encoder_path": "lang",                    # HF causal LM (dir or hub id)
      "tokenizer_path": "tokenizer",
      "cross_attn_every_n_layers": 1,
      "decoder_layers_attr_name": null,               # inferred from the LM class name when null
      "trust_remote_code": false,
      "checkpoint": "checkpoint.pt"                   # or *.safetensors; OpenFlamingo's trainable weights
    }

`vision_backend: "open_clip"` is OpenFlamingo's own path: ``open_flamingo.create_model_and_transforms(...)`` (needs
open_clip_torch, which needs a torchvision built for the installed torch: PyPI has only CUDA builds, so the CPU
machines of this project cannot run it; loading stops with a message naming the packages and the import error) and open_clip's eval transform. For OpenFlamingo-3B-vitl-mpt1b:
``ViT-L-14``/``openai``, lang and tokenizer ``anas-awadalla/mpt-1b-redpajama-200b`` (remote code), every 1 layer.

`vision_backend: "hf_clip"` assembles the same model from open_flamingo's own classes (`Flamingo`,
`FlamingoLMMixin`, `extend_instance`), repeating `create_model_and_transforms`'s steps one by one, but with
transformers' `CLIPVisionModel` as the vision tower — the path used where torchvision is unavailable (every CPU box
of this project) and by the tiny test model. open_flamingo's package ``__init__`` imports its factory, which imports
open_clip; `_open_flamingo()` therefore imports the three submodules it needs without running the two package
``__init__`` files (no code is copied or patched: the modules loaded are the installed package's own files).
Deviations of this path from open_clip's, both documented facts of the libraries' code:

* features: Flamingo calls ``vision_encoder.visual(x)[1]``, open_clip's patch tokens (CLS dropped). In open_clip
  2.20 (OpenFlamingo's training era) those tokens are the transformer output *without* ``ln_post``; in open_clip 3.x
  (``final_ln_after_pool=False`` default) ``ln_post`` is applied to all tokens first. HF's ``last_hidden_state``
  also carries no post-layernorm, so ``[:, 1:]`` reproduces open_clip 2.20; ``vision_tokens_ln_post: true``
  reproduces 3.x. Weights: HF ``openai/clip-vit-large-patch14`` holds the same OpenAI ViT-L/14 weights.
* preprocessing: `CLIPImageProcessorPil` instead of open_clip's torchvision transform. Both resize the shorter side
  to 224 with PIL bicubic (same output size rule) and normalise with the OpenAI mean/std; they differ in the
  centre-crop offset when the excess is odd (torchvision rounds ``(h−224)/2`` half-to-even, HF floors it: a 1-pixel
  shift for some sizes), in RGB conversion order (HF converts before resizing, open_clip after cropping: only
  non-RGB inputs differ; our loader already hands RGB images) and in float rounding (~1e-7).

Fast paths: `score` runs the vision tower + perceiver once per distinct image path (cached on the adapter; the
perceiver has no media/frame position embeddings, so an image's latents do not depend on its slot) and conditions
the Flamingo layers with the cached latents directly; rows are right-padded and images zero-padded per row (padded
image slots are never attended: text only attends its immediately preceding ``<image>``). The longest token prefix
all rows of a batch share (same ids, same images), cut right before an ``<image>`` token, is run once and its KV
cache repeated for every row — with construct_order `right` that is the whole beam's demonstrations. Because the
remainder of each row starts with ``<image>``, its tokens never attend a prefix image, so the remainder is
conditioned on its own images only. The prefix has no padding, so the cached keys are exactly the full forward's
(MPT's ALiBi bias depends only on key offsets; rotary LMs continue positions from the cache length). The cache may
be a transformers `Cache` or, for OpenFlamingo-3B's remote-code MosaicGPT, a legacy list of per-layer (key, value)
tuples that the model must get back in its own format: `kv_cache.repeat_prefix_cache` handles both. MosaicGPT also
needs boolean attention masks (`BoolAttentionMask`, mixed into the LM at load). `tiny_mosaic_gpt` is a test LM with
that interface (`build_tiny_flamingo(lang="mosaic_gpt")`).

`score_step` (the beam search's call) goes further with construct_order `right`: each beam's prefix — its
demonstrations with their images, text and the cross-attention conditioning of their tokens — is run once per beam
and step, whatever the batch size, and every candidate row of the beam (candidate + query) runs on top of a copy of
its cache in batches of `batch_size`, each row only up to its last scored token. A text token's gated
cross-attention sees only the media before it (`only_attend_immediate_media`) and self-attention is causal, so the
prefix does not depend on what follows it; tests/tracks/vqa/test_flamingo_prefix_reuse.py checks every P̄ against the uncached
whole-row forward on MPT and on the MosaicGPT legacy cache. With `left` no two rows share a prefix: whole rows,
batched across beams. `score_reference_batch` is the original algorithm batched as Lever-LM's `get_info_score` runs
it (whole right-padded rows, every image re-encoded), for the benchmark.

`generate` conditions the layers once with the cached latents and runs in cached-media mode, as ``Flamingo.generate``
does, with left padding and a KV-cache loop of its own, greedy (`_greedy`) or beam search (`_beam_search`: the
semantics of the installed transformers' `_beam_search`, which ``Flamingo.generate`` calls: the same token ids on the
same batch, tests/tracks/vqa/test_flamingo_beam_presets.py); transformers' `generate` itself is not used (since transformers 5
it drops an all-ones attention mask, which `FlamingoLMMixin.forward` requires). Decoding settings are explicit
(`GenerationSettings`, config `infer.generation`: `num_beams`, `length_penalty`, `max_new_tokens`, `min_new_tokens`);
a repetition penalty other than 1.0 stops with a message. Answers end at the stop tokens of config
`prompt.flamingo_stop`: `endofchunk` (``Flamingo.generate``'s eos, OpenFlamingo's evaluation), `eos` (the
tokenizer's ``<|endoftext|>``, Lever-LM's evaluation: ``<|endofchunk|>`` and ``<image>`` are then decoded away as
special tokens and the post-processing cuts at the next "Question"), `endofchunk_eos` (either; the default). The
generated text up to the stop is decoded without special tokens. Answer post-processing (config
`prompt.flamingo_postprocess`): `open_flamingo_vqa` (default) applies the semantics of OpenFlamingo's own
`postprocess_vqa_generation` (open_flamingo/eval/vqa_metric.py) to the decoded text — keep what precedes the first
"Question", "Answer" or "Short" (case-sensitive, wherever it occurs), then what precedes the first ", " — before
stripping; `none` only strips. The chat models' instruction (`prompt.instruction`) does not apply to this prompt
format; `prompt_settings()` records what was applied (stop tokens, InfoScore span and preset included).

The real ``flamingo_3B`` path (config/config.yaml: `vision_backend: open_clip`, OpenFlamingo's ``checkpoint.pt``)
has no end-to-end test on the project's machines, and cannot have one there: ``open_clip_torch`` itself installs
(``pip install --no-deps open_clip_torch==2.20.0``: pure Python), but ``import open_clip`` imports torchvision, and
the only torchvision build PyPI has for torch 2.13 (0.28.0) is a CUDA build whose ``import`` fails beside the CPU
torch ("operator torchvision::nms does not exist", checked); installing the CUDA torch instead is excluded. On such a
machine loading stops with a message naming the packages. What is tested instead is the same model assembled from
open_flamingo's own classes with the checkpoint loaded as `load_checkpoint` does (`hf_clip`, below), and the
checkpoint's key layout (`trainable_state`). On a GPU box with CUDA torch + torchvision the open_clip path runs
``create_model_and_transforms`` and this adapter unchanged.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.base import ICLModel, extend, register_adapter
from leverplus.models.generation import GenerationSettings, resolve
from leverplus.tracks.vqa.models.feature_cache import TensorLRU
from leverplus.tracks.vqa.models.kv_cache import repeat_prefix_cache

CONFIG_NAME = "leverplus_flamingo.json"
IMAGE_TOKEN = "<image>"
EOC_TOKEN = "<|endofchunk|>"
PAD_TOKEN = "<PAD>"  # what open_flamingo's factory adds when the tokenizer has no pad token

# open_flamingo's factory infers the decoder-layer attribute from the LM class name; same table, for the
# hf_clip path that cannot import the factory module.
DECODER_LAYERS_ATTR = {
    "opt": "model.decoder.layers",
    "gptj": "transformer.h",
    "gpt-j": "transformer.h",
    "pythia": "gpt_neox.layers",
    "llama": "model.layers",
    "gptneoxforcausallm": "gpt_neox.layers",
    "mpt": "transformer.blocks",
    "mosaicgpt": "transformer.blocks",
}


def vqa_prompt(question: str, answer: str | None = None) -> str:
    """OpenFlamingo's VQA prompt for one example (query: `answer=None`)."""
    if answer is None:
        return f"{IMAGE_TOKEN}Question:{question} Short answer:"
    return f"{IMAGE_TOKEN}Question:{question} Short answer:{answer}{EOC_TOKEN}"


_OPEN_FLAMINGO_CUT_WORDS = ("Question", "Answer", "Short")


def open_flamingo_vqa_postprocess(text: str) -> str:
    """The semantics of OpenFlamingo's `postprocess_vqa_generation` (open_flamingo/eval/vqa_metric.py, commit
    655f693): the text before the first occurrence of "Question", "Answer" or "Short" (case-sensitive, anywhere,
    also inside a word), then the part of that before the first ", ". No other change (no stripping)."""
    cut = min((i for w in _OPEN_FLAMINGO_CUT_WORDS if (i := text.find(w)) >= 0), default=len(text))
    text = text[:cut]
    comma = text.find(", ")
    return text if comma < 0 else text[:comma]


def _check_text(ex: VQAExample) -> None:
    for s in (ex.question, ex.answer):
        if IMAGE_TOKEN in s or EOC_TOKEN in s:
            raise ValueError(f"example {ex.id}: text contains a Flamingo special token: {s!r}")


# ---- open_flamingo import ---------------------------------------------------------------------------------------
def _open_flamingo() -> types.SimpleNamespace:
    """open_flamingo's `Flamingo`, `FlamingoLMMixin`, `extend_instance` and, where open_clip imports,
    `create_model_and_transforms` (else None)."""
    try:
        import open_flamingo
        from open_flamingo.src.flamingo import Flamingo
        from open_flamingo.src.flamingo_lm import FlamingoLMMixin
        from open_flamingo.src.utils import extend_instance

        return types.SimpleNamespace(
            Flamingo=Flamingo,
            FlamingoLMMixin=FlamingoLMMixin,
            extend_instance=extend_instance,
            create_model_and_transforms=open_flamingo.create_model_and_transforms,
            factory_error=None,
        )
    except (ImportError, RuntimeError, OSError) as err:
        # open_clip missing, or a torchvision that cannot load beside this torch (PyPI's torchvision is a CUDA
        # build: beside the CPU torch its `import` fails with "operator torchvision::nms does not exist")
        if not _is_factory_import_error(err):
            raise
        factory_error = err
    # The package __init__ files import the factory → open_clip → torchvision. Load the installed submodules
    # themselves under package objects that carry the real __path__ but whose __init__ is not executed.
    spec = importlib.util.find_spec("open_flamingo")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_flamingo is not installed")
    saved = {k: sys.modules.pop(k) for k in ("open_flamingo", "open_flamingo.src") if k in sys.modules}
    root = Path(list(spec.submodule_search_locations)[0])
    try:
        for name, path in (("open_flamingo", root), ("open_flamingo.src", root / "src")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            pkg.__package__ = name
            sys.modules[name] = pkg
        flamingo = importlib.import_module("open_flamingo.src.flamingo")
        flamingo_lm = importlib.import_module("open_flamingo.src.flamingo_lm")
        utils = importlib.import_module("open_flamingo.src.utils")
    finally:
        # Do not leave half-initialised packages behind: a later `import open_flamingo` behaves as before.
        for k in ("open_flamingo", "open_flamingo.src"):
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return types.SimpleNamespace(
        Flamingo=flamingo.Flamingo,
        FlamingoLMMixin=flamingo_lm.FlamingoLMMixin,
        extend_instance=utils.extend_instance,
        create_model_and_transforms=None,
        factory_error=factory_error,
    )


def _is_factory_import_error(err: BaseException) -> bool:
    """Whether importing open_flamingo's factory failed in open_clip or torchvision (not in open_flamingo)."""
    if isinstance(err, ImportError) and (err.name or "").split(".")[0] in ("open_clip", "torchvision"):
        return True
    return any(k in str(err) for k in ("open_clip", "torchvision"))


# ---- model directory -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlamingoSpec:
    """Contents of `leverplus_flamingo.json` (see the module docstring)."""

    lang_encoder_path: str
    tokenizer_path: str
    checkpoint: str
    vision_backend: str = "hf_clip"
    cross_attn_every_n_layers: int = 1
    clip_vision_encoder_path: str | None = None
    clip_vision_encoder_pretrained: str | None = None
    vision_path: str | None = None
    vision_tokens_ln_post: bool = False
    decoder_layers_attr_name: str | None = None
    trust_remote_code: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, model_dir: str | Path) -> FlamingoSpec:
        root = Path(model_dir)
        raw = json.loads((root / CONFIG_NAME).read_text())
        known = {f.name for f in fields(cls)} - {"extra"}
        args = {k: v for k, v in raw.items() if k in known}
        for k in ("lang_encoder_path", "tokenizer_path", "checkpoint", "vision_path"):
            if args.get(k) and (root / args[k]).exists():
                args[k] = str(root / args[k])
        spec = cls(**args, extra={k: v for k, v in raw.items() if k not in known})
        if spec.vision_backend not in ("open_clip", "hf_clip"):
            raise ValueError(f"{root / CONFIG_NAME}: vision_backend must be open_clip or hf_clip")
        return spec

    def write(self, model_dir: str | Path) -> None:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d.update(self.extra)
        (Path(model_dir) / CONFIG_NAME).write_text(json.dumps(d, sort_keys=True, indent=2) + "\n")


class HFCLIPVisual(nn.Module):
    """transformers `CLIPVisionModel` answering like open_clip's `VisionTransformer` with `output_tokens=True`:
    `forward(pixels)` → (pooled, patch tokens without CLS)."""

    def __init__(self, clip_vision_model: nn.Module, ln_post: bool = False):
        super().__init__()
        self.model = clip_vision_model
        self.ln_post = ln_post

    def forward(self, pixel_values: torch.Tensor):
        out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state
        if self.ln_post:
            hidden = self.model.vision_model.post_layernorm(hidden)
        return out.pooler_output, hidden[:, 1:]


class HFVisionEncoder(nn.Module):
    """Container with the `.visual` attribute `Flamingo.__init__` takes from its vision encoder."""

    def __init__(self, visual: HFCLIPVisual):
        super().__init__()
        self.visual = visual


def _decoder_layers_attr(lm: nn.Module, name: str | None) -> str:
    if name:
        return name
    cls = lm.__class__.__name__.lower()
    for key, attr in DECODER_LAYERS_ATTR.items():
        if key in cls:
            return attr
    raise ValueError(
        f"cannot infer the decoder layers attribute of {lm.__class__.__name__}; set decoder_layers_attr_name"
    )


class _WteEmbeddingAccess:
    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, new_embeddings):
        self.transformer.wte = new_embeddings


class BoolAttentionMask:
    """Hands the language model its attention mask as booleans. OpenFlamingo's own eval does so
    (`_prepare_text` returns ``attention_mask.bool()``) because MosaicGPT, the 3B's remote-code LM, applies the
    mask with ``masked_fill(~attention_mask)``, which rejects integer masks; transformers' models take either.
    Mixed into the Flamingo LM (outside `FlamingoLMMixin`) by `load_flamingo`, so every call — the adapter's and
    `Flamingo.generate`'s — passes through it."""

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        if attention_mask is not None:
            attention_mask = attention_mask.bool()
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _input_embeddings_missing(lm: nn.Module) -> bool:
    try:
        return lm.get_input_embeddings() is None
    except (NotImplementedError, AttributeError):
        return hasattr(lm, "transformer") and hasattr(lm.transformer, "wte")


def add_flamingo_tokens(tokenizer) -> None:
    """open_flamingo's factory: add `<|endofchunk|>`, `<image>` and a pad token where there is none."""
    tokenizer.add_special_tokens({"additional_special_tokens": [EOC_TOKEN, IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def assemble_flamingo(vision_model: nn.Module, lang_model: nn.Module, tokenizer, spec: FlamingoSpec) -> nn.Module:
    """The steps of `open_flamingo.create_model_and_transforms` after the backbones are loaded, with an HF CLIP
    vision tower. Mutates `lang_model` (mixin, resized embeddings) and `tokenizer` (special tokens)."""
    of = _open_flamingo()
    add_flamingo_tokens(tokenizer)
    if _input_embeddings_missing(lang_model):
        # The factory's fix for MPT-1B-redpajama's remote code (keyed there on the hub name), keyed here on the
        # behaviour: expose `transformer.wte` as the input embeddings.
        of.extend_instance(lang_model, _WteEmbeddingAccess)
    of.extend_instance(lang_model, of.FlamingoLMMixin)
    lang_model.set_decoder_layers_attr_name(_decoder_layers_attr(lang_model, spec.decoder_layers_attr_name))
    lang_model.resize_token_embeddings(len(tokenizer))
    visual = HFCLIPVisual(vision_model, ln_post=spec.vision_tokens_ln_post)
    model = of.Flamingo(
        HFVisionEncoder(visual),
        lang_model,
        tokenizer.encode(EOC_TOKEN, add_special_tokens=False)[-1],
        tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)[-1],
        vis_dim=vision_model.config.hidden_size,
        cross_attn_every_n_layers=spec.cross_attn_every_n_layers,
    )
    model.requires_grad_(False)
    return model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an OpenFlamingo checkpoint holds: perceiver, gated cross-attention layers, LM input embeddings (output
    embeddings too when untied). One name per tensor (shared modules appear once)."""
    keep = [model.perceiver, model.lang_encoder.gated_cross_attn_layers, model.lang_encoder.get_input_embeddings()]
    out_emb = model.lang_encoder.get_output_embeddings()
    if out_emb is not None:
        keep.append(out_emb)
    wanted = {id(p) for m in keep for p in m.parameters()}
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if id(p) in wanted}


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load an OpenFlamingo checkpoint (`strict=False`, as OpenFlamingo's eval does) and check it provided every
    perceiver and cross-attention weight."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "model_state_dict" in state:
            state = {k.replace("module.", ""): v for k, v in state["model_state_dict"].items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{path}: keys not in the model: {result.unexpected_keys[:5]}")
    named = model.state_dict(keep_vars=True)
    loaded = {id(named[k]) for k in state}
    required = [model.perceiver, model.lang_encoder.gated_cross_attn_layers]
    missing = [n for m in required for n, p in m.named_parameters() if id(p) not in loaded]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks Flamingo weights, e.g. {missing[:5]}")


def load_flamingo(
    model_dir: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
):
    """(Flamingo model, image transform PIL → (C, H, W) tensor, tokenizer) from a model directory."""
    spec = FlamingoSpec.read(model_dir)
    if trust_remote_code:
        spec = replace(spec, trust_remote_code=True)
    if spec.vision_backend == "open_clip":
        of = _open_flamingo()
        if of.create_model_and_transforms is None:
            raise ImportError(
                f"{Path(model_dir) / CONFIG_NAME}: vision_backend 'open_clip' needs the packages open_clip_torch and "
                f"a torchvision built for the installed torch {torch.__version__}, but importing open_flamingo's "
                f"factory failed: {type(of.factory_error).__name__}: {of.factory_error}. "
                "Install them, or use vision_backend 'hf_clip' (see models/flamingo.py)."
            )
        model, transform, tokenizer = of.create_model_and_transforms(
            spec.clip_vision_encoder_path,
            spec.clip_vision_encoder_pretrained,
            spec.lang_encoder_path,
            spec.tokenizer_path,
            cross_attn_every_n_layers=spec.cross_attn_every_n_layers,
            decoder_layers_attr_name=spec.decoder_layers_attr_name,
        )
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel

        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_path, trust_remote_code=spec.trust_remote_code)
        lang = AutoModelForCausalLM.from_pretrained(
            spec.lang_encoder_path, trust_remote_code=spec.trust_remote_code, dtype=torch.float32
        )
        vision = CLIPVisionModel.from_pretrained(spec.vision_path, dtype=torch.float32)
        processor = CLIPImageProcessorPil.from_pretrained(spec.vision_path)
        model = assemble_flamingo(vision, lang, tokenizer, spec)

        def transform(image):
            return processor(images=[image], return_tensors="pt")["pixel_values"][0]

    load_checkpoint(model, spec.checkpoint)
    _open_flamingo().extend_instance(model.lang_encoder, BoolAttentionMask)
    model.to(device=device, dtype=dtype).eval()
    return model, transform, tokenizer


def _copy_cache(cache):
    """A copy of a one-row KV cache that the next forward may extend without touching `cache`: a transformers
    `Cache` is deep-copied (its layers grow in place), a legacy list of (key, value) tuples gets a new list (the
    model replaces list entries; tensors are never written in place)."""
    if isinstance(cache, (list, tuple)):
        return type(cache)(tuple(layer) for layer in cache)
    import copy

    return copy.deepcopy(cache)


def _reorder_cache(cache, index: torch.Tensor):
    """The KV cache with its batch rows taken from `index` (beam search): a transformers `Cache` (its own
    `reorder_cache`) or MosaicGPT's legacy list of per-layer (key, value) tuples."""
    if cache is None:
        return None
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(index)
        return cache
    n = index.numel()
    for layer in cache:
        for x in layer:
            if x.shape[0] != n:  # e.g. a (batch × heads, …) layout: rows cannot be picked by the leading dimension
                raise ValueError(f"beam search: a legacy KV cache tensor of shape {tuple(x.shape)} is not (rows={n}, …)")
    return type(cache)(tuple(x.index_select(0, index.to(x.device)) for x in layer) for layer in cache)


def _select_cache(cache, index: torch.Tensor, n_rows: int):
    """A new KV cache whose rows are the rows `index` of `cache` (`n_rows` rows), `cache` left untouched: a
    transformers `Cache` is copied and reordered, a legacy list of per-layer (key, value) tuples gets new tensors
    (`index_select` on the leading dimension, which must hold the rows; a one-row cache in any layout is tiled)."""
    if isinstance(cache, (list, tuple)):
        if n_rows == 1:
            return repeat_prefix_cache(cache, index.numel())
        for layer in cache:
            for x in layer:
                if x.shape[0] != n_rows:
                    raise ValueError(f"a legacy KV cache tensor of shape {tuple(x.shape)} is not (rows={n_rows}, …)")
        return type(cache)(tuple(x.index_select(0, index.to(x.device)) for x in layer) for layer in cache)
    return _reorder_cache(_copy_cache(cache), index)


# ---- adapter ---------------------------------------------------------------------------------------------------
@register_adapter("flamingo")
class FlamingoICL(ICLModel):
    name = "flamingo"
    # `score_step(..., beam_rows=True)`: beam search scores the zero-shot row in the first step's forwards (on a
    # CPU every language-model forward first reads all weights: a fixed cost per forward)
    scores_beam_rows = True

    def __init__(
        self,
        path: str,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        trust_remote_code: bool = False,
        image_cache_mb: float | None = None,
        prompt: prompting.PromptSettings | dict | None = None,
    ):
        """`trust_remote_code` (the model's config key) enables remote code for the language model, as does
        `adapter_config.trust_remote_code`; either must say so explicitly. `prompt`: config `prompt` (only its
        `flamingo_postprocess` applies to this adapter)."""
        if not isinstance(prompt, prompting.PromptSettings):
            prompt = prompting.PromptSettings.from_config(prompt)
        self.postprocess = prompt.flamingo_postprocess
        self.stop_mode = prompt.flamingo_stop
        self.score_eoc = prompt.flamingo_score_eoc
        self.preset = prompt.preset
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.batch_size = batch_size
        self.model, self.image_transform, self.tokenizer = load_flamingo(
            path, device=device, dtype=self.dtype, trust_remote_code=trust_remote_code
        )
        self.lm = self.model.lang_encoder
        self.media_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.eoc_id = self.tokenizer.convert_tokens_to_ids(EOC_TOKEN)
        self.pad_id = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        if self.stop_mode == "endofchunk":
            self.stop_ids = [self.eoc_id]
        elif self.stop_mode == "eos":
            if eos is None:
                raise ValueError("prompt.flamingo_stop eos: the tokenizer has no eos token")
            self.stop_ids = [eos]
        else:
            self.stop_ids = [self.eoc_id] + ([eos] if eos is not None and eos != self.eoc_id else [])
        p = self.model.perceiver
        if p.media_time_embs is not None or p.frame_embs is not None:
            raise ValueError("perceiver with media/frame position embeddings: per-image latent caching is invalid")
        self._offset_tok = self._untrimmed_tokenizer()
        self._latents = TensorLRU.for_images(image_cache_mb)

    # ---- tokenisation ------------------------------------------------------------------------------------------
    def _untrimmed_tokenizer(self):
        from tokenizers import Tokenizer

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError("the Flamingo adapter needs a tokenizers-backed (fast) tokenizer for offsets")
        tok = Tokenizer.from_str(backend.to_str())
        tok.post_processor = None  # no BOS/EOS templates (add_special_tokens=False anyway) and no offset trimming
        return tok

    def _text(self, icds: Sequence[VQAExample], query: VQAExample, *, with_answer: bool) -> tuple[str, int, int]:
        """Prompt string and the query answer's character span in it."""
        for ex in (*icds, query):
            _check_text(ex)
        prefix = "".join(vqa_prompt(d.question, d.answer) for d in icds) + vqa_prompt(query.question)
        if not with_answer:
            return prefix, len(prefix), len(prefix)
        if not query.answer:
            raise ValueError(f"query {query.id}: empty answer")
        end = len(prefix) + len(query.answer) + (len(EOC_TOKEN) if self.score_eoc else 0)
        return prefix + query.answer + EOC_TOKEN, len(prefix), end

    def _tokenise(self, icds, query) -> tuple[np.ndarray, np.ndarray]:
        text, a0, a1 = self._text(icds, query, with_answer=True)
        enc = self._offset_tok.encode(text, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        if enc.ids != self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            raise RuntimeError("offset tokenizer disagrees with the model tokenizer")
        off = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        mask = (off[:, 0] < a1) & (off[:, 1] > a0)
        if not mask.any() or mask[0]:
            raise ValueError(f"query {query.id}: answer has no scorable token")
        return ids, mask

    def answer_mask(self, icds, query):
        ids, mask = self._tokenise(icds, query)
        return ids.tolist(), mask.tolist()

    @staticmethod
    def _mean_ce(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean CE over masked positions, per row. logits (B, L, V), ids/mask (B, L)."""
        ce = nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none"
        )  # (B, L-1): loss of token t+1 given ≤ t
        m = mask[:, 1:].to(ce.dtype)
        return (ce * m).sum(1) / m.sum(1)

    # ---- reference path: the original algorithm -----------------------------------------------------------------
    @torch.no_grad()
    def score_reference(self, icds, query) -> float:
        """One `Flamingo.forward` over the full sequence, every image re-read and re-encoded."""
        ids, mask = self._tokenise(icds, query)
        pixels = [self.image_transform(load_image(p)) for p in prompting.images_in_order(icds, query)]
        vision_x = torch.stack(pixels)[None, :, None].to(self.device, self.dtype)  # (1, T, F=1, C, H, W)
        lang_x = torch.as_tensor(ids, device=self.device)[None]
        out = self.model(vision_x=vision_x, lang_x=lang_x, attention_mask=torch.ones_like(lang_x))
        ce = self._mean_ce(out.logits, lang_x, torch.as_tensor(mask, device=self.device)[None])
        return float(torch.exp(-ce)[0])

    @torch.no_grad()
    def score_reference_batch(self, icd_seqs, queries) -> np.ndarray:
        """The original algorithm batched as Lever-LM's `get_info_score` runs it (its FlamingoInterface
        `prepare_input` + `get_cond_prob`): the rows of one call right-padded into one `Flamingo.forward`, every
        image of every row re-read and re-encoded (vision_x (B, T_max, 1, C, H, W), zero images where a row has
        fewer), logits over every position. The answer mask is ours (`_tokenise`), not the original's
        re-tokenised-prefix count."""
        rows = [self._tokenise(s, q) for s, q in zip(icd_seqs, queries)]
        pix = [
            torch.stack([self.image_transform(load_image(p)) for p in prompting.images_in_order(s, q)])
            for s, q in zip(icd_seqs, queries)
        ]
        vision_x = nn.utils.rnn.pad_sequence(pix, batch_first=True)[:, :, None].to(self.device, self.dtype)
        ids = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r[0]) for r in rows], batch_first=True, padding_value=self.pad_id
        ).to(self.device)
        mask = nn.utils.rnn.pad_sequence([torch.as_tensor(r[1]) for r in rows], batch_first=True).to(self.device)
        att = nn.utils.rnn.pad_sequence(
            [torch.ones(len(r[0]), dtype=torch.long) for r in rows], batch_first=True
        ).to(self.device)
        out = self.model(vision_x=vision_x, lang_x=ids, attention_mask=att)
        return torch.exp(-self._mean_ce(out.logits, ids, mask)).double().cpu().numpy()

    # ---- fast path -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _image_latents(self, paths: Sequence[str]) -> list[torch.Tensor]:
        """Perceiver latents (n_latents, vis_dim) per image, computed once per path while it stays cached. One image
        per forward, so its latents never depend on which other images missed the cache with it (see the Qwen
        adapter's `_image_features`)."""
        found = {p: t for p in dict.fromkeys(paths) if (t := self._latents.get(p)) is not None}
        todo = [p for p in dict.fromkeys(paths) if p not in found]
        for i in range(len(todo)):
            chunk = todo[i : i + 1]
            pix = torch.stack([self.image_transform(load_image(p)) for p in chunk]).to(self.device, self.dtype)
            tokens = self.model.vision_encoder(pix)[1]  # (n, v, d), as Flamingo._encode_vision_x
            latents = self.model.perceiver(tokens[:, None, None])  # (n, T=1, n_latents, d)
            for p, lat in zip(chunk, latents[:, 0]):
                found[p] = lat
                self._latents.put(p, lat)
        return [found[p] for p in paths]

    def clear_image_cache(self) -> None:
        """Drop the cached perceiver latents (n_latents × vis_dim per image, at most image_cache_mb in all)."""
        self._latents.clear()

    def _media(self, image_lists: Sequence[Sequence[str]]) -> torch.Tensor:
        """(B, T_max, n_latents, d) latents, zero in the slots a row does not have."""
        per_row = [torch.stack(self._image_latents(paths)) for paths in image_lists]
        return nn.utils.rnn.pad_sequence(per_row, batch_first=True)

    def _condition(self, media: torch.Tensor) -> None:
        for layer in self.lm._get_decoder_layers():
            layer.condition_vis_x(media)

    @torch.no_grad()
    def score(self, icd_seqs, queries) -> np.ndarray:
        if len(icd_seqs) != len(queries):
            raise ValueError("icd_seqs and queries differ in length")
        out = np.empty(len(queries), dtype=np.float64)
        for lo in range(0, len(queries), self.batch_size):
            hi = min(lo + self.batch_size, len(queries))
            out[lo:hi] = self._score_batch(icd_seqs[lo:hi], queries[lo:hi])
        return out

    def _shared_prefix(self, rows, image_lists) -> tuple[int, int]:
        """(tokens, images) of the longest prefix every row shares that ends right before an `<image>` token (so
        each row's remainder starts with its own media and needs no earlier image) and before any scored logit."""
        ids = [r[0] for r in rows]
        n = min(len(x) for x in ids)
        same = np.ones(n, dtype=bool)
        for x in ids[1:]:
            same &= x[:n] == ids[0][:n]
        common = int(np.argmin(same)) if not same.all() else n
        limit = min(common, min(int(np.flatnonzero(r[1])[0]) for r in rows) - 1)
        starts = np.flatnonzero(ids[0][1 : limit + 1] == self.media_id) + 1  # media positions p, 0 < p ≤ limit
        for p in starts[::-1]:
            k = int((ids[0][:p] == self.media_id).sum())
            if all(list(imgs[:k]) == list(image_lists[0][:k]) for imgs in image_lists):
                return int(p), k
        return 0, 0

    def _score_batch(self, icd_seqs, queries) -> np.ndarray:
        rows = [self._tokenise(s, q) for s, q in zip(icd_seqs, queries)]
        image_lists = [prompting.images_in_order(s, q) for s, q in zip(icd_seqs, queries)]
        shared, k = self._shared_prefix(rows, image_lists) if len(rows) > 1 else (0, 0)
        self.last_shared_prefix = shared
        cache = None
        if shared:
            # The shared demonstrations once, their KV cache repeated for every row (construct_order `right`).
            prefix = torch.as_tensor(rows[0][0][:shared], device=self.device)[None]
            self._condition(self._media([image_lists[0][:k]]))
            try:
                out = self.lm(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True)
                cache = out.past_key_values
            finally:
                self.lm.clear_conditioned_layers()
            cache = repeat_prefix_cache(cache, len(rows))  # a Cache object, or MosaicGPT's list of tuples
        ids = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r[0][shared:]) for r in rows], batch_first=True, padding_value=self.pad_id
        ).to(self.device)  # right padding
        mask = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r[1][shared:]) for r in rows], batch_first=True
        ).to(self.device)
        att = nn.utils.rnn.pad_sequence(
            [torch.ones(len(r[0]), dtype=torch.long) for r in rows], batch_first=True
        ).to(self.device)  # full length: shared prefix + row
        # Each remainder starts with `<image>`, so its tokens only ever attend its own images: condition on those.
        self._condition(self._media([imgs[k:] for imgs in image_lists]))
        try:  # FlamingoLMMixin.forward sets the media locations from the ids it is given
            logits = self.lm(
                input_ids=ids, attention_mask=att, past_key_values=cache, use_cache=cache is not None
            ).logits
        finally:
            self.lm.clear_conditioned_layers()
        return torch.exp(-self._mean_ce(logits, ids, mask)).cpu().numpy()

    @torch.no_grad()
    def score_step(self, beams, candidates, query, order, *, beam_rows: bool = False):
        """All (beam, candidate) rows of one beam-search step. With construct_order `right` the prefixes of every
        beam — its demonstrations, images, text and the cross-attention conditioning of their tokens — run once per
        step, together in one left-padded forward (`_prefix_states`), and the candidate rows of every beam run on
        top of their beam's prefix, `batch_size` rows per forward across beams (`_score_rows`): a text token's
        gated cross-attention sees only the media before it (`only_attend_immediate_media`) and self-attention is
        causal, so a prefix's keys and values do not depend on what follows it; MPT's ALiBi bias depends on key
        positions only, so left padding shifts every key of a row alike and its softmax does not move. With `left`
        (the new demonstration first) no two rows share a prefix: whole rows, batched across beams.

        `beam_rows`: also P̄ of each beam's own row (beam ⊕ query), scored in the same forwards; returned as a
        second list (step 0: the zero-shot row beside the first step's candidates)."""
        if order != "right":
            seqs = [extend(b, c, order) for b, cands in zip(beams, candidates) for c in cands]
            if beam_rows:
                seqs += [list(b) for b in beams]
            flat = self.score(seqs, [query] * len(seqs))
            n = sum(len(c) for c in candidates)
            out = np.split(flat[:n], np.cumsum([len(c) for c in candidates])[:-1])
            return (out, list(flat[n:])) if beam_rows else out
        rows, own_images, row_beam, row_prefix = [], [], [], []
        prefixes: dict[int, tuple[np.ndarray, list]] = {}  # beam index -> (prefix ids, prefix images)
        for b, (beam, cands) in enumerate(zip(beams, candidates)):
            toks = [self._tokenise(extend(beam, c, order), query) for c in cands]
            imgs = [prompting.images_in_order(extend(beam, c, order), query) for c in cands]
            n_prefix = self._beam_prefix_tokens(beam, toks, imgs) if toks else 0
            if n_prefix:
                prefixes[b] = (toks[0][0][:n_prefix], list(imgs[0][: len(beam)]))
            for t, im in zip(toks, imgs):
                rows.append(t)
                own_images.append(im[len(beam) :] if n_prefix else im)
                row_beam.append(b)
                row_prefix.append(n_prefix)
            self.last_shared_prefix = n_prefix
        if beam_rows:  # each beam's own row, whole (it does not continue the beam's prefix with an `<image>`)
            for b, beam in enumerate(beams):
                rows.append(self._tokenise(list(beam), query))
                own_images.append(prompting.images_in_order(list(beam), query))
                row_beam.append(b)
                row_prefix.append(0)
        state = self._prefix_states(prefixes) if prefixes else None
        flat = np.empty(len(rows), dtype=np.float64)
        for lo in range(0, len(rows), self.batch_size):
            hi = min(lo + self.batch_size, len(rows))
            flat[lo:hi] = self._score_rows(rows[lo:hi], own_images[lo:hi], row_beam[lo:hi], row_prefix[lo:hi], state)
        n = sum(len(c) for c in candidates)
        out = np.split(flat[:n], np.cumsum([len(c) for c in candidates])[:-1])
        return (out, [float(x) for x in flat[n:]]) if beam_rows else out

    def _beam_prefix_tokens(self, beam, rows, images) -> int:
        """Token count of the beam's demonstrations: every row starts with them (same ids and images) and continues
        with `<image>` (the candidate's); checked, not assumed."""
        if not beam:
            return 0
        for d in beam:
            _check_text(d)
        text = "".join(vqa_prompt(d.question, d.answer) for d in beam)
        n = len(self._offset_tok.encode(text, add_special_tokens=False).ids)
        for (ids, mask), imgs in zip(rows, images):
            if (
                len(ids) <= n
                or ids[n] != self.media_id
                or not np.array_equal(ids[:n], rows[0][0][:n])
                or mask[: n + 1].any()
                or list(imgs[: len(beam)]) != list(images[0][: len(beam)])
            ):
                return 0  # the tokenizer merged across the boundary: no exact shared prefix; whole rows
        return n

    def _prefix_state(self, prefix_ids: np.ndarray, prefix_images: Sequence[str]):
        """The KV cache of one beam prefix (one row), its media conditioning applied to its own tokens."""
        state = self._prefix_states({0: (np.asarray(prefix_ids), list(prefix_images))})
        return state["cache"]

    def _prefix_states(self, prefixes: dict) -> dict:
        """The KV cache of every beam prefix (`{beam: (ids, images)}`) from one forward, left-padded to the longest
        (padding masked; a text token's cross-attention sees only its own prefix's images): `cache` (a row per
        prefix, in the dict's order), `row` (beam -> cache row), `mask` (rows × longest prefix, 1 on real tokens)."""
        beams = list(prefixes)
        lens = [len(prefixes[b][0]) for b in beams]
        P = max(lens)
        ids = torch.full((len(beams), P), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(beams), P), dtype=torch.long)
        for i, b in enumerate(beams):
            ids[i, P - lens[i] :] = torch.as_tensor(prefixes[b][0])
            mask[i, P - lens[i] :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        self._condition(self._media([prefixes[b][1] for b in beams]))
        try:
            out = self.lm(input_ids=ids, attention_mask=mask, use_cache=True, **self._keep_kw(1))  # no logit used
        finally:
            self.lm.clear_conditioned_layers()
        return {"cache": out.past_key_values, "row": {b: i for i, b in enumerate(beams)}, "mask": mask}

    def _score_on_prefix(self, rows, own_images, n_prefix: int, state) -> np.ndarray:
        """P̄ of rows that all continue the one-row prefix cache `state` (its first `n_prefix` tokens; None: no
        prefix)."""
        if state is None:
            return self._score_rows(rows, own_images, [0] * len(rows), [0] * len(rows), None)
        st = {"cache": state, "row": {0: 0}, "mask": torch.ones((1, n_prefix), dtype=torch.long, device=self.device)}
        return self._score_rows(rows, own_images, [0] * len(rows), [n_prefix] * len(rows), st)

    def _score_rows(self, rows, own_images, row_beam, row_prefix, state) -> np.ndarray:
        """P̄ of rows, each continuing its beam's prefix in `state` (`_prefix_states`) over its first
        `row_prefix[i]` tokens (0: a whole row; its cache row is masked out). Each row runs from there up to its
        last scored token (what follows is never the input of a scored logit), right-padded, conditioned on its own
        images only (its remainder starts with `<image>`)."""
        ends = [int(np.flatnonzero(m)[-1]) + 1 for _, m in rows]
        ids = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r[0][n:e]) for r, n, e in zip(rows, row_prefix, ends)], batch_first=True,
            padding_value=self.pad_id,
        ).to(self.device)
        mask = nn.utils.rnn.pad_sequence(
            [torch.as_tensor(r[1][n:e]) for r, n, e in zip(rows, row_prefix, ends)], batch_first=True
        ).to(self.device)
        own_att = nn.utils.rnn.pad_sequence(
            [torch.ones(e - n, dtype=torch.long) for n, e in zip(row_prefix, ends)], batch_first=True
        ).to(self.device)
        cache, att = None, own_att
        if state is not None and any(row_prefix):
            pick = [state["row"][b] if n else 0 for b, n in zip(row_beam, row_prefix)]
            index = torch.as_tensor(pick, device=self.device)
            pre = state["mask"].index_select(0, index) * torch.as_tensor(
                [1 if n else 0 for n in row_prefix], device=self.device
            )[:, None]  # a whole row attends no prefix
            cache = _select_cache(state["cache"], index, len(state["row"]))
            att = torch.cat([pre, own_att], dim=1)
        # The LM head only where a scored token is predicted: the last `keep` positions of the padded batch hold
        # every row's scored predictions (a model without `logits_to_keep` ignores it and returns every position)
        first = [int(np.flatnonzero(r[1][n:e])[0]) for r, n, e in zip(rows, row_prefix, ends)]
        keep = ids.shape[1] - (min(first) - 1)
        self._condition(self._media(own_images))
        try:  # FlamingoLMMixin.forward sets the media locations from the ids it is given
            logits = self.lm(
                input_ids=ids, attention_mask=att, past_key_values=cache, use_cache=cache is not None,
                **self._keep_kw(keep),
            ).logits
        finally:
            self.lm.clear_conditioned_layers()
        # The first own token (`<image>`) is predicted by the prefix's last position: never scored (checked in
        # `_beam_prefix_tokens`), so the suffix's logits hold every scored prediction.
        L = logits.shape[1]
        return torch.exp(-self._mean_ce(logits, ids[:, -L:], mask[:, -L:])).double().cpu().numpy()

    def _keep_kw(self, keep: int) -> dict:
        """`logits_to_keep` where the language model's own forward names it (transformers' MPT), else nothing: the
        first `forward` in its class hierarchy that is not a Flamingo mixin's."""
        if not hasattr(self, "_takes_keep"):
            import inspect

            self._takes_keep = False
            for klass in type(self.lm).__mro__:
                f = klass.__dict__.get("forward")
                if f is not None and not klass.__module__.startswith(("open_flamingo", "leverplus.tracks.vqa.models.flamingo")):
                    self._takes_keep = "logits_to_keep" in inspect.signature(f).parameters
                    break
        return {"logits_to_keep": keep} if self._takes_keep else {}

    # ---- generation ------------------------------------------------------------------------------------------------
    def prompt_settings(self) -> dict:
        return {
            "prompt": "open_flamingo_vqa",
            "instruction": None,
            "postprocess": self.postprocess,
            "stop": self.stop_mode,
            "infoscore_span": "answer+endofchunk" if self.score_eoc else "answer",
            "prompt_preset": self.preset,
        }

    @torch.no_grad()
    def generate(
        self, icd_seqs, queries, generation: GenerationSettings | dict | None = None, *, max_new_tokens: int | None = None
    ) -> list[str]:
        settings = resolve(generation, max_new_tokens)
        return [self._decode_answer(row) for row in self.generate_tokens(icd_seqs, queries, settings)]

    @torch.no_grad()
    def generate_tokens(self, icd_seqs, queries, settings: GenerationSettings) -> list[list[int]]:
        """The generated token ids of each row (up to and including the stop token that ended it, if any), greedy
        or beam search as `settings` says, in batches of `batch_size` rows."""
        if settings.repetition_penalty != 1.0:
            raise ValueError(f"the flamingo adapter does not apply a repetition penalty (1.0 only); got {settings}")
        rows: list[list[int]] = []
        for lo in range(0, len(queries), self.batch_size):
            seqs, qs = icd_seqs[lo : lo + self.batch_size], queries[lo : lo + self.batch_size]
            texts = [self._text(s, q, with_answer=False)[0] for s, q in zip(seqs, qs)]
            enc = self.tokenizer(
                texts, padding="longest", padding_side="left", add_special_tokens=False, return_tensors="pt"
            ).to(self.device)
            media = self._media([prompting.images_in_order(s, q) for s, q in zip(seqs, qs)])
            if settings.is_beam_search:  # every beam of a row attends that row's images, as Flamingo.generate
                media = media.repeat_interleave(settings.num_beams, dim=0)
            # As Flamingo.generate: media conditioned once, cached-media mode for the decoding steps.
            self._condition(media)
            self.lm._use_cached_vision_x = True
            try:
                if settings.is_beam_search:
                    new = self._beam_search(enc["input_ids"], enc["attention_mask"], settings)
                else:
                    new = self._greedy(enc["input_ids"], enc["attention_mask"], settings)
            finally:
                self.lm.clear_conditioned_layers()
                self.lm._use_cached_vision_x = False
            rows += new
        return rows

    def _step_log_probs(self, logits: torch.Tensor, step: int, settings: GenerationSettings) -> torch.Tensor:
        """float32 log-probabilities of the next token; the stop tokens forbidden before `min_new_tokens` (as
        transformers' MinNewTokensLengthLogitsProcessor)."""
        logp = nn.functional.log_softmax(logits.to(torch.float32), dim=-1)
        if step < settings.min_new_tokens:
            logp[:, self.stop_ids] = -float("inf")
        return logp

    def _greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings) -> list:
        """Greedy decoding with the LM's KV cache. transformers' `generate` is not used: since transformers 5 it
        drops an all-ones attention mask, and `FlamingoLMMixin.forward` requires one (so does `Flamingo.generate`
        on an unpadded batch). Rows that have stopped are fed the pad token (masked out)."""
        stop = torch.tensor(self.stop_ids, device=input_ids.device)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        step_ids, att, cache, out_ids = input_ids, attention_mask, None, []
        for t in range(settings.max_new_tokens):
            out = self.lm(input_ids=step_ids, attention_mask=att, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            nxt = self._step_log_probs(out.logits[:, -1], t, settings).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            out_ids.append(nxt)
            done |= torch.isin(nxt, stop)
            if bool(done.all()):
                break
            step_ids = nxt[:, None]
            att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
        if not out_ids:
            return [[] for _ in range(input_ids.shape[0])]
        return torch.stack(out_ids, dim=1).tolist()

    def _beam_search(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, settings: GenerationSettings) -> list:
        """Beam search over the LM's KV cache with the semantics of transformers' `_beam_search` (the installed
        5.x, which `Flamingo.generate` calls; early_stopping False), for B left-padded rows × K beams:

        * step scores are float32 log-softmax; beam 0 starts at 0, the others at −1e9 (only one beam expands first);
        * per row the top `max(2, 1 + #stop tokens) · K` of the K × V continuations are kept (a stop token can
          take a place without starving the running beams);
        * a continuation that ends in a stop token, or reaches `max_new_tokens`, is a finished hypothesis when it
          ranks among the first K: score = summed log-probability / (generated length ** length_penalty), the
          generated length counting the stop token; the K best finished hypotheses are kept;
        * the K best continuations that have not finished run on (the cache reordered to their source beams);
        * a row stops improving once all K finished slots are filled and its best running beam's score divided by
          (length ** length_penalty) is no longer above its worst finished one; the loop ends when no row can
          improve or every kept continuation has finished.

        Returns the best finished hypothesis of each row (generated tokens only)."""
        B, K, T = input_ids.shape[0], settings.num_beams, settings.max_new_tokens
        lp, dev = settings.length_penalty, input_ids.device
        stop = torch.tensor(self.stop_ids, device=dev)
        keep = max(2, 1 + len(self.stop_ids)) * K
        top_k_mask = torch.arange(keep, device=dev) < K
        seqs = torch.full((B, K, T), self.pad_id, dtype=torch.long, device=dev)  # running beams' tokens
        scores = torch.zeros((B, K), dtype=torch.float32, device=dev)
        scores[:, 1:] = -1e9
        fin_seqs = seqs.clone()
        fin_lens = torch.zeros((B, K), dtype=torch.long, device=dev)
        fin_scores = torch.full((B, K), -1e9, dtype=torch.float32, device=dev)
        fin_flag = torch.zeros((B, K), dtype=torch.bool, device=dev)
        can_improve = torch.ones((B, 1), dtype=torch.bool, device=dev)
        step_ids = input_ids.repeat_interleave(K, dim=0)
        att = attention_mask.repeat_interleave(K, dim=0)
        cache = None
        for t in range(T):
            out = self.lm(input_ids=step_ids, attention_mask=att, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            logp = self._step_log_probs(out.logits[:, -1], t, settings)
            V = logp.shape[-1]
            acc = (logp.view(B, K, V) + scores[:, :, None]).view(B, K * V)
            top_scores, top_idx = torch.topk(acc, k=keep)
            src = top_idx // V  # (B, keep) source beam of each continuation
            tok = top_idx % V
            cand = torch.take_along_dim(seqs, src[:, :, None], dim=1)
            cand[:, :, t] = tok
            hits = torch.isin(tok, stop) | (t + 1 >= T)  # finished: a stop token, or the length limit
            # running beams for the next step: the K best continuations that have not finished
            running = top_scores + hits.to(torch.float32) * -1.0e9
            nxt = torch.topk(running, k=K)[1]
            seqs = torch.take_along_dim(cand, nxt[:, :, None], dim=1)
            new_scores = torch.take_along_dim(running, nxt, dim=1)
            beam_src = torch.take_along_dim(src, nxt, dim=1)
            # finished hypotheses: only the first K continuations may finish
            just = hits & top_k_mask[None, :]
            fin_cand = top_scores / float((t + 1) ** lp)
            fin_cand = fin_cand + (~can_improve).to(torch.float32) * -1.0e9
            fin_cand = fin_cand + (~just).to(torch.float32) * -1.0e9
            m_seqs = torch.cat((fin_seqs, cand), dim=1)
            m_scores = torch.cat((fin_scores, fin_cand), dim=1)
            m_lens = torch.cat((fin_lens, torch.full_like(tok, t + 1)), dim=1)
            m_flag = torch.cat((fin_flag, just), dim=1)
            best = torch.topk(m_scores, k=K)[1]
            fin_seqs = torch.take_along_dim(m_seqs, best[:, :, None], dim=1)
            fin_scores = torch.take_along_dim(m_scores, best, dim=1)
            fin_lens = torch.take_along_dim(m_lens, best, dim=1)
            fin_flag = torch.take_along_dim(m_flag, best, dim=1)
            scores = new_scores
            # can a row still improve? (transformers' early-stop heuristic with early_stopping False)
            best_possible = scores[:, :1] / float((t + 1) ** lp)
            worst = torch.where(fin_flag, fin_scores.min(dim=1, keepdim=True)[0], -1.0e9)
            can_improve = can_improve & (best_possible > worst).any(dim=-1, keepdim=True)
            if not bool(can_improve.any()) or bool(hits.all()):
                break
            flat_src = (beam_src + torch.arange(B, device=dev)[:, None] * K).reshape(-1)
            cache = _reorder_cache(cache, flat_src)
            step_ids = seqs[:, :, t].reshape(-1, 1)
            att = torch.cat([att, torch.ones_like(att[:, :1])], dim=1)
        return [fin_seqs[b, 0, : int(fin_lens[b, 0])].tolist() for b in range(B)]

    def _decode_answer(self, new_ids: list[int]) -> str:
        """The generated text up to the first stop token (`prompt.flamingo_stop`), decoded without special tokens
        (so with stop `eos`, Lever-LM's setting, an `<|endofchunk|>`/`<image>` inside the answer vanishes and the
        post-processing cuts at the next "Question"), post-processed, stripped."""
        stops = [i for i, t in enumerate(new_ids) if t in self.stop_ids]
        cut = new_ids[: stops[0]] if stops else new_ids
        text = self.tokenizer.decode(cut, skip_special_tokens=True)
        if self.postprocess == "open_flamingo_vqa":
            text = open_flamingo_vqa_postprocess(text)
        return text.strip()
