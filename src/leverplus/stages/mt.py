"""MT metrics track stages: download -> score (metric family x language pair) -> meta-evaluate -> aggregate."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.io import read_json, write_json, write_parquet


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------
def download(*, input, output, params, wildcards, threads):
    from leverplus.data import mt as data
    from leverplus.data import mt_demo

    spec, pair = params["spec"], wildcards["pair"]
    if spec["source"] == "demo":
        df = mt_demo.generate_pair(pair, int(spec["n_segments"]), int(spec["seed"]))
        df = df[data.COLUMNS]
    else:
        if pair not in spec.get("pairs", {}):
            raise data.MTDataError(f"dataset has no language pair {pair!r}")
        df = data.load_pair(spec["pairs"][pair])
    print(f"{pair}: {df['id'].nunique()} segments x {df['system'].nunique()} systems")
    write_parquet(output[0], df)


def judge_model(*, input, output, params, wildcards, threads):
    """The demo judge's chat model: a random tiny Qwen2ForCausalLM (leverplus.serving.tiny_chat), seeded."""
    import shutil
    import tempfile

    from leverplus.serving.tiny_chat import build_tiny_chat_lm

    out = Path(output[0])
    tmp = Path(tempfile.mkdtemp(prefix=".tiny_chat.", dir=out.parent if out.parent.exists() else None))
    try:
        build_tiny_chat_lm(tmp / "m", seed=int(params["seed"]))
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "m", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"tiny chat model (random, seed {params['seed']}) -> {out}")


# ----------------------------------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------------------------------
def run_family(df: pd.DataFrame, pair: str, family: str, cfg: dict):
    """(segment table, corpus results, extra) of one metric family on one language pair."""
    from leverplus.metrics import mt

    kw = {"n_resamples": int(cfg.get("corpus_ci_resamples", 1000)), "seed": int(cfg.get("seed", 0))}
    extra: dict = {}
    if family == "lexical":
        seg, corpus = mt.score_lexical(df, pair, bleu_tokenize=cfg.get("bleu_tokenize"), **kw)
    elif family == "meteor":
        seg, corpus = mt.score_meteor(df, pair, **kw)
    elif family == "rouge":
        seg, corpus = mt.score_rouge(df, pair, **kw)
    elif family == "bertscore":
        b = cfg["bertscore"]
        seg, corpus = mt.score_bertscore(df, pair, model=b["model"], num_layers=int(b["num_layers"]),
                                         baseline_path=b.get("baseline_path"), batch_size=int(b["batch_size"]), **kw)
        extra["note"] = b.get("note")
    elif family == "llm_judge":
        seg, corpus, extra = run_judge(df, pair, cfg["llm_judge"], log_file=cfg.get("_log"))
    elif family == "neural":
        from leverplus.metrics.mt_neural import score_neural

        seg, corpus, extra = score_neural(df, pair, cfg["neural"])
    else:
        raise ValueError(f"unknown metric family {family!r}")
    return seg, corpus, extra


def run_judge(df: pd.DataFrame, pair: str, j: dict, log_file=None):
    """The LLM judge on the first ``max_segments`` segments (x every system); with ``mode: local_server`` the
    project's server is started on 127.0.0.1 for the length of the call (CausalLMChatBackend on ``model_dir``,
    requiring a fresh random key put in ``api.api_key_env``) and ``api.base_url`` points at it."""
    import secrets

    from leverplus.metrics.mt_judge import score_llm_judge

    ids = list(dict.fromkeys(df["id"]))
    n = j.get("max_segments")
    sub = df[df["id"].isin(ids[:n])] if n else df
    api = dict(j["api"])
    if j.get("mode", "endpoint") == "endpoint":
        seg, corpus, extra = score_llm_judge(sub, pair, api=api, settings=j.get("settings"))
    else:
        from leverplus.serving.process import spawn_server

        env_name = api.get("api_key_env") or "LEVERPLUS_MT_JUDGE_KEY"
        api["api_key_env"] = env_name
        os.environ[env_name] = "sk-local-" + secrets.token_hex(12)
        args = ["--chat-model", j["local_server"]["model_dir"], "--model-name", api["model"], "--port", "0",
                "--api-key-env", env_name, "--threads", "1"]
        with spawn_server(args, log_file=log_file, env=dict(os.environ)) as url:
            api["base_url"] = url
            seg, corpus, extra = score_llm_judge(sub, pair, api=api, settings=j.get("settings"))
        extra["server"] = {"mode": "local_server", "model_dir": j["local_server"]["model_dir"],
                           "backend": "CausalLMChatBackend"}
    n_ok = int(np.isfinite(seg["score"].to_numpy(float)).sum())
    extra["judged"] = {"segments": int(sub["id"].nunique()), "of_segments": len(ids), "requests": len(seg),
                       "parseable": n_ok, "parse_rate": n_ok / len(seg) if len(seg) else float("nan")}
    return seg, corpus, extra


def score(*, input, output, params, wildcards, threads):
    df = pd.read_parquet(input["data"])
    pair, family = wildcards["pair"], wildcards["family"]
    seg, corpus, extra = run_family(df, pair, family, params["cfg"])
    if "stats" not in seg.columns:
        seg["stats"] = None
    seg = seg[["id", "system", "metric", "score", "stats"]]
    write_parquet(output["segments"], seg)
    write_json(output["corpus"], {"pair": pair, "family": family, "corpus": corpus, **extra})


# ----------------------------------------------------------------------------------------------------------------
# meta-evaluate
# ----------------------------------------------------------------------------------------------------------------
def pair_scores(pair: str, segs: list[pd.DataFrame], data_df: pd.DataFrame, cfg: dict):
    """PairScores of one language pair (TER negated; sacrebleu metrics with corpus system-level scorers), the human
    matrix if the data has human scores, and notes on what was left out."""
    from leverplus.data.mt import has_human
    from leverplus.metrics import meta_eval as me
    from leverplus.metrics import mt

    seg = pd.concat(segs, ignore_index=True)
    ids = list(dict.fromkeys(data_df["id"]))
    systems = list(dict.fromkeys(data_df["system"]))
    notes, mats, scorers, excluded = [], {}, {}, {}
    order = [m for m in dict.fromkeys(seg["metric"])]
    for metric in order:
        g = seg[seg["metric"] == metric]
        wide = g.pivot(index="id", columns="system", values="score").reindex(index=ids, columns=systems)
        M = wide.to_numpy(float)
        bad = np.isnan(M).mean()
        if bad > float(cfg["meta_eval"]["max_missing"]):
            n_ok = int(np.isfinite(g["score"].to_numpy(float)).sum())
            why = (f"{metric}: not computable -- {'no' if n_ok == 0 else n_ok} parseable score{'s' * (n_ok != 1)}: "
                   f"{n_ok}/{len(g)} scored cells ({M.size} cells in the pair; {bad:.0%} missing or unparseable, "
                   f"more than max_missing {cfg['meta_eval']['max_missing']})")
            notes.append(why)
            excluded[metric] = {"status": "not computable", "parseable": n_ok, "scored": int(len(g)),
                                "cells": int(M.size), "reason": why}
            continue
        if bad > 0:  # fill nothing silently: drop the segments where it is missing for everyone
            notes.append(f"{metric}: {bad:.1%} cells missing; those segments dropped for all metrics")
        mats[metric] = -M if metric in mt.LOWER_IS_BETTER else M
        if metric in mt.SACREBLEU_METRICS and g["stats"].notna().all():
            st = g.set_index(["id", "system"])["stats"]
            arr = np.array([[st[(i, s)] for s in systems] for i in ids], float)  # (S, K, d)
            sign = -1.0 if metric in mt.LOWER_IS_BETTER else 1.0

            def scorer(counts, arr=arr, metric=metric, sign=sign):
                summed = np.einsum("rs,skd->rkd", counts, arr)
                return sign * np.array([[mt.corpus_from_stats(metric, pair, summed[r, k], cfg.get("bleu_tokenize"))
                                         for k in range(summed.shape[1])] for r in range(summed.shape[0])])

            scorers[metric] = scorer
    if has_human(data_df):
        H = data_df.pivot(index="id", columns="system", values="human").reindex(index=ids, columns=systems)
        mats["human"] = H.to_numpy(float)
    keep = ~np.any([np.isnan(M).any(axis=1) for M in mats.values()], axis=0)
    if not keep.all():
        mats = {k: v[keep] for k, v in mats.items()}
        scorers = {k: (lambda c, f=f: f(_expand(c, keep))) for k, f in scorers.items()}
    return me.PairScores(mats, systems=systems, system_scorers=scorers), notes, excluded


def _expand(counts, keep):
    out = np.zeros((counts.shape[0], keep.size))
    out[:, keep] = counts
    return out


def answer_pair(ps, metrics: list[str], cfg: dict, levels: dict) -> dict:
    """Most / least similar metric pair (primary coefficient) with the pairs PERM-BOTH cannot tell apart from it,
    and hierarchical clusters on 1 - coefficient."""
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    from leverplus.metrics import meta_eval as me

    m = cfg["meta_eval"]
    coef, grouping = m["primary"]["coef"], m["primary"]["grouping"]
    table = levels[grouping][coef]
    idx = {name: i for i, name in enumerate(metrics)}
    pairs = [(a, b) for a, b in itertools.combinations(metrics, 2)]
    val = {p: table["value"][idx[p[0]]][idx[p[1]]] for p in pairs}
    ci = {p: table["ci95"][idx[p[0]]][idx[p[1]]] for p in pairs}
    finite = [p for p in pairs if not math.isnan(val[p])]
    out = {"coef": coef, "grouping": grouping, "alpha": m["alpha"], "n_permutations": m["n_permutations"]}
    for label, best in (("most_similar", max(finite, key=val.get)), ("least_similar", min(finite, key=val.get))):
        ties, tests = [], []
        for p in finite:
            if p == best:
                continue
            t = me.perm_both(ps, best, p, coef=coef, grouping=grouping, n_permutations=int(m["n_permutations"]),
                             seed=int(m["seed"]))
            tests.append({"pair": list(p), "value": val[p], "diff": t["diff"], "p_value": t["p_value"]})
            if t["p_value"] >= m["alpha"]:
                ties.append(list(p))
        out[label] = {"pair": list(best), "value": val[best], "ci95": ci[best], "indistinguishable": ties,
                      "tests": tests}
    # clusters
    k = len(metrics)
    D = np.ones((k, k)) - np.nan_to_num(np.asarray(table["value"], float), nan=0.0)
    np.fill_diagonal(D, 0.0)
    D = np.clip((D + D.T) / 2, 0, 2)
    Z = linkage(squareform(D, checks=False), method="average")
    labels = fcluster(Z, t=float(m["cluster_distance"]), criterion="distance")
    clusters: dict[int, list[str]] = {}
    for name, lab in zip(metrics, labels):
        clusters.setdefault(int(lab), []).append(name)
    out["clusters"] = {"method": "average linkage on 1 - " + coef, "cut_distance": m["cluster_distance"],
                       "groups": sorted(clusters.values(), key=lambda g: (-len(g), g)),
                       "order": [metrics[i] for i in leaves_list(Z)], "linkage": Z.tolist()}
    return out


def meta_evaluate(*, input, output, params, wildcards, threads):
    from leverplus.metrics import meta_eval as me

    cfg = params["cfg"]
    pair = wildcards["pair"]
    data_df = pd.read_parquet(input["data"])
    ps, notes, excluded = pair_scores(pair, [pd.read_parquet(p) for p in input["segments"]], data_df, cfg)
    m = cfg["meta_eval"]
    metrics = [x for x in ps.metrics if x != "human"]
    names = (["human"] if "human" in ps.metrics else []) + metrics
    full = me.matrices(ps, coefficients=m["coefficients"], groupings=m["groupings"],
                       n_resamples=int(m["n_resamples"]), seed=int(m["seed"]), metrics=names)
    res = drop_metric(full, "human") if "human" in names else full
    res["pair"], res["notes"], res["not_computable"] = pair, notes, excluded
    res["questions"] = answer_pair(ps, metrics, cfg, res["levels"])
    if "human" in names:
        res["vs_human"] = vs_human(ps, metrics, m, full)
    write_json(output[0], res)


def drop_metric(res: dict, name: str) -> dict:
    """The matrices result without one metric's row and column."""
    import copy

    out = copy.deepcopy(res)
    k = out["metrics"].index(name)
    out["metrics"] = [x for x in out["metrics"] if x != name]
    for g, per in out["levels"].items():
        if per.get("status"):
            continue
        for t in per.values():
            for key in ("value", "ci95"):
                t[key] = [[x for j, x in enumerate(row) if j != k] for i, row in enumerate(t[key]) if i != k]
    return out


def vs_human(ps, metrics, m, full) -> dict:
    """Each metric against the human scores, WMT-style: coefficient + CI per grouping, and per (grouping, coef)
    the metrics PERM-BOTH cannot separate from the best one (the "significance cluster")."""
    from leverplus.metrics import meta_eval as me

    out = {}
    for g, per in full["levels"].items():
        if per.get("status"):
            out[g] = per
            continue
        out[g] = {}
        for coef, t in per.items():
            rows = {mt: {"value": t["value"][0][i + 1], "ci95": t["ci95"][0][i + 1]} for i, mt in enumerate(metrics)}
            ranked = sorted(rows, key=lambda x: -np.nan_to_num(rows[x]["value"], nan=-9))
            best = ranked[0]
            top = [best]
            if g == "none" and coef in ("pearson", "spearman"):
                for other in ranked[1:]:
                    t2 = me.perm_both(ps, ("human", best), ("human", other), coef=coef, grouping=g,
                                      n_permutations=int(m["n_permutations"]), seed=int(m["seed"]))
                    rows[other]["p_vs_best"] = t2["p_value"]
                    if t2["p_value"] >= m["alpha"]:
                        top.append(other)
            out[g][coef] = {"metrics": rows, "ranking": ranked, "best_cluster": top if len(top) > 1 or
                            (g == "none" and coef in ("pearson", "spearman")) else None}
    return out


# ----------------------------------------------------------------------------------------------------------------
# aggregate
# ----------------------------------------------------------------------------------------------------------------
def _fmt(v, ci=None, d=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    s = f"{v:.{d}f}"
    if ci is not None and not any(math.isnan(x) for x in ci):
        s += f" [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"
    return s


def aggregate(*, input, output, params, wildcards, threads):
    cfg = params["cfg"]
    metas = {Path(p).stem: read_json(p) for p in input["meta"]}
    corpus: dict = {}
    families: dict = {}
    for p in input["corpus"]:
        c = read_json(p)
        corpus.setdefault(c["pair"], {}).update(c["corpus"])
        info = {k: c[k] for k in ("note", "judged", "server", "n_requests") if c.get(k) is not None}
        if c.get("unparseable") is not None:
            info["n_unparseable"] = len(c["unparseable"])
            info["unparseable_examples"] = c["unparseable"][:3]
        if info:
            families.setdefault(c["pair"], {})[c["family"]] = info
    m = cfg["meta_eval"]
    coef, grouping = m["primary"]["coef"], m["primary"]["grouping"]
    stable = most_stable(metas, coef, grouping)
    report = {"dataset": wildcards["mt_set"], "pairs": list(metas), "primary": m["primary"],
              "system_level_corpus": _corpus_table(corpus), "signatures": _signatures(corpus),
              "meta_eval": metas, "most_stable_pair": stable, "families": families,
              "normalisation_note": "min-max normalisation to [0, 1] is an increasing affine map per metric: it "
                                    "changes no Pearson, Spearman or Kendall value (tests/test_meta_eval.py)",
              "caveats": cfg.get("caveats", [])}
    write_json(output["json"], report)
    Path(output["md"]).write_text(markdown(report), encoding="utf-8")
    plot(metas, coef, grouping, output["png"])


def _corpus_table(corpus):
    out = {}
    for pair, metrics in corpus.items():
        out[pair] = {}
        for metric, per in metrics.items():
            if isinstance(per, dict) and per.get("status") == "not applicable":
                out[pair][metric] = {"status": "not applicable", "reason": per.get("reason")}
            else:
                out[pair][metric] = {s: {"score": r.get("score"), "ci95": r.get("ci95") or r.get("ci95_mean_segment")}
                                     for s, r in per.items()}
    return out


def _signatures(corpus):
    sigs = {}
    for pair, metrics in corpus.items():
        for metric, per in metrics.items():
            if isinstance(per, dict) and per.get("status"):
                continue
            first = next(iter(per.values()))
            sigs.setdefault(metric, {})[pair] = first.get("signature")
    return sigs


def most_stable(metas: dict, coef: str, grouping: str) -> dict:
    """Metric pair whose primary coefficient varies least across language pairs (smallest range), with its values."""
    common = None
    for meta in metas.values():
        names = meta["metrics"]
        common = set(names) if common is None else common & set(names)
    rows = []
    for a, b in itertools.combinations(sorted(common or []), 2):
        vals, cis = {}, {}
        for pair, meta in metas.items():
            i, j = meta["metrics"].index(a), meta["metrics"].index(b)
            t = meta["levels"][grouping][coef]
            vals[pair], cis[pair] = t["value"][i][j], t["ci95"][i][j]
        v = np.array(list(vals.values()), float)
        if np.isnan(v).any():
            continue
        rows.append({"pair": [a, b], "range": float(v.max() - v.min()), "sd": float(v.std(ddof=1)) if len(v) > 1
                     else 0.0, "mean": float(v.mean()), "values": vals, "ci95": cis})
    rows.sort(key=lambda r: r["range"])
    return {"coef": coef, "grouping": grouping, "criterion": "smallest range across language pairs",
            "best": rows[0] if rows else None, "top5": rows[:5]}


def markdown(report: dict) -> str:
    p = report["primary"]
    L = [f"# MT metrics: {report['dataset']}", "",
         f"Primary coefficient: **{p['coef']}**, grouping **{p['grouping']}**; 95% bootstrap CIs over segments; "
         f"pairs compared with PERM-BOTH.", "", report["normalisation_note"], ""]
    for c in report.get("caveats", []):
        L.append(f"- {c}")
    L += ["", "## Most / least similar metric pair per language pair", "",
          "| pair | most similar | value [95% CI] | indistinguishable | least similar | value [95% CI] | "
          "indistinguishable |", "|---|---|---|---|---|---|---|"]
    for pair, meta in report["meta_eval"].items():
        q = meta["questions"]
        ms, ls = q["most_similar"], q["least_similar"]
        L.append(f"| {pair} | {' / '.join(ms['pair'])} | {_fmt(ms['value'], ms['ci95'])} | "
                 f"{', '.join('/'.join(x) for x in ms['indistinguishable']) or 'none'} | {' / '.join(ls['pair'])} | "
                 f"{_fmt(ls['value'], ls['ci95'])} | {', '.join('/'.join(x) for x in ls['indistinguishable']) or 'none'} |")
    st = report["most_stable_pair"]
    if st["best"]:
        b = st["best"]
        L += ["", "## Most stable pair across language pairs", "",
              f"{' / '.join(b['pair'])}: range {b['range']:.3f}, mean {b['mean']:.3f}; " +
              "; ".join(f"{k} {_fmt(v, b['ci95'][k])}" for k, v in b["values"].items())]
    judged = {pair: f["llm_judge"] for pair, f in report.get("families", {}).items() if "llm_judge" in f}
    if judged:
        L += ["", "## LLM judge (GEMBA-DA)", "", "| pair | parseable scores | segments judged | server | "
              "correlations |", "|---|---|---|---|---|"]
        for pair, f in judged.items():
            j = f.get("judged", {})
            nc = report["meta_eval"].get(pair, {}).get("not_computable", {}).get("llm_judge")
            head = ("no parseable scores: " if j.get("parseable") == 0 else "") + \
                f"{j.get('parseable')}/{j.get('requests')} ({100 * (j.get('parse_rate') or 0):.0f}%)"
            L.append(f"| {pair} | {head} | {j.get('segments')}/{j.get('of_segments')} x systems | "
                     f"{f.get('server', {}).get('mode', 'endpoint')} | {'not computable' if nc else 'in the matrices'} |")
    notes = [(pair, fam, f["note"]) for pair, fs in report.get("families", {}).items() for fam, f in fs.items()
             if f.get("note")]
    if notes:
        L += ["", "## Family notes", ""] + [f"- {pair} {fam}: {n}" for pair, fam, n in notes]
    L += ["", "## Clusters (average linkage on 1 - coefficient)", ""]
    for pair, meta in report["meta_eval"].items():
        cl = meta["questions"]["clusters"]
        L.append(f"- {pair} (cut {cl['cut_distance']}): " + " | ".join(", ".join(g) for g in cl["groups"]))
    L += ["", "## System-level corpus scores", ""]
    for pair, metrics in report["system_level_corpus"].items():
        systems = sorted({s for per in metrics.values() if "status" not in per for s in per})
        L += [f"### {pair}", "", "| metric | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
        for metric, per in metrics.items():
            if "status" in per:
                L.append(f"| {metric} | " + " | ".join(["not applicable"] * len(systems)) + " |")
            else:
                L.append(f"| {metric} | " + " | ".join(
                    _fmt(per[s]["score"], None, 2) if per.get(s, {}).get("score") is not None else
                    "no parseable scores" for s in systems) + " |")
        L.append("")
    for pair, meta in report["meta_eval"].items():
        L += [f"## {pair}: metric x metric ({p['coef']}, {p['grouping']})", ""]
        names = meta["metrics"]
        t = meta["levels"][p["grouping"]][p["coef"]]
        L += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for i, a in enumerate(names):
            L.append(f"| {a} | " + " | ".join(_fmt(t["value"][i][j], t["ci95"][i][j], 2) for j in range(len(names)))
                     + " |")
        for a in meta.get("not_computable", {}):
            L.append(f"| {a} | " + " | ".join(["not computable"] * len(names)) + " |")
        for n in meta.get("notes", []):
            L.append(f"- {n}")
        if "vs_human" in meta:
            L += ["", f"Against the human scores ({p['coef']}, {p['grouping']}):", ""]
            vh = meta["vs_human"][p["grouping"]][p["coef"]]
            for name in vh["ranking"]:
                r = vh["metrics"][name]
                L.append(f"- {name}: {_fmt(r['value'], r['ci95'])}" + (f" (PERM-BOTH p vs best {r['p_vs_best']:.3f})"
                                                                       if "p_vs_best" in r else ""))
        L.append("")
    L += ["Signatures:", ""]
    for metric, per in report["signatures"].items():
        L.append(f"- {metric}: `{next(iter(per.values()))}`")
    return "\n".join(L) + "\n"


def plot(metas: dict, coef: str, grouping: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(metas)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.8 * rows), squeeze=False)
    for ax, (pair, meta) in zip(axes.ravel(), metas.items()):
        names = meta["questions"]["clusters"]["order"]
        idx = [meta["metrics"].index(x) for x in names]
        V = np.asarray(meta["levels"][grouping][coef]["value"], float)[np.ix_(idx, idx)]
        im = ax.imshow(V, vmin=-1 if coef != "acc23" else 0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{V[i, j]:.2f}", ha="center", va="center", fontsize=5, color="w" if V[i, j] < 0.6
                        else "k")
        ax.set_title(f"{pair}: {coef} ({grouping}), n={meta['n_segments']}x{meta['n_systems']}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
