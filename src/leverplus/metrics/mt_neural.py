"""COMET-family metrics (COMET, xCOMET) run in their own environment.

unbabel-comet needs numpy<2, transformers<5 and huggingface-hub<1, so it cannot be imported here; the project
calls ``tools/neural_metrics_run.py`` with the interpreter of ``.venv-neural`` (created by
``tools/neural_metrics_env.sh`` from the pinned ``envs/neural_metrics.txt``) and reads back one score per segment.  A model spec ``tiny:DIR`` is the tiny random COMET-architecture checkpoint
of ``tools/neural_metrics_tiny.py`` (plumbing tests; its scores mean nothing and the result's ``note`` says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from leverplus.metrics.signature import make_signature

ROOT = Path(__file__).resolve().parents[3]


class NeuralMetricsUnavailable(RuntimeError):
    pass


def score_neural(df: pd.DataFrame, pair: str, cfg: dict):
    python = cfg.get("python", ".venv-neural/bin/python")
    python = python if os.path.isabs(python) else str(Path.cwd() / python)
    if not os.path.isfile(python):
        raise NeuralMetricsUnavailable(
            f"{python}: the neural-metrics environment is missing; create it with `bash tools/neural_metrics_env.sh` "
            f"(or drop `neural` from mt.families)")
    runner = ROOT / "tools" / "neural_metrics_run.py"
    rows, corpus, notes = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "segs.jsonl"
        with open(inp, "w", encoding="utf-8") as f:
            for r in df.itertuples(index=False):
                f.write(json.dumps({"src": r.src, "mt": r.hyp, "ref": r.refs[0]}, ensure_ascii=False) + "\n")
        for name, model in cfg["models"].items():
            out = Path(tmp) / f"{name}.json"
            cmd = [python, str(runner), "--model", model, "--input", str(inp), "--output", str(out),
                   "--batch-size", str(cfg.get("batch_size", 16)), "--gpus", str(cfg.get("gpus", 0))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NeuralMetricsUnavailable(f"{name} ({model}) failed: {proc.stderr[-1500:]}")
            res = json.loads(out.read_text())
            scores = np.asarray(res["scores"], float)
            if scores.shape != (len(df),) or not np.isfinite(scores).all():
                raise NeuralMetricsUnavailable(f"{name} ({model}): {scores.shape} scores for {len(df)} segments")
            label = "tiny-random" if str(model).startswith("tiny:") else os.path.basename(str(model).rstrip("/"))
            sig = make_signature(name, {"model": label, "comet": res["comet"], "ref": "first"})
            if res.get("note"):
                notes.append(f"{name}: {res['note']}")
            corpus[name] = {}
            for system in dict.fromkeys(df["system"]):
                mask = (df["system"] == system).to_numpy()
                corpus[name][system] = {"metric": name, "score": float(scores[mask].mean()), "n": int(mask.sum()),
                                        "signature": sig}
            rows += [{"id": i, "system": s, "metric": name, "score": float(x)}
                     for i, s, x in zip(df["id"], df["system"], scores)]
    return pd.DataFrame(rows), corpus, {"note": "; ".join(notes)} if notes else {}
