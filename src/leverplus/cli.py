"""``leverplus`` command line.

Subcommands are registered in :data:`SUBCOMMANDS` (name -> function that adds an
argparse subparser and sets ``func``); add a new one by writing ``_add_<name>`` and
listing it there.

    leverplus score vqa|caption|classification|latency --predictions P [--references R] ...
    leverplus compare A B --references R [--task vqa|caption|classification] ...
    leverplus bench-infoscore --model M --dataset D [--anchors 4 --cand-num 32 --order right] ...
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


class CLIError(Exception):
    pass


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if callable(obj):
        return None
    return obj


def _emit(result: dict, out: str | None) -> None:
    text = json.dumps(_jsonable(result), indent=2, ensure_ascii=False) + "\n"
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _read(path: str):
    from leverplus.metrics.io import read_table

    return read_table(path)


def _common(p: argparse.ArgumentParser, *, references_required: bool = True) -> None:
    p.add_argument("--predictions", required=True, help="predictions file (.jsonl or .parquet)")
    p.add_argument("--references", required=references_required, help="references file (.jsonl or .parquet)")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def _add_vqa_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    from leverplus.metrics.vqa import DEFAULT_VQA_EVAL, VQA_EVALS

    p.add_argument("--stem", action="store_true",
                   help=f"{prefix}OK-VQA answer stemming of predictions (OpenFlamingo ok_vqa_utils with NLTK tokenisation; the signature says okvqa-nltk or okvqa-nltk-approx; off by default)")
    p.add_argument("--vqa-eval", choices=list(VQA_EVALS), default=DEFAULT_VQA_EVAL,
                   help=f"{prefix}VQA evaluation variant (default {DEFAULT_VQA_EVAL}: GT-Vision-Lab/VQA master a013f00; "
                        "official_2016: 458a8b2; lever_lm: Lever-LM / OpenFlamingo v2); see docs/metrics.md")


def _csv_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ----------------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------------
def _score_vqa(a) -> dict:
    from leverplus.metrics.vqa import score_vqa

    result = score_vqa(_read(a.predictions), _read(a.references), stem=a.stem, vqa_eval=a.vqa_eval,
                       n_resamples=a.n_resamples, seed=a.seed, pred_name=a.predictions, ref_name=a.references)
    warn = result.get("answer_count_warning")
    if warn:
        print(f"leverplus score vqa: {a.references}: {warn['n_questions']} question(s) without {warn['expected']} answers "
              f"(counts {warn['answer_counts']}, first row {warn['first'][0]['row']}); scored as the reference code does",
              file=sys.stderr)
    return result


def _bertscore_kwargs(a) -> dict:
    kw = {"idf": a.bertscore_idf, "rescale_with_baseline": not a.no_rescale}
    if a.bertscore_model:
        kw["model_type"] = a.bertscore_model
    if a.bertscore_layers is not None:
        kw["num_layers"] = a.bertscore_layers
    if a.bertscore_baseline:
        kw["baseline_path"] = a.bertscore_baseline
    return kw


def _score_caption(a) -> dict:
    from leverplus.metrics.text import score_caption

    return score_caption(
        _read(a.predictions), _read(a.references), lang=a.lang, metrics=_csv_list(a.metrics),
        bleu_tokenize=a.bleu_tokenize, rouge_tokenizer=a.rouge_tokenizer,
        bertscore_kwargs=_bertscore_kwargs(a), short_chars=a.short_chars,
        similarity_kwargs={"model_dir": a.similarity_model, "pooling": a.similarity_pooling},
        n_resamples=a.n_resamples, seed=a.seed,
    )


def _score_classification(a) -> dict:
    from leverplus.metrics.classification import score_classification

    return score_classification(_read(a.predictions), _read(a.references), pos_label=a.pos_label,
                                n_resamples=a.n_resamples, seed=a.seed)


def _score_latency(a) -> dict:
    from leverplus.metrics.latency import summarize_latency

    return summarize_latency(_read(a.predictions), n_resamples=a.n_resamples, seed=a.seed)


def _add_caption_options(p: argparse.ArgumentParser) -> None:
    from leverplus.metrics.text import ALL_METRICS, DEFAULT_METRICS

    p.add_argument("--lang", help="language code or name (tokenisation from leverplus.metrics.languages: zh, hi, "
                                  "th, ja, ko, en, ...; default: none given, BLEU 13a)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all but bertscore)")
    p.add_argument("--bleu-tokenize", help="sacrebleu tokenizer override (default: the language's, e.g. zh, intl "
                                           "for Hindi, ja-mecab; 13a when no language is given)")
    p.add_argument("--rouge-tokenizer", choices=["script", "char", "jieba", "default"],
                   help="ROUGE/CIDEr tokens (default script: every script kept, one token per CJK character, Thai "
                        "segmented by pythainlp; char = script; jieba; default = rouge_score's ASCII-only one)")
    p.add_argument("--bertscore-model", help="bert_score model name or local model directory")
    p.add_argument("--bertscore-layers", type=int, help="layer (required with a local model directory)")
    p.add_argument("--bertscore-baseline", help="baseline file (bert_score CSV format; required with a local model)")
    p.add_argument("--bertscore-idf", action="store_true", help="idf weighting computed on the references")
    p.add_argument("--no-rescale", action="store_true", help="report raw BERTScore (no baseline rescaling)")
    p.add_argument("--similarity-model", help="similarity: local sentence-embedding model directory (SECap: text2vec)")
    p.add_argument("--similarity-pooling", choices=["mean", "cls"], default="mean",
                   help="similarity: pooling of the token states (default mean, as text2vec)")
    p.add_argument("--short-chars", type=int, default=6,
                   help="length: outputs with at most this many characters count as short (default 6)")


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="rescore a predictions file against references (no model is run)")
    tasks = p.add_subparsers(dest="task", required=True, metavar="{vqa,caption,classification,latency,mt}")

    q = tasks.add_parser("vqa", help="VQA accuracy (--vqa-eval variant); references need 'answers'")
    _common(q)
    _add_vqa_options(q)
    q.set_defaults(func=_score_vqa)

    c = tasks.add_parser("caption", help="BLEU, chrF, chrF++, TER, ROUGE, CIDEr-D, lengths, BERTScore, sentence "
                                         "similarity, the biased document-style BLEU/CIDEr (doc_bleu, doc_cider)")
    _common(c)
    _add_caption_options(c)
    c.set_defaults(func=_score_caption)

    k = tasks.add_parser("classification", help="accuracy, per-class P/R/F1, macro-F1, AUC-ROC, confusion matrix")
    _common(k)
    k.add_argument("--pos-label", help="positive class for a scalar 'score' (AUC-ROC)")
    k.set_defaults(func=_score_classification)

    t = tasks.add_parser("latency", help="TTFT, total time, decode and end-to-end token rates")
    _common(t, references_required=False)
    t.set_defaults(func=_score_latency)

    from leverplus.tracks.mt.cli import add_score_mt

    add_score_mt(tasks)


# ----------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------
def _compare(a) -> dict:
    from leverplus.metrics import stats
    from leverplus.metrics.io import MetricsInputError

    pa, pb, refs = _read(a.a), _read(a.b), _read(a.references)
    if "id" not in pa.columns or "id" not in pb.columns:
        raise MetricsInputError("both prediction files need an 'id' column")
    ida, idb = pa["id"].astype(str), pb["id"].astype(str)
    if set(ida) != set(idb) or len(ida) != len(idb):
        raise MetricsInputError(
            f"A and B must cover the same ids ({len(set(ida) - set(idb))} only in A, {len(set(idb) - set(ida))} only in B)"
        )
    pb_file = pb
    pb = pb.set_index(pb["id"].astype(str)).loc[ida.tolist()].reset_index(drop=True)
    kw = {"n_resamples": a.n_resamples, "seed": a.seed}
    out: dict = {"task": a.task, "a": a.a, "b": a.b, "references": a.references}
    if a.task == "vqa":
        from leverplus.metrics.vqa import vqa_accuracy_per_item, vqa_settings
        from leverplus.metrics.signature import make_signature

        scoring = {"stem": a.stem, "vqa_eval": a.vqa_eval}
        va = vqa_accuracy_per_item(pa, refs, **scoring, pred_name=a.a, ref_name=a.references)
        # B is checked in its own row order first (its error names B's rows), then scored in A's id order
        vqa_accuracy_per_item(pb_file, refs, **scoring, pred_name=a.b, ref_name=a.references)
        vb = vqa_accuracy_per_item(pb, refs, **scoring)
        pbs = stats.paired_bootstrap(va, vb, **kw)
        out.update(metric="vqa_accuracy", n=pbs["n"], score_a=round(100 * float(sum(va.tolist())) / va.size, 2),
                   score_b=round(100 * float(sum(vb.tolist())) / vb.size, 2),
                   diff=round(100 * pbs["diff"], 2), ci95=[round(100 * x, 2) for x in pbs["ci95"]],
                   p_value=pbs["p_value"],
                   signature=make_signature("vqa_accuracy", vqa_settings(**scoring, **kw)) + "|test:paired-bootstrap")
    elif a.task == "classification":
        from leverplus.metrics.io import align

        ma = align(pa, refs, ["prediction"], ["label"])
        mb = align(pb, refs, ["prediction"], ["label"])
        ca = (ma["prediction"].astype(str) == ma["label"].astype(str)).to_numpy(dtype=float)
        cb = (mb["prediction"].astype(str) == mb["label"].astype(str)).to_numpy(dtype=float)
        pbs = stats.paired_bootstrap(ca, cb, **kw)
        out.update(metric="accuracy", n=pbs["n"], score_a=float(ca.mean()), score_b=float(cb.mean()),
                   diff=pbs["diff"], ci95=pbs["ci95"], p_value=pbs["p_value"], mcnemar=stats.mcnemar(ca, cb))
    elif a.task == "caption":
        from leverplus.metrics import text

        ha, refs_a, _ = text.caption_inputs(pa, refs)
        hb, refs_b, _ = text.caption_inputs(pb, refs)
        metric = a.metric
        if metric in ("bleu", "chrf", "chrf++", "ter"):
            obj = text.sacrebleu_metric(metric, lang=a.lang, tokenize=a.bleu_tokenize)
            ha, refs_a, _ = text.lexical_texts(ha, refs_a, lang=a.lang, tokenize=a.bleu_tokenize)
            hb, _, _ = text.lexical_texts(hb, refs_b, lang=a.lang, tokenize=a.bleu_tokenize)
            streams = text._ref_streams(refs_a)
            ra = np.asarray(obj._extract_corpus_statistics(ha, streams), dtype=float)
            rb = np.asarray(obj._extract_corpus_statistics(hb, streams), dtype=float)

            def stat(rows):
                return obj._compute_score_from_stats(np.asarray(rows).sum(axis=0)).score

            pbs = stats.paired_bootstrap(ra, rb, statistic=stat, **kw)
            obj.corpus_score(ha, streams)
            out.update(signature=str(obj.get_signature()))
        else:
            raise CLIError(f"compare caption supports --metric bleu, chrf, chrf++, ter (got {metric!r})")
        out.update(metric=metric, n=pbs["n"], diff=pbs["diff"], ci95=pbs["ci95"], p_value=pbs["p_value"])
    out["test"] = {"method": "paired-bootstrap-percentile", "n_resamples": a.n_resamples, "seed": a.seed}
    return out


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="paired test between two systems' predictions on the same items")
    p.add_argument("a", help="predictions of system A")
    p.add_argument("b", help="predictions of system B")
    p.add_argument("--references", required=True)
    p.add_argument("--task", choices=["vqa", "caption", "classification"], default="vqa")
    p.add_argument("--metric", default="bleu", help="caption only: bleu, chrf, chrf++ or ter (default bleu)")
    p.add_argument("--lang")
    p.add_argument("--bleu-tokenize")
    _add_vqa_options(p, prefix="vqa only: ")
    p.add_argument("--out")
    p.add_argument("--n-resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_compare)


# ----------------------------------------------------------------------------------
# bench-infoscore
# ----------------------------------------------------------------------------------
def _bench_infoscore(a) -> dict:
    from leverplus.tracks.vqa.bench import bench_dataset, bench_infoscore

    model, dataset, adapter, breakdown = a.model, a.dataset, a.adapter, a.breakdown
    arch = None
    if a.arch:
        from leverplus.tracks.vqa.models.real_size import arch_spec, build_arch

        spec = arch_spec(a.arch)
        work = Path(a.work_dir or f"data/bench/{a.arch}")
        dataset = dataset or str(bench_dataset(work.parent / f"images_{a.image_width}x{a.image_height}",
                                               width=a.image_width, height=a.image_height))
        corpus = [r for r in _bench_corpus(dataset)]
        model = str(build_arch(a.arch, work, corpus, seed=a.seed))
        adapter, breakdown = spec["adapter"], True
        arch = {"name": a.arch, "published": spec["published"], "model_dir": model,
                "image_size": [a.image_width, a.image_height]}
    if not model or not dataset:
        raise CLIError("bench-infoscore needs --model and --dataset, or --arch")
    out = bench_infoscore(
        model, dataset, a.anchors, a.cand_num, a.beam_size, a.shot_num, a.order,
        adapter=adapter, seed=a.seed, threads=a.threads, device=a.device, batch_size=a.batch_size,
        repeats=a.repeats, dtype=a.dtype, breakdown=breakdown, original_batch=a.original_batch,
        paths=a.paths.split(","), warmup=not a.no_warmup, unit_costs=_unit_costs_arg(a.unit_costs),
    )
    if arch:
        out["arch"] = arch
    out["command"] = "leverplus " + " ".join(getattr(a, "argv", None) or ["bench-infoscore"])
    return out


def _unit_costs_arg(value: str):
    if value in ("none", ""):
        return None
    if value == "measure":
        return "measure"
    from leverplus.tracks.vqa.cost import load_unit_costs

    return {**load_unit_costs(value), "source": value}


def _bench_costs(a) -> dict:
    """Unit costs of one model (leverplus.tracks.vqa.cost), measured on this machine."""
    import torch

    from leverplus.tracks.vqa.bench import bench_anchors, bench_dataset
    from leverplus.tracks.vqa.cost import measure_unit_costs, row_shape
    from leverplus.tracks.vqa.data.records import examples, load_split
    from leverplus.tracks.vqa.models.base import load_icl_model

    model, dataset, adapter = a.model, a.dataset, a.adapter
    arch = None
    if a.arch:
        from leverplus.tracks.vqa.models.real_size import arch_spec, build_arch

        spec = arch_spec(a.arch)
        work = Path(a.work_dir or f"data/bench/{a.arch}")
        dataset = dataset or str(bench_dataset(work.parent / f"images_{a.image_width}x{a.image_height}",
                                               width=a.image_width, height=a.image_height))
        # built in a child process: the builder's copy of the model (~10 GB at real size) must not share this
        # process's memory with the copy being measured (measured in the same process, vision ran 2x slower)
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as pool:
            model = str(pool.apply(build_arch, (a.arch, work, _bench_corpus(dataset)), {"seed": a.seed}))
        adapter = spec["adapter"]
        arch = {"name": a.arch, "published": spec["published"], "image_size": [a.image_width, a.image_height]}
    if not model or not dataset:
        raise CLIError("bench-costs needs --model and --dataset, or --arch")
    if a.threads:
        torch.set_num_threads(a.threads)
    anchors, pools = bench_anchors(examples(load_split(dataset, "train")), 2, 8, a.seed)
    m = load_icl_model(adapter, model, device=a.device, dtype=a.dtype)
    out = measure_unit_costs(m, anchors[0].image, row_shape(m, anchors, pools), batches=tuple(a.batches),
                             repeats=a.repeats)
    out["command"] = "leverplus " + " ".join(getattr(a, "argv", None) or ["bench-costs"])
    if arch:
        out["arch"] = arch
    return out


def _add_bench_costs(sub) -> None:
    p = sub.add_parser("bench-costs", help="unit costs of a model on this machine, for the cost model (plan)")
    p.add_argument("--model")
    p.add_argument("--dataset")
    p.add_argument("--adapter", default="qwen2_5_vl")
    p.add_argument("--arch", help="instead of --model: a random-init model of a published size (see bench-infoscore)")
    p.add_argument("--work-dir")
    p.add_argument("--image-width", type=int, default=640)
    p.add_argument("--image-height", type=int, default=480)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="smallest and largest batch measured")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (at least 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out")
    p.set_defaults(func=_bench_costs)


def _bench_corpus(dataset: str) -> list[str]:
    """Texts the bench tokenizer is trained on: the dataset's questions and answers."""
    from leverplus.tracks.vqa.data.records import load_split

    df = load_split(dataset, "train")
    return sorted(set(df["question"].astype(str)) | set(df["answer"].astype(str)))


def _add_bench_infoscore(sub) -> None:
    p = sub.add_parser(
        "bench-infoscore",
        help="InfoScore beam search, original algorithm vs ours: throughput ratio and largest score difference",
    )
    p.add_argument("--model", help="model directory (HF layout), e.g. data/models/tiny_vl")
    p.add_argument("--dataset", help="dataset directory with train.parquet, e.g. data/demo")
    p.add_argument("--arch", help="instead of --model: a random-init model of a published size, built locally "
                   "(qwen2.5_vl_3B, flamingo_3B; models/real_size.py), on 640x480 images; implies --breakdown")
    p.add_argument("--work-dir", help="--arch: where the model directory is built (default data/bench/<arch>)")
    p.add_argument("--image-width", type=int, default=640)
    p.add_argument("--image-height", type=int, default=480)
    p.add_argument("--dtype", default="float32", help="model dtype (float32, bfloat16)")
    p.add_argument("--breakdown", action="store_true",
                   help="also report time per component (vision, shared prefix, suffix, LM head) and peak memory")
    p.add_argument("--adapter", default="qwen2_5_vl", help="ICL model adapter (default qwen2_5_vl)")
    p.add_argument("--anchors", type=int, default=4, help="anchors searched (default 4)")
    p.add_argument("--cand-num", type=int, default=32, help="pool size per anchor (default 32)")
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--shot-num", type=int, default=2)
    p.add_argument("--order", choices=["left", "right"], default="right", help="construct order (default right)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor and pool draw")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both paths (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32, help="rows per batched forward in our path")
    p.add_argument("--original-batch", type=int, default=32,
                   help="rows per forward of the batched original (Lever-LM's get_info_score batch_size; default 32)")
    p.add_argument("--paths", default="reference,original,ours",
                   help="paths to run, comma-separated: reference (original at batch 1), original (batched), ours")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up call of each run")
    p.add_argument("--unit-costs", default="measure",
                   help="cost model: 'measure' (default: unit costs measured first), a unit-cost JSON "
                        "(leverplus bench-costs), or 'none'; gives predicted times and the analytic limit")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each path, alternating, fresh adapters each time; the fastest counts (default 3)")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.set_defaults(func=_bench_infoscore)


def _bench_infer(a) -> dict:
    from leverplus.tracks.vqa.bench import bench_dataset, bench_infer

    model, dataset, adapter, arch = a.model, a.dataset, a.adapter, None
    if a.arch:
        from leverplus.tracks.vqa.models.real_size import arch_spec, build_arch

        spec = arch_spec(a.arch)
        work = Path(a.work_dir or f"data/bench/{a.arch}")
        dataset = dataset or str(bench_dataset(work.parent / "images_640x480"))
        model = str(build_arch(a.arch, work, _bench_corpus(dataset), seed=a.seed))
        adapter, arch = spec["adapter"], {"name": a.arch, "published": spec["published"], "model_dir": model}
    if not model or not dataset:
        raise CLIError("bench-infer needs --model and --dataset, or --arch")
    out = bench_infer(model, dataset, adapter=adapter, n_queries=a.queries, shot=a.shot, batch_size=a.batch_size,
                      max_new_tokens=a.max_new_tokens, seed=a.seed, threads=a.threads, device=a.device,
                      dtype=a.dtype, repeats=a.repeats)
    if arch:
        out["arch"] = arch
    return out


def _add_bench_infer(sub) -> None:
    p = sub.add_parser("bench-infer", help="inference throughput at batch size 1 vs the configured batch size")
    p.add_argument("--model", help="model directory (HF layout), e.g. data/models/tiny_vl")
    p.add_argument("--dataset", help="dataset directory with train/val parquet, e.g. data/demo")
    p.add_argument("--adapter", default="qwen2_5_vl")
    p.add_argument("--arch", help="instead of --model: a random-init model of a published size (see bench-infoscore)")
    p.add_argument("--work-dir")
    p.add_argument("--queries", type=int, default=64, help="val queries (default 64)")
    p.add_argument("--shot", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16, help="the batched run's batch size (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out")
    p.set_defaults(func=_bench_infer)


def _plan(a) -> dict:
    from leverplus.tracks.vqa import plan as planner

    config = planner.load_config(a.configfile or [], base=tuple(a.base_config or planner.WORKFLOW_CONFIGS), schema=a.schema)
    measured = dict(planner.shipped_measurements())
    for item in a.measured or []:
        model, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        name, m = planner.measurement_from_bench(path)
        model = model or name
        if not model:
            raise CLIError(f"--measured {item}: the file names no arch; write MODEL=FILE")
        measured[model] = m
    unit_costs = dict(planner.shipped_unit_costs())
    for item in a.unit_costs or []:
        model, sep, path = item.partition("=")
        if not sep:
            raise CLIError(f"--unit-costs {item}: write MODEL=FILE")
        from leverplus.tracks.vqa.cost import load_unit_costs

        unit_costs[model] = {**load_unit_costs(path), "command": load_unit_costs(path).get("command", path)}
    result = planner.plan(config, measured, a.dataset or None, unit_costs=unit_costs)
    if not a.out:
        print(planner.plan_markdown(result))
        return None  # printed; nothing more to emit
    return result


def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="scored sequences and estimated hours of a config's beam searches, per path")
    p.add_argument("--configfile", action="append", help="merged over config/config.yaml, as Snakemake does")
    p.add_argument("--dataset", action="append", help="datasets to plan (default: every non-demo dataset)")
    p.add_argument("--measured", action="append",
                   help="a bench-infoscore JSON (or MODEL=FILE) overriding the shipped measurements")
    p.add_argument("--base-config", action="append", default=None,
                   help="the workflow's config files (default: the Snakefile's, config/config.yaml config/vqa_demo.yaml)")
    p.add_argument("--schema", default="config/config.schema.yaml")
    p.add_argument("--unit-costs", action="append", metavar="MODEL=FILE",
                   help="a unit-cost JSON (leverplus bench-costs) for MODEL, overriding the shipped one")
    p.add_argument("--out", help="write the plan as JSON here (default: print the markdown table)")
    p.set_defaults(func=_plan)


from leverplus.tracks.mt.cli import add_meta_eval as _add_meta_eval  # noqa: E402 (MT track, issue 14)

SUBCOMMANDS: dict[str, Callable] = {
    "score": _add_score,
    "compare": _add_compare,
    "bench-infoscore": _add_bench_infoscore,
    "bench-costs": _add_bench_costs,
    "meta-eval": _add_meta_eval,
    "bench-infer": _add_bench_infer,
    "plan": _add_plan,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leverplus", description="Lever-Plus command line")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what the command line said (recorded by benches)
    from leverplus.metrics.io import MetricsInputError

    try:
        result = args.func(args)
    except (MetricsInputError, CLIError, FileNotFoundError) as exc:
        print(f"leverplus: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"leverplus: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        _emit(result, getattr(args, "out", None))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
