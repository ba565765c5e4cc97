"""The generated demo dataset: a VQA split on which the choice of demonstrations decides the answer.

Every image is a small drawing of one object *class* — a shape in a colour (4 shapes × 3 colours = 12 classes) —
at a random position and size, on a tinted, noisy background, so that two images are practically never identical.
Every question asks for the *word* for the object and mentions either its colour or its shape (never both):

    "What is the word for this red thing?"      "What do you call this pointy object?"

The answer is a nonce word ("bazo", "kime", …) that the dataset's seed assigns to the class. No model can know the
naming from its weights; it is only recoverable from a demonstration of the same class. A question names half of
the class, so text similarity finds demonstrations of the right class more often than chance but not always;
image similarity can find the class exactly.

The same drawing code and nonce vocabulary serve the meta-training of the demo VL model
(`leverplus.tracks.vqa.models.demo_training`), which draws a *fresh* naming for every training episode.

**Dialects** (``dialect``; issue 22: a demo on which similarity is a documented, imperfect proxy for a
demonstration's value). About a third of the examples, in both splits, are named in a *dialect*: their answer is
the word of another class, ``naming[dialect_class(cls)]`` (same shape, next colour). A demonstration helps a query
only if it has the query's class **and** the query's naming, so image similarity — which finds the class — retrieves
a wrongly named demonstration at the dialect's base rate. Which examples are in the dialect:

* ``"template"`` — exactly those whose question uses the ``name`` template ("Which name does this … item have?"):
  the cue is in the question text, which every selector sees (CLIP question features) and image similarity does not;
* ``"hidden"`` (the **control**) — an independent coin with the same probability (1/3), drawn from a stream of its
  own, visible nowhere in the inputs: no selector can tell a dialect demonstration from another, only the oracle
  (which reads the answers) can;
* ``None`` — no dialect (the original demo, byte for byte).

Images, classes and questions are the same in all three (the coin has its own random stream), so the conditions
differ only in which examples carry the dialect word.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHAPES = ("round", "square", "pointy", "crossed")  # circle, square, triangle, plus sign — named as adjectives
SHAPE_NOUNS = {"round": "circle", "square": "square", "pointy": "triangle", "crossed": "cross"}
COLOURS = {"red": (205, 45, 40), "green": (40, 160, 60), "blue": (45, 70, 200)}
COLOUR_NAMES = tuple(COLOURS)
N_CLASSES = len(SHAPES) * len(COLOURS)

# Question templates by type; `{a}` is the colour or shape adjective.
QUESTION_TEMPLATES = {
    "word_for": "What is the word for this {a} thing?",
    "call": "What do you call this {a} object?",
    "name": "Which name does this {a} item have?",
}

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = tuple(c + v for c in CONSONANTS for v in VOWELS)  # 70 syllables, each one BPE token in the demo VL


def class_parts(cls: int) -> tuple[str, str]:
    """(shape adjective, colour name) of class index `cls`."""
    return SHAPES[cls % len(SHAPES)], COLOUR_NAMES[cls // len(SHAPES)]


def class_caption(cls: int) -> str:
    shape, colour = class_parts(cls)
    return f"a {colour} {SHAPE_NOUNS[shape]}"


def nonce_vocabulary(n_syllables: int = 2) -> list[str]:
    """All nonce words of `n_syllables` CV syllables that the VQA answer normalisation leaves unchanged."""
    from leverplus.metrics.vqa import normalize_answer

    words = [""]
    for _ in range(n_syllables):
        words = [w + s for w in words for s in SYLLABLES]
    return [w for w in words if normalize_answer(w) == w]


def draw_naming(rng: np.random.Generator, vocabulary: list[str], n_classes: int = N_CLASSES) -> list[str]:
    """A random class → word map (distinct words)."""
    return [vocabulary[i] for i in rng.choice(len(vocabulary), size=n_classes, replace=False)]


def render(cls: int, rng: np.random.Generator, image_size: int = 56):
    """A PIL RGB drawing of class `cls` with random placement, size, colour jitter, background and noise."""
    from PIL import Image, ImageDraw

    shape, colour = class_parts(cls)
    s = image_size
    bg = np.clip(rng.normal(222, 12, size=3), 170, 255).astype(int)
    img = Image.new("RGB", (s, s), tuple(int(v) for v in bg))
    d = ImageDraw.Draw(img)
    size = rng.uniform(0.45, 0.8) * s
    cx, cy = (rng.uniform(size / 2, s - size / 2) for _ in range(2))
    fill = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + rng.normal(0, 22, size=3), 0, 255))
    h = size / 2
    if shape == "round":
        d.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        h *= 0.85
        d.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "pointy":
        d.polygon([(cx, cy - h), (cx - h, cy + h), (cx + h, cy + h)], fill=fill)
    else:
        w = size / 6
        d.rectangle([cx - h, cy - w, cx + h, cy + w], fill=fill)
        d.rectangle([cx - w, cy - h, cx + w, cy + h], fill=fill)
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 8, size=(s, s, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")


DIALECTS = (None, "template", "hidden")
DIALECT_TEMPLATE = "name"  # questions with this template are in the dialect when dialect="template"
DIALECT_SHARE = 1 / len(QUESTION_TEMPLATES)  # the hidden coin's probability: the template condition's share


def dialect_class(cls: int) -> int:
    """The class whose word a dialect example of class `cls` is called by: the same shape, the next colour."""
    return (cls + len(SHAPES)) % N_CLASSES


def make_question(cls: int, rng: np.random.Generator) -> tuple[str, str]:
    """(question, question_type): mentions the colour or the shape of the object, with one of the templates."""
    shape, colour = class_parts(cls)
    qtype = list(QUESTION_TEMPLATES)[int(rng.integers(len(QUESTION_TEMPLATES)))]
    adjective = colour if rng.random() < 0.5 else shape
    return QUESTION_TEMPLATES[qtype].format(a=adjective), qtype


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 0
    n_train: int = 3000
    n_val: int = 600
    image_size: int = 56


def _png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def generate_demo(
    out_dir: str | Path, *, seed: int = 0, n_train: int = 3000, n_val: int = 600, image_size: int = 56,
    dialect: str | None = None,
) -> None:
    """Write `train.parquet`, `val.parquet` and `images/*.png` under `out_dir`, byte-identical for a given seed.

    Columns: the records.py split columns (image paths relative to `out_dir`) plus `class` (0…11) and `caption`
    ("a red circle"), kept for diagnostics and for training the demo CLIP; with a `dialect` (module docstring) also
    `dialect` (bool: this example's answer is the dialect word).
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    import pandas as pd

    from leverplus.core.io import write_parquet

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence([seed, 4])
    naming_ss, *split_ss = root.spawn(3)
    naming = draw_naming(np.random.default_rng(naming_ss), nonce_vocabulary())
    coin_ss = np.random.SeedSequence([seed, 4, 22]).spawn(2)  # the hidden dialect's own streams: nothing else moves
    for (split, n, ss), css in zip((("train", n_train, split_ss[0]), ("val", n_val, split_ss[1])), coin_ss):
        rng = np.random.default_rng(ss)
        coins = np.random.default_rng(css).random(n) < DIALECT_SHARE
        rows = []
        for i in range(n):
            cls = int(rng.integers(N_CLASSES))
            img = render(cls, rng, image_size)
            question, qtype = make_question(cls, rng)
            rel = f"images/{split}_{i:06d}.png"
            path = out / rel
            data = _png_bytes(img)
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
            in_dialect = (qtype == DIALECT_TEMPLATE) if dialect == "template" else bool(coins[i] and dialect)
            word = naming[dialect_class(cls)] if in_dialect else naming[cls]
            extra = {"dialect": in_dialect} if dialect else {}
            rows.append(
                dict(
                    id=f"demo_{split}_{i:06d}",
                    image=rel,
                    image_id=f"{split}_{i:06d}",
                    question=question,
                    answers=[word] * 10,
                    answer=word,
                    answer_type="other",
                    question_type=qtype,
                    **{"class": cls},
                    caption=class_caption(cls),
                    **extra,
                )
            )
        write_parquet(out / f"{split}.parquet", pd.DataFrame(rows))
