"""LLM judge (GEMBA-DA prompt) through the project's client against the local OpenAI-compatible server serving a
tiny real chat LM (random weights: its replies carry no judgement, and mostly no number -- which is exactly the
unparseable path the judge must record, not guess)."""

import math

import numpy as np
import pytest
from api_fixtures import (  # noqa: F401
    API_KEY, API_KEY_ENV, CHAT_MODEL, api_config, api_server, chat_backend, hidden_state_backends, tiny_chat_dir)

from leverplus.data import mt_demo
from leverplus.metrics import mt_judge


def test_parse_score_robustly():
    assert mt_judge.parse_score("Score: 87") == 87
    assert mt_judge.parse_score("**72.5**/100") == 72.5
    assert mt_judge.parse_score("I'd say 105, no: 90") == 90  # first number inside [0, 100]
    assert math.isnan(mt_judge.parse_score("excellent translation"))
    assert math.isnan(mt_judge.parse_score(""))


def test_judge_against_local_server(api_server):
    df = mt_demo.generate_pair("en-id", 3, 0)
    df = df[df["system"].isin(["sys_a", "sys_e"])]
    cfg = api_config(api_server)
    api = {"base_url": cfg.base_url, "model": CHAT_MODEL, "api_key_env": API_KEY_ENV, "backoff_s": 0.01}
    seg, corpus, extra = mt_judge.score_llm_judge(df, "en-id", api=api, settings={"max_tokens": 4})
    assert len(seg) == len(df) == extra["n_requests"]
    reqs = api_server.requests_for("/v1/chat/completions")
    assert len(reqs) == len(df)
    body = reqs[0].body
    prompt = body["messages"][0]["content"]
    assert "from English to Indonesian" in prompt and df["hyp"].iloc[0] in prompt and df["refs"].iloc[0][0] in prompt
    assert body["max_tokens"] == 4 and body["temperature"] == 0.0 and body["seed"] == 0  # explicit decoding
    n_nan = int(np.isnan(seg["score"]).sum())
    assert n_nan == len(extra["unparseable"])  # every unparseable reply recorded with its text
    assert sum(c["n_unparseable"] for c in corpus["llm_judge"].values()) == n_nan
    assert "prompt:gemba-da" in corpus["llm_judge"]["sys_a"]["signature"]
    assert API_KEY not in str(extra)
