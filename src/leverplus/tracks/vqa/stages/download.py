"""Stages: datasets, ICL models and encoders into data/ (generated, shipped, fetched or linked)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from leverplus.tracks.vqa.models.demo_assets import ASSETS, CLIP_STEPS, VL_STEPS  # the shipped models' location and recipe


def download_dataset(*, input, output, params, wildcards, threads):
    spec = params["spec"]
    out_dir = Path(output.train).parent
    if spec["source"] == "demo":
        from leverplus.tracks.vqa.data.demo import generate_demo

        generate_demo(out_dir, seed=spec["seed"], n_train=spec["n_train"], n_val=spec["n_val"],
                      dialect=spec.get("dialect"))
    else:
        from leverplus.tracks.vqa.data.vqa_official import prepare_vqa_dataset

        prepare_vqa_dataset(wildcards["dataset"], {k: v for k, v in spec.items()
                                                   if k not in ("seed", "n_train", "n_val", "dialect")}, out_dir)


def _copy_shipped(name: str, dest: Path) -> bool:
    src = ASSETS / name
    if not (src / "config.json").is_file():
        return False
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return True


def download_model(*, input, output, params, wildcards, threads):
    spec, dest = params["spec"], Path(output[0])
    if spec["source"] == "demo":
        if not _copy_shipped("tiny_vl", dest):
            from leverplus.tracks.vqa.models.demo_training import build_demo_vl

            build_demo_vl(dest, seed=0, steps=VL_STEPS)
    elif spec["source"] == "random_tiny":
        from leverplus.tracks.vqa.models.demo_training import tokenizer_corpus
        from leverplus.models.tiny import build_tiny_qwen2_5_vl

        build_tiny_qwen2_5_vl(dest, tokenizer_corpus(), seed=0)
    else:
        from leverplus.core.hf_snapshot import materialize_model
        from leverplus.core.io import write_json

        materialize_model(spec, dest)
        if "adapter_config" in spec:
            target = dest / f"leverplus_{params['adapter']}.json"
            if dest.is_symlink():  # a linked local directory: never write into the user's own model files
                if not (target.is_file() and json.loads(target.read_text()) == spec["adapter_config"]):
                    raise ValueError(
                        f"models.{wildcards['model']}.adapter_config would be written into the linked local "
                        f"directory {dest.resolve()}; set link: copy"
                    )
            else:
                write_json(target, spec["adapter_config"])


def download_encoder(*, input, output, params, wildcards, threads):
    spec, dest = params["spec"], Path(output[0])
    if spec["source"] == "demo":
        if not _copy_shipped("tiny_clip", dest):
            from leverplus.tracks.vqa.models.tiny_clip import build_and_train_tiny_clip

            build_and_train_tiny_clip(dest, Path(input.train).parent, seed=0, steps=CLIP_STEPS, threads=1)
    else:
        from leverplus.core.hf_snapshot import materialize_model

        materialize_model(spec, dest)
