"""The neural-metrics plumbing end to end: the `mt_score` rule's stage for family `neural` runs
tools/neural_metrics_run.py in the separate `.venv-neural` (unbabel-comet 2.2.7) on a tiny COMET-architecture
checkpoint (comet's RegressionMetric over a 2-layer BERT, random, seeded) built there by tools/neural_metrics_tiny.py,
and reads back one score per segment plus per-system corpus scores.  The scores mean nothing (random weights); the
result says so.  .ci/run builds `.venv-neural` (tools/neural_metrics_env.sh) before the tests."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.mt import demo as mt_demo
from leverplus.tracks.mt import stages as stage
ROOT = Path(__file__).resolve().parents[3]
PYTHON = ROOT / ".venv-neural" / "bin" / "python"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not PYTHON.is_file(), reason=f"{PYTHON} missing: build it with `bash tools/neural_metrics_env.sh` (.ci/run does)")]


def test_neural_family_through_separate_env(tmp_path):
    df = mt_demo.generate_pair("en-hi", 4, 0)
    df = df[df["system"].isin(["sys_a", "sys_e"])].reset_index(drop=True)
    data = tmp_path / "en-hi.parquet"
    df.to_parquet(data)
    ckpt_dir = tmp_path / "comet-tiny"
    cfg = {"seed": 0, "corpus_ci_resamples": 10, "bleu_tokenize": None,
           "neural": {"python": str(PYTHON), "models": {"comet_tiny": f"tiny:{ckpt_dir}"}, "batch_size": 4, "gpus": 0}}
    out = {"segments": str(tmp_path / "neural.parquet"), "corpus": str(tmp_path / "neural.json")}
    stage.score(input={"data": str(data)}, output=out, params={"cfg": cfg},
                wildcards={"pair": "en-hi", "family": "neural"}, threads=1)
    # the checkpoint was built in the COMET layout load_from_checkpoint reads
    assert (ckpt_dir / "checkpoints" / "model.ckpt").is_file() and (ckpt_dir / "hparams.yaml").is_file()
    seg = pd.read_parquet(out["segments"])
    assert len(seg) == len(df) and set(seg["metric"]) == {"comet_tiny"}
    # one row per input (segment id, system); rows come in the track's aligned order (by system, then segment id)
    assert sorted(zip(seg["id"], seg["system"])) == sorted(zip(df["id"], df["system"]))
    assert len(set(zip(seg["id"], seg["system"]))) == len(seg)
    v = seg["score"].to_numpy(float)
    assert np.isfinite(v).all() and np.unique(v).size > 1  # one real model output per segment
    res = json.loads(Path(out["corpus"]).read_text())
    corpus = res["corpus"]["comet_tiny"]
    assert set(corpus) == {"sys_a", "sys_e"}
    for system, r in corpus.items():
        assert r["n"] == 4 and r["score"] == pytest.approx(v[(seg["system"] == system).to_numpy()].mean())
        assert "comet:2.2.7" in r["signature"] and "model:tiny-random" in r["signature"]
    assert "mean nothing" in res["note"]
