"""Glue of rules/sentiment.smk: download → model → arms (train + predict) → score → aggregate.

Chain: rule ``sentiment_<stage>`` → ``workflow/scripts/sentiment_<stage>.py`` → the function of the same name here →
``leverplus.tracks.sentiment.arms`` (the arms: training, early stopping, frozen-weight digests, label-scoring
variants) and ``leverplus.tracks.sentiment.report`` (scoring, comparison, sweep tables, AUC check, PNG).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from leverplus.core.io import write_json, write_parquet

# the sentiment track's arm registry: the rules (wildcards, runs), the schema check (tests/test_registries.py), the
# report's names and the plots read these
ARMS = ("zero_shot", "head_last", "head_mean", "lora_head", "lora_label")
HEAD_ARMS = ("head_last", "head_mean", "lora_head")  # trained through head_arm (one job per arm and seed)
LABEL_ARMS = ("zero_shot", "lora_label")  # score label tokens: they have the verbaliser sweep
TRAINED_ARMS = tuple(a for a in ARMS if a != "zero_shot")  # one run per training seed

__all__ = ["check_config", "download", "model", "zero_shot", "head_arm", "lora_label_pair", "lora_label_gather", "score",
           "aggregate", "arm_config"]


# ---------------------------------------------------------------------------------------------------------------------
# config (parse time, from rules/sentiment.smk; no torch)
# ---------------------------------------------------------------------------------------------------------------------
def check_config(sent: dict) -> None:
    """The sentiment track's reference checks, run by the one loader on the loaded block (rules/sentiment_common.smk:
    ``load_track(config, "sentiment", schema, check=check_config)``)."""
    from leverplus.core.config import ConfigError

    for name, ds in sent["datasets"].items():
        if ds["model"] not in sent["models"]:
            raise ConfigError(f"invalid config: sentiment.datasets.{name}.model: {ds['model']!r} is not a key of "
                              f"sentiment.models {sorted(sent['models'])}")
        if ds["source"] in ("local", "hf") and "files" not in ds:
            raise ConfigError(f"invalid config: sentiment.datasets.{name}: source {ds['source']} needs files")
        if ds["source"] == "local" and "path" not in ds:
            raise ConfigError(f"invalid config: sentiment.datasets.{name}: source local needs path")
        if ds["source"] == "hf" and "repo_id" not in ds:
            raise ConfigError(f"invalid config: sentiment.datasets.{name}: source hf needs repo_id")
    for name, m in sent["models"].items():
        if m["source"] == "hf" and "repo_id" not in m:
            raise ConfigError(f"invalid config: sentiment.models.{name}: source hf needs repo_id")
        if m["source"] == "local" and "path" not in m:
            raise ConfigError(f"invalid config: sentiment.models.{name}: source local needs path")
    for name, run in sent["runs"].items():
        if run["labels"]["main"] not in run["labels"]["pairs"]:
            raise ConfigError(f"invalid config: sentiment.labels.main: {run['labels']['main']!r} is not a key of "
                              f"sentiment.labels.pairs {sorted(run['labels']['pairs'])} (dataset {name}'s run)")


# ---------------------------------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------------------------------
def download(*, input, output, params, wildcards, threads) -> None:
    from leverplus.tracks.sentiment.data import prepare_dataset

    frames, manifest = prepare_dataset(params["spec"], raw_dir=f"data/raw/sentiment/{wildcards['sent_set']}")
    for split, df in frames.items():
        write_parquet(output[split], df[["id", "text", "label"]])
    manifest["dataset"] = wildcards["sent_set"]
    write_json(output.manifest, manifest)
    print(json.dumps(manifest["counts"]))


def model(*, input, output, params, wildcards, threads) -> None:
    """data/sentiment/models/<name>: the shipped demo LM (copied), or an HF snapshot / local directory."""
    import shutil

    from leverplus.core.hf_snapshot import materialize_model

    spec = params["spec"]
    dest = Path(output[0])
    if spec["source"] == "demo":
        from leverplus.tracks.sentiment.assets import TINY_LM_DIR

        if dest.exists() or dest.is_symlink():
            shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
        tmp = dest.with_name(f".{dest.name}.copy")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(TINY_LM_DIR, tmp)
        tmp.rename(dest)
        print(f"copied the shipped tiny LM {TINY_LM_DIR} -> {dest}")
    else:
        materialize_model(spec, dest)


# ---------------------------------------------------------------------------------------------------------------------
# arms (leverplus.tracks.sentiment.arms does the work; this maps the config and writes the files)
# ---------------------------------------------------------------------------------------------------------------------
def arm_config(cfg: Mapping, *, dtype: str, label_pair=None, seed: int | None = None) -> dict:
    """The ``config`` dict of :func:`leverplus.tracks.sentiment.arms.arm_settings` from the track's config slice
    (``seed``: the training seed of this run; default the first of ``train.seeds``)."""
    prompt, labels, train = cfg["prompt"], cfg["labels"], cfg["train"]
    pair = label_pair if label_pair is not None else labels["pairs"][labels["main"]]
    return {
        "seed": int(seed if seed is not None else train["seeds"][0]),
        "template": {k: prompt[k] for k in ("use_chat_template", "enable_thinking", "system", "instruction")},
        "label_pair": list(pair),
        "max_text_chars": prompt["max_text_chars"],
        "batch_size": cfg["predict"]["batch_size"],
        "dtype": dtype,
        "device": cfg.get("compute", {}).get("device", "auto"),
        "content_free": list(labels["content_free"]),
        **{k: dict(train[k]) for k in ("head", "lora", "lora_head", "lora_label")},
    }


def pair_name(pair) -> str:
    return "/".join(pair)


def _splits(input):
    import pandas as pd

    return tuple(pd.read_parquet(input[s]) for s in ("train", "val", "test"))


def _device_note() -> dict:
    """What the job saw (the device the arm ran on is the record's ``device``, from ``compute.device``)."""
    import torch

    return {"cuda_available": bool(torch.cuda.is_available()), "torch_threads": torch.get_num_threads()}


def _finish_record(record: dict) -> dict:
    """``frozen_unchanged``: embedding and LM-head bytes and their tying equal before and after (the arm already
    raised otherwise; this puts the comparison in the results)."""
    before, after = record.get("frozen_before"), record.get("frozen_after")
    keys = ("embed_tokens", "lm_head", "tied")
    record["frozen_unchanged"] = None if before is None else all(before[k] == after[k] for k in keys)
    return record


def zero_shot(*, input, output, params, wildcards, threads) -> None:
    """A: label scoring of the test items with every label pair and variant (the sweep); the arm's predictions are
    the main pair's uncalibrated row."""
    from leverplus.tracks.sentiment import arms as sa

    cfg = params["cfg"]
    _, _, test = _splits(input)
    pairs = [cfg["labels"]["pairs"][k] for k in cfg["labels"]["order"]]
    sweep, record = sa.arm_zero_shot(input.model, test, config=arm_config(cfg, dtype=params["dtype"]),
                                     label_pairs=pairs, log=print)
    main = pair_name(cfg["labels"]["pairs"][cfg["labels"]["main"]])
    write_parquet(output.sweep, sweep)
    write_parquet(output.predictions, sa.select_variant(sweep, "none", main))
    record["benchmark"] = _benchmark(input.model, test, arm_config(cfg, dtype=params["dtype"]))
    record.update(_device_note())
    write_json(output.record, _finish_record(record))


def head_arm(*, input, output, params, wildcards, threads) -> None:
    """B (head_last), B' (head_mean), C (lora_head): train on train, early-stop on val, predict test."""
    from leverplus.tracks.sentiment import arms as sa

    cfg = params["cfg"]
    train, val, test = _splits(input)
    conf = arm_config(cfg, dtype=params["dtype"], seed=int(wildcards["sent_seed"]))
    name = wildcards["sent_arm"]
    if name == "lora_head":
        pred, record = sa.arm_lora_head(input.model, train, val, test, config=conf, log=print)
    else:
        pred, record = sa.arm_head_only(input.model, train, val, test, pooling=name.split("_")[1], config=conf,
                                        log=print)
    write_parquet(output.predictions, pred[["id", "prediction", "score"]])
    record.update(_device_note())
    write_json(output.record, _finish_record(record))


def lora_label_pair(*, input, output, params, wildcards, threads) -> None:
    """D for one label pair: LoRA trained with the LM loss on that pair's label tokens, scored with that pair."""
    from leverplus.tracks.sentiment import arms as sa

    cfg = params["cfg"]
    train, val, test = _splits(input)
    pair = cfg["labels"]["pairs"][wildcards["sent_pair"]]
    pred, record = sa.arm_lora_label(input.model, train, val, test, label_pair=pair,
                                     config=arm_config(cfg, dtype=params["dtype"], label_pair=pair,
                                                       seed=int(wildcards["sent_seed"])), log=print)
    write_parquet(output.variants, pred)
    record.update(_device_note())
    write_json(output.record, _finish_record(record))


def lora_label_gather(*, input, output, params, wildcards, threads) -> None:
    """D's arm files from its per-pair trainings: the sweep, the main pair's uncalibrated predictions, the record."""
    import pandas as pd

    from leverplus.core.io import read_json
    from leverplus.tracks.sentiment import arms as sa

    cfg = params["cfg"]
    keys = [k for k in cfg["labels"]["order"] if k in params["pairs"]]
    main_key = cfg["labels"]["main"]
    sweep = pd.concat([pd.read_parquet(f) for f in input.variants], ignore_index=True)
    records = {k: read_json(f) for k, f in zip(keys, input.records)}
    write_parquet(output.sweep, sweep)
    write_parquet(output.predictions, sa.select_variant(sweep, "none", pair_name(cfg["labels"]["pairs"][main_key])))
    record = dict(records[main_key])
    record["pairs"] = [p for k in keys for p in records[k].get("pairs", [])]
    record["per_pair_training"] = {
        pair_name(cfg["labels"]["pairs"][k]): {f: records[k].get(f) for f in (
            "best_epoch", "epochs_run", "train_loss", "val_loss", "n_trainable", "frozen_unchanged", "seconds")}
        for k in keys}
    record["frozen_unchanged"] = all(r.get("frozen_unchanged") for r in records.values())
    write_json(output.record, record)


def _benchmark(model_dir, test, conf: Mapping, n: int = 48) -> dict:
    """Prefix KV reuse vs one full forward per (item, label), on the first n test items with the main pair."""
    from leverplus.tracks.sentiment.causal_lm import build_prompt, load_causal_lm
    from leverplus.tracks.sentiment.label_scoring import benchmark_prefix_reuse
    from leverplus.tracks.sentiment.arms import resolve_device

    mdl, tok = load_causal_lm(model_dir, dtype=conf["dtype"], device=resolve_device(conf.get("device")))
    ctx = [build_prompt(tok, str(t)[: conf["max_text_chars"]], template=conf["template"])
           for t in test["text"].head(n)]
    return benchmark_prefix_reuse(mdl, tok, ctx, list(conf["label_pair"]), batch_size=conf["batch_size"], repeats=1)


# ---------------------------------------------------------------------------------------------------------------------
# score / aggregate
# ---------------------------------------------------------------------------------------------------------------------
def score(*, input, output, params, wildcards, threads) -> None:
    from leverplus.tracks.sentiment.report import score_predictions

    m = params["metrics"]
    res = score_predictions(input.predictions, input.references, n_resamples=m["n_resamples"], seed=m["seed"])
    write_json(output[0], _finite(res))


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def aggregate(*, input, output, params, wildcards, threads) -> None:
    from leverplus.tracks.sentiment.report import LABEL_ARMS, aggregate_sentiment

    arms = params["arms"]
    runs = params["runs"]  # [[arm, seed or None, run dir]] in the order of the input lists

    def by_arm(files, only=None):
        sel = [r for r in runs if only is None or r[0] in only]
        out: dict = {}
        for (arm, _, _), f in zip(sel, files):
            out.setdefault(arm, []).append(f)
        return out

    aggregate_sentiment(
        dataset=wildcards["sent_set"], arms=arms,
        predictions=by_arm(input.predictions), scores=by_arm(input.scores), records=by_arm(input.records),
        sweeps={a: f[0] for a, f in by_arm(input.sweeps, LABEL_ARMS).items()},
        seeds={a: [r[1] for r in runs if r[0] == a] for a in arms},
        references=input.references, manifest=input.manifest, settings=params["settings"],
        out_json=output.json, out_md=output.md, out_png=output.png,
    )
