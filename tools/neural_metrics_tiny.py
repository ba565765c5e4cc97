"""Runs INSIDE .venv-neural (unbabel-comet): build a tiny COMET-architecture checkpoint, offline, for plumbing tests.

    .venv-neural/bin/python tools/neural_metrics_tiny.py OUT_DIR [--seed 0]

OUT_DIR gets the layout COMET saves and ``comet.load_from_checkpoint`` reads:
    OUT_DIR/hparams.yaml             class_identifier: regression_metric (+ the model's hparams)
    OUT_DIR/checkpoints/model.ckpt   {"state_dict", "hyper_parameters", "pytorch-lightning_version"}
    OUT_DIR/encoder/                 a 2-layer, 32-wide BertModel config + a character WordPiece tokenizer
                                     (transformers' save_pretrained; COMET rebuilds the encoder from this config)
    OUT_DIR/TINY.json                what it is: random weights -- its scores mean NOTHING
It is the real ``comet.models.RegressionMetric`` (estimator over [mt; ref; mt*ref; |mt-ref|; mt*src; |mt-src|]) with
a real BERT encoder (COMET's ``BERT`` encoder class), seeded, so the same seed gives the same scores.
"""
import argparse
import json
import os
import string

NOTE = ("tiny random COMET-architecture checkpoint (RegressionMetric + 2-layer BERT, seeded): it exercises the "
        "neural-metrics plumbing; its scores mean nothing")


def build(out_dir: str, seed: int = 0) -> str:
    """Build the checkpoint into ``out_dir``; returns the path of ``checkpoints/model.ckpt``."""
    import pytorch_lightning
    import torch
    import yaml
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from comet.models import RegressionMetric

    out_dir = os.path.abspath(out_dir)
    enc = os.path.join(out_dir, "encoder")
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    os.makedirs(enc, exist_ok=True)
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    with open(os.path.join(enc, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=os.path.join(enc, "vocab.txt"), do_lower_case=True).save_pretrained(enc)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=130)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(enc)
    torch.manual_seed(seed)
    model = RegressionMetric(encoder_model="BERT", pretrained_model=enc, hidden_sizes=[16], layer="mix",
                             pool="avg", batch_size=8, load_pretrained_weights=True, local_files_only=True)
    hp = {k: v for k, v in dict(model.hparams).items()}
    hp["load_pretrained_weights"] = False
    ckpt = os.path.join(out_dir, "checkpoints", "model.ckpt")
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hp,
                "pytorch-lightning_version": pytorch_lightning.__version__}, ckpt + ".tmp")
    os.replace(ckpt + ".tmp", ckpt)
    with open(os.path.join(out_dir, "hparams.yaml"), "w", encoding="utf-8") as f:
        yaml.safe_dump({"class_identifier": "regression_metric", **hp}, f)
    with open(os.path.join(out_dir, "TINY.json"), "w", encoding="utf-8") as f:
        json.dump({"note": NOTE, "seed": seed, "encoder": "BertModel 2x32", "vocab": len(vocab)}, f)
    return ckpt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(build(a.out_dir, a.seed))


if __name__ == "__main__":
    main()
