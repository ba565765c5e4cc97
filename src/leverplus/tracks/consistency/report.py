"""The consistency report: report.json (the comparison plus provenance), a Markdown summary and a figure."""
from __future__ import annotations

import numpy as np

from leverplus.core.io import atomic_write, read_json, write_json


def _g(v, fmt: str = ".4g") -> str:
    return "n/a" if v is None else format(v, fmt)


def _f(s: dict, digits: int = 6) -> str:
    v, ci = s["value"], s.get("ci95")
    if v is None:
        return f"n/a (n={s['n']})"
    if ci is None:
        return f"{v:.{digits}f} (n={s['n']}; extreme: no CI)"
    lo, hi = ci
    if lo is None or hi is None:
        return f"n/a (n={s['n']})"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={s['n']})"


def _paired(d: dict | None, digits: int = 4) -> str:
    if not d:
        return "n/a"
    lo, hi = d["ci95"]
    return f"{d['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}], p={d['p_value']:.3g} (n={d['n']})"


def diagnosis_rows(d: dict) -> list[tuple[str, str, float | None, str]]:
    """(cause, variant, distance or None, note) per variant; a variant that could not run has no distance (it is
    drawn as 'could not run', never as 0)."""
    out = []
    for row in d["variants"]:
        v = row.get(d["distance"])
        note = "could not run: " + row["error"] if row.get("error") else ""
        out.append((row["cause"], row["variant"], v, note))
    return out


def markdown(rep: dict) -> str:
    e, r, c = rep["embedding"], rep["rerank"], rep["calibration"]
    lines = [f"# Consistency: local vs API — {rep['dataset']}", "",
             f"Corpus: {rep['corpus']['n_queries']} queries, {rep['corpus']['n_documents']} documents "
             f"({', '.join(rep['corpus']['langs'])}); {r['n_pairs']} rerank pairs. 95% percentile bootstrap CIs "
             f"({rep['embedding']['cosine_mean']['n']} items / {r['n_queries']} queries resampled).", "",
             "## Embeddings", "", "| statistic | value [95% CI] |", "|---|---|"]
    for key in ("cosine_mean", "cosine_min", "cosine_p1", "cosine_median", "max_abs_diff"):
        lines.append(f"| {key} | {_f(e[key])} |")
    nb = e["neighbours"]
    ov = nb[f"overlap_at_{nb['k']}"]
    lines += [f"| neighbours overlap@{nb['k']} (per query) | {_f(ov, 4)} |",
              f"| neighbours RBO p={nb['rbo_p']} (per query) | {_f(nb['rbo'], 4)} |", "",
              "## Reranker", "", "| statistic | value [95% CI] |", "|---|---|"]
    for key, s in r["per_query_mean"].items():
        lines.append(f"| {key} (mean over queries) | {_f(s, 4)} |")
    for key in ("spearman", "kendall_tau_b"):
        pooled = r["pooled"][key]
        lines.append(f"| {key} pooled over pairs ({pooled['relation_to_per_query']}) | {_f(pooled, 4)} |")
    for key, s in r["absolute"].items():
        lines.append(f"| {key} (pooled pairs) | {_f(s, 6)} |")
    lines += ["", f"Pooled correlations: {r['pooled']['note']}; here the relation to the per-query mean is stated "
              "per row (inflated = above the per-query CI, deflated = below).", ""]
    tq = rep.get("task_quality")
    if tq:
        lines += [f"## Task quality (NDCG@{tq['k']} against the corpus qrels, {tq['n_queries']} queries)", "",
                  "Agreement says whether the two sides rank alike; this says whether each ranks well.", "",
                  "| side | NDCG [95% CI] | − random (paired) |", "|---|---|---|"]
        for side in ("local", "api"):
            lines.append(f"| {side} | {_f(tq[side], 4)} | {_paired(tq['vs_random'][side])} |")
        lines += [f"| random ranking (expected) | {_f(tq['random'], 4)} | |", "",
                  f"Local − API (paired bootstrap over queries): {_paired(tq.get('paired'))}.", ""]
    lines += [f"## Calibration (local → API probability, {c['folds']}-fold CV over queries)", "",
              "| map | held-out MAE | RMSE | max error | held-out Pearson | in-sample Pearson |", "|---|---|---|---|---|---|"]
    for name, s in c["methods"].items():
        lines.append(f"| {name} | {_g(s['heldout_mae'])} | {_g(s['heldout_rmse'])} | {_g(s['heldout_max_error'])} | "
                     f"{_g(s['heldout_pearson'], '.4f')} | {_g(s['insample_pearson'], '.4f')} |")
    cub = c["cubic"]
    lines += ["", f"Cubic monotone on the support [{cub['support'][0]:.3g}, {cub['support'][1]:.3g}]: "
              f"{'yes' if cub['monotone_on_support'] else 'NO — it reorders items'}.", "", c["note"], "",
              "## Verdict and diagnosis", "",
              f"Thresholds: {rep['thresholds']}. Embeddings {'pass' if rep['passed']['embedding'] else 'FAIL'}, "
              f"reranker {'pass' if rep['passed']['rerank'] else 'FAIL'}.", ""]
    if not rep["diagnosis"]:
        lines.append("No diagnosis run (both sides agree within the thresholds).")
    for kind, d in rep["diagnosis"].items():
        lines += [f"**{kind}**: {d['summary']}.", "",
                  f"Rerun on {d.get('device', '?')}; noise floor (same dtype, batch layouts "
                  f"{next((v.get('batch_sizes') for v in d.get('noise_floor', {}).values() if v.get('batch_sizes')), '?')}): "
                  + (", ".join(f"{dt} {_g(v.get(d['distance']))}" for dt, v in d.get("noise_floor", {}).items()) or "n/a")
                  + f"; a variant matches within the thresholds or {d.get('noise_factor', 2):g}× its precision's noise"
                  f" floor{'; pairs searched' if d.get('pairs_searched') else ''}.", "",
                  f"| cause | variant | {d['distance']} | share of the gap | within |", "|---|---|---|---|---|"]
        for (cause, variant, v, note), row in zip(diagnosis_rows(d), d["variants"]):
            share = row.get("share_of_gap")
            lines.append(f"| {cause} | {variant} | {_g(v) if note == '' else note} | "
                         f"{'n/a' if share is None else f'{100 * share:.0f}%'} | {'yes' if row.get('within') else 'no'} |")
        lines.append("")
    where = rep["local"].get("placement")
    served = (rep["api"].get("client_stats") or {}).get("served_placement")
    if where:
        lines += ["", "Placement: local " + ", ".join(f"{m} on {v['device']} ({v['dtype']})" for m, v in where.items())
                  + ("; served by the local server: " + ", ".join(f"{m} on {v['device']} ({v['dtype']})"
                                                              for m, v in served.items()) if served else "") + "."]
    lines += ["", f"Local: {rep['local']}", "", f"API: {rep['api']}"]
    return "\n".join(lines) + "\n"


def figure(rep: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4), gridspec_kw={"width_ratios": [1, 1, 1.5]})
    cos = np.asarray(rep["embedding"]["per_item_cosine"])
    ax[0].hist(1 - cos, bins=30, color="tab:blue")
    ax[0].set_title("embeddings: 1 − cosine per item")
    ax[0].set_xlabel("1 − cosine")
    tau = np.asarray([np.nan if t is None else t for t in rep["rerank"]["per_query"]["kendall_tau_b"]], float)
    ax[1].hist(tau[~np.isnan(tau)], bins=20, range=(-1, 1), color="tab:orange")
    ax[1].set_title("reranker: Kendall τ-b per query")
    ax[1].set_xlabel("τ-b")
    for kind, d in rep["diagnosis"].items():
        rows = diagnosis_rows(d)
        labels = [f"{kind}: {variant}" for _, variant, _, _ in rows]
        vals = [v if v is not None else 0.0 for _, _, v, _ in rows]
        bars = ax[2].barh(labels, vals)
        for bar, (_, _, v, _) in zip(bars, rows):
            if v is None:  # could not run: no bar, a label
                bar.set_visible(False)
                ax[2].text(0, bar.get_y() + bar.get_height() / 2, " could not run", va="center", fontsize=8)
    ax[2].set_title("diagnosis: distance to the API per variant")
    ax[2].set_xscale("symlog", linthresh=1e-8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def aggregate(*, input, output, params, wildcards, threads):
    rep = read_json(input[0])
    rep["settings"] = params.get("settings", {})
    write_json(output[0], rep)
    with atomic_write(output[1]) as f:
        f.write(markdown(rep))
    figure(rep, output[2])
