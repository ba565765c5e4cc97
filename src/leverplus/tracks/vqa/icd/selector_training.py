"""Training data and loop for the ICD selectors (``leverplus.tracks.vqa.icd.selectors``).

Training sequences come from the beam search: for each anchor (a train example used as the query) and each of its
best ``beam_ranks`` beams, the ICDs in the order the beam search *picked* them.  The candidate set is the anchor's
beam-search pool (``pool.parquet``): at every step the selector is trained with cross-entropy over the whole pool —
the beam's next pick is the positive, every other pool candidate not chosen yet is a negative.

Determinism: the seed fixes parameter initialisation, dropout and the shuffling order, so two CPU runs with the
same inputs, config, seed and thread count produce bit-identical weights. Across CPUs (other kernels) float32
training drifts far apart; with ``dtype: float64`` it ends within ~1e-11 (``selectors.common.compute_dtype``).  Input row order does not matter
(beams are sorted by anchor and beam rank).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.selectors.common import Source, compute_dtype, make_batch

BEAM_COLUMNS = ("anchor", "beam_rank", "picked")
POOL_COLUMNS = ("anchor", "candidates")


@dataclass
class TrainingSequences:
    """One entry per (anchor, beam): rows refer to the training source (the train split)."""

    anchors: list[str] = field(default_factory=list)
    beam_ranks: list[int] = field(default_factory=list)
    query_rows: list[int] = field(default_factory=list)  # the anchor's row
    pool_rows: list[list[int]] = field(default_factory=list)  # rows of every candidate of the anchor's pool
    targets: list[list[int]] = field(default_factory=list)  # pool positions of the picked ICDs, in pick order

    def __len__(self) -> int:
        return len(self.anchors)


def build_sequences(beam: pd.DataFrame, pools: pd.DataFrame, source: Source, beam_ranks: int) -> TrainingSequences:
    """Join beams with their anchor's pool.  Every picked ICD must be a member of that pool (the beam search chose
    from it) and the anchor must not be in its own pool; anything else means the inputs are inconsistent."""
    for name, table, cols in (("beam", beam, BEAM_COLUMNS), ("pools", pools, POOL_COLUMNS)):
        missing = [c for c in cols if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks columns {missing}")
    pool_of: dict[str, list[str]] = {}
    for anchor, candidates in zip(pools["anchor"].astype(str), pools["candidates"]):
        candidates = [str(c) for c in candidates]
        if anchor in pool_of:
            raise ValueError(f"anchor {anchor!r} has more than one pool")
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"pool of anchor {anchor!r} has duplicate candidates")
        if anchor in candidates:
            raise ValueError(f"anchor {anchor!r} is in its own pool")
        pool_of[anchor] = candidates

    used = beam.assign(anchor=beam["anchor"].astype(str), beam_rank=beam["beam_rank"].astype(int))
    used = used[used["beam_rank"] < beam_ranks].sort_values(["anchor", "beam_rank"], kind="stable")
    seqs = TrainingSequences()
    rows_of_pool: dict[str, tuple[list[int], dict[str, int]]] = {}
    for anchor, rank, picked in zip(used["anchor"], used["beam_rank"], used["picked"]):
        if anchor not in pool_of:
            raise ValueError(f"beam anchor {anchor!r} has no pool")
        if anchor not in rows_of_pool:
            pool = pool_of[anchor]
            rows_of_pool[anchor] = (source.rows(pool, "pool"), {c: k for k, c in enumerate(pool)})
        pool_rows, position = rows_of_pool[anchor]
        picked = [str(p) for p in picked]
        if not picked or len(set(picked)) != len(picked):
            raise ValueError(f"beam {rank} of anchor {anchor!r}: picked ICDs must be non-empty and distinct")
        outside = [p for p in picked if p not in position]
        if outside:
            raise ValueError(f"beam {rank} of anchor {anchor!r} picked {outside} outside the anchor's pool")
        seqs.anchors.append(anchor)
        seqs.beam_ranks.append(int(rank))
        seqs.query_rows.append(source.rows([anchor], "anchor")[0])
        seqs.pool_rows.append(pool_rows)
        seqs.targets.append([position[p] for p in picked])
    if not len(seqs):
        raise ValueError("no training sequences (empty beam table, or beam_ranks < 1)")
    return seqs


BATCH_BY = ("sequence", "anchor")


def epoch_order(data: TrainingSequences, shuffle: torch.Generator, batch_by: str = "sequence") -> list[int]:
    """One epoch's order of the training sequences, cut into batches of ``batch_size`` by the caller.

    ``sequence``: a random permutation of every (anchor, beam) sequence, as Lever-LM's shuffled data loader.
    ``anchor``: a random permutation of the anchors, each followed by all of its sequences (by beam rank), so an
    anchor's beams sit in one batch (or two, where a batch boundary falls inside it). Same sequences, same epochs;
    a batch then holds ~batch_size / beam_ranks distinct pools instead of ~batch_size, which is what v2_lora pays
    for (it encodes every distinct image and question of a batch through CLIP at each step).
    """
    if batch_by == "sequence":
        return torch.randperm(len(data), generator=shuffle).tolist()
    if batch_by != "anchor":
        raise ValueError(f"selector batch_by {batch_by!r}: choose from {list(BATCH_BY)}")
    members: dict[str, list[int]] = {}
    for i, anchor in enumerate(data.anchors):
        members.setdefault(anchor, []).append(i)
    anchors = sorted(members)  # a fixed order before the draw: the input's row order does not matter
    return [i for k in torch.randperm(len(anchors), generator=shuffle).tolist() for i in members[anchors[k]]]


def supervised_epochs(model, data: TrainingSequences, source, *, shuffle: torch.Generator,
                      weights: torch.Tensor | None = None, desc: str | None = None) -> list[float]:
    """``cfg["epochs"]`` passes of teacher-forced cross-entropy (dropout on), shuffled by ``shuffle``; with
    ``weights`` (one per sequence) each sequence's terms are weighted (v3's RCE).  Returns the loss per epoch."""
    from tqdm.auto import tqdm

    cfg = model.cfg
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    batch_size = int(cfg["batch_size"])
    n_batches = math.ceil(len(data) / batch_size)
    epoch_losses: list[float] = []
    model.train()
    with tqdm(total=cfg["epochs"] * n_batches, desc=desc or f"train_selector {model.version}", unit="batch",
              file=sys.stderr, mininterval=1.0) as bar:
        for epoch in range(cfg["epochs"]):
            order = epoch_order(data, shuffle, cfg.get("batch_by", "sequence"))
            total = 0.0
            for s in range(0, len(data), batch_size):
                idx = order[s : s + batch_size]
                batch = make_batch([data.query_rows[i] for i in idx], [data.pool_rows[i] for i in idx],
                                   [data.targets[i] for i in idx])
                if weights is None:
                    loss = model.sequence_loss(batch, source, source)
                else:
                    from leverplus.tracks.vqa.icd.rl import weighted_sequence_loss

                    loss = weighted_sequence_loss(model, batch, source, source, weights[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if cfg["grad_clip"]:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg["grad_clip"])
                optimiser.step()
                total += loss.item() * len(idx)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
            epoch_losses.append(total / len(data))
    model.eval()
    return epoch_losses


def train_selector(version: str, *, beam: pd.DataFrame, pools: pd.DataFrame, train_features: Features,
                   cfg: dict[str, Any], out_dir: str | Path, encoder_dir: str | None = None,
                   train_table: pd.DataFrame | None = None, seed: int = 0,
                   rewards: pd.DataFrame | None = None) -> dict[str, Any]:
    """Train selector ``version`` on the beam sequences, write ``out_dir/model.safetensors`` and
    ``out_dir/selector.json``, and return training stats (also stored in selector.json under ``training``).

    ``cfg`` is the ``selector`` config slice; keys and defaults are the version's ``DEFAULTS``.  ``encoder_dir``
    (CLIP directory) and ``train_table`` (train split: id, image, question) are needed by v2_lora only;
    ``rewards`` (the ``beam_rewards`` table) by v4 only.  Versions with a ``fit`` method (v3, v4) train with it;
    the others with :func:`supervised_epochs`.
    """
    from leverplus.tracks.vqa.icd.selectors import config_for, selector_class

    cls = selector_class(version)
    cfg = config_for(version, cfg)
    with compute_dtype(cfg):
        return _train(cls, version, beam=beam, pools=pools, train_features=train_features, cfg=cfg,
                      out_dir=out_dir, encoder_dir=encoder_dir, train_table=train_table, seed=seed, rewards=rewards)


def _train(cls, version, *, beam, pools, train_features, cfg, out_dir, encoder_dir, train_table, seed, rewards):
    torch.manual_seed(seed)
    model, source = cls.for_training(cfg, train_features, encoder_dir=encoder_dir, train_table=train_table)
    data = build_sequences(beam, pools, source, cfg["beam_ranks"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    shuffle = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    if hasattr(model, "fit"):
        extra = model.fit(data, source, seed=seed, shuffle=shuffle, beam=beam, rewards=rewards, pools=pools)
    else:
        losses = supervised_epochs(model, data, source, shuffle=shuffle)
        extra = {"final_loss": losses[-1] if losses else None, "loss_per_epoch": losses}
    model.eval()
    stats = {
        "version": version,
        "seed": seed,
        "epochs": cfg["epochs"],
        "final_loss": extra.pop("final_loss"),
        "loss_per_epoch": extra.pop("loss_per_epoch"),
        "wall_time_s": round(time.perf_counter() - start, 3),
        "n_sequences": len(data),
        "n_anchors": len(set(data.anchors)),
        "mean_pool_size": sum(map(len, data.pool_rows)) / len(data),
        "trainable_params": sum(p.numel() for p in trainable),
        **extra,
    }
    model.save(out_dir, training=stats)
    return stats
