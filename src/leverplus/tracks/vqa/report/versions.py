"""Version comparisons (v1 vs v0, v2 vs v1, v2_lora vs v2, v3 vs v2, v4 vs v3) whose verdicts account for both
sources of noise: the questions and the selector's training seed.

For every pair (A, B) and grid cell (model, sampler, sample_num, shot) the difference is mean-over-seeds(A) −
mean-over-seeds(B) on the same val questions.  Its 95% CI and p-value come from a bootstrap that resamples the
questions (paired: the same draw for A and B) and the training seeds (``leverplus.metrics.stats.seed_bootstrap``):
independently per side, except for versions that share what the seed fixes (:data:`SEED_PAIRED`: v3/v4 start from
v2's initial weights and shuffling for the same seed), whose seeds are drawn once for both sides (``seed_pairing:
paired``).  ``verdict`` is "better" / "worse" when that CI excludes 0, else "inside the noise"; ``mdd`` is the
minimum detectable difference of that test (80% power).  For contrast the JSON also holds ``items_only`` (the seed
means compared with the questions resampled only: the verdict one would draw ignoring seed variance) and
``per_seed`` (seed i of A vs seed i of B: what a single training run per version would have concluded).

``vs_baselines``: every version against image- and text-similarity retrieval, random picks from its own inference
pool and the oracle (:data:`VERSION_BASELINES`, those the run has), in the same form (the baseline is one run, so
only the version's seeds are resampled).
"""
from __future__ import annotations

import pandas as pd

from leverplus.core.io import atomic_write, write_json
from leverplus.metrics.stats import paired_bootstrap, seed_bootstrap
from leverplus.metrics.io import MetricsInputError
from leverplus.tracks.vqa.report.aggregate import (DEFAULT_METRICS, _aligned, _check_config, _describe, _load, _per_item, cost_summary, judged,
                        minimum_detectable_difference, paired_over_seeds, verdict)

# Version pairs that share what the training seed fixes: v3 and v4 are v2's network (same initial weights for the same
# seed) trained on the same sequences in the same shuffled order, so seed i of one is compared with seed i of the
# other (one draw of seeds for both sides); the other pairs' seeds are resampled independently.
SEED_PAIRED = frozenset({("v3", "v2"), ("v4", "v3"), ("v4", "v2")})
# Every version is also compared with these baselines (when the run has them), paired on the same questions, the
# version's seeds resampled: the similarity retrievals it must beat, random picks from its own pool, and the oracle.
VERSION_BASELINES = ("img_sim", "text_sim", "pool_random", "oracle")


def _pct(test: dict) -> dict:
    return {"diff": round(100 * test["diff"], 2), "ci95": [round(100 * x, 2) for x in test["ci95"]],
            "p_value": test["p_value"]}


def compare_versions(*, dataset: str, pairs: list, infer_jsons: list[str], val: pd.DataFrame, out_json: str,
                     out_md: str, metrics: dict | None = None, baseline_jsons: list[str] | None = None,
                     out_png: str | None = None) -> dict:
    m = {**DEFAULT_METRICS, **(metrics or {})}
    n_resamples, seed = int(m["n_resamples"]), int(m["seed"])
    docs = [_load(p) for p in infer_jsons]
    bases = [_load(p) for p in baseline_jsons or []]
    bases = [b for b in bases if b.get("retriever") in VERSION_BASELINES]
    _check_config(docs + bases, metrics)
    runs: dict[tuple, dict[int, pd.Series]] = {}
    for d in docs:
        key = (d["version"], d["model"], d["sampler"], d["sample_num"], d["shot"])
        runs.setdefault(key, {})[int(d.get("seed", 0))] = _per_item(d, val)
    versions = sorted({k[0] for k in runs})  # v0 < v1 < v2 < v2_lora < v3 < v4
    rows = []
    for a, b in pairs:
        for key in sorted(k for k in runs if k[0] == a):
            other = (b, *key[1:])
            if other not in runs:
                continue
            ra, rb = runs[key], runs[other]
            rows.append(_row(a, b, key, ra, rb, (a, b) in SEED_PAIRED and sorted(ra) == sorted(rb),
                             n_resamples, seed))
    base_rows = []
    for retriever in VERSION_BASELINES:
        for d in bases:
            if d["retriever"] != retriever:
                continue
            for v in versions:
                for key in sorted(k for k in runs if k[0] == v and k[1] == d["model"] and k[4] == d["shot"]):
                    if d["_scoring"] != docs[0]["_scoring"]:
                        raise MetricsInputError(f"{d['_path']} ({_describe(d['_scoring'])}) cannot be paired with "
                                                f"{docs[0]['_path']} ({_describe(docs[0]['_scoring'])}): rescore "
                                                "both with the same settings")
                    ref = _per_item(d, val)
                    base_rows.append(_row(v, retriever, key, runs[key], {0: ref}, False, n_resamples, seed))
    summaries = []
    for key in sorted(runs):
        acc = _aligned([runs[key][s] for s in sorted(runs[key])])
        test = seed_bootstrap(acc, n_resamples=n_resamples, seed=seed)
        summaries.append({"version": key[0], "model": key[1], "sampler": key[2], "sample_num": key[3],
                          "shot": key[4], "seeds": sorted(runs[key]), "n": int(acc.shape[1]),
                          "score": round(100 * test["mean"], 2), "ci95": [round(100 * x, 2) for x in test["ci95"]]})
    result = {
        "dataset": dataset,
        "metric": "vqa_accuracy",
        "scale": "percent",
        "versions": summaries,
        "baselines": [{k: b[k] for k in ("model", "retriever", "shot", "score", "n", "ci95")} for b in bases],
        "pairs": [list(p) for p in pairs],
        "seed_paired_pairs": sorted([list(p) for p in SEED_PAIRED if tuple(p) in {tuple(q) for q in pairs}]),
        "method": {"name": "paired-bootstrap-items-and-seeds", "n_resamples": n_resamples, "seed": seed,
                   "mdd_power": 0.8,
                   **({"vqa_eval": docs[0]["_scoring"]["vqa_eval"], "stem": docs[0]["_scoring"]["stem"]}
                      if docs else {})},
        "comparisons": rows,
        "vs_baselines": base_rows,
        "cost": cost_summary(docs, bases, []),  # wall-clock seconds of the inference and baseline jobs compared
    }
    write_json(out_json, result)
    with atomic_write(out_md) as f:
        f.write(markdown(result))
    if out_png is not None:
        from leverplus.tracks.vqa.report.plots import plot_versions

        plot_versions(result, out_png)
    return result


def _row(a: str, b: str, key: tuple, ra: dict, rb: dict, paired_seeds: bool, n_resamples: int, seed: int) -> dict:
    """A (seeds ra) vs B (seeds rb) on one grid cell: seed-aware verdict, items-only verdict, single runs."""
    sa, sb = [ra[s] for s in sorted(ra)], [rb[s] for s in sorted(rb)]
    both = paired_over_seeds(sa, sb, n_resamples, seed, paired_seeds=paired_seeds)
    order = list(sa[0].index)
    mean_a = pd.concat(sa, axis=1).loc[order].mean(axis=1)
    mean_b = pd.concat(sb, axis=1).loc[order].mean(axis=1)
    items = _pct(paired_bootstrap(mean_a.values, mean_b.values, n_resamples=n_resamples, seed=seed))
    # a single baseline run stands for every seed of the version in the single-run comparisons
    per_seed = []
    for s in sorted(ra):
        other = rb[s] if s in rb else (rb[next(iter(rb))] if len(rb) == 1 else None)
        if other is None:
            continue
        t = _pct(paired_bootstrap(ra[s][order].values, other[order].values, n_resamples=n_resamples,
                                  seed=seed))
        per_seed.append({"seed": s, **t, "verdict": verdict(t["diff"], t["ci95"])})
    return {
        "version": a, "vs": b, "model": key[1], "sampler": key[2], "sample_num": key[3], "shot": key[4],
        "n": both["n"], "seeds": [sorted(ra), sorted(rb)], "seed_pairing": both["seed_pairing"],
        "diff": both["diff"], "ci95": both["ci95"], "p_value": both["p_value"],
        "verdict": both["verdict"], "mdd": both["mdd"],
        "items_only": judged(items),
        "per_seed": per_seed,
    }


def _table(rows: list[dict]) -> list[str]:
    lines = ["| A vs B | Model | Sampler | Sample Num | Shot | seeds | Δ | 95% CI (questions + seeds) | p | verdict "
             "| MDD | items-only CI | items-only verdict | single runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        counts: dict[str, int] = {}
        for p in r["per_seed"]:
            counts[p["verdict"]] = counts.get(p["verdict"], 0) + 1
        single = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        io = r["items_only"]
        seeds = f"{len(r['seeds'][0])}/{len(r['seeds'][1])}" + (" paired" if r.get("seed_pairing") == "paired" else "")
        mdd = r.get("mdd", minimum_detectable_difference(r["ci95"]))
        lines.append(
            f"| {r['version']} vs {r['vs']} | {r['model']} | {r['sampler']} | {r['sample_num']} | {r['shot']} | "
            f"{seeds} | {r['diff']:+.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
            f" | {r['p_value']:.3g} | {r['verdict']} | {mdd:.2f} | [{io['ci95'][0]:.2f}, {io['ci95'][1]:.2f}] | "
            f"{io['verdict']} | {single} |")
    return lines


def markdown(result: dict) -> str:
    lines = [f"# {result['dataset']} — selector versions compared", "",
             "Δ = mean over training seeds of A − the same of B, VQA accuracy ×100, same questions. The 95% CI "
             "resamples questions (paired) and the seeds: independently per side, or — for versions that share "
             "their seed's initialisation (`paired`) — one draw of seeds for both; *items only* ignores seed "
             "variance; *single runs* counts the per-seed comparisons (seed i vs seed i; vs a baseline: seed i vs "
             "the baseline's one run) by verdict. MDD = minimum detectable difference (80% power, 5% level, from "
             "the CI's width): an \"inside the noise\" verdict rules out only larger differences.", "",
             "## Versions vs each other", ""]
    lines += _table(result["comparisons"])
    if result.get("vs_baselines"):
        lines += ["", "## Every version vs similarity retrieval, its pool at random and the oracle", ""]
        lines += _table(result["vs_baselines"])
    return "\n".join(lines) + "\n"

