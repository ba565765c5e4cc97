"""Meta-training of the demo VL model: a tiny Qwen2.5-VL that learns to *use* in-context demonstrations.

Training episodes come from the demo generator (`leverplus.tracks.vqa.data.demo`) with a **fresh random naming per episode**:
the query's answer is a nonce word that appears only in the demonstrations of the query's class (if any). For the
first `curriculum` steps every demonstration is of the query's class, so the model first learns to copy an answer;
after that episodes hold 0–`max_shots` demonstrations in random order — usually one or two of the query's class and
distractors that share its colour or its shape — so the only way to lower the loss is to find the demonstration
whose *image* matches the query and copy its answer. Prompts are built exactly as at evaluation time: `prompting.conversation` →
`processor.apply_chat_template(tokenize=False)` → `processor(text=…, images=…)`.

Loss: mean cross-entropy over the query answer's text tokens (the last assistant turn, the same tokens InfoScore
scores), plus `eos_weight` × cross-entropy of the `<|im_end|>` that closes that turn. The second term only teaches
the model to stop after the answer so that greedy generation returns the bare word; it is reported separately.

Run `python -m leverplus.tracks.vqa.models.demo_training --out DIR` to build the model (and, with `--eval DATASET_DIR`, to
measure its accuracies with 0 / random / same-class demonstrations).
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from leverplus.tracks.vqa.data import demo
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.models import prompting
from leverplus.models.tiny import TinyQwenVLSize, build_tiny_qwen2_5_vl, size_record


@dataclass(frozen=True)
class MetaTrainConfig:
    seed: int = 0
    steps: int = 3000
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eos_weight: float = 0.3
    max_shots: int = 2  # the demo evaluates at 2 shots; longer episodes cost time per step
    p_match: float = 0.85  # episodes with ≥1 demonstration of the query's class (when shots ≥ 1)
    p_hard: float = 0.6  # a non-matching demonstration shares the query's colour or shape
    curriculum: int = 600  # first steps: every demonstration is of the query's class (pure copying), then mixed
    threads: int = 1  # bit-for-bit reproducibility holds for a fixed thread count (and CPU/torch build)
    size: TinyQwenVLSize = field(default_factory=TinyQwenVLSize)


def tokenizer_corpus(repeats: int = 50) -> list[str]:
    """Lines for the BPE tokenizer: chat-template words, every question, and each nonce syllable as a word of its
    own — so a nonce word tokenises into one token per syllable (never merged across syllables) and can be copied."""
    lines = ["system", "You are a helpful assistant.", "user", "assistant"]
    adjectives = list(demo.SHAPES) + list(demo.COLOUR_NAMES)
    lines += [t.format(a=a) for t in demo.QUESTION_TEMPLATES.values() for a in adjectives]
    lines += list(demo.SYLLABLES)
    return lines * repeats


# ---------------------------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    icds: list[VQAExample]
    query: VQAExample
    images: list  # PIL images in prompt order (icds…, query)
    classes: list[int]  # class of each icd, then of the query


def sample_episode(
    rng: np.random.Generator, vocabulary: Sequence[str], cfg: MetaTrainConfig, image_size: int, *, copy_only: bool = False
) -> Episode:
    """One training episode; `copy_only` (the curriculum's first phase) makes every demonstration match the query."""
    naming = demo.draw_naming(rng, list(vocabulary))
    q = int(rng.integers(demo.N_CLASSES))
    k = int(rng.choice(cfg.max_shots + 1, p=_shot_probs(cfg.max_shots)))
    classes: list[int] = []
    if copy_only:
        classes = [q] * max(k, 1)
    elif k:
        n_match = 0
        if rng.random() < cfg.p_match:
            n_match = 1 + int(k >= 2 and rng.random() < 0.3)
        classes = [q] * n_match
        qs, qc = demo.class_parts(q)
        hard = [c for c in range(demo.N_CLASSES) if c != q and (demo.class_parts(c)[0] == qs or demo.class_parts(c)[1] == qc)]
        other = [c for c in range(demo.N_CLASSES) if c != q]
        for _ in range(k - n_match):
            pool = hard if rng.random() < cfg.p_hard else other
            classes.append(int(pool[int(rng.integers(len(pool)))]))
        classes = [classes[i] for i in rng.permutation(k)]
    exs, images = [], []
    for j, c in enumerate(classes + [q]):
        images.append(demo.render(c, rng, image_size))
        question, _ = demo.make_question(c, rng)
        exs.append(VQAExample(id=f"ep{j}", image="", question=question, answer=naming[c]))
    return Episode(icds=exs[:-1], query=exs[-1], images=images, classes=classes + [q])


def _shot_probs(max_shots: int) -> list[float]:
    p = np.array([0.5] + [1.0] * max_shots)
    return (p / p.sum()).tolist()


# ---------------------------------------------------------------------------------------------- batching
def encode_batch(processor, episodes: Sequence[Episode], *, with_answer: bool, padding_side: str = "right"):
    texts = [
        processor.apply_chat_template(
            prompting.conversation(e.icds, e.query, with_answer=with_answer),
            tokenize=False,
            add_generation_prompt=not with_answer,
        )
        for e in episodes
    ]
    images = [im for e in episodes for im in e.images]
    return processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side=padding_side)


def answer_spans(input_ids: torch.Tensor, attention_mask: torch.Tensor, ids: dict[str, int]) -> list[tuple[int, int]]:
    """[start, end) of the query answer's tokens in each row: after the last `<|im_start|>assistant\\n`, up to
    (excluding) the `<|im_end|>` that closes it."""
    spans = []
    for row, mask in zip(input_ids.tolist(), attention_mask.tolist()):
        n = max(i for i, m in enumerate(mask) if m) + 1  # works for right or left padding
        row = row[:n]
        last = n - 1 - row[::-1].index(ids["<|im_start|>"])
        if row[last + 1 : last + 3] != [ids["assistant"], ids["\n"]]:
            raise ValueError("unexpected token layout after the last <|im_start|>")
        start = last + 3
        end = row.index(ids["<|im_end|>"], start)
        spans.append((start, end))
    return spans


def _special_ids(tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
    for word in ("assistant", "\n"):
        enc = tokenizer.encode(word, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"{word!r} must be a single token, got {enc}")
        ids[word] = enc[0]
    return ids


def episode_loss(model, enc, ids: dict[str, int], eos_weight: float) -> tuple[torch.Tensor, float, float]:
    """(total loss, answer CE, end-of-turn CE) for an encoded batch."""
    spans = answer_spans(enc["input_ids"], enc["attention_mask"], ids)
    logits = model(**enc).logits
    rows, pos = [], []
    for b, (s, e) in enumerate(spans):
        rows += [b] * (e - s)
        pos += list(range(s, e))
    rows_t, pos_t = torch.tensor(rows), torch.tensor(pos)
    ans = torch.nn.functional.cross_entropy(logits[rows_t, pos_t - 1].float(), enc["input_ids"][rows_t, pos_t])
    ends = torch.tensor([e for _, e in spans])
    bidx = torch.arange(len(spans))
    eos = torch.nn.functional.cross_entropy(logits[bidx, ends - 1].float(), enc["input_ids"][bidx, ends])
    return ans + eos_weight * eos, float(ans.detach()), float(eos.detach())


# ---------------------------------------------------------------------------------------------- build
def _set_determinism(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def build_demo_vl(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = MetaTrainConfig.steps,
    log_every: int = 100,
    save_every: int = 0,
    log=print,
    **overrides,
) -> Path:
    """Build the tiny Qwen2.5-VL (tokenizer, processor, config) and meta-train it; `save_pretrained` into `out_dir`.

    Deterministic on CPU for a given seed, config and thread count: the same command rebuilds bit-identical weights
    on the same torch build and CPU.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration

    from leverplus.tracks.vqa.models.qwen_processor import load_processor

    cfg = MetaTrainConfig(seed=seed, steps=steps, **overrides)
    _set_determinism(cfg.threads)
    out = Path(out_dir)
    build_tiny_qwen2_5_vl(out, tokenizer_corpus(), size=cfg.size, seed=seed)
    processor = load_processor(str(out))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32)
    ids = _special_ids(processor.tokenizer)
    vocab = demo.nonce_vocabulary()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    torch.manual_seed(seed)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    t0, hist = time.perf_counter(), []
    for step in range(cfg.steps):
        copy_only = step < cfg.curriculum
        episodes = [
            sample_episode(rng, vocab, cfg, cfg.size.image_size, copy_only=copy_only) for _ in range(cfg.batch_size)
        ]
        enc = encode_batch(processor, episodes, with_answer=True)
        loss, ans, eos = episode_loss(model, enc, ids, cfg.eos_weight)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        hist.append((ans, eos))
        if log and ((step + 1) % log_every == 0 or step + 1 == cfg.steps):
            a = np.mean([h[0] for h in hist[-log_every:]])
            e = np.mean([h[1] for h in hist[-log_every:]])
            log(f"step {step + 1}/{cfg.steps}  answer CE {a:.3f}  end CE {e:.3f}  {time.perf_counter() - t0:.0f}s")
        if save_every and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
            model.save_pretrained(out / "checkpoint", safe_serialization=True)  # progress only; never the output
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    info = {
        "seed": seed,
        "meta_training": {k: v for k, v in asdict(cfg).items() if k != "size"},
        "size": size_record(cfg.size),
        "final_answer_ce": float(np.mean([h[0] for h in hist[-100:]])) if hist else None,
    }
    (out / "leverplus_tiny.json").write_text(json.dumps(info, sort_keys=True, indent=2) + "\n")
    return out


# ---------------------------------------------------------------------------------------------- evaluation
def _load_images(paths: Sequence[str]):
    from PIL import Image

    return [Image.open(p).convert("RGB") for p in paths]


@torch.no_grad()
def generate_answers(model, processor, icd_seqs, queries, *, batch_size: int = 16, max_new_tokens: int = 6) -> list[str]:
    """Greedy answers through `model.generate` with the evaluation prompt layout (left padding)."""
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    out_texts = []
    for lo in range(0, len(queries), batch_size):
        eps = [
            Episode(list(s), q, _load_images(prompting.images_in_order(s, q)), [])
            for s, q in zip(icd_seqs[lo : lo + batch_size], queries[lo : lo + batch_size])
        ]
        enc = encode_batch(processor, eps, with_answer=False, padding_side="left")
        gen = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end, pad_token_id=pad
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out_texts += [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out_texts


def _retrieve(query_feats: np.ndarray, pool_feats: np.ndarray, k: int) -> np.ndarray:
    sims = query_feats @ pool_feats.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def evaluate_icl(
    model_dir: str | Path,
    dataset_dir: str | Path,
    *,
    clip_dir: str | Path | None = None,
    shots: int = 2,
    n: int | None = None,
    seed: int = 0,
    conditions: Sequence[str] = ("zero_shot", "random", "same_class", "img_sim", "text_sim"),
    threads: int = 2,
) -> dict:
    """Exact-match accuracy (×100, 95% bootstrap CI) of greedy answers on the demo val set for several ways of
    choosing `shots` demonstrations from the train pool: none, random, same class (oracle), and — with a demo CLIP
    — the most similar train images / questions."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from leverplus.tracks.vqa.data.records import examples, load_split
    from leverplus.metrics.stats import summarize
    from leverplus.tracks.vqa.models.qwen_processor import load_processor

    torch.set_num_threads(threads)
    processor = load_processor(str(model_dir))
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    train, val = load_split(dataset_dir, "train"), load_split(dataset_dir, "val")
    if n is not None:
        val = val.iloc[:n].reset_index(drop=True)
    pool, queries = examples(train), examples(val)
    rng = np.random.default_rng(seed)
    choices: dict[str, np.ndarray] = {}
    for cond in conditions:
        if cond == "zero_shot":
            choices[cond] = np.zeros((len(val), 0), dtype=int)
        elif cond == "random":
            choices[cond] = np.stack([rng.choice(len(pool), size=shots, replace=False) for _ in range(len(val))])
        elif cond == "same_class":
            by_class = {c: np.flatnonzero(train["class"].to_numpy() == c) for c in range(demo.N_CLASSES)}
            choices[cond] = np.stack([rng.choice(by_class[int(c)], size=shots, replace=False) for c in val["class"]])
        elif cond in ("img_sim", "text_sim"):
            if clip_dir is None:
                raise ValueError(f"condition {cond!r} needs clip_dir")
            from leverplus.tracks.vqa.models.tiny_clip import encode_split

            kind = cond.split("_")[0]
            pf, qf = encode_split(clip_dir, train)[kind], encode_split(clip_dir, val)[kind]
            # most similar last (next to the query), as similarity retrievers order demonstrations
            choices[cond] = _retrieve(qf, pf, shots)[:, ::-1]
        else:
            raise ValueError(f"unknown condition {cond!r}")
    results = {}
    train_cls = train["class"].to_numpy()
    for cond, idx in choices.items():
        t0 = time.perf_counter()
        seqs = [[pool[j] for j in row] for row in idx]
        preds = generate_answers(model, processor, seqs, queries)
        correct = [float(p.lower().strip() == q.answer.lower().strip()) for p, q in zip(preds, queries)]
        hit = [float(any(train_cls[j] == c for j in row)) for row, c in zip(idx, val["class"])] if shots else None
        results[cond] = {
            **summarize(correct, scale=100.0),
            "with_same_class_demo": round(100 * float(np.mean(hit)), 2) if hit else 0.0,
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return {"shots": shots, "n": len(val), "exact_match": results}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output HF model directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=MetaTrainConfig.steps)
    ap.add_argument("--batch-size", type=int, default=MetaTrainConfig.batch_size)
    ap.add_argument("--lr", type=float, default=MetaTrainConfig.lr)
    ap.add_argument("--threads", type=int, default=MetaTrainConfig.threads)
    ap.add_argument("--max-shots", type=int, default=MetaTrainConfig.max_shots)
    ap.add_argument("--save-every", type=int, default=0)
    ap.add_argument("--eval", metavar="DATASET_DIR", help="demo dataset to evaluate on after training")
    ap.add_argument("--clip", metavar="CLIP_DIR", help="demo CLIP for the img_sim/text_sim conditions")
    ap.add_argument("--eval-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.eval_only:
        build_demo_vl(
            args.out, seed=args.seed, steps=args.steps, save_every=args.save_every,
            batch_size=args.batch_size, lr=args.lr, threads=args.threads, max_shots=args.max_shots,
        )
    if args.eval:
        conds = ["zero_shot", "random", "same_class"] + (["img_sim", "text_sim"] if args.clip else [])
        print(json.dumps(evaluate_icl(args.out, args.eval, clip_dir=args.clip, conditions=conds), indent=2))


if __name__ == "__main__":
    main()
