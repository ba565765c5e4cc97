"""The generated audio demo set: speech-like clips whose emotion is carried by prosody alone.

Every clip is a short "utterance" (1–2 s, 16 kHz mono) of voiced syllables — a harmonic source at a fundamental
frequency f0 shaped by three fixed formant-like resonances, with per-syllable attack/decay envelopes and short
pauses — over a little background noise. Nothing lexical is in it; what differs between the five emotions is the
prosody, as in acted emotional speech:

=========  =================  ==============================  ========  ===========  ==============
emotion    pitch level (×f0)  pitch contour                   energy    tempo (syl/s) voice
=========  =================  ==============================  ========  ===========  ==============
高兴        1.30               wide rise–fall in each syllable high      fast         bright
生气        1.15               sharp fall in each syllable     highest   fastest      brightest
悲伤        0.82               slow fall across the utterance  low       slow         dark
平静        1.00               almost flat                     medium    medium       neutral
惊讶        1.20               strong rise at the end          high      medium       bright
=========  =================  ==============================  ========  ===========  ==============

Each clip has a speaker (a male or female base f0, drawn per clip) and random loudness, duration and jitter, so no
single cue (absolute pitch, absolute loudness) decides the emotion. References are FREE-FORM Chinese captions, as in
SECap (536 unique captions of 600): each is composed from the clip's emotion and gender by a small grammar
(:func:`free_form_caption`: one of several sentence frames, a speaker phrase, an emotion word or one of its
synonyms with an optional degree adverb, one or two vocal cues of that emotion, an optional full stop), so nearly
every reference is unique and none needs to be copied to be matched; each clip gets `n_references` distinct ones.
Every reference names exactly one emotion (a synonym counts: :func:`caption_emotion`) and one gender
(:func:`caption_gender`).

    generate_demo(out_dir, seed=0, n_train=1200, n_val=300)

writes ``out_dir/wav/{split}_{i:05d}.wav`` (PCM16) and ``out_dir/{train,val}.jsonl`` (rows: ``id``, ``audio`` — the
WAV's path relative to ``out_dir`` —, ``references``, ``emotion``, ``gender``), deterministic from the seed (the
same seed gives byte-identical files), in a few seconds.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000

EMOTIONS = ("高兴", "生气", "悲伤", "平静", "惊讶")
GENDERS = ("男生", "女生")

# The free-form reference grammar. Every phrase list is ordered (the draws are seeded indices into it).
SPEAKERS = {"男生": ("男生", "一位男士", "这名男子", "男性说话人", "他"),
            "女生": ("女生", "一位女士", "这名女子", "女性说话人", "她")}
# the emotion word (first) and its synonyms: any of them names the emotion
EMOTION_WORDS = {
    "高兴": ("高兴", "开心", "愉快", "喜悦", "兴奋"),
    "生气": ("生气", "愤怒", "恼火", "气愤", "不满"),
    "悲伤": ("悲伤", "难过", "伤心", "沮丧", "失落"),
    "平静": ("平静", "平和", "淡定", "冷静", "放松"),
    "惊讶": ("惊讶", "吃惊", "意外", "诧异", "震惊"),
}
DEGREES = ("", "很", "非常", "十分", "有些", "略显", "特别")
# vocal cues of each emotion (what the prosody of `PROSODY` carries); none names an emotion or a gender
CUES = {
    "高兴": ("语调轻快", "语气欢快", "带着笑意", "声音明亮", "语速较快", "尾音上扬"),
    "生气": ("语气强硬", "声音洪亮", "语速很快", "语气很冲", "咬字用力", "音量很大"),
    "悲伤": ("语调低沉", "声音无力", "语速缓慢", "带着哭腔", "呼吸沉重", "声音发颤"),
    "平静": ("语气平稳", "语速适中", "声音平缓", "没有起伏", "节奏均匀", "吐字清楚"),
    "惊讶": ("语调突然升高", "声音拔高", "尾音上挑", "语气出乎预料", "音调起伏大", "带着疑问"),
}
# sentence frames: {s} speaker, {d} degree adverb, {e} emotion word, {c}/{c2} two different cues
FRAMES = (
    "{s}{c}，{d}{e}",
    "{s}{c}，听起来{d}{e}",
    "{c}，{s}显得{d}{e}",
    "{s}{d}{e}地说着话，{c}",
    "能听出{s}{d}{e}，{c}",
    "{s}说话时{c}，情绪{d}{e}",
    "{s}{c}，{c2}，透出{e}的情绪",
    "{s}的声音{d}{e}",
)


def free_form_caption(emotion: str, gender: str, rng: np.random.Generator) -> str:
    """One free-form reference of `emotion` said by a speaker of `gender` (see the module docstring)."""
    frame = FRAMES[int(rng.integers(len(FRAMES)))]
    cues = CUES[emotion]
    i, j = rng.choice(len(cues), size=2, replace=False)
    text = frame.format(s=SPEAKERS[gender][int(rng.integers(len(SPEAKERS[gender])))],
                        d=DEGREES[int(rng.integers(len(DEGREES)))],
                        e=EMOTION_WORDS[emotion][int(rng.integers(len(EMOTION_WORDS[emotion])))],
                        c=cues[int(i)], c2=cues[int(j)])
    return text + ("。" if rng.random() < 0.3 else "")


def caption_vocabulary() -> list[str]:
    """Every phrase the reference grammar uses (a tokenizer corpus that covers every character of a reference)."""
    frames = [f.format(s="", d="", e="", c="", c2="") for f in FRAMES]
    return [*frames, *(w for ws in SPEAKERS.values() for w in ws), *(w for ws in EMOTION_WORDS.values() for w in ws),
            *DEGREES, *(c for cs in CUES.values() for c in cs), "。", "，"]


# (pitch level ×f0, contour kind, contour depth, energy, syllables per second, brightness 0..1)
PROSODY = {
    "高兴": (1.30, "rise_fall", 0.18, 0.80, 6.0, 0.70),
    "生气": (1.15, "fall", 0.16, 1.00, 6.8, 0.95),
    "悲伤": (0.82, "slow_fall", 0.12, 0.32, 3.2, 0.15),
    "平静": (1.00, "flat", 0.03, 0.55, 4.5, 0.45),
    "惊讶": (1.20, "end_rise", 0.45, 0.80, 4.5, 0.70),
}

FORMANTS_HZ = (600.0, 1200.0, 2600.0)


def caption_emotion(text: str) -> str | None:
    """The single emotion a caption names (by its word or a synonym, `EMOTION_WORDS`), or None when it names none
    or several."""
    found = [e for e, words in EMOTION_WORDS.items() if any(w in text for w in words)]
    return found[0] if len(found) == 1 else None


def caption_gender(text: str) -> str | None:
    """The single gender a caption names (男/他 or 女/她), or None when it names none or both."""
    found = [g for g, marks in (("男生", "男他"), ("女生", "女她")) if any(m in text for m in marks)]
    return found[0] if len(found) == 1 else None


def _contour(kind: str, depth: float, u: np.ndarray, pos: float) -> np.ndarray:
    """Relative pitch deviation over one syllable (u in [0, 1)); `pos` is the syllable's place in the utterance."""
    if kind == "rise_fall":
        return depth * np.sin(np.pi * u) - depth * 0.3
    if kind == "fall":
        return depth * (0.5 - 1.2 * u)
    if kind == "slow_fall":
        return -depth * (pos + u * 0.2)
    if kind == "end_rise":
        return depth * (pos ** 3) * (0.4 + 0.6 * u) - 0.05
    return depth * np.sin(2 * np.pi * u)  # flat: a little wobble


def synthesize(emotion: str, gender: str, rng: np.random.Generator) -> np.ndarray:
    """One clip (float32 in [-1, 1]) of `emotion` spoken by a speaker of `gender`."""
    level, kind, depth, energy, rate, bright = PROSODY[emotion]
    base_f0 = rng.uniform(95.0, 140.0) if gender == "男生" else rng.uniform(185.0, 255.0)
    duration = rng.uniform(1.0, 2.0)
    rate *= rng.uniform(0.85, 1.15)
    n_samples = int(duration * SAMPLE_RATE)
    out = np.zeros(n_samples, dtype=np.float64)
    n_syl = max(2, int(round(duration * rate)))
    slot = n_samples / n_syl
    n_harm = 12
    tilt = 1.6 - 1.1 * bright  # spectral slope: higher = darker voice
    for k in range(n_syl):
        start = int(k * slot + rng.uniform(0, 0.08) * slot)
        length = int(slot * rng.uniform(0.62, 0.85))
        if start + length > n_samples:
            length = n_samples - start
        if length < 64:
            continue
        u = np.arange(length) / length
        pos = k / max(1, n_syl - 1)
        f0 = base_f0 * level * (1.0 + _contour(kind, depth, u, pos) + rng.normal(0, 0.025))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        h = np.arange(1, n_harm + 1)[:, None]
        fh = float(f0.mean()) * h  # formant weights from the syllable's mean pitch (cheap, smooth enough)
        resonance = sum(np.exp(-(((fh - f) / (0.35 * f)) ** 2)) for f in FORMANTS_HZ)
        amp = (h ** -tilt) * (0.25 + resonance) * (f0[None, :] * h < SAMPLE_RATE / 2 - 500)
        syl = (amp * np.sin(h * phase[None, :])).sum(axis=0)
        attack = np.minimum(1.0, u / 0.12)
        decay = np.minimum(1.0, (1.0 - u) / 0.3)
        env = attack * decay * (1.0 + rng.normal(0, 0.08))
        out[start:start + length] += syl * env * rng.uniform(0.75, 1.0)
    out /= max(1e-9, np.abs(out).max())
    loudness = energy * rng.uniform(0.7, 1.1) * 0.6
    out = out * loudness + rng.normal(0, 0.004, n_samples)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _rows(split: str, n: int, seed: int, n_references: int, out_dir: Path) -> list[dict]:
    import soundfile as sf

    split_code = {"train": 1, "val": 2}[split]
    rows = []
    for i in range(n):
        rng = np.random.default_rng([seed, split_code, i])
        emotion = EMOTIONS[int(rng.integers(len(EMOTIONS)))]
        gender = GENDERS[int(rng.integers(len(GENDERS)))]
        wav = synthesize(emotion, gender, rng)
        refs: list[str] = []
        while len(refs) < n_references:  # distinct references (the grammar has thousands per emotion/gender)
            ref = free_form_caption(emotion, gender, rng)
            if ref not in refs:
                refs.append(ref)
        rel = f"wav/{split}_{i:05d}.wav"
        buf = io.BytesIO()  # the same bytes as writing the path, without libsndfile's fsync per file on close
        sf.write(buf, wav, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        (out_dir / rel).write_bytes(buf.getvalue())
        rows.append({"id": f"{split}_{i:05d}", "audio": rel, "references": refs, "emotion": emotion,
                     "gender": gender})
    return rows


def generate_demo(out_dir, *, seed: int, n_train: int, n_val: int, n_references: int = 2) -> dict:
    """Write the demo set into `out_dir` (see the module docstring); returns {"train": n, "val": n, …}."""
    from leverplus.core.io import atomic_write

    if n_val < 1 or n_train < 0:
        raise ValueError(f"audio demo: n_train must be >= 0 and n_val >= 1, got {n_train}, {n_val}")
    if not 1 <= n_references <= 8:
        raise ValueError(f"audio demo: n_references must be 1..8, got {n_references}")
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rows = _rows(split, n, seed, n_references, out)
        with atomic_write(out / f"{split}.jsonl") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        counts[split] = n
    return {**counts, "seed": seed, "n_references": n_references, "sample_rate": SAMPLE_RATE,
            "emotions": list(EMOTIONS)}


def read_manifest(out_dir, split: str) -> list[dict]:
    """Rows of ``out_dir/{split}.jsonl`` with ``audio`` made absolute (used by the model builder)."""
    out = Path(out_dir)
    rows = []
    for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        row["audio"] = str(out / row["audio"])
        rows.append(row)
    return rows
