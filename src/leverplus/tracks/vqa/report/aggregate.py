"""Aggregation of one selector version over the experiment grid: JSON, parquet, a markdown table, a PNG plot.

Results JSON schema (also in the README):
{
  "dataset", "version", "metric" (vqa_accuracy, ×100), "signature",
  "cells":     [{model, sampler, sample_num, shot, score, n, ci95: [lo, hi], vs_<baseline>: {diff, ci95, p_value, n,
                verdict, mdd} for each of COMPARED_BASELINES the run has (img_sim, text_sim, pool_random, random,
                oracle); with several training seeds also seeds, per_seed: [{seed, score, ci95}], seed_sd,
                seed_range, ci95_items_only}],
  "baselines": [{model, retriever, shot, score, n, ci95}],
  "headroom":  [{model, shot, a: oracle, b: img_sim|text_sim, diff, ci95, p_value, n, verdict, mdd}],
  "cost":      {train_selector | infer | baselines: {wall_s, jobs, missing}}  (wall-clock seconds of the jobs),
  "beam_signal": [{model, sampler, sample_num, anchors, mean_candidate_infoscore: [per step],
                   mean_infoscore_by_beam_rank: [per rank, summed over steps], best_beam_above_mean_share (step 1),
                   best_beam_above_mean_share_by_step, mean_zero_shot_p, mean_best_beam_p}],
  "paired_test": {method, n_resamples, seed, vqa_eval, stem}
}

Paired differences are computed from per-question accuracies recomputed with the scoring settings each cell's own
JSON records (`settings.eval`, `settings.stem`), so `vs_*` equals what `leverplus compare CELL BASELINE --references
val --vqa-eval E [--stem] --n-resamples N --seed S` prints for the same two predictions files. A cell is never
paired with a baseline scored differently, and with `metrics` given every file must have been scored with its
`vqa_eval` / `vqa_stem` (else: rerun that rule); the bootstrap uses `metrics.n_resamples` and `metrics.seed`.

Training seeds (`selector.seeds`): a cell's results files, one per seed, are pooled.  Its `score` is the mean over
seeds, `seed_sd` / `seed_range` the spread of the per-seed scores, `ci95` a bootstrap over questions *and* seeds
(`leverplus.metrics.stats.seed_bootstrap`) and `ci95_items_only` the question-only interval of the seed mean (what
the seed noise adds is the difference); `vs_*` resample seeds as well.  With one seed every number is what it was.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.core.io import atomic_write, write_json, write_parquet
from leverplus.metrics.io import MetricsInputError
from leverplus.metrics.stats import minimum_detectable_difference, paired_bootstrap, seed_bootstrap
from leverplus.metrics.vqa import DEFAULT_VQA_EVAL, scoring_from_settings, vqa_accuracy_per_item

# Baselines every selector cell is compared with, paired on the same questions (and seed-aware): image- and
# text-similarity retrieval (the methods a selector must beat), random demonstrations from the selector's own
# inference pool (what the selector adds beyond it), random demonstrations from the whole train set, and the oracle
# (reads the query's answers: how far below the reachable the selector stays).
COMPARED_BASELINES = ("img_sim", "text_sim", "pool_random", "random", "oracle")
COMPARISON_TITLES = {
    "img_sim": "Selector vs image-similarity retrieval",
    "text_sim": "Selector vs question-text-similarity retrieval",
    "pool_random": "Selector vs random demonstrations from its own inference pool",
    "random": "Selector vs random demonstrations from the train set",
    "oracle": "Selector vs the oracle (same-answer demonstrations; an upper reference)",
}
# The headroom: how much better than similarity retrieval an ideal selection does, on the same questions.
HEADROOM_PAIRS = (("oracle", "img_sim"), ("oracle", "text_sim"))
POWER = 0.8  # of the minimum detectable difference printed beside every verdict
SAMPLER_TITLES = {"rand": "RandSampler", "text_sim": "TextSimSampler", "img_sim": "ImgSimSampler", "mix": "MixSampler"}


# used only when the aggregate is called without the config's `metrics` slice
DEFAULT_METRICS = {"n_resamples": 1000, "seed": 0}


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["_path"] = path
    doc["_scoring"] = scoring_from_settings(doc.get("settings"), path)
    return doc


def _describe(scoring: dict) -> str:
    return f"vqa_eval={scoring['vqa_eval']}, stem={scoring['stem'] or 'no'}"


def _per_item(doc: dict, val: pd.DataFrame) -> pd.Series:
    """Per-question accuracy of one results file, recomputed with the settings it records; its score must agree."""
    preds = pd.read_parquet(Path(doc["_path"]).with_suffix(".parquet"))
    acc = vqa_accuracy_per_item(preds[["id", "prediction"]], val[["id", "answers"]], **doc["_scoring"])
    recomputed = round(100 * float(sum(acc.tolist())) / acc.size, 2) if acc.size else None
    if recomputed != doc["score"]:
        raise MetricsInputError(
            f"{doc['_path']}: score {doc['score']} but its predictions rescore to {recomputed} with "
            f"{_describe(doc['_scoring'])}: the JSON and its parquet are out of step; rerun that rule"
        )
    return pd.Series(acc, index=preds["id"].values)


def _check_config(docs: list[dict], metrics: dict | None) -> None:
    if metrics is None:
        return
    want = {"vqa_eval": metrics.get("vqa_eval", DEFAULT_VQA_EVAL), "stem": bool(metrics.get("vqa_stem", False))}
    for d in docs:
        # the stemming mode the file records (okvqa-nltk / okvqa-nltk-approx) is what rescoring uses; the config says
        # only whether to stem
        got = {"vqa_eval": d["_scoring"]["vqa_eval"], "stem": bool(d["_scoring"]["stem"])}
        if got != want:
            raise MetricsInputError(
                f"{d['_path']}: scored with {_describe(d['_scoring'])} but the config's metrics say "
                f"{_describe(want)}; rerun that rule"
            )


def verdict(diff: float, ci95) -> str:
    """"better" / "worse" where the 95% CI excludes 0, else "inside the noise"."""
    return "inside the noise" if ci95[0] <= 0 <= ci95[1] else ("better" if diff > 0 else "worse")


def judged(test: dict) -> dict:
    """A comparison in accuracy points with its verdict and minimum detectable difference (80% power, from its CI:
    ``leverplus.metrics.stats.minimum_detectable_difference``)."""
    return {**test, "verdict": verdict(test["diff"], test["ci95"]),
            "mdd": round(minimum_detectable_difference(test["ci95"], power=POWER), 2)}


def _paired(mine: pd.Series, ref: pd.Series, n_resamples: int, seed: int) -> dict:
    # the cell's question order, as `leverplus compare CELL BASELINE` aligns B to A
    in_ref = set(ref.index)
    common = [i for i in mine.index if i in in_ref]
    test = paired_bootstrap(mine[common].values, ref[common].values, n_resamples=n_resamples, seed=seed)
    return judged({
        "diff": round(100 * test["diff"], 2),
        "ci95": [round(100 * x, 2) for x in test["ci95"]],
        "p_value": test["p_value"],
        "n": test["n"],
    })


def _by_cell(cells: list[dict]) -> list[list[dict]]:
    """Results files grouped by grid cell (model, sampler, sample_num, shot), each group in seed order."""
    groups: dict[tuple, list[dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["sampler"], c["sample_num"], c["shot"]), []).append(c)
    for key, g in groups.items():
        g.sort(key=lambda d: d.get("seed", 0))
        if len({d.get("seed") for d in g}) != len(g):
            raise MetricsInputError(f"cell {key}: two results files with the same training seed: "
                                    f"{[d['_path'] for d in g]}")
    return list(groups.values())


def _aligned(series: list[pd.Series], order: list[str] | None = None) -> np.ndarray:
    """(runs, questions) per-question accuracies on the questions every run has, in the first run's order."""
    order = order if order is not None else list(series[0].index)
    common = [i for i in order if all(i in s.index for s in series)]
    return np.vstack([s[common].to_numpy(dtype=float) for s in series])


def paired_over_seeds(a: list[pd.Series], b: list[pd.Series], n_resamples: int, seed: int, *,
                      paired_seeds: bool = False) -> dict:
    """A − B, questions paired, training seeds resampled (``seed_bootstrap``), in accuracy points, with verdict and
    minimum detectable difference. Each side's seeds are drawn independently, or with ``paired_seeds`` (A and B
    trained from the same seeds, in the same order, sharing what the seed fixes) one draw serves both."""
    order = list(a[0].index)
    test = seed_bootstrap(_aligned(a, order), _aligned(b, order), n_resamples=n_resamples, seed=seed,
                          paired_seeds=paired_seeds)
    return judged({"diff": round(100 * test["diff"], 2), "ci95": [round(100 * x, 2) for x in test["ci95"]],
                   "p_value": test["p_value"], "n": test["n"], "seeds": test["seeds"],
                   "seed_pairing": "paired" if paired_seeds else "independent"})


def _seed_summary(group: list[dict], per_item: list[pd.Series], n_resamples: int, seed: int) -> dict:
    acc = _aligned(per_item)
    both = seed_bootstrap(acc, n_resamples=n_resamples, seed=seed)
    items_only = seed_bootstrap(acc.mean(axis=0), n_resamples=n_resamples, seed=seed)
    scores = [d["score"] for d in group]
    return {
        "score": round(100 * float(acc.mean(axis=1).mean()), 2),
        "n": int(acc.shape[1]),
        "ci95": [round(100 * x, 2) for x in both["ci95"]],
        "ci95_items_only": [round(100 * x, 2) for x in items_only["ci95"]],
        "seeds": [d["seed"] for d in group],
        "per_seed": [{"seed": d["seed"], "score": d["score"], "ci95": d["ci95"]} for d in group],
        "seed_sd": round(float(np.std(scores, ddof=1)), 2),
        "seed_range": [min(scores), max(scores)],
    }


def beam_signal(beam_path: str) -> dict:
    t = pd.read_parquet(beam_path)
    steps = len(t["step_scores"].iloc[0])
    gain = t["step_scores"].map(lambda s: float(np.sum(s)))
    by_rank = t.assign(gain=gain).groupby("beam_rank")["gain"].mean()
    best = t[t["beam_rank"] == 0]
    best_first = best["step_scores"].map(lambda s: s[0])
    mean_first = best["mean_candidate_scores"].map(lambda s: s[0])
    # per step: the best beam's InfoScore vs the mean InfoScore of every candidate scored at that step. The last step
    # is high by construction (beams are ranked by it); step 1 says whether the best final sequence began with a
    # better-than-average demonstration (with right order it may begin with a distractor and gain most at step 2).
    above_by_step = [
        float(np.mean([b[i] > m[i] for b, m in zip(best["step_scores"], best["mean_candidate_scores"])]))
        for i in range(steps)
    ]
    return {
        "anchors": int(t["anchor"].nunique()),
        "steps": steps,
        "mean_candidate_infoscore": [float(np.mean([m[i] for m in best["mean_candidate_scores"]])) for i in range(steps)],
        "mean_infoscore_by_beam_rank": [float(by_rank[r]) for r in sorted(by_rank.index)],
        "best_beam_above_mean_share": float(np.mean(best_first.values > mean_first.values)),
        "best_beam_above_mean_share_by_step": above_by_step,
        "mean_zero_shot_p": float(best["zero_shot_score"].mean()),
        "mean_best_beam_p": float(best["score"].mean()),
    }


def aggregate(
    *, dataset: str, version: str, infer_jsons: list[str], baseline_jsons: list[str], beam_tables: list[str],
    val: pd.DataFrame, out_json: str, out_md: str, out_png: str, out_parquet: str, metrics: dict | None = None,
    selector_jsons: list[str] | None = None, out_training_png: str | None = None,
) -> dict:
    m = {**DEFAULT_METRICS, **(metrics or {})}
    n_resamples, seed = int(m["n_resamples"]), int(m["seed"])
    cells = [_load(p) for p in infer_jsons]
    bases = [_load(p) for p in baseline_jsons]
    _check_config(cells + bases, metrics)
    references = {  # (retriever, model, shot) → results file of the random baselines
        (b["retriever"], b["model"], b["shot"]): b for b in bases if b["retriever"] in COMPARED_BASELINES
    }
    per_item: dict[str, pd.Series] = {}

    def items(doc: dict) -> pd.Series:
        if doc["_path"] not in per_item:
            per_item[doc["_path"]] = _per_item(doc, val)
        return per_item[doc["_path"]]

    rows = []
    for group in _by_cell(cells):
        c = group[0]
        row = {k: c[k] for k in ("model", "sampler", "sample_num", "shot", "score", "n", "ci95")}
        if len(group) > 1:
            row.update(_seed_summary(group, [items(d) for d in group], n_resamples, seed))
        elif "seed" in c:
            row["seeds"] = [c["seed"]]
        for retriever in COMPARED_BASELINES:
            ref = references.get((retriever, c["model"], c["shot"]))
            if ref is None:
                continue
            for d in group:
                if ref["_scoring"] != d["_scoring"]:
                    raise MetricsInputError(
                        f"{d['_path']} ({_describe(d['_scoring'])}) cannot be paired with {ref['_path']} "
                        f"({_describe(ref['_scoring'])}): rescore both with the same settings"
                    )
            if len(group) == 1:
                row[f"vs_{retriever}"] = _paired(items(c), items(ref), n_resamples, seed)
            else:
                row[f"vs_{retriever}"] = paired_over_seeds([items(d) for d in group], [items(ref)], n_resamples, seed)
        rows.append(row)
    base_rows = [{k: b[k] for k in ("model", "retriever", "shot", "score", "n", "ci95")} for b in bases]
    headroom = []
    for (hi, lo) in HEADROOM_PAIRS:
        for (r, model, shot), doc in sorted(references.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            other = references.get((lo, model, shot))
            if r != hi or other is None or other["_scoring"] != doc["_scoring"]:
                continue
            headroom.append({"model": model, "shot": shot, "a": hi, "b": lo,
                             **_paired(items(doc), items(other), n_resamples, seed)})
    signal = []
    for p in beam_tables:
        parts = Path(p).parts  # data/{dataset}/beam/{model}/{sampler}_{n}/beam.parquet
        sampler, n = parts[-2].rsplit("_", 1)
        signal.append({"model": parts[-3], "sampler": sampler, "sample_num": int(n), **beam_signal(p)})
    result = {
        "dataset": dataset,
        "version": version,
        "metric": "vqa_accuracy",
        "scale": "percent",
        "signature": cells[0]["signature"] if cells else (bases[0]["signature"] if bases else ""),
        "cells": sorted(rows, key=lambda r: (r["sample_num"], r["shot"], r["model"], r["sampler"])),
        "baselines": sorted(base_rows, key=lambda r: (r["model"], r["retriever"], r["shot"])),
        "headroom": headroom,
        "beam_signal": signal,
        "cost": cost_summary(cells, bases, selector_jsons or []),
        "paired_test": {
            "method": "paired-bootstrap-percentile", "n_resamples": n_resamples, "seed": seed,
            "verdict": "better/worse where the 95% CI excludes 0", "mdd_power": POWER,
            **({"vqa_eval": cells[0]["_scoring"]["vqa_eval"], "stem": cells[0]["_scoring"]["stem"]} if cells else {}),
        },
    }
    write_json(out_json, result)
    write_parquet(out_parquet, pd.json_normalize(result["cells"]))
    with atomic_write(out_md) as f:
        f.write(markdown(result))
    from leverplus.tracks.vqa.report.plots import plot_accuracy_vs_shot

    plot_accuracy_vs_shot(result, out_png)
    if out_training_png is not None:
        from leverplus.tracks.vqa.report.training_curves import plot_training_curves

        plot_training_curves(version, selector_jsons or [], out_training_png)
    return result


def cost_summary(cells: list[dict], bases: list[dict], selector_jsons: list[str]) -> dict:
    """What the results cost, in wall-clock seconds of their jobs (each job at the config's `compute.model_threads`):
    the selectors' training (``selector.json`` → ``training.wall_time_s``), their inference and the baselines
    (``cost.wall_s`` of each results file; files written before it was recorded count as missing)."""
    train = []
    for p in selector_jsons:
        with open(p, encoding="utf-8") as f:
            train.append(json.load(f).get("training", {}).get("wall_time_s"))

    def total(values):
        have = [float(v) for v in values if v is not None]
        return {"wall_s": round(sum(have), 1), "jobs": len(have), "missing": len(values) - len(have)}

    return {"train_selector": total(train), "infer": total([(c.get("cost") or {}).get("wall_s") for c in cells]),
            "baselines": total([(b.get("cost") or {}).get("wall_s") for b in bases])}


def _fmt(score: float, ci: list[float]) -> str:
    return f"{score:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _sd(row) -> str:
    sd = getattr(row, "seed_sd", None)
    return f" ±{sd:.2f}" if isinstance(sd, (int, float)) and sd == sd else ""


def markdown(result: dict) -> str:
    cells = pd.DataFrame(result["cells"])
    samplers = [s for s in SAMPLER_TITLES if s in set(cells["sampler"])] if len(cells) else []
    bases = pd.DataFrame(result["baselines"])
    retrievers = sorted(set(bases["retriever"]) - {"zero_shot"}) if len(bases) else []
    lines = [
        f"# {result['dataset']} — selector {result['version']}",
        "",
        f"VQA accuracy (×100) with 95% bootstrap CI `[lo, hi]`; n = questions per cell. Signature: `{result['signature']}`",
        "",
    ]
    if len(cells) and "seed_sd" in cells:
        lines += [f"Mean over training seeds {sorted({s for c in result['cells'] for s in c.get('seeds', [])})}; the CI "
                  "resamples questions and seeds; `±` = standard deviation of the per-seed scores.", ""]
    header = ["Sample Num", "Shot Num", "Model Name", "n"] + [SAMPLER_TITLES[s] for s in samplers]
    header += [f"baseline {r}" for r in retrievers]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    if len(cells):
        for (n, shot, model), g in cells.groupby(["sample_num", "shot", "model"], sort=True):
            by = {r.sampler: r for r in g.itertuples()}
            vals = [_fmt(by[s].score, by[s].ci95) + _sd(by[s]) if s in by else "—" for s in samplers]
            for r in retrievers:
                b = bases[(bases.model == model) & (bases.retriever == r) & (bases.shot == shot)]
                vals.append(_fmt(b.iloc[0].score, b.iloc[0].ci95) if len(b) else "—")
            lines.append(f"| {n} | {shot} | {model} | {int(g['n'].iloc[0])} | " + " | ".join(vals) + " |")
    zs = bases[bases.retriever == "zero_shot"] if len(bases) else bases
    for r in zs.itertuples():
        lines += ["", f"Zero-shot ({r.model}): {_fmt(r.score, r.ci95)}, n = {r.n}"]
    if result.get("headroom"):
        lines += ["", "## Headroom: oracle vs similarity retrieval (paired bootstrap, same questions)", "",
                  "| Model | Shot | A vs B | Δ accuracy | 95% CI | p | verdict | MDD |", "|---|---|---|---|---|---|---|---|"]
        for h in result["headroom"]:
            lines.append(f"| {h['model']} | {h['shot']} | {h['a']} vs {h['b']} | {h['diff']:+.2f} | "
                         f"[{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}] | {h['p_value']:.3g} | {h['verdict']} | "
                         f"{h['mdd']:.2f} |")
    seeded = len(cells) and "seed_sd" in cells
    for retriever in COMPARED_BASELINES:
        key = f"vs_{retriever}"
        if not len(cells) or key not in cells:
            continue
        how = "questions and the selector's seeds resampled" if seeded else "same questions"
        lines += ["", f"## {COMPARISON_TITLES[retriever]} (paired bootstrap, {how})", "",
                  "| Sample Num | Shot | Model | Sampler | Δ accuracy | 95% CI | p | verdict | MDD |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in cells.dropna(subset=[key]).itertuples():
            v = getattr(r, key)
            lines.append(
                f"| {r.sample_num} | {r.shot} | {r.model} | {r.sampler} | {v['diff']:+.2f} | "
                f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] | {v['p_value']:.3g} | {verdict(v['diff'], v['ci95'])} | "
                f"{minimum_detectable_difference(v['ci95'], power=POWER):.2f} |"
            )
    if any(f"vs_{r}" in cells for r in COMPARED_BASELINES) if len(cells) else False:
        lines += ["", f"MDD = the minimum detectable difference: the smallest true Δ this run's test detects with "
                      f"{POWER:.0%} power at the 5% level (normal approximation from the CI's width). An \"inside "
                      "the noise\" verdict rules out only differences larger than it."]
    if result["beam_signal"]:
        lines += ["", "## Beam-search InfoScore signal", "",
                  "| Model | Sampler | Sample Num | anchors | mean candidate InfoScore (step 1) | mean InfoScore by beam rank (sum over steps) | best beam > mean candidate, by step | P̄ zero-shot → best beam |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in result["beam_signal"]:
            ranks = ", ".join(f"{x:.4f}" for x in s["mean_infoscore_by_beam_rank"])
            lines.append(
                f"| {s['model']} | {s['sampler']} | {s['sample_num']} | {s['anchors']} | "
                f"{s['mean_candidate_infoscore'][0]:.4f} | {ranks} | "
                + ", ".join(f"{100 * x:.1f}%" for x in s["best_beam_above_mean_share_by_step"])
                + f" | {s['mean_zero_shot_p']:.4f} → {s['mean_best_beam_p']:.4f} |"
            )
    return "\n".join(lines) + "\n"
