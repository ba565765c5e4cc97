"""v4 — v3 with an end-to-end reward.

The rule ``beam_rewards`` generates each anchor's answer with each beam's demonstrations (the ICL model, the
inference decoding settings) and scores it with VQA accuracy against the anchor's own human answers; its table
``rewards.parquet`` holds both rewards per beam (``infoscore_reward`` = v3's InfoScore gain, ``vqa_accuracy`` in
[0, 1]).  v4's reward is

    r = (1 − reward.accuracy_weight) · infoscore_reward + reward.accuracy_weight · vqa_accuracy

and everything else (RCE warm-up, offline GRPO, inference) is v3's.  Accuracy rewards are coarse (a handful of
values per anchor) and often equal across an anchor's beams; GRPO gives such groups zero advantage, so the InfoScore
term keeps a preference where the accuracies tie.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from leverplus.tracks.vqa.icd.selectors.v3 import DEFAULTS as V3_DEFAULTS
from leverplus.tracks.vqa.icd.selectors.v3 import GRPOPointerSelector

DEFAULTS: dict[str, Any] = {
    **V3_DEFAULTS,
    "reward": {
        "accuracy_weight": 0.5,  # weight of the end-to-end VQA accuracy in v4's reward (1 − it: the InfoScore gain)
    },
}

REWARD_COLUMNS = ("anchor", "beam_rank", "infoscore_reward", "vqa_accuracy")


class EndToEndGRPOPointerSelector(GRPOPointerSelector):
    version = "v4"
    DEFAULTS = DEFAULTS

    @classmethod
    def beam_rewards(cls, cfg: dict[str, Any], beam: pd.DataFrame, rewards: pd.DataFrame | None) -> dict:
        if rewards is None:
            raise ValueError("v4 needs the beam_rewards table (rewards.parquet) to train")
        missing = [c for c in REWARD_COLUMNS if c not in rewards.columns]
        if missing:
            raise ValueError(f"rewards table lacks columns {missing}")
        w = float(cfg["reward"]["accuracy_weight"])
        if not 0 <= w <= 1:
            raise ValueError("reward.accuracy_weight must be in [0, 1]")
        beams = rewards[rewards["kind"] == "beam"] if "kind" in rewards.columns else rewards
        mixed = cls.row_rewards(cfg, beams)
        return {(str(a), int(r)): m for a, r, m in zip(beams["anchor"], beams["beam_rank"], mixed)}

    @classmethod
    def row_rewards(cls, cfg: dict[str, Any], rows: pd.DataFrame) -> list[float]:
        w = float(cfg["reward"]["accuracy_weight"])
        if not 0 <= w <= 1:
            raise ValueError("reward.accuracy_weight must be in [0, 1]")
        mixed = (1 - w) * rows["infoscore_reward"].astype(float) + w * rows["vqa_accuracy"].astype(float)
        return [float(m) for m in mixed]
