"""Runs INSIDE .venv-neural (unbabel-comet): score a JSONL of {src, mt, ref} with one COMET-family checkpoint.

    .venv-neural/bin/python tools/neural_metrics_run.py --model Unbabel/wmt22-comet-da|PATH/model.ckpt \
        --input segs.jsonl --output scores.json [--batch-size 16] [--gpus 0]
A hub id is downloaded by comet.download_model (needs the network once; some checkpoints are gated);
a local path is a model.ckpt (with its hparams.yaml one folder up, as COMET saves them) or a folder holding
checkpoints/model.ckpt; ``tiny:DIR`` is the tiny random checkpoint of tools/neural_metrics_tiny.py, built into DIR
first if DIR has none (plumbing tests only: its scores mean nothing, and the output says so in ``note``).
"""
import argparse
import json
import os


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--gpus", type=int, default=0)
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from comet import download_model, load_from_checkpoint

    path, note = a.model, None
    if path.startswith("tiny:"):
        import sys

        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import neural_metrics_tiny

        path, note = path.split(":", 1)[1], neural_metrics_tiny.NOTE
        if not os.path.isfile(os.path.join(path, "checkpoints", "model.ckpt")):
            neural_metrics_tiny.build(path)
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoints", "model.ckpt")
    elif not os.path.isfile(path):
        path = download_model(a.model)
    model = load_from_checkpoint(path)
    with open(a.input, encoding="utf-8") as f:
        data = [json.loads(line) for line in f if line.strip()]
    out = model.predict(data, batch_size=a.batch_size, gpus=a.gpus, progress_bar=False)
    import comet

    tmp = a.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"scores": [float(x) for x in out.scores], "system_score": float(out.system_score),
                   "model": a.model, "comet": comet.__version__, "note": note}, f)
    os.replace(tmp, a.output)


if __name__ == "__main__":
    main()
