"""End-to-end rewards of the beams (v4): for every beam of every anchor, the ICL model answers the anchor's question
with that beam's demonstrations (prompt order, as the beam search built it) and the answer is scored with VQA
accuracy against the anchor's own human answers.

Output table (one row per (anchor, beam_rank < beam_ranks), ``REWARD_COLUMNS``): ``prediction``, ``vqa_accuracy``
in [0, 1], ``infoscore_reward`` = the beam's final P̄ minus the anchor's zero-shot P̄ (v3's reward), the beam's
``icd_ids``.

Resumable as the beam search is (``leverplus.icd.infoscore``): a header line with the hash of every setting that
decides the rows (decoding, model slice, prompt, VQA evaluation, the beam file's digest, the anchors), then one
fsynced JSON line per finished anchor in ``<out>.partial.jsonl``.  Anchors are generated in fixed chunks of the
anchor list (``chunk`` anchors per ``generate`` call); a chunk with an unfinished anchor is recomputed whole, so a
resumed run batches every row exactly as an uninterrupted one and writes the same bytes.
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

from ..data.records import VQAExample
from ..io import canonical_json, write_parquet
from ..metrics.vqa import vqa_accuracy
from ..models.generation import GenerationSettings
from .checkpoint import read_checkpoint

REWARD_COLUMNS = ["anchor", "beam_rank", "icd_ids", "prediction", "vqa_accuracy", "infoscore_reward"]
CHECKPOINT_FORMAT = 1


def rewards_hash(anchor_ids: Sequence[str], settings: dict) -> str:
    doc = {"format": CHECKPOINT_FORMAT, "what": "beam_rewards", "anchors": list(anchor_ids), "settings": settings}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def run_beam_rewards(model, beam: pd.DataFrame, examples: dict[str, VQAExample], answers: dict[str, list[str]],
                     out_path: str | Path, *, generation: GenerationSettings, beam_ranks: int, vqa_eval: str,
                     stem: bool, chunk: int = 8, settings: dict | None = None) -> pd.DataFrame:
    """Generate and score every kept beam (module docstring); ``settings`` (JSON-able) goes into the checkpoint
    hash along with the decoding, ranks and evaluation given here."""
    out_path = Path(out_path)
    need = [c for c in ("anchor", "beam_rank", "icd_ids", "score", "zero_shot_score") if c not in beam.columns]
    if need:
        raise ValueError(f"beam table lacks columns {need}")
    used = beam.assign(anchor=beam["anchor"].astype(str), beam_rank=beam["beam_rank"].astype(int))
    used = used[used["beam_rank"] < beam_ranks].sort_values(["anchor", "beam_rank"], kind="stable")
    anchor_ids = list(dict.fromkeys(used["anchor"]))
    unknown = [a for a in anchor_ids if a not in examples or a not in answers]
    if unknown:
        raise ValueError(f"beam anchors {unknown[:5]} are not in the train split")
    rows_of = {a: g for a, g in used.groupby("anchor", sort=False)}
    full = {"generation": generation.as_dict(), "beam_ranks": beam_ranks, "vqa_eval": vqa_eval, "stem": stem,
            "chunk": chunk, "settings": settings or {}}
    want = rewards_hash(anchor_ids, full)
    partial = out_path.with_suffix(".partial.jsonl")
    done = read_checkpoint(partial, want) if partial.exists() else None
    mode = "a"
    if done is None:
        done, mode = {}, "w"
    chunks = [anchor_ids[s : s + chunk] for s in range(0, len(anchor_ids), chunk)]
    with open(partial, mode, encoding="utf-8") as log:
        if mode == "w":
            log.write(json.dumps({"format": CHECKPOINT_FORMAT, "settings_hash": want}) + "\n")
            log.flush()
            os.fsync(log.fileno())
        for part in tqdm(chunks, desc=f"beam rewards {out_path.parent.name}", mininterval=5, file=sys.stderr):
            if all(a in done for a in part):
                continue
            beams = [(a, r) for a in part for r in rows_of[a].itertuples(index=False)]
            for a in part:
                for i in rows_of[a]["icd_ids"].iloc[0]:
                    if str(i) not in examples:
                        raise ValueError(f"beam ICD {i!r} of anchor {a!r} is not in the train split")
            preds = model.generate([[examples[str(i)] for i in r.icd_ids] for _, r in beams],
                                   [examples[a] for a, _ in beams], generation)
            by_anchor: dict[str, list[dict]] = {}
            for (a, r), pred in zip(beams, preds):
                by_anchor.setdefault(a, []).append({
                    "anchor": a,
                    "beam_rank": int(r.beam_rank),
                    "icd_ids": [str(i) for i in r.icd_ids],
                    "prediction": str(pred),
                    "vqa_accuracy": vqa_accuracy(str(pred), answers[a], stem=stem, vqa_eval=vqa_eval),
                    "infoscore_reward": float(r.score) - float(r.zero_shot_score),
                })
            for a in part:
                if a in done:
                    continue  # recomputed only to batch the chunk as before; the checkpointed rows stand
                log.write(json.dumps({"anchor": a, "rows": by_anchor[a]}) + "\n")
                done[a] = by_anchor[a]
            log.flush()
            os.fsync(log.fileno())
    table = pd.DataFrame([r for a in anchor_ids for r in done[a]], columns=REWARD_COLUMNS)
    acc = table["vqa_accuracy"]
    ties = table.groupby("anchor")["vqa_accuracy"].nunique().eq(1).mean()
    print(f"{out_path.name}: {len(anchor_ids)} anchors, {len(table)} beams; mean VQA accuracy {acc.mean():.3f}; "
          f"{100 * ties:.0f}% of anchors with one accuracy for all their beams", file=sys.stderr)
    write_parquet(out_path, table)
    partial.unlink()
    return table
