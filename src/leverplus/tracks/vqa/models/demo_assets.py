"""Build the shipped demo models (`src/leverplus/assets/demo_models/`) and their build record `BUILD.json`.

    python -m leverplus.tracks.vqa.models.demo_assets [--out DIR] [--eval-n 500]

1. generates the seed-0 demo dataset (the one `config/config.yaml` describes) in a temporary directory;
2. trains the tiny CLIP on its train split (`tiny_clip.build_and_train_tiny_clip`, seed 0);
3. meta-trains the tiny Qwen2.5-VL (`demo_training.build_demo_vl`, seed 0) — it never sees the dataset;
4. evaluates the VL on the val split (zero-shot / random / same-class / img-sim / text-sim demonstrations);
5. writes `BUILD.json`: command, seeds, settings, package versions, the sha256 of every shipped file and the
   evaluation, so `tests/tracks/vqa/test_demo_models.py` can check the shipped files against it.

Both trainings run single-threaded with deterministic algorithms: the same command rebuilds bit-identical files
on the same torch build and CPU architecture.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from leverplus.core import shipped_assets as _sa

ASSETS = Path(__file__).resolve().parents[3] / "assets" / "demo_models"  # src/leverplus/assets/demo_models
DATASET = {"seed": 0, "n_train": 3000, "n_val": 500}
CLIP_STEPS = 1000
VL_STEPS = 3000


def shipped_digest(assets: Path = ASSETS) -> str:
    """Digest of the shipped files' sha256 values in `BUILD.json` (:func:`shipped_assets.shipped_digest`)."""
    return _sa.shipped_digest(assets)


def _versions() -> dict[str, str]:
    return _sa.versions("torch", "transformers", "tokenizers", "numpy", pillow="PIL")


def _keep_shipped(model_dir: Path) -> dict[str, str]:
    """Drop training leftovers (checkpoint folders) and return {file: sha256} of what ships."""
    return _sa.file_digests(model_dir, drop_dirs=True)


def build_assets(out: str | Path = ASSETS, *, eval_n: int | None = None, log=print) -> dict:
    from leverplus.tracks.vqa.data.demo import generate_demo
    from leverplus.tracks.vqa.models.demo_training import build_demo_vl, evaluate_icl
    from leverplus.tracks.vqa.models.tiny_clip import build_and_train_tiny_clip

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
        "command": "python -m leverplus.tracks.vqa.models.demo_assets",
        "dataset": {"source": "demo", **DATASET},
        "models": {
            "tiny_clip": {"seed": 0, "steps": CLIP_STEPS, "threads": 1, "sha256": _keep_shipped(clip)},
            "tiny_vl": {"seed": 0, "steps": VL_STEPS, "threads": 1, "sha256": _keep_shipped(vl)},
        },
        "versions": _versions(),
        "evaluation_val_2shot": evaluation,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    _sa.write_build(out, record, ensure_ascii=True)
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
