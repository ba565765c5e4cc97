"""Decisions and stored bytes of the VQA track's CPU computations, printed as JSON: run by
tests/tracks/vqa/test_cross_cpu.py in subprocesses under several kernel sets (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS,
ONEDNN_MAX_CPU_ISA).

    python tests/tracks/vqa/cross_cpu_probe.py <tiny_qwen_dir> <examples.json> <work_dir>

What it computes (each on inputs with exact ties, where the last bits used to decide):
* beam search (InfoScore, the real tiny Qwen2.5-VL) over pools holding content duplicates, twice: with a roomy image
  cache and with one that evicts every image (the shard bytes must be identical: item 2 of issue 20);
* a v1 and a v2 selector trained in float64 and their picks over pools of content duplicates;
* similarity retrieval over rows with tied similarities;
* greedy answers of the tiny VL for 2-shot prompts.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main(qwen_dir: str, examples_json: str, work: str) -> dict:
    from leverplus.tracks.vqa.data.records import VQAExample
    from leverplus.tracks.vqa.icd.features import Features
    from leverplus.tracks.vqa.icd.infoscore import run_shard
    from leverplus.tracks.vqa.icd.retrieval import SimilarityIndex
    from leverplus.tracks.vqa.icd.selectors import load_selector, train_selector
    from leverplus.tracks.vqa.models.base import load_icl_model
    from tests.tracks.vqa.test_selectors import feature_task

    torch.set_num_threads(1)
    work_dir = Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    ex = [VQAExample(**e) for e in json.loads(Path(examples_json).read_text())]
    out: dict = {"capability": torch.backends.cpu.get_cpu_capability()}

    # ---- beam search, roomy vs evicting image cache ---------------------------------------------------------------
    rng = np.random.default_rng(5)
    anchors = ex[:3]
    pools = []
    for i in range(len(anchors)):
        others = [ex[j] for j in rng.choice([j for j in range(len(ex)) if j != i], size=4, replace=False)]
        pools.append([*others, *(replace(e, id=e.id + "_copy") for e in others)])  # exact ties in P̄
    digests, tables = [], []
    for name, kw in (("roomy", {}), ("tight", {"image_cache_mb": 1e-6})):
        model = load_icl_model("qwen2_5_vl", qwen_dir, batch_size=4, **kw)
        path = work_dir / f"beam_{name}.parquet"
        tables.append(run_shard(model, anchors, pools, path, beam_size=3, shot_num=2, order="right"))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    table = tables[0]
    out["beam_bytes_equal_roomy_vs_tight"] = digests[0] == digests[1]
    out["beams"] = {a: [list(p) for p in g.sort_values("beam_rank")["picked"]] for a, g in table.groupby("anchor")}
    out["beam_scores"] = [float(s) for s in table["score"]]
    out["near_boundary_steps"] = int(table.groupby("anchor")["near_boundary_steps"].first().sum())

    # ---- selectors (float64) -------------------------------------------------------------------------------------
    data = feature_task(n_clusters=30, members=4, n_val=60, seed=5)
    tr = data["train"]
    train = Features([*tr.ids, *(i + "_copy" for i in tr.ids)], np.concatenate([tr.image, tr.image]),
                     np.concatenate([tr.text, tr.text]))
    dup_pools = [[c for i in p for c in (i, i + "_copy")] for p in data["val_pools"]]
    cfg = {"epochs": 6, "d_model": 32, "batch_size": 32, "lr": 3e-3, "beam_ranks": 1, "dropout": 0.0,
           "dtype": "float64"}
    out["selections"], out["selector_weights"] = {}, {}
    for version in ("v1", "v2"):
        sel_dir = work_dir / f"sel_{version}"
        train_selector(version, beam=data["beam"], pools=data["pools"], train_features=data["train"], cfg=cfg,
                       out_dir=sel_dir, seed=0)
        sel = load_selector(sel_dir)
        out["selections"][version] = sel.select(data["val"], dup_pools, train, shot=2)
        out["selector_weights"][version] = {
            k: v.detach().double().flatten().tolist()[:64] for k, v in sel.saved_parameters().items()}

    # ---- retrieval with tied similarities -------------------------------------------------------------------------
    rng = np.random.default_rng(9)
    base = rng.normal(size=(5, 16))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    rows = base[rng.integers(0, 5, size=200)].astype(np.float32)
    out["retrieval"] = SimilarityIndex(rows).search(base[:3].astype(np.float32), 30).tolist()

    # ---- greedy answers ------------------------------------------------------------------------------------------
    model = load_icl_model("qwen2_5_vl", qwen_dir, batch_size=4)
    icds = [[ex[i], ex[i + 1]] for i in range(4, 10)]
    queries = [ex[i] for i in range(10, 16)]
    settings = {"max_new_tokens": 6, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}
    out["answers"] = model.generate(icds, queries, settings)
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
