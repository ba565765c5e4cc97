"""Build the shipped demo models (`src/leverplus/assets/demo_models/`) and their build record `BUILD.json`.

    python -m leverplus.models.demo_assets [--out DIR] [--eval-n 500]

1. generates the seed-0 demo dataset (the one `config/config.yaml` describes) in a temporary directory;
2. trains the tiny CLIP on its train split (`tiny_clip.build_and_train_tiny_clip`, seed 0);
3. meta-trains the tiny Qwen2.5-VL (`demo_training.build_demo_vl`, seed 0) — it never sees the dataset;
4. evaluates the VL on the val split (zero-shot / random / same-class / img-sim / text-sim demonstrations);
5. writes `BUILD.json`: command, seeds, settings, package versions, the sha256 of every shipped file and the
   evaluation, so `tests/test_demo_models.py` can check the shipped files against it.

Both trainings run single-threaded with deterministic algorithms: the same command rebuilds bit-identical files
on the same torch build and CPU architecture.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "demo_models"
DATASET = {"seed": 0, "n_train": 3000, "n_val": 500}
CLIP_STEPS = 1000
VL_STEPS = 3000


def shipped_digest(assets: Path = ASSETS) -> str:
    """Digest of the shipped files' sha256 values in `BUILD.json` ("absent" without one): it changes when the shipped
    weights change, not when a rebuild reproduces them (timings and evaluation are left out)."""
    build = assets / "BUILD.json"
    if not build.is_file():
        return "absent"
    models = json.loads(build.read_text())["models"]
    files = {name: rec["sha256"] for name, rec in models.items()}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    import numpy
    import PIL
    import tokenizers
    import torch
    import transformers

    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
    }


def _keep_shipped(model_dir: Path) -> dict[str, str]:
    """Drop training leftovers (checkpoint folders) and return {file: sha256} of what ships."""
    from ..data.download import file_digest

    for p in list(model_dir.iterdir()):
        if p.is_dir():
            shutil.rmtree(p)
    return {p.name: file_digest(p) for p in sorted(model_dir.iterdir())}


def build_assets(out: str | Path = ASSETS, *, eval_n: int | None = None, log=print) -> dict:
    from ..data.demo import generate_demo
    from .demo_training import build_demo_vl, evaluate_icl
    from .tiny_clip import build_and_train_tiny_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo"
        generate_demo(data, **DATASET)
        clip, vl = out / "tiny_clip", out / "tiny_vl"
        for d in (clip, vl):
            if d.exists():
                shutil.rmtree(d)
        build_and_train_tiny_clip(clip, data, seed=0, steps=CLIP_STEPS, threads=1, log=log)
        build_demo_vl(vl, seed=0, steps=VL_STEPS, log=log)
        evaluation = evaluate_icl(vl, data, clip_dir=clip, shots=2, n=eval_n, threads=1)
    record = {
        "command": "python -m leverplus.models.demo_assets",
        "dataset": {"source": "demo", **DATASET},
        "models": {
            "tiny_clip": {"seed": 0, "steps": CLIP_STEPS, "threads": 1, "sha256": _keep_shipped(clip)},
            "tiny_vl": {"seed": 0, "steps": VL_STEPS, "threads": 1, "sha256": _keep_shipped(vl)},
        },
        "versions": _versions(),
        "evaluation_val_2shot": evaluation,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "BUILD.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Build the shipped demo models and BUILD.json.")
    ap.add_argument("--out", default=str(ASSETS))
    ap.add_argument("--eval-n", type=int, default=None, help="val questions to evaluate (default: all)")
    args = ap.parse_args(argv)
    rec = build_assets(args.out, eval_n=args.eval_n)
    print(json.dumps(rec["evaluation_val_2shot"], indent=2))


if __name__ == "__main__":
    main()
