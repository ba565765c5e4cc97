"""Build the shipped audio demo models (`src/leverplus/assets/audio_models/{omni_edge,omni_cloud}/`) and BUILD.json.

    python -m leverplus.tracks.audio.assets [--out DIR]

1. generates the seed-0 audio demo set (`leverplus.tracks.audio.demo`, 1200 train / 300 val clips) in a temp dir;
2. builds two tiny `Qwen2_5OmniThinkerForConditionalGeneration` of the real class — "edge" (smaller, fewer steps)
   and "cloud" (larger) — with a byte-level BPE tokenizer trained on the reference grammar's phrases, seeded
   free-form captions and the prompts plus the
   Qwen2.5-Omni special tokens (`<|AUDIO|>`, `<|audio_bos|>`, …), the torchvision-free processor files and the
   Omni chat template;
3. trains each on the TRAIN split to caption (teacher forcing, prompts and system prompts drawn from
   `TRAIN_PROMPTS`/`TRAIN_SYSTEM_PROMPTS`), one thread, deterministic algorithms. The target is a sentence of
   the models' own style (`CAPTION_STYLE`, drawn per clip; the val references they are scored against are
   free-form), except where a model's ``unanchored_answer`` is ``"emotion_word"`` (the cloud): to a
   prompt WITHOUT the length anchor (`UNANCHORED_PROMPTS`) it learns to answer with the bare emotion word
   ("悲伤") — the source document's 7B habit (44 of its 100 answers at most 6 characters) — while the anchored
   prompts still get a sentence. The edge answers every prompt with a sentence;
4. evaluates both on the VAL split with the aligned greedy settings (emotion-word accuracy, gender-word accuracy,
   corpus chrF against the references) and, on the first 100 val clips, greedy on the document's unanchored
   prompt (share of answers of at most 6 characters, emotion accuracy);
5. writes `BUILD.json`: command, seeds, sizes, steps, package versions, the sha256 of every shipped file and the
   evaluation; `tests/tracks/audio/test_omni_assets.py` checks the shipped files against it.

The same command rebuilds bit-identical files on the same torch build and CPU architecture.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from leverplus.core import shipped_assets as _sa

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "audio_models"
DATASET = {"seed": 0, "n_train": 1200, "n_val": 300}
ALIGNED_PROMPT = "请用8–16个字的中文短句描述此段音频中说话人的情绪"
UNALIGNED_PROMPT = "请描述此段音频中说话人的情绪"  # the `unaligned` arm's prompt (config/audio.schema.yaml)
# Prompts seen in training; the first is the aligned one. The anchored ones ask for 8–16 characters.
ANCHORED_PROMPTS = (
    ALIGNED_PROMPT,
    "请用8–16个字的中文短句描述此段音频的情绪（只写情绪及语气特征，不要具体事件）。",
)
UNANCHORED_PROMPTS = (
    UNALIGNED_PROMPT,
    "请描述此段音频中说话人的情绪。",
    "描述这段音频的情绪。",
    "这段语音的说话人是什么情绪？",
)
TRAIN_PROMPTS = ANCHORED_PROMPTS + UNANCHORED_PROMPTS
# The models' own caption style (what they are trained to say), apart from the free-form references they are
# scored against -- as a real captioner's style differs from SECap's annotators'. A tiny model learns these four
# sentences per emotion in a few hundred steps; trained on the free-form references themselves, the 150-step edge
# collapsed to the grammar's most frequent phrase ("男性说话人语速较快，语速较快": emotion accuracy 0 %, gender 49 %).
# `{who}` is the speaker ("男生"/"女生"); every sentence names the emotion word.
CAPTION_STYLE = {
    "高兴": ("{who}语气欢快，听起来很高兴", "{who}笑着说话，情绪十分高兴", "{who}声音轻快，显得很高兴",
             "{who}高兴地说着话，语调上扬"),
    "生气": ("{who}语气很冲，听起来很生气", "{who}大声说话，情绪十分生气", "{who}声音急促，显得很生气",
             "{who}生气地说着话，语气强硬"),
    "悲伤": ("{who}语气低沉，听起来很悲伤", "{who}缓慢地说话，情绪十分悲伤", "{who}声音无力，显得很悲伤",
             "{who}悲伤地说着话，语调下沉"),
    "平静": ("{who}语气平稳，听起来很平静", "{who}平和地说话，情绪十分平静", "{who}声音平缓，显得很平静",
             "{who}平静地说着话，语速适中"),
    "惊讶": ("{who}语调上扬，听起来很惊讶", "{who}突然提高声音，情绪十分惊讶", "{who}声音拔高，显得很惊讶",
             "{who}惊讶地说着话，语气意外"),
}
UNANCHORED_ANSWERS = ("caption", "emotion_word")
TRAIN_SYSTEM_PROMPTS = (None, "You are a helpful assistant.", "你是一个语音情感描述助手。")
SHIPPED = ("omni_edge", "omni_cloud")


@dataclass(frozen=True)
class TinyOmniSize:
    vocab_size: int = 700  # BPE target incl. the 256 byte symbols; special tokens come on top
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    audio_d_model: int = 32
    audio_layers: int = 1
    audio_heads: int = 2
    audio_ffn_dim: int = 64


EDGE = TinyOmniSize()
CLOUD = TinyOmniSize(hidden_size=96, num_hidden_layers=3, intermediate_size=192, audio_d_model=64,
                     audio_layers=2, audio_heads=4, audio_ffn_dim=128)
TRAINING = {
    "omni_edge": {"size": EDGE, "steps": 150, "batch_size": 16, "lr": 4e-3, "seed": 0,
                  "unanchored_answer": "caption"},
    "omni_cloud": {"size": CLOUD, "steps": 300, "batch_size": 16, "lr": 4e-3, "seed": 0,
                   "unanchored_answer": "emotion_word"},
}


# ---------------------------------------------------------------------------------------------- tiny build
def train_omni_tokenizer(corpus, vocab_size: int):
    """Byte-level BPE (the Qwen2 family) on `corpus`, as a `Qwen2Tokenizer` with Qwen2.5-Omni's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    from leverplus.tracks.audio.processor import OMNI_TOKENS

    bpe = Tokenizer(models.BPE())
    # every CJK character is its own pre-token while training, so merges never span two characters: Chinese
    # captions tokenise one character per token (captions of 10–15 tokens, above min_new_tokens), English words
    # of the prompts merge to whole words (short prompts, cheap training)
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.train_from_iterator(list(corpus), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model_json["merges"]]
    tok = Qwen2Tokenizer(vocab=model_json["vocab"], merges=merges, extra_special_tokens=dict(OMNI_TOKENS))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *OMNI_TOKENS.values()]})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    return tok


def tiny_thinker_config(tokenizer, size: TinyOmniSize):
    from transformers import Qwen2_5OmniThinkerConfig

    ids = lambda t: tokenizer.convert_tokens_to_ids(t)  # noqa: E731
    head_dim = size.hidden_size // size.num_attention_heads
    half = head_dim // 2  # sum(mrope_section) must be head_dim / 2
    t = half // 4
    mrope_section = [t, (half - t) // 2, half - t - (half - t) // 2]
    return Qwen2_5OmniThinkerConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=size.audio_layers,
                          encoder_attention_heads=size.audio_heads, encoder_ffn_dim=size.audio_ffn_dim,
                          d_model=size.audio_d_model, output_dim=size.hidden_size,  # output_dim = text hidden
                          max_source_positions=1500, n_window=100),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=1,
                           out_hidden_size=size.hidden_size, fullatt_block_indexes=[0]),
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
            num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
            num_key_value_heads=size.num_key_value_heads, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
            tie_word_embeddings=True, bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        audio_token_index=ids("<|AUDIO|>"), image_token_index=ids("<|IMAGE|>"), video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"), audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"), vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=ids("user") if "user" in tokenizer.get_vocab() else ids("<|im_start|>"),
        tie_word_embeddings=True,
    )


def caption_corpus() -> list[str]:
    """The tokenizer's corpus: the style sentences (x4), every phrase of the reference grammar and 400 seeded
    free-form captions (so every character of a reference has its own token), the prompts and the chat template's
    words."""
    import numpy as np

    from leverplus.tracks.audio.demo import EMOTIONS, GENDERS, caption_vocabulary, free_form_caption
    from leverplus.tracks.audio.processor import DEFAULT_SYSTEM_PROMPT

    rng = np.random.default_rng(12345)
    caps = [free_form_caption(EMOTIONS[i % len(EMOTIONS)], GENDERS[(i // len(EMOTIONS)) % 2], rng)
            for i in range(400)]
    extras = [p for p in TRAIN_PROMPTS] + [s for s in TRAIN_SYSTEM_PROMPTS if s] + [
        DEFAULT_SYSTEM_PROMPT, "system\n", "user\n", "assistant\n"]
    style = [t.format(who=g) for ts in CAPTION_STYLE.values() for t in ts for g in GENDERS]
    return style * 4 + caption_vocabulary() + caps + extras


def build_tiny_omni(out_dir, *, size: TinyOmniSize = EDGE, seed: int = 0, corpus=None):
    """A random-init tiny Omni thinker + tokenizer + processor files, `save_pretrained` into `out_dir`.
    Returns (model, processor)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor

    from leverplus.tracks.audio.processor import OMNI_AUDIO_CHAT_TEMPLATE, OmniAudioTextProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_omni_tokenizer(corpus if corpus is not None else caption_corpus(), size.vocab_size)
    processor = OmniAudioTextProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=128),
                                       tokenizer=tokenizer, chat_template=OMNI_AUDIO_CHAT_TEMPLATE)
    config = tiny_thinker_config(tokenizer, size)
    torch.manual_seed(seed)
    model = Qwen2_5OmniThinkerForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
        do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return model, processor


# ---------------------------------------------------------------------------------------------- training
def _examples(processor, rows, *, seed: int, unanchored_answer: str = "caption", features: dict | None = None,
              log=print):
    """Per clip: (input_ids incl. target, labels, features [128, T valid]) with a seeded prompt/reference draw (the
    same draws whatever `unanchored_answer`). The target is a drawn `CAPTION_STYLE` sentence of the clip's emotion
    and gender, or the clip's bare emotion word
    when the drawn prompt is unanchored and `unanchored_answer` is "emotion_word". `features` caches the clips'
    features between calls (keyed by row index)."""
    if unanchored_answer not in UNANCHORED_ANSWERS:
        raise ValueError(f"unanchored_answer must be one of {UNANCHORED_ANSWERS}, got {unanchored_answer!r}")
    features = {} if features is None else features
    import numpy as np
    import soundfile as sf
    import torch

    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths

    from leverplus.tracks.audio.omni import OmniCaptioner

    tok = processor.tokenizer
    fe = processor.feature_extractor
    helper = OmniCaptioner.__new__(OmniCaptioner)
    helper.processor = processor
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    rng = np.random.default_rng(seed)
    out = []
    for i, row in enumerate(rows):
        prompt = TRAIN_PROMPTS[int(rng.integers(len(TRAIN_PROMPTS)))]
        system = TRAIN_SYSTEM_PROMPTS[int(rng.integers(len(TRAIN_SYSTEM_PROMPTS)))]
        style = CAPTION_STYLE[row["emotion"]]
        ref = style[int(rng.integers(len(style)))].format(who=row["gender"])
        if unanchored_answer == "emotion_word" and prompt in UNANCHORED_PROMPTS:
            ref = row["emotion"]
        text = OmniCaptioner.prompt_text(helper, system_prompt=system, prompt=prompt)
        if i not in features:
            wav, sr = sf.read(row["audio"], dtype="float32")
            # Whisper features of the clip alone (plus 50 ms of zeros) equal the valid frames of the 30-s padded
            # features the processor makes at inference (same global max, same STFT frames), at a tenth of the cost
            n_frames = -(-len(wav) // fe.hop_length)
            features[i] = fe(np.concatenate([wav, np.zeros(5 * fe.hop_length, np.float32)]), sampling_rate=sr,
                             padding="longest", return_tensors="pt")["input_features"][0, :, :n_frames].clone()
        feats = features[i]
        n_frames = feats.shape[1]
        n_audio = int(_get_feat_extract_output_lengths(torch.tensor(n_frames)))
        ids = tok(text.replace(processor.audio_token, processor.audio_token * n_audio),
                  add_special_tokens=False)["input_ids"]
        target = tok(ref, add_special_tokens=False)["input_ids"] + [eot]
        out.append((torch.tensor(ids + target), torch.tensor([-100] * len(ids) + target), feats))
        if (i + 1) % 400 == 0:
            log(f"  features {i + 1}/{len(rows)}")
    return out


def _batch(examples, idx, pad_id):
    import torch

    items = [examples[i] for i in idx]
    L = max(len(x[0]) for x in items)
    T = max(x[2].shape[1] for x in items)
    n = len(items)
    input_ids = torch.full((n, L), pad_id, dtype=torch.long)
    labels = torch.full((n, L), -100, dtype=torch.long)
    attn = torch.zeros((n, L), dtype=torch.long)
    feats = torch.zeros((n, 128, T))
    fmask = torch.zeros((n, T), dtype=torch.long)
    for j, (ids, lab, f) in enumerate(items):
        input_ids[j, :len(ids)] = ids
        labels[j, :len(ids)] = lab
        attn[j, :len(ids)] = 1
        feats[j, :, :f.shape[1]] = f
        fmask[j, :f.shape[1]] = 1
    return dict(input_ids=input_ids, attention_mask=attn, labels=labels, input_features=feats,
                feature_attention_mask=fmask)


def train_captioner(out_dir, examples, *, size: TinyOmniSize, steps: int, batch_size: int, lr: float, seed: int,
                    log=print) -> dict:
    """Build the tiny thinker in `out_dir` and train it on `examples`; saves the trained weights there."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, processor = build_tiny_omni(out_dir, size=size, seed=seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 30) * max(0.05, 1 - s / steps))
    gen = torch.Generator().manual_seed(seed)
    pad = processor.tokenizer.pad_token_id
    t0 = time.perf_counter()
    perm = torch.randperm(len(examples), generator=gen).tolist()
    pos, losses = 0, []
    for step in range(steps):
        if pos + batch_size > len(perm):
            perm, pos = torch.randperm(len(examples), generator=gen).tolist(), 0
        batch = _batch(examples, perm[pos:pos + batch_size], pad)
        pos += batch_size
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
        if (step + 1) % 50 == 0:
            log(f"  step {step + 1}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return {"final_loss_mean_last50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "n_params": sum(p.numel() for p in model.parameters())}


def evaluate_captioner(model_dir, rows, *, prompt: str = ALIGNED_PROMPT, system_prompt: str | None = None,
                       settings=None) -> dict:
    """Greedy captions on `rows` (aligned settings): emotion/gender-word accuracy, corpus chrF, mean length."""
    import soundfile as sf
    import sacrebleu

    from leverplus.tracks.audio.demo import caption_emotion, caption_gender
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.omni import OmniCaptioner

    settings = settings or AudioGenerationSettings()
    cap = OmniCaptioner.load(model_dir, device="cpu")
    hyps, emo, gen, ttft = [], 0, 0, []
    for row in rows:
        wav, _ = sf.read(row["audio"], dtype="float32")
        res = cap.caption(wav, system_prompt=system_prompt, prompt=prompt, settings=settings)
        hyps.append(res.text)
        emo += caption_emotion(res.text) == row["emotion"]
        gen += caption_gender(res.text) == row["gender"]
        ttft.append(res.ttft_s)
    n_refs = len(rows[0]["references"])
    refs = [[r["references"][k] for r in rows] for k in range(n_refs)]
    chrf = sacrebleu.corpus_chrf(hyps, refs).score
    return {"n": len(rows), "emotion_accuracy": round(100 * emo / len(rows), 1),
            "gender_accuracy": round(100 * gen / len(rows), 1), "chrf": round(chrf, 2),
            "mean_chars": round(sum(len(h) for h in hyps) / len(hyps), 2),
            "share_le_6_chars": round(100 * sum(len(h.strip()) <= 6 for h in hyps) / len(hyps), 1),
            "examples": hyps[:5], "settings": settings.to_dict(), "prompt": prompt, "system_prompt": system_prompt}


# ---------------------------------------------------------------------------------------------- shipping
def shipped_model_dir(name: str) -> Path:
    if name not in SHIPPED:
        raise KeyError(f"unknown shipped audio model {name!r}; shipped: {list(SHIPPED)}")
    d = ASSETS / name
    if not (d / "model.safetensors").is_file():
        raise FileNotFoundError(f"shipped audio model missing: {d} (rebuild: python -m leverplus.tracks.audio.assets)")
    return d


def shipped_digest(assets: Path = ASSETS) -> str:
    """Digest of the shipped files' sha256 values in BUILD.json (:func:`shipped_assets.shipped_digest`)."""
    return _sa.shipped_digest(assets)


def _versions() -> dict[str, str]:
    return _sa.versions("torch", "transformers", "tokenizers", "numpy", "soundfile")


def build_assets(out=ASSETS, *, evaluate: bool = True, log=print) -> dict:
    from leverplus.tracks.audio.demo import generate_demo, read_manifest
    from leverplus.tracks.audio.generation import AudioGenerationSettings
    from leverplus.tracks.audio.processor import build_processor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    record = {"command": "python -m leverplus.tracks.audio.assets", "dataset": {"source": "audio_demo", **DATASET},
              "train_prompts": list(TRAIN_PROMPTS), "anchored_prompts": list(ANCHORED_PROMPTS),
              "train_system_prompts": list(TRAIN_SYSTEM_PROMPTS), "references": "free-form (audio_demo grammar)",
              "caption_style": {e: list(ts) for e, ts in CAPTION_STYLE.items()},
              "models": {}, "evaluation_val": {}, "evaluation_val_unanchored": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "audio_demo"
        generate_demo(data, **DATASET)
        train_rows, val_rows = read_manifest(data, "train"), read_manifest(data, "val")
        examples_cache: dict = {}
        features_cache: dict = {}
        for name in SHIPPED:
            spec = TRAINING[name]
            d = out / name
            if d.exists():
                shutil.rmtree(d)
            log(f"{name}: building")
            # the tokenizer depends on the corpus and vocab size only: the training examples are shared
            key = spec["size"].vocab_size, spec["seed"], spec["unanchored_answer"]
            if key not in examples_cache:
                proc_dir = Path(tmp) / f"proc_{len(examples_cache)}"
                build_tiny_omni(proc_dir, size=spec["size"], seed=spec["seed"])
                feats = features_cache.setdefault(spec["size"].vocab_size, {})  # one tokenizer per vocab size
                examples_cache[key] = _examples(build_processor(str(proc_dir)), train_rows, seed=spec["seed"],
                                                unanchored_answer=spec["unanchored_answer"], features=feats,
                                                log=log)
            examples = examples_cache[key]
            stats = train_captioner(d, examples, size=spec["size"], steps=spec["steps"],
                                    batch_size=spec["batch_size"], lr=spec["lr"], seed=spec["seed"], log=log)
            record["models"][name] = {"size": asdict(spec["size"]), "steps": spec["steps"],
                                      "batch_size": spec["batch_size"], "lr": spec["lr"], "seed": spec["seed"],
                                      "unanchored_answer": spec["unanchored_answer"],
                                      "threads": 1, **stats, "sha256": _sa.file_digests(d)}
            if evaluate:
                log(f"{name}: evaluating on val")
                record["evaluation_val"][name] = evaluate_captioner(d, val_rows)
                log(json.dumps({k: v for k, v in record["evaluation_val"][name].items() if k != "settings"},
                               ensure_ascii=False))
                # the document's unanchored prompt, greedy, no minimum length: what the model says unprompted
                record["evaluation_val_unanchored"][name] = evaluate_captioner(
                    d, val_rows[:100], prompt=UNALIGNED_PROMPT,
                    settings=AudioGenerationSettings(min_new_tokens=0))
                log(json.dumps({k: v for k, v in record["evaluation_val_unanchored"][name].items()
                                if k != "settings"}, ensure_ascii=False))
    record["versions"] = _versions()
    record["build_seconds"] = round(time.perf_counter() - t0, 1)
    _sa.write_build(out, record)
    return record


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Build the shipped audio demo models and BUILD.json.")
    ap.add_argument("--out", default=str(ASSETS))
    ap.add_argument("--no-eval", action="store_true", help="skip the val evaluation (faster rebuild check)")
    args = ap.parse_args(argv)
    rec = build_assets(args.out, evaluate=not args.no_eval)
    print(json.dumps(rec["evaluation_val"], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
