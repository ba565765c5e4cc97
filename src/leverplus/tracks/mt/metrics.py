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

from typing import Sequence

import numpy as np
import pandas as pd

from leverplus.metrics import stats as _stats
from leverplus.metrics.languages import (  # noqa: F401  (re-exported)
    LANGS, ScriptTokenizer, UnsupportedLanguage, bleu_tokenizer, presegment, presegmenter, presegmenter_version,
    script_tokens, supported_languages, ter_asian)
from leverplus.metrics.languages import lang_code as _lc
from leverplus.metrics.signature import ci_settings, make_signature

# the MT track's family registry: rules/mt_common.smk (MT_FAMILIES), the schema's enum (checked by
# tests/test_registries.py) and `leverplus score mt` (IN_PROCESS_FAMILIES) read it
FAMILIES = ("lexical", "meteor", "rouge", "bertscore", "llm_judge", "neural")
IN_PROCESS_FAMILIES = ("lexical", "meteor", "rouge", "bertscore")  # no chat server, no second environment
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
# the table itself is leverplus.metrics.languages (shared with caption scoring and the audio track); its names are
# re-exported here as the MT track's public names


# the lexical metric the field treats as primary for a target (FLORES-200 / NLLB and IndicTrans2 report chrF++ for
# Indic and Thai targets, where BLEU depends on a tokenizer that differs between papers); BLEU elsewhere
PRIMARY_LEXICAL = {"hi": "chrf++", "th": "chrf++"}


def primary_lexical(pair: str) -> str:
    return PRIMARY_LEXICAL.get(target_lang(pair), "bleu")


def _lang_code(x: str, pair: str) -> str:
    return _lc(x, where=f"pair {pair!r}")


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


# ----------------------------------------------------------------------------------------------------------------
# rows aligned by segment id
# ----------------------------------------------------------------------------------------------------------------
def aligned(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every system's rows in the same segment order (the order ids first appear), systems in the
    order they first appear.  Every family scores this table, so a system whose rows come in another order is
    scored against its own segments' references (tests/tracks/mt/test_mt_metrics.py shuffles rows for every family)."""
    ids = {i: k for k, i in enumerate(dict.fromkeys(df["id"]))}
    systems = {s: k for k, s in enumerate(dict.fromkeys(df["system"]))}
    key = df["system"].map(systems).to_numpy() * len(ids) + df["id"].map(ids).to_numpy()
    return df.iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------------------------
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
    """BLEU, chrF, chrF++, TER per system (corpus score + CI + signature: :func:`leverplus.metrics.text.
    sacrebleu_corpus`, the one implementation caption scoring uses) and per segment (sacrebleu's sentence scores
    from the same per-segment sufficient statistics, which system-level meta-evaluation resamples)."""
    from sacrebleu.metrics import BLEU

    from leverplus.metrics import text

    lang = target_lang(pair)
    sentence_bleu = BLEU(tokenize=bleu_tokenizer(lang, bleu_tokenize), effective_order=True)
    rows, corpus = [], {m: {} for m in SACREBLEU_METRICS}
    for system, ids, hyps, refs, _ in _by_system(df):
        for name in SACREBLEU_METRICS:
            res, st, metric = text.sacrebleu_corpus(name, hyps, refs, lang=lang, tokenize=bleu_tokenize,
                                                    n_resamples=n_resamples, seed=seed)
            corpus[name][system] = res
            seg_metric = sentence_bleu if name == "bleu" else metric
            for i in range(len(hyps)):
                # = sacrebleu's sentence_score(hyp, refs): the one segment's statistics, scored
                seg = seg_metric._compute_score_from_stats(list(st[i])).score
                rows.append({"id": ids[i], "system": system, "metric": name, "score": float(seg),
                             "stats": [float(x) for x in st[i]]})
    return pd.DataFrame(rows), corpus


def corpus_from_stats(metric: str, pair: str, summed: np.ndarray, bleu_tokenize=None) -> float:
    """A sacrebleu corpus score from summed per-segment sufficient statistics (used per bootstrap resample)."""
    return float(_stats_scorer(metric, pair)._compute_score_from_stats(list(summed)).score)


_SCORERS: dict = {}


def _stats_scorer(metric: str, pair: str):
    """A sacrebleu object whose ``_compute_score_from_stats`` turns summed statistics into the corpus score (the
    tokenizer plays no part there, so BLEU gets 'none': no MeCab needed to rescore saved statistics)."""
    from leverplus.metrics import text

    key = (metric, target_lang(pair) if metric == "ter" else None)
    if key not in _SCORERS:
        _SCORERS[key] = text.sacrebleu_metric(metric, lang=key[1], tokenize="none")
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
    """ROUGE-1/2/L per system and segment through :func:`leverplus.metrics.text.rouge_items` (the caption path's
    implementation, the language table's tokens)."""
    from leverplus.metrics import text

    lang = target_lang(pair)
    rows, corpus = [], {k: {} for k in FAMILY_METRICS["rouge"]}
    for system, ids, hyps, refs, _ in _by_system(df):
        per, base = text.rouge_items(hyps, refs, lang=lang)
        settings = {**base, **ci_settings(n_resamples, seed)}
        rows += [{"id": i, "system": system, "metric": k, "score": float(per[k][j])}
                 for j, i in enumerate(ids) for k in per]
        for k, v in per.items():
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

    ``tests/tracks/mt/test_mt_metrics.py`` checks the p-values, means and CIs against sacrebleu's CLI output.
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
