"""The consistency report: report.json (the comparison plus provenance), a Markdown summary and a figure."""
from __future__ import annotations

import numpy as np

from ..io import atomic_write, read_json, write_json


def _g(v, fmt: str = ".4g") -> str:
    return "n/a" if v is None else format(v, fmt)


def _f(s: dict, digits: int = 6) -> str:
    v, (lo, hi) = s["value"], s["ci95"]
    if v is None or lo is None or hi is None:
        return f"n/a (n={s['n']})"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={s['n']})"


def markdown(rep: dict) -> str:
    e, r, c = rep["embedding"], rep["rerank"], rep["calibration"]
    k = r["k"]
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
        lines.append(f"| {key} pooled — inflated | {_f(r['pooled_inflated'][key], 4)} |")
    for key, s in r["absolute"].items():
        lines.append(f"| {key} (pooled pairs) | {_f(s, 6)} |")
    lines += ["", f"Pooled correlations: {r['pooled_inflated']['note']}.", "",
              f"## Calibration (local → API probability, {c['folds']}-fold CV over queries)", "",
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
        lines += [f"**{kind}**: {d['summary']}.", "", f"| cause | variant | {d['distance']} |", "|---|---|---|"]
        for row in d["variants"]:
            lines.append(f"| {row['cause']} | {row['variant']} | {_g(row[d['distance']])}"
                         f"{' (' + row['error'] + ')' if row.get('error') else ''} |")
        lines.append("")
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
        labels = [row["variant"] for row in d["variants"]]
        vals = [row[d["distance"]] or 0.0 for row in d["variants"]]
        ax[2].barh([f"{kind}: {lab}" for lab in labels], vals)
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
