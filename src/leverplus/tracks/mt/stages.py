"""MT metrics track stages: download -> score (metric family x language pair) -> meta-evaluate -> aggregate."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.core.io import read_json, write_json, write_parquet


# ----------------------------------------------------------------------------------------------------------------
# config (parse time: the reference checks leverplus.core.config.load_track runs on the `mt` block)
# ----------------------------------------------------------------------------------------------------------------
def check_config(block: dict) -> None:
    """Every dataset's run that judges on the local server names the judge's model directory."""
    from leverplus.core.config import ConfigError

    for name, run in block["runs"].items():
        j = run["llm_judge"]
        if "llm_judge" in run["families"] and j["mode"] == "local_server" and not j["local_server"]["model_dir"]:
            raise ConfigError(f"invalid config: mt.runs.{name}.llm_judge.local_server.model_dir: mode local_server "
                              f"needs a chat model directory")


# ----------------------------------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------------------------------
def download(*, input, output, params, wildcards, threads):
    from leverplus.tracks.mt import data
    from leverplus.tracks.mt import demo as mt_demo
    from leverplus.tracks.mt import metrics as mt

    spec, pair = params["spec"], wildcards["pair"]
    if mt.normalise_pair(pair) != pair:  # one-line error naming the supported languages for unknown ones
        raise data.MTDataError(f"language pair {pair!r}: write it as {mt.normalise_pair(pair)!r}")
    if spec["source"] == "demo":
        df = mt_demo.generate_pair(pair, int(spec["n_segments"]), int(spec["seed"]))
        df = df[data.COLUMNS]
    else:
        if pair not in spec.get("pairs", {}):
            raise data.MTDataError(f"dataset has no language pair {pair!r}")
        df = data.load_pair(spec["pairs"][pair])
    print(f"{pair}: {df['id'].nunique()} segments x {df['system'].nunique()} systems")
    write_parquet(output[0], df)


# The demo judge's tokenizer is trained on the GEMBA prompt and on these lines, so it has one token per score " 0" ...
# " 100"; its output layer keeps only those tokens, so every reply is a run of scores whose first one parses
# (the judge's "first number in [0, 100]" rule).
JUDGE_SCORE_LINES = [" ".join(f"Score: {i}" for i in range(101))] * 4
JUDGE_VOCAB_SIZE = 512


def score_token_ids(tokenizer) -> dict[int, int]:
    """{score: token id} of the tokens that decode to exactly " <score>" (0 <= score <= 100, no leading zeros)."""
    import re

    out = {}
    for i in range(len(tokenizer)):
        m = re.fullmatch(r" (0|[1-9]\d?|100)", tokenizer.decode([i]))
        if m:
            out[int(m.group(1))] = i
    return out


def build_judge_model(out_dir, seed: int = 0) -> dict:
    """The demo judge: a random tiny ``Qwen2ForCausalLM`` chat model (:func:`leverplus.serving.tiny_chat.
    build_tiny_chat_lm`, seeded) whose tokenizer has one token per score " 0" ... " 100" and whose output layer
    (untied from the input embeddings) is zero for every other token, so greedy decoding can only emit scores
    (the 101 kept rows are the model's own random embedding rows).  Its replies parse, vary with the prompt, and
    carry **no judgement**: correlations with it are expected near 0.  Returns the build record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leverplus.metrics.mt_judge import PROMPT
    from leverplus.serving.tiny_chat import build_tiny_chat_lm

    out = Path(out_dir)
    build_tiny_chat_lm(out, [PROMPT, *JUDGE_SCORE_LINES], seed=seed, vocab_size=JUDGE_VOCAB_SIZE)
    tok = AutoTokenizer.from_pretrained(out)
    ids = score_token_ids(tok)
    if sorted(ids) != list(range(101)):
        raise RuntimeError(f"judge tokenizer lacks score tokens {sorted(set(range(101)) - set(ids))}")
    model = AutoModelForCausalLM.from_pretrained(out)
    emb = model.get_input_embeddings().weight.detach()
    head = torch.zeros_like(emb)
    keep = torch.tensor(sorted(ids.values()))
    head[keep] = emb[keep]
    model.config.tie_word_embeddings = False
    model.lm_head = torch.nn.Linear(emb.shape[1], emb.shape[0], bias=False)
    model.lm_head.weight.data = head
    model.save_pretrained(out, safe_serialization=True)
    record = {"seed": seed, "base": "leverplus.serving.tiny_chat.build_tiny_chat_lm (random init)",
              "vocab_size": len(tok), "output_tokens": "only ' 0' ... ' 100' (101 tokens); other lm_head rows 0",
              "meaning": "random weights: replies parse and vary with the prompt, but carry no judgement"}
    (out / "leverplus_mt_judge.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def judge_model(*, input, output, params, wildcards, threads):
    """Rule mt_judge_model: :func:`build_judge_model` into ``output[0]`` (built aside, then moved in place)."""
    import shutil
    import tempfile

    out = Path(output[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny_chat.", dir=out.parent))
    try:
        build_judge_model(tmp / "m", seed=int(params["seed"]))
        os.replace(tmp / "m", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"demo judge model (random, score tokens only, seed {params['seed']}) -> {out}")


# ----------------------------------------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------------------------------------
def run_family(df: pd.DataFrame, pair: str, family: str, cfg: dict):
    """(segment table, corpus results, extra) of one metric family on one language pair."""
    from leverplus.tracks.mt import metrics as mt

    kw = {"n_resamples": int(cfg.get("corpus_ci_resamples", 1000)), "seed": int(cfg.get("seed", 0))}
    extra: dict = {}
    df = mt.aligned(df)  # every system's rows in the same segment order (every family, every metric)
    if family == "lexical":
        seg, corpus = mt.score_lexical(df, pair, bleu_tokenize=cfg.get("bleu_tokenize"), **kw)
        t = cfg.get("system_tests") or {}
        if t.get("test"):
            extra["system_tests"] = mt.system_tests(seg, pair, baseline=t.get("baseline"), test=t["test"],
                                                    n_samples=t.get("n_samples"), seed=t.get("seed", mt.SACREBLEU_SEED))
    elif family == "meteor":
        seg, corpus = mt.score_meteor(df, pair, **kw)
    elif family == "rouge":
        seg, corpus = mt.score_rouge(df, pair, **kw)
    elif family == "bertscore":
        b = bertscore_settings(cfg["bertscore"], pair)
        sub, extra["subset"] = first_segments(df, b.get("max_segments"), "mt.bertscore.max_segments")
        seg, corpus = mt.score_bertscore(sub, pair, model=b["model"], num_layers=int(b["num_layers"]),
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


def bertscore_settings(b: dict, pair: str) -> dict:
    """The BERTScore block for a pair: ``per_language[<target>]`` (model, num_layers, baseline_path) over the
    defaults; the chosen model is named in the family note."""
    from leverplus.tracks.mt import metrics as mt

    tgt = mt.target_lang(pair)
    out = {**b, **((b.get("per_language") or {}).get(tgt) or {})}
    out.pop("per_language", None)
    return out


def run_judge(df: pd.DataFrame, pair: str, j: dict, log_file=None):
    """The LLM judge on the first ``max_segments`` segments (x every system); with ``mode: local_server`` the
    project's server is started on 127.0.0.1 for the length of the call (CausalLMChatBackend on ``model_dir``,
    requiring a fresh random key put in ``api.api_key_env``) and ``api.base_url`` points at it."""
    import secrets

    from leverplus.metrics.mt_judge import DEFAULT_RETRIES, score_llm_judge

    retries = int(j.get("parse_retries", DEFAULT_RETRIES))
    ids = list(dict.fromkeys(df["id"]))
    sub, subset = first_segments(df, j.get("max_segments"), "mt.llm_judge.max_segments")
    api = dict(j["api"])
    if j.get("mode", "endpoint") == "endpoint":
        seg, corpus, extra = score_llm_judge(sub, pair, api=api, settings=j.get("settings"), retries=retries)
    else:
        from leverplus.serving.process import spawn_server

        env_name = api.get("api_key_env") or "LEVERPLUS_MT_JUDGE_KEY"
        api["api_key_env"] = env_name
        os.environ[env_name] = "sk-local-" + secrets.token_hex(12)
        args = ["--chat-model", j["local_server"]["model_dir"], "--model-name", api["model"], "--port", "0",
                "--api-key-env", env_name, "--threads", "1"]
        with spawn_server(args, log_file=log_file, env=dict(os.environ)) as url:
            api["base_url"] = url
            seg, corpus, extra = score_llm_judge(sub, pair, api=api, settings=j.get("settings"), retries=retries)
        extra["server"] = {"mode": "local_server", "model_dir": j["local_server"]["model_dir"],
                           "backend": "CausalLMChatBackend"}
    n_ok = int(np.isfinite(seg["score"].to_numpy(float)).sum())
    extra["judged"] = {"segments": int(sub["id"].nunique()), "of_segments": len(ids), "requests": len(seg),
                       "parseable": n_ok, "parse_rate": n_ok / len(seg) if len(seg) else float("nan")}
    extra["subset"] = subset
    return seg, corpus, extra


def first_segments(df: pd.DataFrame, n, setting: str):
    """The rows of the first ``n`` segments (every system), and a record of the subset (``n`` None: all)."""
    ids = list(dict.fromkeys(df["id"]))
    if not n or int(n) >= len(ids):
        return df, None
    keep = set(ids[:int(n)])
    return (df[df["id"].isin(keep)].reset_index(drop=True),
            {"segments": int(n), "of_segments": len(ids), "which": "first", "setting": setting})


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
    """ScoreSet of one language pair (TER negated; sacrebleu metrics with corpus system-level scorers; NaN where a
    metric did not score a segment or its reply was unparseable), the human matrix if the data has human scores,
    notes, and the metrics left out as not computable (more than ``max_missing`` of the cells a metric scored are
    unparseable, or fewer than 3 segments complete)."""
    from leverplus.tracks.mt.data import has_human
    from leverplus.metrics import meta_eval as me
    from leverplus.tracks.mt import metrics as mt

    seg = pd.concat(segs, ignore_index=True)
    seg["id"] = seg["id"].astype(str)
    ids = list(dict.fromkeys(data_df["id"]))
    systems = list(dict.fromkeys(data_df["system"]))
    max_missing = float(cfg["meta_eval"]["max_missing"])
    notes, mats, scorers, excluded = [], {}, {}, {}
    for metric in dict.fromkeys(seg["metric"]):
        g = seg[seg["metric"] == metric]
        wide = g.pivot(index="id", columns="system", values="score").reindex(index=ids, columns=systems)
        M = wide.to_numpy(float)
        n_ok = int(np.isfinite(g["score"].to_numpy(float)).sum())
        bad = 1 - n_ok / len(g) if len(g) else 1.0  # share of the cells it scored without a score
        complete = int((~np.isnan(M).any(axis=1)).sum())
        if bad > max_missing or complete < me.MIN_SEGMENTS:
            why = (f"{metric}: not computable -- {'no' if n_ok == 0 else n_ok} parseable score{'s' * (n_ok != 1)}: "
                   f"{n_ok}/{len(g)} scored cells ({bad:.0%} missing or unparseable, more than max_missing "
                   f"{max_missing}; {complete} segments complete)" if bad > max_missing else
                   f"{metric}: not computable -- {complete} segments with a score for every system "
                   f"(< {me.MIN_SEGMENTS})")
            notes.append(why)
            excluded[metric] = {"status": "not computable", "parseable": n_ok, "scored": int(len(g)),
                                "cells": int(M.size), "reason": why}
            continue
        scored_ids = g["id"].nunique()
        if scored_ids < len(ids):
            notes.append(f"{metric}: scored on {scored_ids} of {len(ids)} segments; its cells use those segments "
                         f"({complete} complete)")
        elif complete < len(ids):
            notes.append(f"{metric}: {len(ids) - complete} segments lack a score for some system; those cells are "
                         f"left out one by one ({int(np.isfinite(M).sum())} of {M.size} cells scored)")
        mats[metric] = -M if metric in mt.LOWER_IS_BETTER else M
    # system level: sacrebleu metrics as corpus scores from summed statistics (the same function as the CLI)
    scorers = {k: f for k, f in mt.system_scorers(seg, pair, ids, systems).items() if k in mats}
    if has_human(data_df):
        from leverplus.tracks.mt.data import human_coverage

        H = data_df.pivot(index="id", columns="system", values="human").reindex(index=ids, columns=systems)
        mats["human"] = H.to_numpy(float)
        cov = human_coverage(data_df)
        if cov["cells"] < cov["of_cells"]:
            by = ", ".join(f"{k} {v}" for k, v in cov["missing_by_system"].items())
            notes.append(f"human: scores for {cov['cells']} of {cov['of_cells']} (segment, system) cells; the missing "
                         f"cells are left out one by one in every correlation with it (missing per system: {by})")
        if int((np.isfinite(mats["human"]).sum(axis=1) >= 2).sum()) < me.MIN_SEGMENTS:
            notes.append("human: fewer than 3 segments with >= 2 scored systems; item-level values are undefined")
    return me.ScoreSet(mats, systems=systems, system_scorers=scorers), notes, excluded


def answer_pair(ss, metrics: list[str], cfg: dict, res: dict) -> dict:
    """Most / least similar metric pair (primary coefficient) with the pairs PERM-BOTH cannot tell apart from it
    (each test on the segments both pairs share), and hierarchical clusters on 1 - coefficient."""
    from scipy.cluster.hierarchy import fcluster, leaves_list, linkage
    from scipy.spatial.distance import squareform

    from leverplus.metrics import meta_eval as me

    m = cfg["meta_eval"]
    coef, grouping = m["primary"]["coef"], m["primary"]["grouping"]
    table = res["levels"][grouping][coef]
    idx = {name: i for i, name in enumerate(res["metrics"])}
    pairs = [(a, b) for a, b in itertools.combinations(metrics, 2)]
    val = {p: table["value"][idx[p[0]]][idx[p[1]]] for p in pairs}
    ci = {p: table["ci95"][idx[p[0]]][idx[p[1]]] for p in pairs}
    ncell = {p: res["n_segments_cell"][idx[p[0]]][idx[p[1]]] for p in pairs}
    out = {"coef": coef, "grouping": grouping, "alpha": m["alpha"], "n_permutations": m["n_permutations"]}

    def extremes(names):
        finite = [p for p in pairs if not math.isnan(val[p]) and p[0] in names and p[1] in names]
        res = {}
        for label, best in (("most_similar", max(finite, key=val.get)), ("least_similar", min(finite, key=val.get))):
            ties, tests = [], []
            for p in finite:
                if p == best:
                    continue
                # PERM-BOTH where the pairs share a metric (exact there); otherwise a paired bootstrap of the
                # correlation difference (PERM-BOTH is not exact without a shared metric)
                t = me.compare_pairs_pairwise(ss, best, p, coef=coef, grouping=grouping,
                                              n_permutations=int(m["n_permutations"]),
                                              n_resamples=int(m.get("n_diff_resamples", 200)), seed=int(m["seed"]))
                tests.append({"pair": list(p), "value": val[p], "n_segments": ncell[p], "diff": t["diff"],
                              "p_value": t["p_value"], "n_segments_test": t["n_segments"],
                              "method": t.get("method", t.get("status"))})
                if not math.isnan(t["p_value"]) and t["p_value"] >= m["alpha"]:
                    ties.append(list(p))
            res[label] = {"pair": list(best), "value": val[best], "ci95": ci[best], "n_segments": ncell[best],
                          "indistinguishable": ties, "tests": tests}
        return res

    out.update(extremes(set(metrics)))
    drop = [x for x in m.get("also_without", []) if x in metrics]
    rest = [x for x in metrics if x not in drop]
    if drop and len(rest) >= 2:
        out["without"] = {"excluded": drop, **extremes(set(rest))}
    # clusters
    k = len(metrics)
    V = np.array([[table["value"][idx[a]][idx[b]] for b in metrics] for a in metrics], float)
    D = np.ones((k, k)) - np.nan_to_num(V, nan=0.0)
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
    ss, notes, excluded = pair_scores(pair, [pd.read_parquet(p) for p in input["segments"]], data_df, cfg)
    m = cfg["meta_eval"]
    metrics = [x for x in ss.metrics if x != "human"]
    names = (["human"] if "human" in ss.metrics else []) + metrics
    full = me.matrices_pairwise(ss, coefficients=m["coefficients"], groupings=m["groupings"],
                                n_resamples=int(m["n_resamples"]), seed=int(m["seed"]), metrics=names)
    res = drop_metric(full, "human") if "human" in names else full
    res["pair"], res["notes"], res["not_computable"] = pair, notes, excluded
    res["questions"] = answer_pair(ss, metrics, cfg, res)
    if "human" in names:
        res["vs_human"] = vs_human(ss, metrics, m, full)
    write_json(output[0], res)


def drop_metric(res: dict, name: str) -> dict:
    """The matrices result without one metric's row and column."""
    import copy

    out = copy.deepcopy(res)
    k = out["metrics"].index(name)
    out["metrics"] = [x for x in out["metrics"] if x != name]

    def cut(M):
        return [[x for j, x in enumerate(row) if j != k] for i, row in enumerate(M) if i != k]

    for _g, per in out["levels"].items():
        if per.get("status"):
            continue
        for t in per.values():
            for key in ("value", "ci95"):
                t[key] = cut(t[key])
    if "n_segments_cell" in out:
        out["n_segments_cell"] = cut(out["n_segments_cell"])
    out.get("coverage", {}).pop(name, None)
    return out


def vs_human(ss, metrics, m, full) -> dict:
    """Each metric against the human scores, WMT-style: coefficient + CI (+ n segments) per grouping; acc23 is
    tie-calibrated as mt-metrics-eval's ``KendallWithTiesOpt`` (epsilon per metric, the uncalibrated value kept as
    ``acc23_eps0``); per (grouping, coef) the metrics a **one-sided** PERM-BOTH (H1: the best metric correlates
    better; mt-metrics-eval's p) cannot separate from the best one -- the WMT "significance cluster" -- each test on
    the cells both metrics and the human scores share."""
    from leverplus.metrics import meta_eval as me

    out = {}
    h = full["metrics"].index("human")
    for g, per in full["levels"].items():
        if per.get("status"):
            out[g] = per
            continue
        out[g] = {}
        for coef, t in per.items():
            rows = {}
            for mt_ in metrics:
                i = full["metrics"].index(mt_)
                rows[mt_] = {"value": t["value"][h][i], "ci95": t["ci95"][h][i],
                             "n_segments": full["n_segments_cell"][h][i]}
                if coef == "acc23":
                    mask = ss.mask(["human", mt_])
                    if mask.sum() >= me.MIN_SEGMENTS:
                        r = me.acc23_calibrated_ci(ss.restrict(["human", mt_], mask), "human", mt_, g,
                                                   n_resamples=int(m["n_resamples"]), seed=int(m["seed"]))
                        rows[mt_].update({"acc23_eps0": rows[mt_]["value"], "value": r["value"],
                                          "ci95": r["ci95"], "epsilon": r["epsilon"],
                                          "tie_calibration": r["method"]})
            ranked = sorted(rows, key=lambda x: -np.nan_to_num(rows[x]["value"], nan=-9))
            best = ranked[0]
            top = [best]
            if g == "none" and coef in ("pearson", "spearman"):
                for other in ranked[1:]:
                    t2 = me.perm_both_pairwise(ss, ("human", best), ("human", other), coef=coef, grouping=g,
                                               n_permutations=int(m["n_permutations"]), seed=int(m["seed"]))
                    rows[other]["p_vs_best"] = t2["p_one_sided"]
                    rows[other]["p_vs_best_two_sided"] = t2["p_value"]
                    rows[other]["n_segments_test"] = t2["n_segments"]
                    if not math.isnan(t2["p_one_sided"]) and t2["p_one_sided"] >= m["alpha"]:
                        top.append(other)
            out[g][coef] = {"metrics": rows, "ranking": ranked, "best_cluster": top if len(top) > 1 or
                            (g == "none" and coef in ("pearson", "spearman")) else None,
                            "cluster_test": "PERM-BOTH, one-sided (best > other), p >= alpha stays in the cluster"}
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
    tests: dict = {}
    for p in input["corpus"]:
        c = read_json(p)
        corpus.setdefault(c["pair"], {}).update(c["corpus"])
        info = {k: c[k] for k in ("note", "judged", "server", "n_requests", "subset", "reference", "prompt",
                                  "n_retried") if c.get(k) is not None}
        if c.get("system_tests"):
            tests.setdefault(c["pair"], {}).update(c["system_tests"])
        if c.get("unparseable") is not None:
            info["n_unparseable"] = len(c["unparseable"])
            info["unparseable_examples"] = c["unparseable"][:3]
        if info:
            families.setdefault(c["pair"], {})[c["family"]] = info
    for pair, meta in metas.items():  # METEOR outside English etc.: the reason, next to the matrices
        meta["not_applicable"] = {metric: per.get("reason") for metric, per in corpus.get(pair, {}).items()
                                  if isinstance(per, dict) and per.get("status") == "not applicable"}
    m = cfg["meta_eval"]
    coef, grouping = m["primary"]["coef"], m["primary"]["grouping"]
    stable = most_stable(metas, coef, grouping)
    report = {"dataset": wildcards["mt_set"], "pairs": list(metas), "primary": m["primary"],
              "system_level_corpus": _corpus_table(corpus), "signatures": _signatures(corpus),
              "meta_eval": metas, "most_stable_pair": stable, "families": families,
              "normalisation_note": "min-max normalisation to [0, 1] is an increasing affine map per metric: it "
                                    "changes no Pearson, Spearman or Kendall value (tests/metrics/test_meta_eval.py)",
              "caveats": cfg.get("caveats", []), "system_tests": tests,
              "human_label": cfg.get("human_label") or (DEMO_HUMAN_LABEL if cfg.get("source") == "demo"
                                                        else "human scores"),
              "not_run": {"bleurt": BLEURT_REASON}}
    write_json(output["json"], report)
    Path(output["md"]).write_text(markdown(report), encoding="utf-8")
    plot(metas, coef, grouping, output["png"])


DEMO_HUMAN_LABEL = "simulated MQM scores (computed from the demo's injected errors; not human judgements)"
BLEURT_REASON = (
    "BLEURT is not run: bleurt-pytorch imports a function transformers 5 removed (so not in .venv), and its "
    "checkpoints (BLEURT-20 and the smaller distilled ones) are hub-only downloads, some gated; nothing here runs "
    "offline. The neural environment (.venv-neural, transformers 4.57) could host it with a checkpoint fetched once")


def _corpus_table(corpus):
    out = {}
    for pair, metrics in corpus.items():
        out[pair] = {}
        for metric, per in metrics.items():
            if isinstance(per, dict) and per.get("status") == "not applicable":
                out[pair][metric] = {"status": "not applicable", "reason": per.get("reason")}
            else:
                out[pair][metric] = {s: {"score": r.get("score"), "n": r.get("n"),
                                         "ci95": r.get("ci95") or r.get("ci95_mean_segment")}
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
        widths = [c[1] - c[0] for c in cis.values() if c and not any(math.isnan(x) for x in c)]
        rows.append({"pair": [a, b], "range": float(v.max() - v.min()), "sd": float(v.std(ddof=1)) if len(v) > 1
                     else 0.0, "mean": float(v.mean()), "values": vals, "ci95": cis,
                     "max_ci_width": float(max(widths)) if widths else float("nan")})
    rows.sort(key=lambda r: r["range"])
    out = {"coef": coef, "grouping": grouping, "criterion": "smallest range across language pairs",
           "best": rows[0] if rows else None, "top5": rows[:5]}
    if rows:
        # uncertainty: a pair whose range is below the best pair's range plus the widest CI of the two is not
        # resolved from it by these data
        b = rows[0]
        tol = b["range"] + max(b["max_ci_width"], 0.0)
        out["not_resolved_from_best"] = [r["pair"] for r in rows[1:] if r["range"] <= tol + max(r["max_ci_width"], 0)
                                         and not math.isnan(r["max_ci_width"])][:10]
        out["uncertainty_rule"] = ("a pair is 'not resolved' from the most stable one when its range is within the "
                                   "two pairs' widest 95% CI widths of the best range")
    return out


def _n_note(n, total):
    return "" if n is None or n == total else f" (n={n})"


def markdown(report: dict) -> str:
    p = report["primary"]
    L = [f"# MT metrics: {report['dataset']}", "",
         f"Primary coefficient: **{p['coef']}**, grouping **{p['grouping']}**; 95% bootstrap CIs over segments; "
         f"pairs compared with PERM-BOTH. n: segments behind a value (x every system) where it is not every "
         f"segment of the pair.", "", report["normalisation_note"], ""]
    for c in report.get("caveats", []):
        L.append(f"- {c}")
    L += ["", "## Most / least similar metric pair per language pair", "",
          "| pair | most similar | value [95% CI] | n | indistinguishable | least similar | value [95% CI] | n | "
          "indistinguishable |", "|---|---|---|---|---|---|---|---|---|"]
    for pair, meta in report["meta_eval"].items():
        q = meta["questions"]
        ms, ls = q["most_similar"], q["least_similar"]
        L.append(f"| {pair} | {' / '.join(ms['pair'])} | {_fmt(ms['value'], ms['ci95'], 4)} | {ms.get('n_segments')} | "
                 f"{', '.join('/'.join(x) for x in ms['indistinguishable']) or 'none'} | {' / '.join(ls['pair'])} | "
                 f"{_fmt(ls['value'], ls['ci95'], 4)} | {ls.get('n_segments')} | "
                 f"{', '.join('/'.join(x) for x in ls['indistinguishable']) or 'none'} |")
    without = {pair: meta["questions"]["without"] for pair, meta in report["meta_eval"].items()
               if meta["questions"].get("without")}
    if without:
        excl = sorted({x for w in without.values() for x in w["excluded"]})
        L += ["", f"Without {', '.join(excl)} (`meta_eval.also_without`; the demo's judge is a random model):", "",
              "| pair | most similar | value [95% CI] | n | least similar | value [95% CI] | n | indistinguishable |",
              "|---|---|---|---|---|---|---|---|"]
        for pair, w in without.items():
            ms, ls = w["most_similar"], w["least_similar"]
            L.append(f"| {pair} | {' / '.join(ms['pair'])} | {_fmt(ms['value'], ms['ci95'], 4)} | {ms['n_segments']} | "
                     f"{' / '.join(ls['pair'])} | {_fmt(ls['value'], ls['ci95'], 4)} | {ls['n_segments']} | "
                     f"{', '.join('/'.join(x) for x in ls['indistinguishable']) or 'none'} |")
    st = report["most_stable_pair"]
    if st["best"]:
        b = st["best"]
        L += ["", "## Most stable pair across language pairs", "",
              f"{' / '.join(b['pair'])}: range {b['range']:.4f}, mean {b['mean']:.4f}; " +
              "; ".join(f"{k} {_fmt(v, b['ci95'][k], 4)}" for k, v in b["values"].items()), "",
              "Next: " + "; ".join(f"{' / '.join(r['pair'])} (range {r['range']:.4f}, mean {r['mean']:.4f})"
                                   for r in st["top5"][1:]), "",
              f"Not resolved from it by the CIs ({st.get('uncertainty_rule', '')}): " +
              (", ".join(" / ".join(x) for x in st.get("not_resolved_from_best", [])) or "none")]
    judged = {pair: f["llm_judge"] for pair, f in report.get("families", {}).items() if "llm_judge" in f}
    if judged:
        L += ["", "## LLM judge", "",
              "Prompt: our own direct-assessment wording in the style of GEMBA-DA_ref (not GEMBA's verbatim prompt; "
              "signature `prompt:leverplus-da-ref`), with the **first reference only**; replies parsed by GEMBA's "
              "rule (one number, `['N']` or `N/100`, in [0, 100]), unparseable ones retried at rising temperature "
              "and then counted as missing.", "",
              "| pair | parseable scores | segments judged | server | correlations |", "|---|---|---|---|---|"]
        for pair, f in judged.items():
            j = f.get("judged", {})
            meta = report["meta_eval"].get(pair, {})
            nc = meta.get("not_computable", {}).get("llm_judge")
            head = ("no parseable scores: " if j.get("parseable") == 0 else "") + \
                f"{j.get('parseable')}/{j.get('requests')} ({100 * (j.get('parse_rate') or 0):.0f}%)"
            where = "not computable" if nc else \
                f"in the matrices (n={meta.get('coverage', {}).get('llm_judge')} segments)"
            L.append(f"| {pair} | {head} | {j.get('segments')}/{j.get('of_segments')} x systems | "
                     f"{f.get('server', {}).get('mode', 'endpoint')} | {where} |")
    notes = [(pair, fam, f["note"]) for pair, fs in report.get("families", {}).items() for fam, f in fs.items()
             if f.get("note")]
    subsets = [(pair, fam, f["subset"]) for pair, fs in report.get("families", {}).items() for fam, f in fs.items()
               if f.get("subset")]
    if notes or subsets:
        L += ["", "## Family notes", ""] + [f"- {pair} {fam}: {n}" for pair, fam, n in notes]
        L += [f"- {pair} {fam}: scored on the first {sub['segments']} of {sub['of_segments']} segments "
              f"(`{sub['setting']}`, for cost); its correlation cells use those segments" for pair, fam, sub in subsets]
    L += ["", "## Clusters (average linkage on 1 - coefficient)", ""]
    for pair, meta in report["meta_eval"].items():
        cl = meta["questions"]["clusters"]
        L.append(f"- {pair} (cut {cl['cut_distance']}): " + " | ".join(", ".join(g) for g in cl["groups"]))
    L += ["", "## System-level corpus scores", ""]
    for pair, metrics in report["system_level_corpus"].items():
        systems = sorted({s for per in metrics.values() if "status" not in per for s in per})
        from leverplus.tracks.mt.metrics import primary_lexical

        prim = primary_lexical(pair)
        L += [f"### {pair}", "", f"Primary lexical metric for this target: {prim}"
              + (" (the field's convention for this target: BLEU depends on a tokenizer that differs between papers)"
                 if prim != "bleu" else ""), "",
              "| metric | n | " + " | ".join(systems) + " |", "|---" * (len(systems) + 2) + "|"]
        reasons = []
        for metric, per in metrics.items():
            if "status" in per:
                L.append(f"| {metric} | - | " + " | ".join([per["status"]] * len(systems)) + " |")
                reasons.append(f"- {metric}: {per['status']} -- {per.get('reason')}")
            else:
                ns = {per[s].get("n") for s in systems if s in per}
                L.append(f"| {metric} | {'/'.join(str(x) for x in sorted(ns, key=str))} | " + " | ".join(
                    _fmt(per[s]["score"], None, 2) if per.get(s, {}).get("score") is not None else
                    "no parseable scores" for s in systems) + " |")
        L += [""] + reasons + ([""] if reasons else [])
    for pair, meta in report["meta_eval"].items():
        L += [f"## {pair}: metric x metric ({p['coef']}, {p['grouping']})", ""]
        names = meta["metrics"]
        t = meta["levels"][p["grouping"]][p["coef"]]
        ncell = meta.get("n_segments_cell")
        total = meta["n_segments"]
        L += ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for i, a in enumerate(names):
            L.append(f"| {a} | " + " | ".join(
                _fmt(t["value"][i][j], t["ci95"][i][j], 2) + (_n_note(ncell[i][j], total) if ncell else "")
                for j in range(len(names))) + " |")
        for a in meta.get("not_applicable", {}):
            L.append(f"| {a} | " + " | ".join(["not applicable"] * len(names)) + " |")
        for a in meta.get("not_computable", {}):
            L.append(f"| {a} | " + " | ".join(["not computable"] * len(names)) + " |")
        L.append("")
        for a, why in meta.get("not_applicable", {}).items():
            L.append(f"- {a}: not applicable -- {why}")
        for n in meta.get("notes", []):
            L.append(f"- {n}")
        if "vs_human" in meta:
            L += ["", f"Against the {report.get('human_label', 'human scores')} ({p['coef']}, {p['grouping']}):", ""]
            vh = meta["vs_human"][p["grouping"]][p["coef"]]
            for name in vh["ranking"]:
                r = vh["metrics"][name]
                L.append(f"- {name}: {_fmt(r['value'], r['ci95'])}{_n_note(r.get('n_segments'), total)}" +
                         (f" (one-sided PERM-BOTH p vs best {r['p_vs_best']:.3f})" if "p_vs_best" in r else "") +
                         (f" (tie-calibrated, epsilon {r['epsilon']:.4g}; uncalibrated {r['acc23_eps0']:.3f})"
                          if "epsilon" in r else ""))
            acc = meta["vs_human"].get(p["grouping"], {}).get("acc23")
            if acc and p["coef"] != "acc23":
                L.append("- acc23 (tie-calibrated as mt-metrics-eval's KendallWithTiesOpt): " + "; ".join(
                    f"{k} {_fmt(v['value'], v['ci95'])}" for k, v in acc["metrics"].items()))
        L.append("")
    if report.get("system_tests"):
        L += ["## System vs system (paired tests, as sacrebleu --paired-bs / --paired-ar)", ""]
        for pair, per in report["system_tests"].items():
            for metric, t in per.items():
                L.append(f"- {pair} {metric}: {t['test']} ({t['n_samples']} samples, seed {t['seed']}, "
                         f"{t['n_segments']} segments, {t['statistics']}), baseline {t['baseline']}: " + "; ".join(
                             f"{name} {r['score']:.2f}" + (f" (diff {r['diff']:+.2f}, p {r['p_value']:.4f})"
                                                           if r.get("p_value") is not None else "")
                             for name, r in t["systems"].items()))
        L.append("")
    for name, why in report.get("not_run", {}).items():
        L += [f"- {name}: {why}"]
    L += ["", "Signatures:", ""]
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
        ncell = np.asarray(meta.get("n_segments_cell") or np.full((len(meta["metrics"]),) * 2, meta["n_segments"]))
        ncell = ncell[np.ix_(idx, idx)]
        for i in range(len(names)):
            for j in range(len(names)):
                txt = f"{V[i, j]:.2f}" + (f"\nn={ncell[i, j]}" if ncell[i, j] != meta["n_segments"] else "")
                ax.text(j, i, txt, ha="center", va="center", fontsize=4.5, color="w" if V[i, j] < 0.6 else "k")
        ax.set_title(f"{pair}: {coef} ({grouping}); n={meta['n_segments']} segments x {meta['n_systems']} systems "
                     f"unless marked", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
