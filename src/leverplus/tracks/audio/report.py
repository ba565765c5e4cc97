"""The audio track's comparison: every arm (edge, cloud, api, unaligned, cascade points) x every metric, with n,
95% CIs and paired bootstrap differences (leverplus.report.comparison), the length distributions, latency, and the
cascade sweep; written as comparison.json / .md / .png.

Two tables, each with its own paired bootstrap: QUALITY on every clip (an arm's predictions.parquet) and LATENCY on
the timed clips (timing.parquet: the same seeded subset of `audio.latency` in every arm, one request at a time).

Quality metrics (leverplus.metrics.text unless named otherwise):
* ``bleu``      corpus BLEU, sacrebleu tokenize ``zh``;
* ``chrf``      chrF (char order 6, word order 0, beta 2);
* ``cider_d``   CIDEr-D on character-segmented text; labelled single-reference when every clip has one reference;
  per-item values with document frequencies fixed on the arm's full set (so the bootstrap resamples items);
* ``bertscore_f1`` BERTScore F1 rescaled with a baseline, idf from the references;
* ``sentence_similarity`` SECap's cosine of sentence embeddings (leverplus.metrics.sentence_similarity);
* ``share_le_{k}_chars`` the share of outputs of at most k characters (lower is better);
* BIASED DIAGNOSTICS, the source document's own evaluation code (text.document_bleu / document_cider, which
  reproduce the document's four numbers from its result files): ``doc_bleu`` NLTK sentence BLEU-4 on characters
  averaged over clips and ``doc_cider`` the bag-of-characters cosine the document called CIDEr, both against the
  first reference only.
Latency metrics: mean TTFT and mean total time per request (lower is better); the rates are in the extra table.
The point values come from the same functions ``leverplus score caption`` / ``score latency`` call on the saved
files, so rescoring reproduces both tables (tests/tracks/audio/test_audio_workflow.py checks every column).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.core.io import read_json, write_json

# the audio track's arm registry: rules/audio_common.smk (AUDIO_ARMS), this report and audio_plots read it
BASE_ARMS = ("edge", "cloud", "api", "unaligned")
FAIR = ("bleu", "chrf", "cider_d", "bertscore_f1", "sentence_similarity")
BIASED = ("doc_bleu", "doc_cider")
QUALITY = FAIR + BIASED
VERDICT_PAIRS = (("cloud", "edge"), ("unaligned", "edge"))


def bertscore_baseline(spec: dict, model_dir: str) -> str:
    b = spec.get("baseline", "build")
    if b == "build":
        from leverplus.tracks.audio.metric_models import BASELINE_NAME

        return str(Path(model_dir) / BASELINE_NAME)
    if b == "bert_score":
        import bert_score

        return os.path.join(os.path.dirname(bert_score.__file__), "rescale_baseline", "zh", "bert-base-chinese.tsv")
    return b


def bertscore_kwargs(spec: dict, model_dir: str, idf: bool) -> dict:
    """What text.bertscore (and `leverplus score caption --bertscore-*`) needs for this metric model."""
    return {"model_type": str(model_dir), "num_layers": int(spec["num_layers"]), "idf": bool(idf),
            "baseline_path": bertscore_baseline(spec, model_dir)}


def _aligned(preds: pd.DataFrame, refs: pd.DataFrame):
    from leverplus.metrics import text

    hyps, rl, ids = text.caption_inputs(preds.assign(id=preds["id"].astype(str)), refs)
    return hyps, rl, ids


def item_scores(preds, refs, *, bertscore_dir, similarity_dir, metric_specs, scoring):
    from leverplus.metrics import text
    from leverplus.metrics.sentence_similarity import sentence_similarity

    hyps, rl, ids = _aligned(preds, refs)
    bs_spec, sim_spec = metric_specs["bertscore"], metric_specs["similarity"]
    bs = text.bertscore(hyps, rl, **bertscore_kwargs(bs_spec, bertscore_dir, scoring["bertscore_idf"]),
                        n_resamples=scoring["n_resamples"], seed=scoring["seed"])
    sim = sentence_similarity(hyps, rl, model_dir=str(similarity_dir), pooling=sim_spec.get("pooling", "mean"),
                              model_label=sim_spec.get("label"), n_resamples=scoring["n_resamples"], seed=scoring["seed"])
    df = pd.DataFrame({"id": ids, "prediction": hyps, "bertscore_f1": bs["per_item_f1"],
                       "sentence_similarity": sim["per_item"]})
    info = {"bertscore": {k: bs[k] for k in ("score", "ci95", "n", "signature", "settings", "n_negative_f1",
                                             "precision", "recall")},
            "sentence_similarity": {k: sim[k] for k in ("score", "ci95", "n", "signature", "settings")}}
    return df, info


# ----------------------------------------------------------------------------------------------------------------
class ArmData:
    """One arm: its predictions aligned to the reference order with the per-item statistics the bootstrap
    resamples, and its timed requests aligned to the timed clips' order."""

    def __init__(self, name, preds: pd.DataFrame, timing: pd.DataFrame, items: pd.DataFrame, refs: pd.DataFrame,
                 timed_ids: list[str], short_chars: int, lang: str = "zh"):
        from leverplus.metrics import text

        self.name = name
        self.lang = lang
        self.preds = preds.set_index(preds["id"].astype(str)).loc[refs["id"]].reset_index(drop=True)
        self.hyps, self.refs, _ = _aligned(self.preds, refs)
        it = items.set_index(items["id"].astype(str)).loc[refs["id"]]
        if list(it["prediction"]) != self.hyps:
            raise ValueError(f"arm {name}: item scores were computed for other predictions")
        t = timing.assign(id=timing["id"].astype(str))
        if sorted(t["id"]) != sorted(timed_ids):
            raise ValueError(f"arm {name}: timed on other clips than the edge arm")
        self.timing = t.set_index("id").loc[timed_ids].reset_index()
        # the caption path's implementations (leverplus.metrics.text) with the language table's tokenisation
        _, self.bleu_rows, self.bleu_obj = text.sacrebleu_corpus("bleu", self.hyps, self.refs, lang=lang,
                                                                 n_resamples=10)
        _, self.chrf_rows, self.chrf_obj = text.sacrebleu_corpus("chrf", self.hyps, self.refs, lang=lang,
                                                                 n_resamples=10)
        self.cider = text.cider_d(self.hyps, self.refs, lang=lang, n_resamples=10)
        self.cider_items = text.cider_items(self.hyps, self.refs, lang=lang)[1]
        self.bertscore = it["bertscore_f1"].to_numpy(dtype=float)
        self.similarity = it["sentence_similarity"].to_numpy(dtype=float)
        self.doc_bleu = np.asarray(text.document_sentence_bleu(self.hyps, self.refs), dtype=float)
        self.doc_cider = np.asarray(text.document_sentence_cider(self.hyps, self.refs), dtype=float)
        self.lengths = np.asarray([len(h.strip()) for h in self.hyps], dtype=float)
        self.ttft = self.timing["ttft_s"].to_numpy(dtype=float)
        self.total = self.timing["total_s"].to_numpy(dtype=float)
        self.short_chars = short_chars


def quality_specs(arms: dict, single_ref: bool, short_chars: int, bs_label: str, sim_label: str):
    from leverplus.metrics.text import DOCUMENT_NOTE
    from leverplus.report.comparison import MetricSpec

    names = list(arms)
    any_arm = arms[names[0]]

    def per_item(attr):
        return {a: getattr(arms[a], attr) for a in names}

    short = f"share_le_{short_chars}_chars"
    return [
        MetricSpec.from_stats("bleu", {a: arms[a].bleu_rows for a in names},
                              lambda row: any_arm.bleu_obj._compute_score_from_stats(row).score,
                              label="BLEU (corpus, zh tok)"),
        MetricSpec.from_stats("chrf", {a: arms[a].chrf_rows for a in names},
                              lambda row: any_arm.chrf_obj._compute_score_from_stats(row).score, label="chrF"),
        MetricSpec.from_per_item("cider_d", per_item("cider_items"), digits=3,
                                 label="CIDEr-D (single-reference)" if single_ref else "CIDEr-D",
                                 note="per-item CIDEr-D with document frequencies fixed on the arm's full set"),
        MetricSpec.from_per_item("bertscore_f1", per_item("bertscore"), label=f"BERTScore F1 ({bs_label})"),
        MetricSpec.from_per_item("sentence_similarity", per_item("similarity"),
                                 label=f"sentence sim. ({sim_label})"),
        MetricSpec.from_per_item(short, {a: (arms[a].lengths <= short_chars).astype(float) for a in names},
                                 higher_is_better=False, digits=3, label=f"share <= {short_chars} chars"),
        MetricSpec.from_per_item("doc_bleu", per_item("doc_bleu"),
                                 label="BIASED: doc. sent-avg BLEU (char tok, 1st ref)",
                                 note=DOCUMENT_NOTE + "; NLTK sentence_bleu, BLEU-4, SmoothingFunction().method1, "
                                      "lowercased characters, x100"),
        MetricSpec.from_per_item("doc_cider", per_item("doc_cider"),
                                 label="BIASED: doc. 'CIDEr' (char-count cosine, 1st ref)",
                                 note=DOCUMENT_NOTE + "; cosine of character-count vectors (no n-grams, no IDF), "
                                      "x100"),
    ]


def latency_specs(arms: dict):
    from leverplus.report.comparison import MetricSpec

    names = list(arms)
    return [
        MetricSpec.from_per_item("mean_ttft_s", {a: arms[a].ttft for a in names}, higher_is_better=False, digits=4,
                                 label="mean TTFT (s)"),
        MetricSpec.from_per_item("mean_total_s", {a: arms[a].total for a in names}, higher_is_better=False,
                                 digits=4, label="mean total (s)"),
    ]


def point_values(arm: ArmData, short_chars: int) -> dict:
    """The table's point values, from the functions `leverplus score caption` runs (so rescoring reproduces them)."""
    from leverplus.metrics import text

    kw = {"n_resamples": 200, "seed": 0}
    bleu = text.corpus_bleu(arm.hyps, arm.refs, lang=arm.lang, **kw)
    chrf = text.corpus_chrf(arm.hyps, arm.refs, lang=arm.lang, **kw)
    length = text.length_stats(arm.hyps, short_chars=short_chars, **kw)
    return {
        "bleu": {"score": bleu["score"], "signature": bleu["settings"]["sacrebleu"]},
        "chrf": {"score": chrf["score"], "signature": chrf["settings"]["sacrebleu"]},
        "cider_d": {"score": arm.cider["score"], "signature": arm.cider["signature"]},
        "bertscore_f1": {"score": float(arm.bertscore.mean()), "n_negative": int(np.sum(arm.bertscore < 0))},
        "sentence_similarity": {"score": float(arm.similarity.mean())},
        "doc_bleu": {"score": float(arm.doc_bleu.mean()), "biased_diagnostic": True,
                     "exact_match_first_ref": float(np.mean([h == r[0] for h, r in zip(arm.hyps, arm.refs)]))},
        "doc_cider": {"score": float(arm.doc_cider.mean()), "biased_diagnostic": True},
        "length": length,
    }


def _verdicts(result: dict, scores: dict, pairs=VERDICT_PAIRS) -> dict:
    """For cloud − edge and unaligned − edge: each fair and each biased metric's ranking and paired verdict, and
    where they disagree.

    ``reversal``: a fair metric says "better" where a biased one does not (the document's reversal: the better arm
    judged "no better"). ``biased_only``: a biased metric says "better" where a fair one does not. A biased metric
    that scores 0 on both arms cannot rank anything (e.g. the whitespace-token reading of the document's BLEU this
    track used before, 0 on free-form references for every arm): it is listed in ``degenerate`` and takes no part
    in either list, so a fair "better" is never flagged as a reversal by construction. ``table``: per metric the
    two arms' scores, the paired difference a − b with its 95% CI, the paired-bootstrap p-value, n and the
    verdict — the fair-vs-biased comparison the report prints."""
    out = {}
    for a, b in pairs:
        pair = next(p["metrics"] for p in result["pairs"] if (p["a"], p["b"]) == (a, b))
        table = [{"metric": m, "kind": "fair" if m in FAIR else "BIASED", "a": scores[a][m], "b": scores[b][m],
                  **{k: pair[m].get(k) for k in ("diff", "ci95", "p_value", "n", "verdict")}} for m in QUALITY]
        fair = {m: pair[m]["verdict"] for m in FAIR}
        biased = {m: pair[m]["verdict"] for m in BIASED}
        rank = {m: f"{a} > {b}" if scores[a][m] > scores[b][m] else f"{a} <= {b}" for m in QUALITY}
        degenerate = [x for x in BIASED if scores[a][x] == 0 and scores[b][x] == 0]
        live = [x for x in BIASED if x not in degenerate]
        reversal = [f"{f} vs {x}" for f in FAIR for x in live if fair[f] == "better" and biased[x] != "better"]
        biased_only = [f"{x} vs {f}" for x in live for f in FAIR if biased[x] == "better" and fair[f] != "better"]
        out[f"{a}_vs_{b}"] = {"fair": fair, "biased": biased, "ranking": rank, "reversal": reversal,
                              "biased_only": biased_only, "degenerate": degenerate, "table": table}
    return out


def build_comparison(*, input, output, params, dataset: str) -> dict:
    from leverplus.metrics.latency import summarize_latency
    from leverplus.report.comparison import comparison_markdown, compare_arms

    refs = pd.read_json(input.manifest, lines=True, dtype={"id": str})[["id", "references"]]
    refs["id"] = refs["id"].astype(str)
    sc = params["scoring"]
    short = sc["short_chars"]
    runs = {a: read_json(getattr(input, f"{a}_run")) for a in BASE_ARMS}
    preds = {a: pd.read_parquet(getattr(input, f"{a}_predictions")) for a in BASE_ARMS}
    timing = {a: pd.read_parquet(getattr(input, f"{a}_timing")) for a in BASE_ARMS}
    items = {a: pd.read_parquet(getattr(input, f"{a}_items")) for a in BASE_ARMS}
    infos = {a: read_json(getattr(input, f"{a}_info")) for a in BASE_ARMS}
    pts = read_json(Path(input.cascade) / "points.json")
    for p in pts["points"]:
        df = pd.read_parquet(Path(input.cascade) / p["predictions"])
        preds[p["label"]] = df
        timing[p["label"]] = pd.read_parquet(Path(input.cascade) / p["timing"])
        e = items["edge"].set_index("id").loc[df["id"]]
        c = items["cloud"].set_index("id").loc[df["id"]]
        esc = df["escalated"].to_numpy()
        items[p["label"]] = pd.DataFrame({
            "id": df["id"], "prediction": df["prediction"],
            "bertscore_f1": np.where(esc, c["bertscore_f1"], e["bertscore_f1"]),
            "sentence_similarity": np.where(esc, c["sentence_similarity"], e["sentence_similarity"])})
    arm_names = list(preds)
    timed_ids = [str(i) for i in timing["edge"]["id"]]
    arms = {a: ArmData(a, preds[a], timing[a], items[a], refs, timed_ids, short) for a in arm_names}
    single_ref = all(len(r) == 1 for r in refs["references"])
    mm = params["metric_models"]
    qspecs = quality_specs(arms, single_ref, short, mm["bertscore"]["label"], mm["similarity"]["label"])
    cascade_labels = [p["label"] for p in pts["points"]]
    pairs = [("cloud", "edge"), ("api", "edge"), *[(c, "edge") for c in cascade_labels], ("unaligned", "cloud"),
             ("unaligned", "edge")]
    result = compare_arms(arm_names, qspecs, len(refs), pairs=pairs, n_resamples=sc["n_resamples"], seed=sc["seed"])
    lat_result = compare_arms(arm_names, latency_specs(arms), len(timed_ids), pairs=pairs,
                              n_resamples=sc["n_resamples"], seed=sc["seed"])

    values = {a: point_values(arms[a], short) for a in arm_names}
    latency = {a: summarize_latency(arms[a].timing, n_resamples=sc["n_resamples"], seed=sc["seed"])
               for a in arm_names}
    for a in arm_names:
        latency[a]["feature_s_mean"] = float(arms[a].timing["feature_s"].mean())
    scores = {a: {m: result["scores"][a][m]["score"] for m in QUALITY} for a in arm_names}
    verdict = _verdicts(result, scores)
    sweep = []
    qm = params["cascade"]["quality_metric"]
    for name, esc in [("edge", 0.0), *[(p["label"], p["escalation_rate"]) for p in pts["points"]], ("cloud", 1.0)]:
        sweep.append({"arm": name, "escalation_rate": esc, "quality": result["scores"][name][qm]["score"],
                      "quality_ci95": result["scores"][name][qm]["ci95"],
                      "mean_total_s": lat_result["scores"][name]["mean_total_s"]["score"],
                      "mean_total_s_ci95": lat_result["scores"][name]["mean_total_s"]["ci95"],
                      "threshold": next((p["threshold"] for p in pts["points"] if p["label"] == name), None)})
    out = {
        "dataset": dataset, "n_items": len(refs), "n_timed": len(timed_ids), "timed_ids": timed_ids,
        "single_reference": single_ref, "short_chars": short,
        "arms": arm_names, "comparison": result, "latency_comparison": lat_result, "point_values": values,
        "latency": latency, "runs": runs, "generation": params["generation"],
        "unaligned_generation": params["unaligned"], "latency_subset": params["latency"],
        "generation_signature": runs["edge"]["generation_signature"],
        "metric_models": mm, "metric_signatures": {a: infos[a] for a in BASE_ARMS},
        "cascade": {"quality_metric": qm, "points": pts["points"], "sweep": sweep, "scorer": pts["scorer"],
                    "scoring_pass": pts.get("scoring_pass"), "mean_score_s": pts["mean_score_s"],
                    "max_abs_logprob_gap_timed_vs_batched": pts.get("max_abs_logprob_gap_timed_vs_batched")},
        "verdict": verdict,
        "rescore": {
            "quality": "leverplus score caption --lang zh --metrics bleu,chrf,cider,length,bertscore,similarity,"
                       "doc_bleu,doc_cider --predictions <arm>/predictions.parquet (cascade: cascade/points/<label>"
                       ".parquet) --references data/audio/<dataset>/eval.jsonl --bertscore-model <dir> "
                       "--bertscore-layers <L> --bertscore-baseline <csv> [--bertscore-idf] --similarity-model <dir> "
                       "--similarity-pooling <mean|cls> --short-chars <k> --n-resamples <N> --seed <s>",
            "latency": "leverplus score latency --predictions <arm>/timing.parquet (cascade: cascade/points/"
                       "<label>.timing.parquet) --n-resamples <N> --seed <s>"},
    }
    write_json(output.json, out)
    sig = f"generation: {runs['edge']['generation_signature']}"
    md = comparison_markdown(result, title=f"Audio emotion captions: {dataset} — quality (n = {len(refs)} clips)",
                             signature=sig)
    md += "\n" + comparison_markdown(
        lat_result, title=f"Latency (n = {len(timed_ids)} timed clips, one request at a time, the same clips in "
                          f"every arm)")
    md += "\n" + _extra_markdown(out, arm_names, short)
    from leverplus.core.io import atomic_write

    with atomic_write(output.md) as fh:
        fh.write(md)
    from leverplus.tracks.audio.plots import comparison_png

    comparison_png(out, arms, output.png)
    return out


def _extra_markdown(out: dict, arm_names, short: int) -> str:
    lines = ["## Output length (characters, every clip) and latency (timed clips)", "",
             f"| arm | n | mean len | median | p10 | p90 | share <= {short} | neg. BERTScore | exact match (1st ref) | "
             "n timed | TTFT mean (s) | total mean (s) | decode rate (N-1)/(T-TTFT) tok/s | e2e N/T tok/s | "
             "feature s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in arm_names:
        L, v, m = out["point_values"][a]["length"], out["point_values"][a], out["latency"][a]["metrics"]
        lines.append(
            f"| {a} | {L['n']} | {L['mean']:.1f} | {L['median']:.1f} | {L['p10']:.1f} | {L['p90']:.1f} | "
            f"{L[f'share_le_{short}']:.3f} | {v['bertscore_f1']['n_negative']} | "
            f"{v['doc_bleu']['exact_match_first_ref']:.3f} | {out['latency'][a]['n_requests']} | "
            f"{m['ttft_s']['mean']:.4f} | {m['total_s']['mean']:.4f} | "
            f"{(m['decode_rate_tok_s']['mean'] or float('nan')):.1f} | "
            f"{(m['e2e_rate_tok_s']['mean'] or float('nan')):.1f} | {out['latency'][a]['feature_s_mean']:.4f} |")
    lines += ["", "## Cascade sweep (edge drafts, cloud scores, escalates below threshold)", "",
              f"| point | threshold (mean log-prob) | escalation rate | {out['cascade']['quality_metric']} | "
              "mean total (s, timed clips) |", "|---|---|---|---|---|"]
    for p in out["cascade"]["sweep"]:
        t = "" if p["threshold"] is None else f"{p['threshold']:.3f}"
        lines.append(f"| {p['arm']} | {t} | {p['escalation_rate']:.2f} | {p['quality']:.2f} | "
                     f"{p['mean_total_s']:.4f} |")
    lines += ["", "## Does the verdict depend on the metric? Fair metrics vs the document's biased evaluation", "",
              "Paired bootstrap over the same resampled clips (n clips); p = two-sided paired-bootstrap p-value of "
              "the difference; BIASED = the document's own code (sentence BLEU on characters, bag-of-characters "
              "cosine, first reference).", ""]
    for key, v in out["verdict"].items():
        a, b = key.split("_vs_")
        lines += [f"### {a} − {b}", "", f"| metric | kind | {a} | {b} | {a} − {b} [95% CI] | p | verdict | n |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in v.get("table", []):
            ci = r["ci95"] or [None, None]
            fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
            lines.append(f"| {r['metric']} | {r['kind']} | {fmt(r['a'])} | {fmt(r['b'])} | {fmt(r['diff'])} "
                         f"[{fmt(ci[0])}, {fmt(ci[1])}] | {fmt(r['p_value'])} | {r['verdict']} | {r['n']} |")
        lines.append("")
        lines.append(f"- fair metric better where a biased one is not (reversal): "
                     f"{', '.join(v['reversal']) if v['reversal'] else 'none'}")
        lines.append(f"- biased metric better where a fair one is not: "
                     f"{', '.join(v['biased_only']) if v['biased_only'] else 'none'}")
        if v["degenerate"]:
            lines.append(f"- biased metric(s) 0 on both arms, so they rank nothing and are left out of both "
                         f"lists: {', '.join(v['degenerate'])}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# SECap's own evaluation protocol (github.com/thuhcsi/SECap @ 1743904eb9bc2217eba492c8b728d5787484ce22: readme.md
# "Calculating Similarity" and tool/get_sentence_simi.py)
# ----------------------------------------------------------------------------------------------------------------
SECAP_THRESHOLDS = (0.5, 0.6, 0.8)


def secap_protocol(generations, references, similarity, *, keep: int = 5, thresholds=SECAP_THRESHOLDS,
                   model_label: str = "") -> dict:
    """SECap's figures from ``k`` generations per clip (``generations[i]`` = the k captions of clip i).

    1. Per clip, each generation's consistency is its mean similarity to the clip's other k-1 generations; the
       k-``keep`` least consistent are dropped (ties: the later one goes), the kept ones stay in generation order.
    2. Run j (j < keep) is the j-th kept generation of every clip. Per run: mean similarity to the reference x 100
       (``simi``) and the share of clips with similarity above each threshold x 100 (``acc5``, ``acc6``, ``acc8``;
       strictly greater, as SECap's tool). References lose all whitespace first (its ``''.join(gt.split())``);
       generations are only stripped.
    3. Each figure is the mean and the population standard deviation (numpy's ``np.std``) over the runs: SECap's
       table reports ``mean+std``.

    ``similarity(a, b)`` returns the element-wise similarities of two equally long lists of strings (SECap:
    cosine of mean-pooled ``text2vec-base-chinese-paraphrase`` embeddings). The settings are in ``signature``."""
    gens = [[str(g).strip() for g in row] for row in generations]
    refs = ["".join(str(r).split()) for r in references]
    if not gens or len(gens) != len(refs):
        raise ValueError(f"secap_protocol: {len(gens)} clips of generations but {len(refs)} references")
    k = len(gens[0])
    if any(len(row) != k for row in gens):
        raise ValueError("secap_protocol: every clip needs the same number of generations")
    if not 1 <= keep <= k:
        raise ValueError(f"secap_protocol: keep must be in [1, {k}], got {keep}")
    kept = []
    for row in gens:
        if keep == k:
            kept.append(row)
            continue
        pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
        sims = np.asarray(similarity([row[i] for i, _ in pairs], [row[j] for _, j in pairs]), dtype=float)
        cons = np.zeros(k)
        for (i, _), v in zip(pairs, sims):
            cons[i] += v / (k - 1)
        order = sorted(range(k), key=lambda i: (-cons[i], i))[:keep]
        kept.append([row[i] for i in sorted(order)])
    runs = []
    for j in range(keep):
        s = np.asarray(similarity(refs, [row[j] for row in kept]), dtype=float)
        runs.append({"simi": float(s.mean() * 100),
                     **{f"acc{round(t * 10)}": float((s > t).mean() * 100) for t in thresholds}})
    figures = {name: {"mean": float(np.mean([r[name] for r in runs])), "std": float(np.std([r[name] for r in runs])),
                      "runs": [r[name] for r in runs]} for name in runs[0]}
    settings = {"generations_per_clip": k, "kept": keep, "thresholds": list(thresholds), "model": model_label,
                "reference": "whitespace removed", "std": "population (np.std) over the kept runs"}
    sig = (f"secap-protocol|k:{k}|keep:{keep}|thr:{'/'.join(f'{t:g}' for t in thresholds)}|model:{model_label}"
           f"|ref:nows|std:pop")
    return {"n": len(refs), "figures": figures, "settings": settings, "signature": sig}
