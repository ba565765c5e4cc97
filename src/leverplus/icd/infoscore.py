"""InfoScore beam search (Lever-LM's definition; design.md §3).

P̄(y | x, S) = exp(−mean CE over the answer tokens) and InfoScore(c | S) = P̄(y | c ⊕ S ⊕ x) − P̄(y | S ⊕ x).
At every step each beam is extended by every unused pool candidate, and the `beam_size` (beam, candidate)
pairs with the **highest** InfoScore are kept, for every model. `construct_order` says where a new
demonstration goes: `left` prepends it (the paper's order), `right` places it next to the query — the order that
lets the beam's demonstrations be computed once as a shared prefix.

Checkpointing: a shard appends one JSON line per finished anchor to `<out>.partial.jsonl` (flushed and fsynced);
a restarted shard skips those anchors and the final parquet — written atomically — is identical to an
uninterrupted run's.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data.records import VQAExample
from ..io import write_parquet
from ..models.base import ICLModel, extend

BEAM_COLUMNS = ["anchor", "beam_rank", "picked", "icd_ids", "step_scores", "score", "zero_shot_score",
                "mean_candidate_scores"]


@dataclass
class Beam:
    picked: list[str]  # selection order
    prompt: list[VQAExample]  # prompt order
    p_bar: float  # P̄(y | prompt ⊕ x)
    step_scores: list[float]  # InfoScore gained at each step


def beam_search_anchor(
    model: ICLModel,
    anchor: VQAExample,
    pool: Sequence[VQAExample],
    *,
    beam_size: int,
    shot_num: int,
    order: str,
) -> tuple[list[Beam], float, list[float]]:
    """Beams for one anchor (best first), the zero-shot P̄ and the mean candidate InfoScore at each step."""
    base = float(model.score([[]], [anchor])[0])
    beams = [Beam([], [], base, [])]
    mean_scores: list[float] = []
    for _ in range(shot_num):
        proposals: list[tuple[float, int, int]] = []  # (info, beam index, candidate index)
        new_p: dict[tuple[int, int], float] = {}
        step_infos = []
        cand_idx = [[i for i, c in enumerate(pool) if c.id not in set(beam.picked)] for beam in beams]
        p_bars = model.score_step(
            [beam.prompt for beam in beams], [[pool[i] for i in idx] for idx in cand_idx], anchor, order
        )
        for b, (beam, idx, p_bar) in enumerate(zip(beams, cand_idx, p_bars)):
            info = p_bar - beam.p_bar
            step_infos.append(info)
            for i, s, p in zip(idx, info, p_bar):
                proposals.append((float(s), b, i))
                new_p[(b, i)] = float(p)
        mean_scores.append(float(np.mean(np.concatenate(step_infos))))
        # Highest InfoScore first; ties broken by beam then candidate position, so the result is deterministic.
        proposals.sort(key=lambda t: (-t[0], t[1], t[2]))
        beams = [
            Beam(
                beams[b].picked + [pool[i].id],
                extend(beams[b].prompt, pool[i], order),
                new_p[(b, i)],
                beams[b].step_scores + [s],
            )
            for s, b, i in proposals[:beam_size]
        ]
    return beams, base, mean_scores


def run_shard(
    model: ICLModel,
    anchors: Sequence[VQAExample],
    pools: Sequence[Sequence[VQAExample]],
    out_path: str | Path,
    *,
    beam_size: int,
    shot_num: int,
    order: str,
) -> pd.DataFrame:
    out_path = Path(out_path)
    partial = out_path.with_suffix(".partial.jsonl")
    done: dict[str, list[dict]] = {}
    if partial.exists():
        good = 0  # bytes up to the end of the last complete line
        with open(partial, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn last line of a killed run: recompute that anchor
                rec = json.loads(line)
                done[rec["anchor"]] = rec["rows"]
                good += len(line)
        # Drop the torn tail before appending, or the next line would be glued to it and the checkpoint unreadable.
        os.truncate(partial, good)
    with open(partial, "a", encoding="utf-8") as log:
        for anchor, pool in tqdm(list(zip(anchors, pools)), desc=f"beam search {out_path.stem}", mininterval=5):
            if anchor.id in done:
                continue
            beams, base, means = beam_search_anchor(
                model, anchor, pool, beam_size=beam_size, shot_num=shot_num, order=order
            )
            rows = [
                {
                    "anchor": anchor.id,
                    "beam_rank": rank,
                    "picked": beam.picked,
                    "icd_ids": [d.id for d in beam.prompt],
                    "step_scores": beam.step_scores,
                    "score": beam.p_bar,
                    "zero_shot_score": base,
                    "mean_candidate_scores": means,
                }
                for rank, beam in enumerate(beams)
            ]
            log.write(json.dumps({"anchor": anchor.id, "rows": rows}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            done[anchor.id] = rows
    table = pd.DataFrame([r for a in anchors for r in done[a.id]], columns=BEAM_COLUMNS)
    write_parquet(out_path, table)
    partial.unlink()
    return table


def shard_of(items: Sequence, shard: int, n_shards: int) -> list:
    """Contiguous, balanced slice `shard` of `n_shards` (stable under resume)."""
    n = len(items)
    lo, hi = shard * n // n_shards, (shard + 1) * n // n_shards
    return list(items[lo:hi])
