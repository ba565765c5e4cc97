"""LLM judge for MT: a direct-assessment prompt in the style of GEMBA-DA with a reference (Kocmi & Federmann 2023,
GEMBA's ``GEMBA-DA_ref``; **our own wording, not GEMBA's verbatim prompt**, so the signature names it
``prompt:leverplus-da-ref``) sent through the project's OpenAI-compatible client (:class:`leverplus.api.
OpenAICompatClient`, key from the environment variable the config names).  Only the **first reference** of a segment
goes into the prompt (signature ``ref:first``).

Parsing is GEMBA's rule (``gemba/prompt.py`` ``parse_numerical_answer`` + ``validate_number`` at MicrosoftTranslator/
GEMBA a7a7eff): the stripped reply must hold exactly one run of digits, or be ``['N']``, or ``N/100``; the number must
lie in [0, 100].  Anything else ("Score (0-100): 85", "8/10", "1. Score: 90", "72.5") is unparseable: GEMBA asks again
at a higher temperature (t/10 for t = 1, 2, ...); here ``parse_retries`` such retries, then NaN, counted and kept with
the reply text -- never a guessed number.  Decoding settings are explicit and recorded in the signature.
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
_DIGITS = re.compile(r"\d+")


def parse_score(text: str) -> float:
    """GEMBA's rule (module docstring): one number in the reply, or ``['N']``, or ``N/100``; in [0, 100]; NaN
    otherwise.  Like GEMBA it reads digit runs only, so a minus sign is not seen ("-5" -> 5) and "72.5" has two
    numbers (unparseable)."""
    t = (text or "").strip()
    nums = _DIGITS.findall(t)
    if len(nums) == 1:
        v = int(nums[0])
    elif re.match(r"^\[['\"][0-9]*['\"]\]$", t):
        v = int(t[2:-2])
    elif re.match(r"^[0-9]*/100$", t):
        v = int(t.split("/")[0])
    else:
        return float("nan")
    return float(v) if 0 <= v <= 100 else float("nan")


def prompt_for(src: str, ref: str, hyp: str, pair: str) -> str:
    s, t = pair.split("-")
    return PROMPT.format(src_lang=LANG_NAMES.get(s, s), tgt_lang=LANG_NAMES.get(t, t), src=src, ref=ref, hyp=hyp)


PROMPT_NAME = "leverplus-da-ref"  # GEMBA-DA_ref-style, own wording (not GEMBA's verbatim prompt)
DEFAULT_RETRIES = 10  # GEMBA: temperature 0.1, 0.2, ... 1.0 before giving up


def judge_signature(model: str, settings: dict, retries: int = DEFAULT_RETRIES) -> str:
    return make_signature("llm_judge", {"prompt": PROMPT_NAME, "model": model, **settings, "ref": "first",
                                        "parse": "gemba", "retries": retries})


def score_llm_judge(df: pd.DataFrame, pair: str, *, api: dict, settings: dict | None = None,
                    retries: int = DEFAULT_RETRIES):
    """Segment and system scores of every row of a language-pair table (first reference in the prompt).  An
    unparseable reply is asked again up to ``retries`` times at temperature 0.1, 0.2, ... (GEMBA's escalation);
    still unparseable: NaN, counted (``n_unparseable``) and kept (``unparseable``)."""
    from leverplus.api import APIConfig, OpenAICompatClient

    cfg = APIConfig.from_dict(api)
    client = OpenAICompatClient(cfg)
    st = {**DEFAULT_SETTINGS, **(settings or {})}
    rows, unparseable, n_retried = [], [], 0
    for r in df.itertuples(index=False):
        msgs = [{"role": "user", "content": prompt_for(r.src, r.refs[0], r.hyp, pair)}]
        reply = client.chat(msgs, settings=st)
        score = parse_score(reply["text"])
        tries = 0
        while np.isnan(score) and tries < retries:
            tries += 1
            reply = client.chat(msgs, settings={**st, "temperature": tries / 10})
            score = parse_score(reply["text"])
        n_retried += tries > 0
        if np.isnan(score):
            unparseable.append({"id": r.id, "system": r.system, "reply": reply["text"][:200], "tries": 1 + tries})
        rows.append({"id": r.id, "system": r.system, "metric": "llm_judge", "score": score})
    seg = pd.DataFrame(rows)
    sig = judge_signature(cfg.model, st, retries)
    corpus = {"llm_judge": {}}
    for system, g in seg.groupby("system", sort=False):
        v = g["score"].to_numpy(float)
        ok = ~np.isnan(v)
        corpus["llm_judge"][system] = {"metric": "llm_judge", "score": float(v[ok].mean()) if ok.any() else None,
                                       "n": int(ok.sum()), "n_unparseable": int((~ok).sum()), "signature": sig}
    return seg, corpus, {"unparseable": unparseable, "n_requests": len(rows), "n_retried": n_retried,
                         "reference": "first reference only", "prompt": PROMPT_NAME, "client": client.stats()}
