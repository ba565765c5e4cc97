"""Build and train the consistency track's shipped demo models (`src/leverplus/assets/consistency_models/`).

    python -m leverplus.tracks.consistency.assets [--out DIR]

* one byte-level BPE tokenizer (the tiny Qwen tokenizer of `models.tiny`) trained on the generator's texts and the
  recipes' prompt strings; `yes` and `no` are single tokens. The embedder's copy has the post-processor the current
  Qwen3-Embedding tokenizer has (`<|endoftext|>` appended to every sequence); the reranker's copy has the plain
  byte-level post-processor of the real Qwen3-Reranker tokenizer (nothing appended: the official README snippet, which
  tokenises with special tokens on, sees the same ids as the project's recipe);
* `tiny_qwen3_embedding`: a `Qwen3Model`, trained contrastively (InfoNCE, in-batch negatives, same-topic pairs
  masked) on query/document pairs of the demo generator (another seed than the demo corpus), queries formatted with
  the official instruction, pooled at the last token;
* `tiny_qwen3_reranker`: a `Qwen3ForCausalLM` (tied embeddings), trained on the official yes/no prompt: binary
  cross-entropy of logit_yes − logit_no at the last position of LEFT-padded batches (the first build padded on the
  right and read a pad position, which is why it stayed near chance), relevant vs other-topic documents;
* `BUILD.json`: command, seeds, steps, versions, sha256 of every shipped file, retrieval quality on the demo corpus
  against chance with 95% CIs and a paired test. Single thread, deterministic algorithms: the same command rebuilds
  bit-identical files on the same torch build and CPU architecture (`--verify` rebuilds into a temporary directory
  and compares every sha256; `tests/tracks/consistency/test_consistency_assets.py` checks the shipped files).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from leverplus.core import shipped_assets as _sa

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "consistency_models"
EMBEDDER, RERANKER = "tiny_qwen3_embedding", "tiny_qwen3_reranker"
SEED = 0
TRAIN_SEED = 1234  # the training pairs' generator seed (the demo corpus uses seed 0)
SIZE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=1024)
VOCAB = 700
EMBED_STEPS, RERANK_STEPS, BATCH, RERANK_BATCH = 200, 600, 32, 16
LR = 2e-3
TEMPERATURE = 0.1
INIT_RANGE = 0.1  # larger than Qwen3's 0.02: a tiny random model otherwise pools (nearly) the same vector for every text


def shipped_digest(assets: Path = ASSETS) -> str:
    """Digest of the shipped files' sha256 values in BUILD.json (:func:`shipped_assets.shipped_digest`)."""
    return _sa.shipped_digest(assets)


def _versions() -> dict[str, str]:
    return _sa.versions("torch", "transformers", "tokenizers", "numpy")


def build_tokenizer(texts: list[str]):
    from tokenizers.processors import TemplateProcessing

    from leverplus.tracks.consistency.embedding import DEFAULT_TASK, EOS_TOKEN
    from leverplus.tracks.consistency.reranker import PREFIX, SUFFIX
    from leverplus.models.tiny import train_bpe_tokenizer

    prompts = [PREFIX, SUFFIX, f"Instruct: {DEFAULT_TASK}\nQuery:", "<Instruct>: <Query>: <Document>:"]
    tok = train_bpe_tokenizer([*texts, *(prompts * 300), *(["yes\nno\n"] * 3000)], VOCAB)
    eos_id = tok.convert_tokens_to_ids(EOS_TOKEN)
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"$A:0 {EOS_TOKEN}:0", pair=f"$A:0 {EOS_TOKEN}:0 $B:1 {EOS_TOKEN}:1", special_tokens=[(EOS_TOKEN, eos_id)]
    )
    tok.pad_token = EOS_TOKEN
    tok.eos_token = "<|im_end|>"
    for word in ("yes", "no"):
        if tok.tokenize(word) != [word]:
            raise RuntimeError(f"tiny tokenizer: {word!r} is not one token ({tok.tokenize(word)})")
    return tok


def reranker_tokenizer(tok):
    """The same vocabulary with the real Qwen3-Reranker tokenizer's post-processor: byte-level only, nothing appended
    (`tokenizer(text)` == `tokenizer(text, add_special_tokens=False)`); left padding for batched scoring."""
    import copy

    from tokenizers.processors import ByteLevel

    rr = copy.deepcopy(tok)
    rr._tokenizer.post_processor = ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    rr.padding_side = "left"
    if rr("yes no")["input_ids"] != rr("yes no", add_special_tokens=False)["input_ids"]:
        raise RuntimeError("reranker tokenizer: special tokens are still added")
    return rr


def _config(tok):
    from transformers import Qwen3Config

    pad = tok.convert_tokens_to_ids("<|endoftext|>")
    return Qwen3Config(vocab_size=len(tok), tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=pad,
                       bos_token_id=pad, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), initializer_range=INIT_RANGE, **SIZE)


def _batches(pairs, steps: int, seed: int, size: int = BATCH):
    import random

    rng = random.Random(seed)
    for _ in range(steps):
        yield rng.sample(pairs, size)


def train_embedder(out: Path, tok, pairs, *, log=print):
    import torch
    from transformers import Qwen3Model

    from leverplus.tracks.consistency.embedding import EmbeddingRecipe, format_query, last_token_pool, token_ids

    torch.manual_seed(SEED)
    model = Qwen3Model(_config(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    recipe = EmbeddingRecipe()

    def encode(texts):
        batch = tok.pad({"input_ids": token_ids(tok, texts, recipe)}, padding=True, return_tensors="pt")
        h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return torch.nn.functional.normalize(last_token_pool(h, batch["attention_mask"]), dim=-1)

    model.train()
    for step, batch in enumerate(_batches(pairs, EMBED_STEPS, SEED + 1)):
        q = encode([format_query(p[0], recipe) for p in batch])
        d = encode([p[1] for p in batch])
        topics = torch.tensor([p[2] for p in batch])
        sim = q @ d.T / TEMPERATURE
        same = (topics[:, None] == topics[None, :]) & ~torch.eye(len(batch), dtype=torch.bool)
        sim = sim.masked_fill(same, -1e4)  # another pair of the same topic is no negative
        loss = torch.nn.functional.cross_entropy(sim, torch.arange(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == EMBED_STEPS - 1:
            log(f"embedder step {step}: loss {loss.item():.4f}")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def train_reranker(out: Path, tok, pairs, *, init_from: Path | None = None, steps: int | None = None, log=print):
    import random

    import torch
    from transformers import Qwen3ForCausalLM

    from leverplus.tracks.consistency.reranker import PREFIX, SUFFIX, RerankRecipe, format_body

    tok = reranker_tokenizer(tok)  # left padding: the last column is every row's last real token
    torch.manual_seed(SEED)
    model = Qwen3ForCausalLM(_config(tok))
    if init_from is not None:  # start from the trained embedder's transformer: its tokens already carry the topics
        from safetensors.torch import load_file

        state = load_file(str(Path(init_from) / "model.safetensors"))
        missing, unexpected = model.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"reranker init from {init_from}: missing {missing}, unexpected {unexpected}")
        model.tie_weights()
    model.generation_config.do_sample = False
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    steps = RERANK_STEPS if steps is None else steps
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    pre, suf = tok.encode(PREFIX, add_special_tokens=False), tok.encode(SUFFIX, add_special_tokens=False)
    rng = random.Random(SEED + 2)
    recipe = RerankRecipe()
    model.train()
    for step, batch in enumerate(_batches(pairs, steps, SEED + 3, RERANK_BATCH)):
        bodies, labels = [], []
        for i, (q, d, t) in enumerate(batch):
            if i % 2:  # negative: a document of another topic
                other = rng.choice([p for p in pairs[:2000] if p[2] != t])
                d = other[1]
            bodies.append(format_body(q, d, recipe))
            labels.append(float(i % 2 == 0))
        ids = [pre + list(b) + suf for b in tok(bodies, add_special_tokens=False)["input_ids"]]
        enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        last = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, -1, :]
        margin = last[:, yes] - last[:, no]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            log(f"reranker step {step}: loss {loss.item():.4f}")
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def evaluate(emb_dir: Path, rr_dir: Path, corpus: dict, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Retrieval quality on the demo corpus: embedder MRR / recall@1 of the first relevant document; reranker
    per-query NDCG@5 against the corpus qrels beside the expected NDCG@5 of a random ranking of the same list, each
    with a 95% bootstrap CI over queries and a paired bootstrap of the difference."""
    import numpy as np

    from leverplus.metrics.agreement import RerankRun, task_quality
    from leverplus.metrics.stats import bootstrap_ci
    from leverplus.tracks.consistency.embedding import QwenEmbedder
    from leverplus.tracks.consistency.reranker import QwenReranker

    docs = {d["id"]: d for d in corpus["documents"]}
    emb = QwenEmbedder(emb_dir)
    qv = emb.embed_queries([q["text"] for q in corpus["queries"]])
    dv = emb.embed_documents([d["text"] for d in corpus["documents"]])
    sims = qv @ dv.T
    rr, r1 = [], []
    for i, q in enumerate(corpus["queries"]):
        order = np.argsort(-sims[i], kind="stable")
        rel = np.array([corpus["documents"][j]["topic"] == q["topic"] for j in order])
        rr.append(1.0 / (1 + int(np.argmax(rel))))
        r1.append(float(rel[0]))
    n_docs, n_rel = len(docs), sum(d["topic"] == corpus["queries"][0]["topic"] for d in docs.values())
    reranker = QwenReranker(rr_dir)
    qtext = {q["id"]: q["text"] for q in corpus["queries"]}
    run = RerankRun([reranker.score(qtext[r["query_id"]], [docs[c]["text"] for c in r["candidates"]]).prob
                     for r in corpus["rerank"]])
    quality = task_quality(corpus, {"reranker": run}, k=5, n_resamples=n_resamples, seed=seed)
    allp = np.concatenate(run.prob)
    rel = np.concatenate([[c in set(corpus["qrels"][r["query_id"]]) for c in r["candidates"]] for r in corpus["rerank"]])
    from sklearn.metrics import roc_auc_score

    boot = dict(n_resamples=n_resamples, seed=seed)
    return {
        "embedder": {"mrr": round(float(np.mean(rr)), 4), "recall_at_1": round(float(np.mean(r1)), 4),
                     "recall_at_1_ci95": [round(x, 4) for x in bootstrap_ci(np.asarray(r1), **boot)],
                     "chance_recall_at_1": round(n_rel / n_docs, 4), "n_queries": len(rr), "n_documents": n_docs},
        "reranker": {"ndcg_at_5": quality["reranker"], "random_ndcg_at_5": quality["random"],
                     "ndcg_minus_random": quality["vs_random"]["reranker"],
                     "auc_relevant_vs_not": round(float(roc_auc_score(rel, allp)), 4),
                     "prob_p5_p50_p95": [round(float(x), 4) for x in np.percentile(allp, [5, 50, 95])],
                     "n_pairs": int(len(allp))},
    }


def build_assets(out: str | Path = ASSETS, *, log=print) -> dict:
    import torch

    from leverplus.tracks.consistency.demo import generate_corpus, generate_pairs
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pairs = generate_pairs(4000, TRAIN_SEED)
    tok = build_tokenizer([t for p in pairs for t in p[:2]])
    record_models = {}
    for name in (EMBEDDER, RERANKER):
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        if name == EMBEDDER:
            train_embedder(d, tok, pairs, log=log)
        else:  # initialised from the trained embedder's transformer (a from-scratch start stays near chance)
            train_reranker(d, tok, pairs, init_from=out / EMBEDDER, log=log)
        record_models[name] = {"seed": SEED, "train_seed": TRAIN_SEED, "threads": 1,
                               "steps": EMBED_STEPS if name == EMBEDDER else RERANK_STEPS,
                               "init": None if name == EMBEDDER else f"{EMBEDDER} (its Qwen3Model weights)",
                               "sha256": _sa.file_digests(d)}
    evaluation = evaluate(out / EMBEDDER, out / RERANKER, generate_corpus(seed=0))
    record = {"command": "python -m leverplus.tracks.consistency.assets", "verify": "python -m leverplus.tracks.consistency.assets --verify", "size": SIZE, "vocab_target": VOCAB,
              "batch": {"embedder": BATCH, "reranker": RERANK_BATCH}, "temperature": TEMPERATURE, "init_range": INIT_RANGE, "lr": LR, "models": record_models, "versions": _versions(),
              "evaluation_demo_corpus": evaluation, "build_seconds": round(time.perf_counter() - t0, 1)}
    _sa.write_build(out, record)
    return record


def verify(built: Path, shipped: Path = ASSETS) -> list[str]:
    """Files whose sha256 differs between a fresh build and the shipped BUILD.json (empty: bit-identical)."""
    return _sa.verify(built, shipped)


def main(argv=None) -> None:
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Build the consistency track's demo models and BUILD.json.")
    ap.add_argument("--out", default=str(ASSETS))
    ap.add_argument("--verify", action="store_true", help="rebuild into a temporary directory and compare every "
                    "file's sha256 with the shipped BUILD.json (exit 1 on any difference)")
    args = ap.parse_args(argv)
    if args.verify:
        with tempfile.TemporaryDirectory() as tmp:
            build_assets(tmp)
            diff = verify(Path(tmp))
        print("bit-identical rebuild" if not diff else f"differs: {diff}")
        raise SystemExit(1 if diff else 0)
    rec = build_assets(args.out)
    print(json.dumps(rec["evaluation_demo_corpus"], indent=2))


if __name__ == "__main__":
    main()
