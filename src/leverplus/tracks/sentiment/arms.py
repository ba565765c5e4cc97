"""The four (five) ways of making a Qwen-class causal LM classify sentiment, all with the token embedding and the LM
head frozen:

* **A** :func:`arm_zero_shot` — label scoring (:mod:`leverplus.tracks.sentiment.label_scoring`) of a label pair after the prompt;
* **B / B′** :func:`arm_head_only` — frozen base, a linear head (with bias) on the last non-pad token's final hidden
  state (``pooling="last"``) or on the mean over the non-pad tokens (``pooling="mean"``). The base is frozen, so its
  states are computed once and the head is trained on them (the same function as a seq-cls head on a frozen model);
* **C** :func:`arm_lora_head` — ``AutoModelForSequenceClassification`` (``pad_token_id`` set) + peft LoRA, task
  ``SEQ_CLS`` (peft puts the new ``score`` head in ``modules_to_save``);
* **D** :func:`arm_lora_label` — peft LoRA on the causal LM, trained with the LM loss on the gold label's tokens only
  (context tokens masked with -100, same joint tokenisation as scoring), predicted by label scoring.

Frozen means: ``embed_tokens`` / ``lm_head`` are never in ``target_modules`` or ``modules_to_save`` (a config that
names them is refused), their ``requires_grad`` stays False, tied embeddings stay tied (same storage), and the sha256
of their bytes (:func:`frozen_param_digests`) is taken before and after training — a mismatch raises.

Every arm returns ``(predictions, record)``. ``predictions`` is a DataFrame with ``id, prediction ("pos"/"neg"),
score`` (score = the positive-class margin, log-odds). A and D return the label-scoring VARIANTS in long form, with two more columns,
``label_pair`` ("正面/负面") and ``variant``: ``none`` (plain sum of log-probs), ``norm_tokens`` / ``norm_chars``
(length-normalised), ``contextual`` (contextual calibration), ``pmi_dc``; :func:`select_variant` picks one as
``id, prediction, score``. ``record`` (JSON-able) holds the arm, seed, settings, trainable parameter names and count,
per-epoch train/val losses, the early-stop (best) epoch, the frozen digests before/after, label token counts and the
calibration constants.

Settings: :data:`DEFAULTS`, overridden by the ``config`` dict each arm takes (:func:`arm_settings`).
"""
from __future__ import annotations

import copy
import hashlib
import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULTS",
    "VARIANTS",
    "FROZEN_MODULE_NAMES",
    "FrozenParamsChanged",
    "arm_settings",
    "resolve_device",
    "frozen_param_digests",
    "check_frozen",
    "select_variant",
    "arm_zero_shot",
    "arm_head_only",
    "arm_lora_head",
    "arm_lora_label",
    "label_variants",
    "variants_from_scores",
]

LABEL_ORDER = ("neg", "pos")  # class index 0 = neg, 1 = pos (leverplus.tracks.sentiment.data.LABELS)
VARIANTS = ("none", "norm_tokens", "norm_chars", "contextual", "pmi_dc")
FROZEN_MODULE_NAMES = ("embed_tokens", "lm_head", "wte", "word_embeddings")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "template": {"use_chat_template": True, "enable_thinking": False, "system": None,
                 "instruction": "判断这条商品评论的情感。\n评论：{text}\n情感："},
    "label_pair": ["正面", "负面"],  # (positive, negative) verbalizers
    "max_text_chars": 64,  # reviews are cut to this many characters before the prompt is built
    "batch_size": 16,  # scoring / feature batch
    "dtype": "float32",
    "device": "auto",  # auto: cuda when torch.cuda.is_available(), else cpu (resolve_device)
    "head": {"lr": 0.01, "epochs": 60, "patience": 5, "batch_size": 64, "weight_decay": 0.0},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "lora_head": {"lr": 0.003, "epochs": 4, "patience": 1, "batch_size": 16, "weight_decay": 0.0},
    "lora_label": {"lr": 0.003, "epochs": 4, "patience": 1, "batch_size": 16, "weight_decay": 0.0},
    "content_free": ["N/A", "", "[MASK]"],
}


class FrozenParamsChanged(RuntimeError):
    """The token embedding or LM head changed (or got untied) during training."""


def _merge(base: dict, over: Mapping | None) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def arm_settings(config: Mapping | None = None) -> dict:
    """:data:`DEFAULTS` with ``config`` merged in (nested dicts key by key)."""
    cfg = _merge(DEFAULTS, config)
    for key in ("target_modules", "modules_to_save"):
        names = cfg["lora"].get(key) or []
        bad = [n for n in names if any(f in str(n) for f in FROZEN_MODULE_NAMES)]
        if bad:
            raise ValueError(f"lora.{key} names {bad}: the token embedding and LM head stay frozen in every arm "
                             "(and tied embeddings would be untied)")
    return cfg


def resolve_device(spec: str | None = "auto") -> str:
    """Where an arm runs: :func:`leverplus.core.runtime.resolve_device` (None = auto)."""
    from leverplus.core.runtime import resolve_device as resolve

    return resolve(spec, default="auto")


def _place(model, device: str):
    """Move ``model`` to ``device`` (every arm goes through here; inputs follow the model's device)."""
    return model.to(device)


def _device_of(model):
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------------------------------
# frozen parameters
# ---------------------------------------------------------------------------------------------------------------------
def _tensor_sha256(t) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes()
                          ).hexdigest()


def frozen_param_digests(model) -> dict:
    """sha256 of the token-embedding and LM-head weight bytes, whether they are tied (same storage), and whether any
    of them requires grad. Works on plain, seq-cls and peft-wrapped models (seq-cls has no LM head: ``None``)."""
    emb = model.get_input_embeddings().weight
    head_mod = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head = getattr(head_mod, "weight", None) if head_mod is not None else None
    return {
        "embed_tokens": _tensor_sha256(emb),
        "lm_head": _tensor_sha256(head) if head is not None else None,
        "tied": bool(head is not None and head.data_ptr() == emb.data_ptr()),
        "requires_grad": bool(emb.requires_grad or (head is not None and head.requires_grad)),
    }


def check_frozen(before: dict, after: dict) -> None:
    for key in ("embed_tokens", "lm_head", "tied"):
        if before[key] != after[key]:
            raise FrozenParamsChanged(f"{key} changed during training: {before[key]} -> {after[key]}")
    if after["requires_grad"]:
        raise FrozenParamsChanged("the token embedding or LM head requires grad")


def _trainable(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------------------
def _seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _prompts(tokenizer, texts: Sequence[str], cfg: Mapping) -> list[str]:
    from leverplus.tracks.sentiment.causal_lm import build_prompt

    n = int(cfg["max_text_chars"])
    return [build_prompt(tokenizer, str(t)[:n], template=cfg["template"]) for t in texts]


def _y(df: pd.DataFrame) -> np.ndarray:
    bad = sorted(set(df["label"]) - set(LABEL_ORDER))
    if bad:
        raise ValueError(f"labels {bad}: expected 'pos'/'neg'")
    return (df["label"] == "pos").to_numpy().astype(int)


def _pred_frame(ids, margin: np.ndarray) -> pd.DataFrame:
    """``id, prediction, score`` with ``score`` = the positive-class MARGIN (log-odds: ``ll_pos − ll_neg`` for label
    scoring, ``logit_pos − logit_neg`` for a head), predicted positive when > 0. Margins, not probabilities: a
    sigmoid saturates in float64 beyond ~30 nats and would tie items the margins rank."""
    margin = np.asarray(margin, dtype=np.float64)
    return pd.DataFrame({"id": list(ids), "prediction": np.where(margin > 0, "pos", "neg"), "score": margin})


def _pad_batch(seqs: Sequence[Sequence[int]], pad: int):
    import torch

    T = max(len(s) for s in seqs)
    inp = torch.full((len(seqs), T), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), T), dtype=torch.long)
    for r, s in enumerate(seqs):
        inp[r, :len(s)] = torch.tensor(list(s))
        att[r, :len(s)] = 1
    return inp, att


def _fit(model, params, train_batches, val_loss_fn, tcfg: Mapping, seed: int, log) -> dict:
    """AdamW over ``params``; one epoch = one pass over ``train_batches(epoch_rng)`` (a list of closures returning a
    loss); early stopping on ``val_loss_fn()`` with ``patience``; the best epoch's trainable state is restored."""
    import torch

    opt = torch.optim.AdamW(params, lr=float(tcfg["lr"]), weight_decay=float(tcfg.get("weight_decay", 0.0)))
    rng = np.random.default_rng(seed)
    best, best_epoch, best_state, bad = math.inf, 0, None, 0
    hist = {"train_loss": [], "val_loss": []}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for epoch in range(1, int(tcfg["epochs"]) + 1):
        model.train()
        tot, cnt = 0.0, 0
        for step in train_batches(rng):
            loss = step()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach())
            cnt += 1
        model.eval()
        with torch.no_grad():
            vl = float(val_loss_fn())
        hist["train_loss"].append(round(tot / max(cnt, 1), 6))
        hist["val_loss"].append(round(vl, 6))
        log(f"epoch {epoch}: train loss {hist['train_loss'][-1]:.4f}, val loss {vl:.4f}")
        if vl < best - 1e-6:
            best, best_epoch, bad = vl, epoch, 0
            best_state = {n: p.detach().clone() for n, p in named}
        else:
            bad += 1
            if bad > int(tcfg["patience"]):
                log(f"early stop after epoch {epoch} (best epoch {best_epoch})")
                break
    if best_state is not None:
        with torch.no_grad():
            for n, p in named:
                p.copy_(best_state[n])
    model.eval()
    return {**hist, "best_epoch": best_epoch, "epochs_run": len(hist["train_loss"]), "best_val_loss": round(best, 6)}


def _nolog(*_a, **_k):
    pass


# ---------------------------------------------------------------------------------------------------------------------
# A / D: label scoring variants
# ---------------------------------------------------------------------------------------------------------------------
def label_variants(model, tokenizer, items: pd.DataFrame, cfg: Mapping, label_pair: Sequence[str]
                   ) -> tuple[pd.DataFrame, dict]:
    """Long-form predictions (``id, label_pair, variant, prediction, score``) of every :data:`VARIANTS` for one
    (positive, negative) label pair, and the pair's record (token counts, calibration constants): the model's label
    scores after every item's prompt, after the content-free inputs and after the domain premise, turned into the
    variants by :func:`variants_from_scores`."""
    from leverplus.tracks.sentiment.label_scoring import content_free_loglik, domain_loglik, score_labels

    pair = [str(label_pair[0]), str(label_pair[1])]
    ctx = _prompts(tokenizer, items["text"].tolist(), cfg)
    bs = int(cfg["batch_size"])
    sc = score_labels(model, tokenizer, ctx, pair, batch_size=bs)
    cf = content_free_loglik(model, tokenizer, pair, template=cfg["template"], content_free=cfg["content_free"],
                             batch_size=bs)
    dom = domain_loglik(model, tokenizer, pair, template=cfg["template"], batch_size=bs)
    return variants_from_scores(items["id"], pair, sc, cf, dom)


def variants_from_scores(ids: Sequence, label_pair: Sequence[str], sc, cf_ll: np.ndarray, domain_ll: np.ndarray
                         ) -> tuple[pd.DataFrame, dict]:
    """:func:`label_variants` after the model has run: ``sc`` the items' :class:`LabelScores` for the pair
    (pos, neg), ``cf_ll`` [n_content_free, 2] and ``domain_ll`` [2] the label scores after the content-free inputs and
    the domain premise. No model: every variant's margin and the record follow from these numbers."""
    from leverplus.tracks.sentiment.label_scoring import content_free_prior, margin, margin_shift

    pair = [str(label_pair[0]), str(label_pair[1])]
    cf, dom = np.asarray(cf_ll, dtype=np.float64), np.asarray(domain_ll, dtype=np.float64)
    shift = {"contextual": margin_shift(cf_ll=cf), "pmi_dc": margin_shift(domain_ll=dom)}
    m_none = margin(sc.loglik)
    # every variant's stored score is a margin (log-odds); the calibrations add one constant to every item's margin
    margins = {
        "none": m_none, "norm_tokens": margin(sc.normalised("tokens")), "norm_chars": margin(sc.normalised("chars")),
        "contextual": m_none + shift["contextual"], "pmi_dc": m_none + shift["pmi_dc"],
    }
    name = "/".join(pair)
    frames = []
    for v in VARIANTS:
        f = _pred_frame(ids, margins[v])
        f.insert(1, "label_pair", name)
        f.insert(2, "variant", v)
        frames.append(f)
    p_cf = content_free_prior(cf)
    rec = {
        "label_pair": name,
        # pair order, keyed by role: JSON writers sort keys, so nothing here may depend on key order
        "labels": {"pos": pair[0], "neg": pair[1]},
        "label_tokens": {"pos": sorted({int(x) for x in sc.n_tokens[:, 0]}),
                         "neg": sorted({int(x) for x in sc.n_tokens[:, 1]})},
        "label_chars": {"pos": len(pair[0]), "neg": len(pair[1])},
        "content_free_loglik": cf.round(6).tolist(),
        "content_free_prob": p_cf.round(6).tolist(),
        "content_free_prior": "Zhao et al.'s get_p_content_free: exp(ll) averaged over the inputs, then normalised",
        "domain_loglik": np.asarray(dom).round(6).tolist(),
        # the constant each calibration ADDS to the margin ll_pos − ll_neg (so AUC cannot change)
        "margin_shift": shift,
        "mean_loglik": sc.loglik.mean(axis=0).round(6).tolist(),
        "margin_abs": {"median": float(np.median(np.abs(m_none))) if len(m_none) else None,
                       "share_over_30_nats": float(np.mean(np.abs(m_none) > 30)) if len(m_none) else None},
    }
    return pd.concat(frames, ignore_index=True), rec


def select_variant(pred: pd.DataFrame, variant: str = "none", label_pair: str | None = None) -> pd.DataFrame:
    """``id, prediction, score`` of one label-scoring variant (and pair, when the frame holds several)."""
    m = pred["variant"] == variant
    if label_pair is not None:
        m &= pred["label_pair"] == label_pair
    out = pred[m]
    if out["id"].duplicated().any():
        raise ValueError("several label pairs in the frame: pass label_pair")
    return out[["id", "prediction", "score"]].reset_index(drop=True)


def arm_zero_shot(model_dir, items: pd.DataFrame, *, config: Mapping | None = None,
                  label_pairs: Sequence[Sequence[str]] | None = None, log=_nolog) -> tuple[pd.DataFrame, dict]:
    """A: zero-shot label scoring of ``items`` for each label pair (default: ``config.label_pair``)."""
    import torch

    from leverplus.tracks.sentiment.causal_lm import load_causal_lm

    cfg = arm_settings(config)
    pairs = [list(p) for p in (label_pairs or [cfg["label_pair"]])]
    t0 = time.perf_counter()
    device = resolve_device(cfg["device"])
    model, tok = load_causal_lm(model_dir, dtype=cfg["dtype"])
    model = _place(model, device)
    for p in model.parameters():
        p.requires_grad_(False)
    before = frozen_param_digests(model)
    frames, recs = [], []
    for pair in pairs:
        f, r = label_variants(model, tok, items, cfg, pair)
        frames.append(f)
        recs.append(r)
        log(f"A {r['label_pair']}: scored {len(items)} items")
    after = frozen_param_digests(model)
    check_frozen(before, after)
    record = {"arm": "A", "method": "zero-shot label scoring", "seed": cfg["seed"], "settings": _public(cfg),
              "trainable_parameters": [], "n_trainable": 0, "frozen_before": before, "frozen_after": after,
              "pairs": recs, "seconds": round(time.perf_counter() - t0, 2), "threads": torch.get_num_threads(),
              "device": device}
    return pd.concat(frames, ignore_index=True), record


def _public(cfg: Mapping) -> dict:
    return {k: cfg[k] for k in sorted(cfg)}


# ---------------------------------------------------------------------------------------------------------------------
# B / B′: head on frozen states
# ---------------------------------------------------------------------------------------------------------------------
def _features(model, tokenizer, texts: Sequence[str], cfg: Mapping, pooling: str):
    import torch

    ctx = _prompts(tokenizer, texts, cfg)
    pad = tokenizer.pad_token_id
    feats = []
    bs = int(cfg["batch_size"])
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(base, "model", base)
    for b0 in range(0, len(ctx), bs):
        ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in ctx[b0:b0 + bs]]
        inp, att = _pad_batch(ids, pad)
        inp, att = inp.to(_device_of(body)), att.to(_device_of(body))
        with torch.inference_mode():
            h = body(input_ids=inp, attention_mask=att).last_hidden_state.float()
        if pooling == "last":
            last = att.sum(-1) - 1
            feats.append(h[torch.arange(h.shape[0]), last])
        elif pooling == "mean":
            m = att.unsqueeze(-1).float()
            feats.append((h * m).sum(1) / m.sum(1))
        else:
            raise ValueError(f"pooling {pooling!r}: use 'last' or 'mean'")
    return torch.cat(feats) if feats else torch.zeros((0, body.config.hidden_size))


def arm_head_only(model_dir, train: pd.DataFrame, val: pd.DataFrame, items: pd.DataFrame, *,
                  pooling: str = "last", config: Mapping | None = None, log=_nolog) -> tuple[pd.DataFrame, dict]:
    """B (``pooling="last"``: last non-pad token) / B′ (``"mean"``): linear head on frozen final hidden states."""
    import torch

    from leverplus.tracks.sentiment.causal_lm import load_causal_lm

    cfg = arm_settings(config)
    hcfg = cfg["head"]
    t0 = time.perf_counter()
    _seed(int(cfg["seed"]))
    device = resolve_device(cfg["device"])
    model, tok = load_causal_lm(model_dir, dtype=cfg["dtype"])
    model = _place(model, device)
    for p in model.parameters():
        p.requires_grad_(False)
    before = frozen_param_digests(model)
    Xtr, Xva, Xte = (_features(model, tok, d["text"].tolist(), cfg, pooling) for d in (train, val, items))
    dev = _device_of(model)
    ytr, yva = torch.tensor(_y(train), device=dev), torch.tensor(_y(val), device=dev)
    _seed(int(cfg["seed"]))
    head = torch.nn.Linear(Xtr.shape[1], 2).to(dev)
    holder = torch.nn.ModuleDict({"score": head})
    bs = int(hcfg["batch_size"])

    def batches(rng):
        order = torch.as_tensor(rng.permutation(len(Xtr)), device=dev)
        return [(lambda idx=order[i:i + bs]: torch.nn.functional.cross_entropy(head(Xtr[idx]), ytr[idx]))
                for i in range(0, len(order), bs)]

    hist = _fit(holder, list(head.parameters()), batches,
                lambda: torch.nn.functional.cross_entropy(head(Xva), yva), hcfg, int(cfg["seed"]), log)
    with torch.no_grad():
        logits = head(Xte).double()
        m_pos = (logits[:, 1] - logits[:, 0]).cpu().numpy()  # log-odds of pos (softmax over the two logits)
    after = frozen_param_digests(model)
    check_frozen(before, after)
    arm = "B" if pooling == "last" else "B'"
    record = {"arm": arm, "method": f"head-only ({pooling} pooling, frozen base)", "seed": cfg["seed"],
              "settings": _public(cfg), "pooling": pooling,
              "trainable_parameters": [f"score.{n}" for n, _ in head.named_parameters()],
              "n_trainable": int(sum(p.numel() for p in head.parameters())), **hist,
              "frozen_before": before, "frozen_after": after, "seconds": round(time.perf_counter() - t0, 2),
              "threads": torch.get_num_threads(), "device": device}
    return _pred_frame(items["id"], m_pos), record


# ---------------------------------------------------------------------------------------------------------------------
# C: LoRA + sequence-classification head
# ---------------------------------------------------------------------------------------------------------------------
def _lora_config(cfg: Mapping, task: str):
    from peft import LoraConfig

    lc = cfg["lora"]
    extra = {k: lc[k] for k in ("modules_to_save", "bias") if k in lc}
    return LoraConfig(task_type=task, r=int(lc["r"]), lora_alpha=int(lc["alpha"]), lora_dropout=float(lc["dropout"]),
                      target_modules=list(lc["target_modules"]), **extra)


def _check_peft_frozen(model) -> None:
    bad = [n for n, p in model.named_parameters() if p.requires_grad and any(f in n for f in FROZEN_MODULE_NAMES)]
    if bad:
        raise FrozenParamsChanged(f"embedding / LM head parameters are trainable: {bad}")


def arm_lora_head(model_dir, train: pd.DataFrame, val: pd.DataFrame, items: pd.DataFrame, *,
                  config: Mapping | None = None, log=_nolog) -> tuple[pd.DataFrame, dict]:
    """C: LoRA (peft, task SEQ_CLS) + the sequence-classification head, pooled at the rightmost non-pad token."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from leverplus.tracks.sentiment.causal_lm import _check_model_type, ensure_pad_token

    cfg = arm_settings(config)
    tcfg = cfg["lora_head"]
    t0 = time.perf_counter()
    _seed(int(cfg["seed"]))
    from pathlib import Path

    _check_model_type(Path(model_dir))
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    ensure_pad_token(None, tok)
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, pad_token_id=tok.pad_token_id, dtype=getattr(torch, cfg["dtype"]),
        trust_remote_code=False)
    base.config.pad_token_id = tok.pad_token_id
    device = resolve_device(cfg["device"])
    base = _place(base, device)
    before = frozen_param_digests(base)
    model = get_peft_model(base, _lora_config(cfg, "SEQ_CLS"))
    _check_peft_frozen(model)
    trainable = _trainable(model)
    pad = tok.pad_token_id
    enc = {k: [tok(c, add_special_tokens=False)["input_ids"] for c in _prompts(tok, d["text"].tolist(), cfg)]
           for k, d in (("train", train), ("val", val), ("items", items))}
    dev = _device_of(model)
    ytr, yva = torch.tensor(_y(train), device=dev), torch.tensor(_y(val), device=dev)
    bs = int(tcfg["batch_size"])

    def logits_of(seqs):
        inp, att = _pad_batch(seqs, pad)
        return model(input_ids=inp.to(dev), attention_mask=att.to(dev)).logits.float()

    def batches(rng):
        order = rng.permutation(len(enc["train"]))
        return [(lambda idx=order[i:i + bs]: torch.nn.functional.cross_entropy(
            logits_of([enc["train"][j] for j in idx]), ytr[idx])) for i in range(0, len(order), bs)]

    def predict(seqs):
        with torch.inference_mode():
            return torch.cat([logits_of(seqs[i:i + bs]) for i in range(0, len(seqs), bs)])

    hist = _fit(model, [p for p in model.parameters() if p.requires_grad], batches,
                lambda: torch.nn.functional.cross_entropy(predict(enc["val"]), yva), tcfg, int(cfg["seed"]), log)
    logits = predict(enc["items"]).double()
    m_pos = (logits[:, 1] - logits[:, 0]).cpu().numpy()  # log-odds of pos
    after = frozen_param_digests(model)
    check_frozen(before, after)
    record = {"arm": "C", "method": "LoRA + sequence-classification head (peft SEQ_CLS)", "seed": cfg["seed"],
              "settings": _public(cfg), "trainable_parameters": trainable,
              "n_trainable": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
              "modules_to_save": sorted(model.peft_config["default"].modules_to_save or []), **hist,
              "frozen_before": before, "frozen_after": after, "seconds": round(time.perf_counter() - t0, 2),
              "threads": torch.get_num_threads(), "device": device}
    return _pred_frame(items["id"], m_pos), record


# ---------------------------------------------------------------------------------------------------------------------
# D: LoRA trained with the LM loss on the label tokens, predicted by label scoring
# ---------------------------------------------------------------------------------------------------------------------
def _label_lm_examples(tok, df: pd.DataFrame, cfg: Mapping, pair: Sequence[str]):
    from leverplus.tracks.sentiment.label_scoring import continuation, tokenize_pair

    out = []
    for c, y in zip(_prompts(tok, df["text"].tolist(), cfg), _y(df)):
        ids, s = tokenize_pair(tok, c, continuation(c, pair[0] if y == 1 else pair[1]))
        out.append((ids, s))
    return out


def arm_lora_label(model_dir, train: pd.DataFrame, val: pd.DataFrame, items: pd.DataFrame, *,
                   label_pair: Sequence[str] | None = None, config: Mapping | None = None, log=_nolog
                   ) -> tuple[pd.DataFrame, dict]:
    """D: LoRA (peft, task CAUSAL_LM) trained with the LM loss on the gold label's tokens only, then label scoring
    (all :data:`VARIANTS`) with the trained model for ``label_pair`` (default ``config.label_pair``)."""
    import torch
    from peft import get_peft_model

    from leverplus.tracks.sentiment.causal_lm import load_causal_lm

    cfg = arm_settings(config)
    tcfg = cfg["lora_label"]
    pair = list(label_pair or cfg["label_pair"])
    t0 = time.perf_counter()
    _seed(int(cfg["seed"]))
    device = resolve_device(cfg["device"])
    base, tok = load_causal_lm(model_dir, dtype=cfg["dtype"])
    base = _place(base, device)
    before = frozen_param_digests(base)
    model = get_peft_model(base, _lora_config(cfg, "CAUSAL_LM"))
    _check_peft_frozen(model)
    trainable = _trainable(model)
    pad = tok.pad_token_id
    ex_tr, ex_va = _label_lm_examples(tok, train, cfg, pair), _label_lm_examples(tok, val, cfg, pair)
    bs = int(tcfg["batch_size"])

    def loss_of(exs):
        inp, att = _pad_batch([e[0] for e in exs], pad)
        lab = torch.full_like(inp, -100)
        for r, (ids, s) in enumerate(exs):
            lab[r, s:len(ids)] = inp[r, s:len(ids)]
        dev = _device_of(model)
        return model(input_ids=inp.to(dev), attention_mask=att.to(dev), labels=lab.to(dev)).loss

    def batches(rng):
        order = rng.permutation(len(ex_tr))
        return [(lambda idx=order[i:i + bs]: loss_of([ex_tr[j] for j in idx])) for i in range(0, len(order), bs)]

    def val_loss():
        tot = n = 0.0
        for i in range(0, len(ex_va), bs):
            chunk = ex_va[i:i + bs]
            k = sum(len(ids) - s for ids, s in chunk)
            tot += float(loss_of(chunk)) * k
            n += k
        return tot / max(n, 1.0)

    hist = _fit(model, [p for p in model.parameters() if p.requires_grad], batches, val_loss, tcfg,
                int(cfg["seed"]), log)
    pred, prec = label_variants(model, tok, items, cfg, pair)
    after = frozen_param_digests(model)
    check_frozen(before, after)
    record = {"arm": "D", "method": "LoRA trained with the LM loss on the label tokens, label scoring",
              "seed": cfg["seed"], "settings": _public(cfg), "label_pair": "/".join(pair),
              "trainable_parameters": trainable,
              "n_trainable": int(sum(p.numel() for p in model.parameters() if p.requires_grad)), **hist,
              "frozen_before": before, "frozen_after": after, "pairs": [prec],
              "seconds": round(time.perf_counter() - t0, 2), "threads": torch.get_num_threads(), "device": device}
    return pred, record
