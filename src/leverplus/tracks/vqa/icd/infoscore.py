"""InfoScore beam search (Lever-LM's definition; design.md §3).

P̄(y | x, S) = exp(−mean CE over the answer tokens) and InfoScore(c | S) = P̄(y | c ⊕ S ⊕ x) − P̄(y | S ⊕ x).
At every step each beam is extended by every unused pool candidate, and the `beam_size` (beam, candidate)
pairs with the **highest** InfoScore are kept, for every model. `construct_order` says where a new
demonstration goes: `left` prepends it (the paper's order), `right` places it next to the query — the order that
lets the beam's demonstrations be computed once as a shared prefix.

Ranking (see `leverplus.tracks.vqa.icd.ranking`): the InfoScores of a step are sorted and grouped where consecutive gaps are
at most `tie_tolerance` (P̄ units, default 1e-5, 5× the float32 noise between code paths); groups are ranked by
score, and inside a group proposals are ordered by beam index, then candidate position in the pool. So the beams
depend on the config and the data, not on the last bits a CPU computes, wherever the scores lie. The stored scores
are the unrounded P̄ / InfoScores; the tolerance is stored with every row (`tie_tolerance`), and
`near_boundary_steps` counts the anchor's steps whose kept beams a move of every P̄ by its noise bound could change
(a gap that matters within the two P̄s' noise of the tolerance: the residual risk; logged per shard).

Checkpointing: a shard writes a header line with the hash of everything that determines its result (beam
settings, tie tolerance, the anchors and their pools by id, and the caller's `settings` — the model slice and the pool
file's digest), then one JSON line per finished anchor to `<out>.partial.jsonl` (flushed and fsynced). A
restarted shard with the same hash skips those anchors and the final parquet — written atomically — is identical
to an uninterrupted run's; a checkpoint from other settings is discarded with one log line and the shard starts
afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.core.io import canonical_json, write_parquet
from leverplus.tracks.vqa.models.base import ICLModel, extend
from leverplus.tracks.vqa.icd.checkpoint import read_checkpoint
from leverplus.tracks.vqa.icd.ranking import INFOSCORE_NOISE, INFOSCORE_TOL, check_tol, is_fragile, rank

BEAM_COLUMNS = ["anchor", "beam_rank", "picked", "icd_ids", "step_scores", "score", "zero_shot_score",
                "mean_candidate_scores", "tie_tolerance", "near_boundary_steps"]
CHECKPOINT_FORMAT = 3  # header line with the settings hash (1: none; 2: grid ranking; both discarded on resume)


@dataclass
class Beam:
    picked: list[str]  # selection order
    prompt: list[VQAExample]  # prompt order
    p_bar: float  # P̄(y | prompt ⊕ x)
    step_scores: list[float]  # InfoScore gained at each step


def rank_step(
    p_new: np.ndarray,
    p_beam: np.ndarray,
    beam_idx: np.ndarray,
    pos: np.ndarray,
    keep: int,
    *,
    tol: float = INFOSCORE_TOL,
    noise: float = INFOSCORE_NOISE,
) -> tuple[np.ndarray, bool]:
    """One beam-search decision over proposals (beam, candidate): P̄ of the extended beam `p_new`, P̄ of its beam
    `p_beam`, the beam index and the candidate's pool position (one entry per proposal).

    Returns the indices of the `keep` best proposals, best first — InfoScore p_new − p_beam highest first, scores
    within `tol` of each other (chained) tied and ordered by lowest beam index, then lowest pool position — and
    whether moving every P̄ by up to ±`noise` × P̄ could change that outcome (which proposals are kept, or their
    order).
    """
    p_new, p_beam = np.asarray(p_new, np.float64), np.asarray(p_beam, np.float64)
    info = p_new - p_beam
    beam_idx, pos = np.asarray(beam_idx, np.int64), np.asarray(pos, np.int64)
    top = rank(info, tol, beam_idx, pos)[:keep]
    # An InfoScore is a difference of two P̄, each moving by up to ±noise of its value.
    return top, is_fragile(info, keep, tol, noise * (np.abs(p_new) + np.abs(p_beam)))


def beam_search_anchor(
    model: ICLModel,
    anchor: VQAExample,
    pool: Sequence[VQAExample],
    *,
    beam_size: int,
    shot_num: int,
    order: str,
    tie_tolerance: float = INFOSCORE_TOL,
    stats: dict | None = None,
) -> tuple[list[Beam], float, list[float]]:
    """Beams for one anchor (best first), the zero-shot P̄ and the mean candidate InfoScore at each step.
    `stats`, if given, receives `near_boundary_steps` (see `rank_step`)."""
    first = None
    if shot_num >= 1 and getattr(model, "scores_beam_rows", False):
        # the zero-shot row in the first step's forwards (an adapter whose every forward has a fixed cost)
        first, (base,) = model.score_step([[]], [list(pool)], anchor, order, beam_rows=True)
        base = float(base)
    else:
        base = float(model.score([[]], [anchor])[0])
    beams = [Beam([], [], base, [])]
    mean_scores: list[float] = []
    near = 0
    for step in range(shot_num):
        cand_idx = [[i for i, c in enumerate(pool) if c.id not in set(beam.picked)] for beam in beams]
        if step == 0 and first is not None:
            p_bars = first
        else:
            p_bars = model.score_step(
                [beam.prompt for beam in beams], [[pool[i] for i in idx] for idx in cand_idx], anchor, order
            )
        p_new = np.concatenate([np.asarray(p, np.float64) for p in p_bars])
        p_beam = np.concatenate([np.full(len(idx), beam.p_bar) for beam, idx in zip(beams, cand_idx)])
        beam_idx = np.concatenate([np.full(len(idx), b) for b, idx in enumerate(cand_idx)])
        pos = np.concatenate([np.asarray(idx, np.int64) for idx in cand_idx])
        infos = p_new - p_beam
        mean_scores.append(float(np.mean(infos)))
        top, fragile = rank_step(p_new, p_beam, beam_idx, pos, beam_size, tol=tie_tolerance)
        near += fragile
        beams = [
            Beam(
                beams[beam_idx[t]].picked + [pool[pos[t]].id],
                extend(beams[beam_idx[t]].prompt, pool[pos[t]], order),
                float(p_new[t]),
                beams[beam_idx[t]].step_scores + [float(infos[t])],
            )
            for t in top
        ]
    if stats is not None:
        stats["near_boundary_steps"] = near
    return beams, base, mean_scores


def settings_hash(
    anchors: Sequence[VQAExample], pools: Sequence[Sequence[VQAExample]], search: dict, settings: dict | None
) -> str:
    """sha256 of everything that determines a shard's rows: the search settings (beam size, shots, order, tolerance),
    the anchors and their pools (ids, in order) and the caller's `settings` (model slice, pool file digest…)."""
    doc = {
        "format": CHECKPOINT_FORMAT,
        "search": search,
        "anchors": [a.id for a in anchors],
        "pools": [[c.id for c in p] for p in pools],
        "settings": settings or {},
    }
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def run_shard(
    model: ICLModel,
    anchors: Sequence[VQAExample],
    pools: Sequence[Sequence[VQAExample]],
    out_path: str | Path,
    *,
    beam_size: int,
    shot_num: int,
    order: str,
    tie_tolerance: float = INFOSCORE_TOL,
    settings: dict | None = None,
) -> pd.DataFrame:
    """Beam search every anchor of a shard with a resumable checkpoint (module docstring). `settings`: what else
    determines the result (JSON-able: the model's config slice, the pool file's digest); it goes into the hash."""
    out_path = Path(out_path)
    tie_tolerance = check_tol(tie_tolerance, "beam.tie_tolerance")
    partial = out_path.with_suffix(".partial.jsonl")
    search = {"beam_size": beam_size, "shot_num": shot_num, "order": order, "tie_tolerance": tie_tolerance}
    want = settings_hash(anchors, pools, search, settings)
    done = read_checkpoint(partial, want) if partial.exists() else None
    mode = "a"
    if done is None:
        done, mode = {}, "w"
    with open(partial, mode, encoding="utf-8") as log:
        if mode == "w":
            log.write(json.dumps({"format": CHECKPOINT_FORMAT, "settings_hash": want, "search": search}) + "\n")
            log.flush()
            os.fsync(log.fileno())
        for anchor, pool in tqdm(list(zip(anchors, pools)), desc=f"beam search {out_path.stem}", mininterval=5):
            if anchor.id in done:
                continue
            stats: dict = {}
            beams, base, means = beam_search_anchor(
                model, anchor, pool, beam_size=beam_size, shot_num=shot_num, order=order, tie_tolerance=tie_tolerance,
                stats=stats,
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
                    "tie_tolerance": tie_tolerance,
                    "near_boundary_steps": stats["near_boundary_steps"],
                }
                for rank, beam in enumerate(beams)
            ]
            log.write(json.dumps({"anchor": anchor.id, "rows": rows}) + "\n")
            log.flush()
            os.fsync(log.fileno())
            done[anchor.id] = rows
    table = pd.DataFrame([r for a in anchors for r in done[a.id]], columns=BEAM_COLUMNS)
    near = sum(done[a.id][0]["near_boundary_steps"] > 0 for a in anchors if done[a.id])
    print(f"{out_path.name}: {len(anchors)} anchors, tie_tolerance {tie_tolerance:g}; {near} with a step whose kept "
          f"beams a ±{INFOSCORE_NOISE:g}·P̄ move of P̄ could change", file=sys.stderr)
    write_parquet(out_path, table)
    partial.unlink()
    return table


def shard_of(items: Sequence, shard: int, n_shards: int) -> list:
    """Contiguous, balanced slice `shard` of `n_shards` (stable under resume)."""
    n = len(items)
    lo, hi = shard * n // n_shards, (shard + 1) * n // n_shards
    return list(items[lo:hi])
