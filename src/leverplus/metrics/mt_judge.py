"""LLM judge for MT: a GEMBA-DA-style direct-assessment prompt (Kocmi & Federmann 2023) sent through the project's
OpenAI-compatible client (:class:`leverplus.api.OpenAICompatClient`, key from the environment variable the config
names).  The reply's first number in [0, 100] is the score; replies without one are recorded as unparseable (NaN,
with the raw text kept), never guessed.  Decoding settings are explicit and recorded in the signature.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from leverplus.metrics.signature import make_signature

LANG_NAMES = {"en": "English", "zh": "Chinese", "th": "Thai", "hi": "Hindi", "id": "Indonesian", "de": "German",
              "cs": "Czech", "ja": "Japanese", "ru": "Russian", "fr": "French", "es": "Spanish"}
PROMPT = (
    "Score the following translation from {src_lang} to {tgt_lang} with respect to the human reference on a "
    "continuous scale from 0 to 100, where a score of zero means \"no meaning preserved\" and score of one hundred "
    "means \"perfect meaning and grammar\".\n\n"
    "{src_lang} source: \"{src}\"\n{tgt_lang} human reference: \"{ref}\"\n{tgt_lang} translation: \"{hyp}\"\n"
    "Score: "
)
DEFAULT_SETTINGS = {"max_tokens": 8, "temperature": 0.0, "seed": 0}
_NUMBER = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d+)?)(?![\d])")


def parse_score(text: str) -> float:
    """First number in [0, 100] in a reply ("Score: 87", "87/100", "**72.5**"); NaN when there is none."""
    for m in _NUMBER.finditer(text or ""):
        v = float(m.group(1))
        if 0 <= v <= 100:
            return v
    return float("nan")


def prompt_for(src: str, ref: str, hyp: str, pair: str) -> str:
    s, t = pair.split("-")
    return PROMPT.format(src_lang=LANG_NAMES.get(s, s), tgt_lang=LANG_NAMES.get(t, t), src=src, ref=ref, hyp=hyp)


def judge_signature(model: str, settings: dict) -> str:
    return make_signature("llm_judge", {"prompt": "gemba-da", "model": model, **settings, "parse": "first-0-100"})


def score_llm_judge(df: pd.DataFrame, pair: str, *, api: dict, settings: dict | None = None):
    """Segment and system scores of every row of a language-pair table (first reference in the prompt)."""
    from leverplus.api import APIConfig, OpenAICompatClient

    cfg = APIConfig.from_dict(api)
    client = OpenAICompatClient(cfg)
    st = {**DEFAULT_SETTINGS, **(settings or {})}
    rows, unparseable = [], []
    for r in df.itertuples(index=False):
        reply = client.chat([{"role": "user", "content": prompt_for(r.src, r.refs[0], r.hyp, pair)}], settings=st)
        score = parse_score(reply["text"])
        if np.isnan(score):
            unparseable.append({"id": r.id, "system": r.system, "reply": reply["text"][:200]})
        rows.append({"id": r.id, "system": r.system, "metric": "llm_judge", "score": score})
    seg = pd.DataFrame(rows)
    sig = judge_signature(cfg.model, st)
    corpus = {"llm_judge": {}}
    for system, g in seg.groupby("system", sort=False):
        v = g["score"].to_numpy(float)
        ok = ~np.isnan(v)
        corpus["llm_judge"][system] = {"metric": "llm_judge", "score": float(v[ok].mean()) if ok.any() else None,
                                       "n": int(ok.sum()), "n_unparseable": int((~ok).sum()), "signature": sig}
    return seg, corpus, {"unparseable": unparseable, "n_requests": len(rows), "client": client.stats()}
