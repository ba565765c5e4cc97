"""Version comparisons (v1 vs v0, v2 vs v1, v2_lora vs v2, v3 vs v2, v4 vs v3) whose verdicts account for both
sources of noise: the questions and the selector's training seed.

For every pair (A, B) and grid cell (model, sampler, sample_num, shot) the difference is mean-over-seeds(A) −
mean-over-seeds(B) on the same val questions.  Its 95% CI and p-value come from a bootstrap that resamples the
questions (paired: the same draw for A and B) and, independently, each side's training seeds
(``leverplus.metrics.stats.seed_bootstrap``).  ``verdict`` is "better" / "worse" when that CI excludes 0, else
"inside the noise".  For contrast the JSON also holds ``items_only`` (the seed means compared with the questions
resampled only: the verdict one would draw ignoring seed variance) and ``per_seed`` (seed i of A vs seed i of B:
what a single training run per version would have concluded).
"""
from __future__ import annotations

import pandas as pd

from ..io import atomic_write, write_json
from ..metrics.stats import paired_bootstrap
from .aggregate import DEFAULT_METRICS, _check_config, _load, _per_item, paired_over_seeds


def verdict(diff: float, ci95) -> str:
    return "inside the noise" if ci95[0] <= 0 <= ci95[1] else ("better" if diff > 0 else "worse")


def _pct(test: dict) -> dict:
    return {"diff": round(100 * test["diff"], 2), "ci95": [round(100 * x, 2) for x in test["ci95"]],
            "p_value": test["p_value"]}


def compare_versions(*, dataset: str, pairs: list, infer_jsons: list[str], val: pd.DataFrame, out_json: str,
                     out_md: str, metrics: dict | None = None) -> dict:
    m = {**DEFAULT_METRICS, **(metrics or {})}
    n_resamples, seed = int(m["n_resamples"]), int(m["seed"])
    docs = [_load(p) for p in infer_jsons]
    _check_config(docs, metrics)
    runs: dict[tuple, dict[int, pd.Series]] = {}
    for d in docs:
        key = (d["version"], d["model"], d["sampler"], d["sample_num"], d["shot"])
        runs.setdefault(key, {})[int(d.get("seed", 0))] = _per_item(d, val)
    rows = []
    for a, b in pairs:
        for key in sorted(k for k in runs if k[0] == a):
            other = (b, *key[1:])
            if other not in runs:
                continue
            ra, rb = runs[key], runs[other]
            sa, sb = [ra[s] for s in sorted(ra)], [rb[s] for s in sorted(rb)]
            both = paired_over_seeds(sa, sb, n_resamples, seed)
            order = list(sa[0].index)
            mean_a = pd.concat(sa, axis=1).loc[order].mean(axis=1)
            mean_b = pd.concat(sb, axis=1).loc[order].mean(axis=1)
            items = _pct(paired_bootstrap(mean_a.values, mean_b.values, n_resamples=n_resamples, seed=seed))
            per_seed = []
            for s in sorted(set(ra) & set(rb)):
                t = _pct(paired_bootstrap(ra[s][order].values, rb[s][order].values, n_resamples=n_resamples,
                                          seed=seed))
                per_seed.append({"seed": s, **t, "verdict": verdict(t["diff"], t["ci95"])})
            rows.append({
                "version": a, "vs": b, "model": key[1], "sampler": key[2], "sample_num": key[3], "shot": key[4],
                "n": both["n"], "seeds": [sorted(ra), sorted(rb)],
                "diff": both["diff"], "ci95": both["ci95"], "p_value": both["p_value"],
                "verdict": verdict(both["diff"], both["ci95"]),
                "items_only": {**items, "verdict": verdict(items["diff"], items["ci95"])},
                "per_seed": per_seed,
            })
    result = {
        "dataset": dataset,
        "metric": "vqa_accuracy",
        "scale": "percent",
        "pairs": [list(p) for p in pairs],
        "method": {"name": "paired-bootstrap-items-and-seeds", "n_resamples": n_resamples, "seed": seed,
                   **({"vqa_eval": docs[0]["_scoring"]["vqa_eval"], "stem": docs[0]["_scoring"]["stem"]}
                      if docs else {})},
        "comparisons": rows,
    }
    write_json(out_json, result)
    with atomic_write(out_md) as f:
        f.write(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [f"# {result['dataset']} — selector versions compared", "",
             "Δ = mean over training seeds of A − the same of B, VQA accuracy ×100, same questions. The 95% CI "
             "resamples questions (paired) and each side's seeds; *items only* ignores seed variance; *single "
             "runs* counts the per-seed comparisons (seed i vs seed i) by verdict.", "",
             "| A vs B | Model | Sampler | Sample Num | Shot | seeds | Δ | 95% CI (questions + seeds) | p | verdict "
             "| items-only CI | items-only verdict | single runs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["comparisons"]:
        counts: dict[str, int] = {}
        for p in r["per_seed"]:
            counts[p["verdict"]] = counts.get(p["verdict"], 0) + 1
        single = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
        io = r["items_only"]
        lines.append(
            f"| {r['version']} vs {r['vs']} | {r['model']} | {r['sampler']} | {r['sample_num']} | {r['shot']} | "
            f"{len(r['seeds'][0])}/{len(r['seeds'][1])} | {r['diff']:+.2f} | [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
            f" | {r['p_value']:.3g} | {r['verdict']} | [{io['ci95'][0]:.2f}, {io['ci95'][1]:.2f}] | {io['verdict']} "
            f"| {single} |")
    return "\n".join(lines) + "\n"
