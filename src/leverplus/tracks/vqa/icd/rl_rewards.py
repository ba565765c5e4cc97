"""The GRPO groups of the selectors v3/v4 and their rewards.

An anchor's **group** holds more than the beams a selector is trained to imitate: every beam the search kept
(``beam_rank`` 0 … beam_size − 1; ``rl.group.beams`` caps it) and ``rl.group.random`` sequences of ``shot_num``
distinct candidates drawn at random from the anchor's beam-search pool (seeded per anchor: ``query_rng(seed,
anchor)``). The top beams of a tie-rich pool differ by float noise only; the lower-ranked beams and the random
sequences give a group something to prefer.

Each row of the output table (``REWARD_COLUMNS``; ``kind`` = beam | random; ``beam_rank`` = the row's index in its
group, beams first) is scored twice:

* ``infoscore_reward`` = P̄(y | sequence ⊕ x) − P̄(y | x): for a beam its final P̄ minus the anchor's zero-shot P̄
  from ``beam.parquet`` (the sum of its step InfoScores); for a random sequence the ICL model scores its P̄ (the
  same ``score`` the beam search uses, the prompt laid out by ``construct_order``) minus the same zero-shot P̄;
* ``vqa_accuracy``: the ICL model answers the anchor's question with the row's demonstrations (prompt order; the
  inference decoding settings) and the answer is scored against the anchor's own human answers, in [0, 1].

v3 trains on the first, v4 on a mix of both. The log and ``<out>.json``-free stderr summary give the per-group
spread: the share of anchors whose rewards are not all equal (InfoScore beyond ``beam.tie_tolerance``; accuracy).

Resumable as the beam search is (``leverplus.tracks.vqa.icd.infoscore``): a header line with the hash of every setting that
decides the rows (decoding, model slice, prompt, VQA evaluation, group settings, the beam and pool files' digests,
the anchors), then one fsynced JSON line per finished anchor in ``<out>.partial.jsonl``.  Anchors are processed in
fixed chunks of the anchor list (``chunk`` anchors per ``generate``/``score`` call); a chunk with an unfinished
anchor is recomputed whole, so a resumed run batches every row exactly as an uninterrupted one and writes the same
bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

import numpy as np

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.core.io import canonical_json, write_parquet
from leverplus.metrics.vqa import vqa_accuracy
from leverplus.tracks.vqa.models.base import extend
from leverplus.models.generation import GenerationSettings
from leverplus.tracks.vqa.icd.checkpoint import read_checkpoint
from leverplus.tracks.vqa.icd.ranking import INFOSCORE_TOL
from leverplus.tracks.vqa.icd.retrieval import query_rng

REWARD_COLUMNS = ["anchor", "beam_rank", "kind", "picked", "icd_ids", "prediction", "vqa_accuracy",
                  "infoscore_reward"]
CHECKPOINT_FORMAT = 2
GROUP_DEFAULTS = {"beams": None, "random": 3}  # rl.group: beams per group (None: all kept), random sequences


def group_spread(table: pd.DataFrame, tol: float = INFOSCORE_TOL) -> dict:
    """Per-group reward spread: the share of anchors whose group's InfoScore rewards span more than ``tol`` and
    whose VQA accuracies are not all equal, and the mean over groups of each reward's unbiased std."""
    g = table.groupby("anchor", sort=False)
    info = g["infoscore_reward"].agg(lambda r: float(r.max() - r.min()))
    acc = g["vqa_accuracy"].agg(lambda r: float(r.max() - r.min()))
    return {
        "anchors": int(len(info)),
        "group_size_mean": float(g.size().mean()),
        "infoscore_spread_share": float((info > tol).mean()),
        "accuracy_spread_share": float((acc > 0).mean()),
        "infoscore_std_mean": float(g["infoscore_reward"].std(ddof=1).fillna(0).mean()),
        "accuracy_std_mean": float(g["vqa_accuracy"].std(ddof=1).fillna(0).mean()),
    }


def rewards_hash(anchor_ids: Sequence[str], settings: dict) -> str:
    doc = {"format": CHECKPOINT_FORMAT, "what": "beam_rewards", "anchors": list(anchor_ids), "settings": settings}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def run_beam_rewards(model, beam: pd.DataFrame, examples: dict[str, VQAExample], answers: dict[str, list[str]],
                     out_path: str | Path, *, generation: GenerationSettings, vqa_eval: str, stem: bool,
                     pools: dict[str, list[str]] | None = None, group: dict | None = None, shot_num: int | None = None,
                     order: str = "right", seed: int = 0, chunk: int = 8, settings: dict | None = None
                     ) -> pd.DataFrame:
    """Build, score and write every anchor's group (module docstring). ``pools``: anchor → its beam-search pool
    (needed for random sequences); ``group``: ``rl.group`` (``beams``, ``random``). ``settings`` (JSON-able) goes
    into the checkpoint hash."""
    out_path = Path(out_path)
    need = [c for c in ("anchor", "beam_rank", "picked", "icd_ids", "score", "zero_shot_score") if c not in beam.columns]
    if need:
        raise ValueError(f"beam table lacks columns {need}")
    group = {**GROUP_DEFAULTS, **(group or {})}
    n_random = int(group["random"])
    if n_random and (pools is None or not shot_num):
        raise ValueError("random group sequences need the anchors' pools and shot_num")
    used = beam.assign(anchor=beam["anchor"].astype(str), beam_rank=beam["beam_rank"].astype(int))
    if group["beams"] is not None:
        used = used[used["beam_rank"] < int(group["beams"])]
    used = used.sort_values(["anchor", "beam_rank"], kind="stable")
    anchor_ids = list(dict.fromkeys(used["anchor"]))
    unknown = [a for a in anchor_ids if a not in examples or a not in answers]
    if unknown:
        raise ValueError(f"beam anchors {unknown[:5]} are not in the train split")
    rows_of = {a: g for a, g in used.groupby("anchor", sort=False)}
    for a in anchor_ids:
        for i in [i for ids in rows_of[a]["icd_ids"] for i in ids]:
            if str(i) not in examples:
                raise ValueError(f"beam ICD {i!r} of anchor {a!r} is not in the train split")
        if n_random:
            if a not in pools:
                raise ValueError(f"beam anchor {a!r} has no pool")
            if len(pools[a]) < int(shot_num):
                raise ValueError(f"pool of anchor {a!r} has {len(pools[a])} candidates, fewer than shot_num {shot_num}")
    full = {"generation": generation.as_dict(), "group": group, "shot_num": shot_num, "order": order, "seed": seed,
            "vqa_eval": vqa_eval, "stem": stem, "chunk": chunk, "settings": settings or {}}
    want = rewards_hash(anchor_ids, full)
    partial = out_path.with_suffix(".partial.jsonl")
    done = read_checkpoint(partial, want) if partial.exists() else None
    mode = "a"
    if done is None:
        done, mode = {}, "w"

    def members(a: str) -> list[dict]:
        """The anchor's group before scoring: its beams, then its random sequences."""
        out = [{"kind": "beam", "picked": [str(i) for i in r.picked], "icd_ids": [str(i) for i in r.icd_ids],
                "p_bar": float(r.score), "base": float(r.zero_shot_score)} for r in rows_of[a].itertuples(index=False)]
        base = out[0]["base"]
        rng = query_rng(seed, a)
        for _ in range(n_random):
            picked = [pools[a][j] for j in rng.choice(len(pools[a]), size=int(shot_num), replace=False)]
            prompt: list = []
            for p in picked:
                prompt = extend(prompt, p, order)
            out.append({"kind": "random", "picked": picked, "icd_ids": list(prompt), "p_bar": None, "base": base})
        return out

    chunks = [anchor_ids[s : s + chunk] for s in range(0, len(anchor_ids), chunk)]
    with open(partial, mode, encoding="utf-8") as log:
        if mode == "w":
            log.write(json.dumps({"format": CHECKPOINT_FORMAT, "settings_hash": want}) + "\n")
            log.flush()
            os.fsync(log.fileno())
        for part in tqdm(chunks, desc=f"group rewards {out_path.parent.name}", mininterval=5, file=sys.stderr):
            if all(a in done for a in part):
                continue
            rows = [(a, m) for a in part for m in members(a)]
            unscored = [k for k, (_, m) in enumerate(rows) if m["p_bar"] is None]
            if unscored:
                p_bars = model.score([[examples[i] for i in rows[k][1]["icd_ids"]] for k in unscored],
                                     [examples[rows[k][0]] for k in unscored])
                for k, p in zip(unscored, np.asarray(p_bars, dtype=np.float64)):
                    rows[k][1]["p_bar"] = float(p)
            preds = model.generate([[examples[i] for i in m["icd_ids"]] for _, m in rows],
                                   [examples[a] for a, _ in rows], generation)
            by_anchor: dict[str, list[dict]] = {}
            for (a, m), pred in zip(rows, preds):
                group_rows = by_anchor.setdefault(a, [])
                group_rows.append({
                    "anchor": a,
                    "beam_rank": len(group_rows),
                    "kind": m["kind"],
                    "picked": m["picked"],
                    "icd_ids": m["icd_ids"],
                    "prediction": str(pred),
                    "vqa_accuracy": vqa_accuracy(str(pred), answers[a], stem=stem, vqa_eval=vqa_eval),
                    "infoscore_reward": m["p_bar"] - m["base"],
                })
            for a in part:
                if a in done:
                    continue  # recomputed only to batch the chunk as before; the checkpointed rows stand
                log.write(json.dumps({"anchor": a, "rows": by_anchor[a]}) + "\n")
                done[a] = by_anchor[a]
            log.flush()
            os.fsync(log.fileno())
    table = pd.DataFrame([r for a in anchor_ids for r in done[a]], columns=REWARD_COLUMNS)
    spread = group_spread(table)
    print(f"{out_path.name}: {len(anchor_ids)} anchors, {len(table)} group rows "
          f"({int((table['kind'] == 'random').sum())} random); mean VQA accuracy {table['vqa_accuracy'].mean():.3f}; "
          f"reward spread within a group: InfoScore {100 * spread['infoscore_spread_share']:.1f}% of anchors, "
          f"VQA accuracy {100 * spread['accuracy_spread_share']:.1f}%", file=sys.stderr)
    write_parquet(out_path, table)
    partial.unlink()
    return table
