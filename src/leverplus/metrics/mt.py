"""MT metrics per language pair: corpus-level (per system, with signature and CI) and segment-level scores.

Families (one workflow job each per language pair):

* ``lexical``: BLEU, chrF, chrF++, TER through :mod:`leverplus.metrics.text` (sacrebleu).  BLEU's tokenizer by
  target language: ``zh`` -> ``zh``, ``hi`` -> ``intl`` (13a leaves the danda attached), otherwise ``13a``;
  ``bleu_tokenize`` overrides it.  Segment level: sentence BLEU / chrF / TER (sacrebleu's sentence scores) and the
  per-segment sufficient statistics, so system-level meta-evaluation can recompute *corpus* scores per resample.
  TER is lower-is-better: kept as is in the tables, negated for every correlation.
* ``meteor``: METEOR 1.5 jar (:mod:`leverplus.metrics.meteor`); "not applicable" outside its languages.
* ``rouge``: ROUGE-1/2/L F (x100) with :func:`script_tokens`, which keeps every script (rouge-score's default
  tokenizer keeps only ``[a-z0-9]`` and erases Devanagari).
* ``bertscore``: BERTScore F1 (x100) with a configured (multilingual) model.
* ``llm_judge``: GEMBA-DA-style 0-100 score from a chat model behind an OpenAI-compatible endpoint
  (:mod:`leverplus.metrics.mt_judge`).
* ``neural``: COMET-family models run in their own environment (:mod:`leverplus.metrics.mt_neural`).

Segment tables are long: ``id | system | metric | score`` (+ ``stats`` for the sacrebleu metrics).
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np
import pandas as pd

from leverplus.metrics import stats as _stats
from leverplus.metrics.signature import ci_settings, make_signature, package_version

FAMILIES = ("lexical", "meteor", "rouge", "bertscore", "llm_judge", "neural")
FAMILY_METRICS = {
    "lexical": ("bleu", "chrf", "chrf++", "ter"),
    "meteor": ("meteor",),
    "rouge": ("rouge1", "rouge2", "rougeL"),
    "bertscore": ("bertscore_f1",),
    "llm_judge": ("llm_judge",),
}
LOWER_IS_BETTER = frozenset({"ter"})
SACREBLEU_METRICS = ("bleu", "chrf", "chrf++", "ter")


def target_lang(pair: str) -> str:
    return pair.split("-")[1].lower()


def source_lang(pair: str) -> str:
    return pair.split("-")[0].lower()


def bleu_tokenizer(lang: str, override: str | dict | None = None) -> str:
    """sacrebleu tokenizer for a target language: zh -> zh, hi -> intl, otherwise 13a; ``override`` (a name, or a
    ``{lang: name}`` map) wins."""
    if isinstance(override, str):
        return override
    if isinstance(override, dict) and lang in override:
        return override[lang]
    return {"zh": "zh", "hi": "intl"}.get(lang, "13a")


# ----------------------------------------------------------------------------------------------------------------
# tokenisation that keeps every script (ROUGE)
# ----------------------------------------------------------------------------------------------------------------
def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF


def script_tokens(text: str) -> list[str]:
    """Lowercased tokens of any script: whitespace-separated words with punctuation and symbols (Unicode categories
    P*, S*, incl. the danda) removed, combining marks (Devanagari matras, Thai vowels) kept inside their word, and
    each CJK character a token of its own.  Thai and other unsegmented scripts stay one token per space-delimited
    chunk (no Thai target in this track)."""
    out: list[str] = []
    for chunk in text.lower().split():
        word = []
        for ch in chunk:
            cat = unicodedata.category(ch)
            if cat[0] in "PSZC":
                if word:
                    out.append("".join(word))
                    word = []
            elif _is_cjk(ch):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
    return out


class ScriptTokenizer:
    """The ``tokenize(text)`` interface rouge_score expects."""

    def tokenize(self, text: str) -> list[str]:
        return script_tokens(text)


# ----------------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------------
def _streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def _by_system(df: pd.DataFrame):
    for system, g in df.groupby("system", sort=False):
        yield system, list(g["id"]), list(g["hyp"]), [list(r) for r in g["refs"]], list(g["src"])


def score_lexical(df: pd.DataFrame, pair: str, *, bleu_tokenize=None, n_resamples: int = 1000, seed: int = 0):
    """BLEU, chrF, chrF++, TER per system (corpus score + CI + signature, exactly what
    ``leverplus.metrics.text.corpus_*`` return) and per segment (sacrebleu's sentence scores and the sufficient
    statistics).  Each metric's per-segment statistics are extracted **once** per system and reused for the corpus
    score (their sum, as sacrebleu's ``corpus_score`` computes it), its bootstrap CI (the same resamples as
    ``text._sacrebleu_ci``) and the sentence scores; ``tests/test_mt_metrics.py`` checks the result equals
    ``text.corpus_*`` and sacrebleu's CLI."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    from leverplus.metrics import text

    lang = target_lang(pair)
    tok = bleu_tokenizer(lang, bleu_tokenize)
    asian = lang in ("zh", "ja")
    ci = ci_settings(n_resamples, seed)
    rows, corpus = [], {m: {} for m in SACREBLEU_METRICS}
    for system, ids, hyps, refs, _ in _by_system(df):
        text._check_inputs(hyps, refs)
        streams = _streams(refs)
        # corpus objects (text.corpus_* settings) and, for BLEU, the sentence-level scorer (effective order)
        objs = {"bleu": BLEU(smooth_method="exp", tokenize=tok, lowercase=False), "chrf": CHRF(),
                "chrf++": CHRF(word_order=2), "ter": TER(asian_support=asian)}
        sentence = {"bleu": BLEU(tokenize=tok, effective_order=True)}
        for name, metric in objs.items():
            metric._check_corpus_score_args(hyps, streams)
            raw = metric._extract_corpus_statistics(hyps, streams)
            res = metric._compute_score_from_stats([sum(col) for col in zip(*raw)])  # = metric.corpus_score(...)
            st = np.asarray(raw, dtype=float)

            def corpus_from_rows(sample, metric=metric) -> float:
                return metric._compute_score_from_stats(np.asarray(sample).sum(axis=0)).score

            lohi = _stats.bootstrap_ci(st, statistic=corpus_from_rows, n_resamples=n_resamples, seed=seed)
            sig = str(metric.get_signature())
            if name == "bleu":
                settings = {"sacrebleu": sig, "tok": tok, "smooth": "exp", "case": "mixed", **ci}
                extra = {"bp": res.bp, "precisions": list(res.precisions), "sys_len": res.sys_len,
                         "ref_len": res.ref_len}
            elif name == "ter":
                settings, extra = {"sacrebleu": sig, "asian": asian, **ci}, {}
            else:
                settings, extra = {"sacrebleu": sig, "nc": metric.char_order, "nw": metric.word_order,
                                   "beta": metric.beta, **ci}, {}
            corpus[name][system] = text._result(name, res.score, len(hyps), lohi, settings, **extra)
            seg_metric = sentence.get(name, metric)
            for i in range(len(hyps)):
                # = sacrebleu's sentence_score(hyp, refs): the one segment's statistics, scored
                seg = seg_metric._compute_score_from_stats(list(st[i])).score
                rows.append({"id": ids[i], "system": system, "metric": name, "score": float(seg),
                             "stats": [float(x) for x in st[i]]})
    return pd.DataFrame(rows), corpus


def corpus_from_stats(metric: str, pair: str, summed: np.ndarray, bleu_tokenize=None) -> float:
    """A sacrebleu corpus score from summed per-segment sufficient statistics (used per bootstrap resample)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    lang = target_lang(pair)
    obj = {"bleu": lambda: BLEU(tokenize=bleu_tokenizer(lang, bleu_tokenize)), "chrf": CHRF,
           "chrf++": lambda: CHRF(word_order=2), "ter": lambda: TER(asian_support=lang in ("zh", "ja"))}[metric]()
    return float(obj._compute_score_from_stats(list(summed)).score)


def score_meteor(df: pd.DataFrame, pair: str, *, n_resamples: int = 1000, seed: int = 0):
    from leverplus.metrics import meteor as M

    lang = target_lang(pair)
    if not M.supported(lang):
        return pd.DataFrame(columns=["id", "system", "metric", "score"]), {"meteor": M.not_applicable(lang)}
    systems = {s: h for s, _, h, _, _ in _by_system(df)}
    refs = next(_by_system(df))[3]
    ids = next(_by_system(df))[1]
    res = M.meteor_systems(systems, refs, lang=lang)
    rows, corpus = [], {"meteor": {}}
    for system, r in res.items():
        per = np.asarray(r["per_segment"])
        ci = _stats.bootstrap_ci(per, n_resamples=n_resamples, seed=seed)
        corpus["meteor"][system] = {"metric": "meteor", "score": r["score"], "n": r["n"],
                                    "ci95_mean_segment": list(ci), "signature": r["signature"]}
        rows += [{"id": i, "system": system, "metric": "meteor", "score": float(x)} for i, x in zip(ids, per)]
    return pd.DataFrame(rows), corpus


def score_rouge(df: pd.DataFrame, pair: str, *, n_resamples: int = 1000, seed: int = 0):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False, tokenizer=ScriptTokenizer())
    settings = {"tok": "script", "stemmer": False, "multi_ref": "max-f", "agg": "mean-f", "scale": 100,
                "version": package_version("rouge-score"), **ci_settings(n_resamples, seed)}
    rows, corpus = [], {k: {} for k in FAMILY_METRICS["rouge"]}
    for system, ids, hyps, refs, _ in _by_system(df):
        per = {k: [] for k in corpus}
        for i, h, r in zip(ids, hyps, refs):
            s = scorer.score_multi(r, h)
            for k in per:
                per[k].append(100 * s[k].fmeasure)
                rows.append({"id": i, "system": system, "metric": k, "score": 100 * s[k].fmeasure})
        for k, v in per.items():
            v = np.asarray(v)
            corpus[k][system] = {"metric": k, "score": float(v.mean()), "n": len(v),
                                 "ci95": list(_stats.bootstrap_ci(v, n_resamples=n_resamples, seed=seed)),
                                 "signature": make_signature(k, settings)}
    return pd.DataFrame(rows), corpus


def resolve_model_path(spec: str) -> str:
    """``package:<python package>`` -> the model directory that package ships (``get_model_path()``), else a path."""
    if spec.startswith("package:"):
        import importlib

        return str(importlib.import_module(spec.split(":", 1)[1]).get_model_path())
    return spec


def score_bertscore(df: pd.DataFrame, pair: str, *, model: str, num_layers: int, baseline_path: str | None = None,
                    batch_size: int = 64, n_resamples: int = 1000, seed: int = 0):
    from leverplus.metrics import text

    path = resolve_model_path(model)
    # one bert_score call for every system (one model load); per-system means and CIs from the per-item F1
    r = text.bertscore(list(df["hyp"]), [list(x) for x in df["refs"]], lang=target_lang(pair), model_type=path,
                       num_layers=num_layers, rescale_with_baseline=baseline_path is not None,
                       baseline_path=baseline_path, batch_size=batch_size, n_resamples=10, seed=seed)
    per = np.asarray(r.pop("per_item_f1"))
    settings = {**r["settings"], **ci_settings(n_resamples, seed)}  # the CIs below are per system
    settings["model"] = model if model.startswith("package:") else settings["model"]
    settings.pop("bert_score_hash", None)  # holds the local path
    sig = make_signature("bertscore_f1", settings)
    rows, corpus = [], {"bertscore_f1": {}}
    for system in dict.fromkeys(df["system"]):
        mask = (df["system"] == system).to_numpy()
        v = per[mask]
        corpus["bertscore_f1"][system] = {"metric": "bertscore_f1", "score": float(v.mean()), "n": int(v.size),
                                          "ci95": list(_stats.bootstrap_ci(v, n_resamples=n_resamples, seed=seed)),
                                          "signature": sig, "settings": settings}
    rows = [{"id": i, "system": s, "metric": "bertscore_f1", "score": float(x)}
            for i, s, x in zip(df["id"], df["system"], per)]
    return pd.DataFrame(rows), corpus


def system_table(corpus: dict) -> dict:
    """{metric: {system: score}} of the corpus results (None where not applicable)."""
    out = {}
    for metric, per in corpus.items():
        if isinstance(per, dict) and per.get("status") == "not applicable":
            out[metric] = None
            continue
        out[metric] = {s: r["score"] for s, r in per.items()}
    return out
