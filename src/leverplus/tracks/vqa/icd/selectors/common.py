"""Parts shared by every ICD selector version: inputs, pool batches, masked greedy selection, the
teacher-forced loss, configuration, and saving/loading.

Vocabulary used throughout
--------------------------
* An *example vector* is the selector's input for one dataset example: its L2-normalised image feature followed
  by its L2-normalised text (question) feature, ``(2·D,)`` float32 (see :func:`feature_matrix`).
* A *source* maps example ids to example vectors.  :class:`FeatureSource` serves cached frozen-encoder features;
  ``v2_lora`` has its own source that re-encodes examples with its LoRA-adapted CLIP.
* A *pool batch* (:class:`PoolBatch`) holds, for B queries, each query's row in the query source and its
  candidate pool as rows of the pool source, padded to the longest pool of the batch (``mask`` marks real
  candidates).  Targets (training only) are *positions inside the pool row*, in the order the beam search picked
  them; ``-100`` pads shorter sequences.

Every version implements two methods:

* ``encode(batch, query_src, pool_src) -> state`` — everything that does not depend on earlier choices;
* ``step_logits(state, prefix) -> (B, T+1, P)`` — given ``T`` already-chosen pool positions per query
  (teacher-forced in training, the model's own picks at inference), a score for every pool candidate at each of
  the ``T+1`` steps.

The shared code masks padding and *that query's own* earlier picks (never another query's, so selections do not
depend on which queries share a batch or on the batch size), trains with cross-entropy over the whole pool, and
selects greedily: the highest logit, logits whose sorted gaps are at most ``tie_tolerance`` (default 1e-3, far above
float32 logit noise; chained, see :mod:`leverplus.tracks.vqa.icd.ranking`) tied and broken by lowest pool position, so the
picks do not depend on the CPU.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from leverplus.tracks.vqa.icd.features import Features
from leverplus.tracks.vqa.icd.ranking import SELECTOR_NOISE, SELECTOR_TOL, check_tol, is_fragile, rank

IGNORE = -100  # target padding (positions after the end of a shorter sequence)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "selector.json"
FORMAT_VERSION = 1

# Keys every version understands; each version's DEFAULTS starts from these.
COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 10,  # passes over the training sequences
    "batch_size": 32,  # training sequences (anchor × beam) per optimiser step
    "batch_by": "sequence",  # shuffle sequences (Lever-LM), or whole anchors so an anchor's beams share a batch
    "lr": 1e-3,  # AdamW learning rate
    "weight_decay": 0.0,  # AdamW weight decay
    "grad_clip": 1.0,  # max global gradient norm (0 = no clipping)
    "d_model": 128,  # width of the selector's hidden representations
    "beam_ranks": 5,  # beams per anchor used as training sequences (beam_rank < beam_ranks)
    "tie_tolerance": SELECTOR_TOL,  # inference: logits within this (chained) are ties → lowest pool position
    "dtype": "float32",  # training and inference precision (float64: the same weights on every CPU; see below)
}

COMPUTE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@contextmanager
def compute_dtype(cfg: dict[str, Any]):
    """Train, load and select in ``cfg["dtype"]``: parameters, cached feature matrices and every tensor a version
    creates. Why float64 exists: float32 training is chaotic enough that two kernel sets of one CPU
    (ATEN_CPU_CAPABILITY=avx2 vs avx512) end a 20-epoch v2 training with weights apart by up to 0.4 and other
    picks for most queries; in float64 the same runs end within 2e-11 and pick identically (issue 20)."""
    name = cfg.get("dtype", "float32")
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"selector dtype {name!r}: choose from {sorted(COMPUTE_DTYPES)}")
    old = torch.get_default_dtype()
    torch.set_default_dtype(COMPUTE_DTYPES[name])
    try:
        yield COMPUTE_DTYPES[name]
    finally:
        torch.set_default_dtype(old)


def feature_matrix(features: Features) -> np.ndarray:
    """Example vectors of a split: image features ⊕ text features, (N, 2·D) float32."""
    image = np.asarray(features.image, dtype=np.float32)
    text = np.asarray(features.text, dtype=np.float32)
    if image.shape[0] != len(features.ids) or text.shape[0] != len(features.ids):
        raise ValueError("Features: ids, image and text must have one row per example")
    return np.ascontiguousarray(np.concatenate([image, text], axis=1))


class Source:
    """Example vectors of a list of examples, addressed by row; ``rows(ids)`` maps example ids to rows."""

    def __init__(self, ids: Sequence[str]):
        self.ids = [str(i) for i in ids]
        self.index = {i: k for k, i in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise ValueError("duplicate example ids")
        self.cache: dict[str, Any] = {}  # per-source derived data a version may keep (e.g. v0's vocab rows)

    def rows(self, ids: Sequence[str], what: str = "example") -> list[int]:
        try:
            return [self.index[str(i)] for i in ids]
        except KeyError as err:
            raise KeyError(f"{what} id {err.args[0]!r} is not in the selector's input source") from None

    def vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """rows (any shape) → vectors (*rows.shape, F)."""
        raise NotImplementedError


class FeatureSource(Source):
    """Cached, frozen example vectors (a matrix with one row per id)."""

    def __init__(self, ids: Sequence[str], matrix: np.ndarray | torch.Tensor):
        super().__init__(ids)
        self.matrix = torch.as_tensor(np.asarray(matrix, dtype=np.float32))
        if self.matrix.shape[0] != len(self.ids):
            raise ValueError("one vector per id expected")

    @classmethod
    def from_features(cls, features: Features) -> "FeatureSource":
        return cls(features.ids, feature_matrix(features))

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows of the matrix in the current compute dtype (:func:`compute_dtype`)."""
        return self.matrix[rows].to(torch.get_default_dtype())


@dataclass
class PoolBatch:
    query_rows: torch.Tensor  # (B,) long, rows of the query source
    pool_rows: torch.Tensor  # (B, P) long, rows of the pool source (0 at padding)
    mask: torch.Tensor  # (B, P) bool, True = real candidate
    targets: torch.Tensor | None = None  # (B, S) long, pool positions in pick order; IGNORE pads


def make_batch(query_rows: Sequence[int], pool_rows: Sequence[Sequence[int]],
               targets: Sequence[Sequence[int]] | None = None) -> PoolBatch:
    """Pad per-query pools (and target sequences) into one :class:`PoolBatch`."""
    width = max(len(p) for p in pool_rows)
    rows = torch.zeros(len(pool_rows), width, dtype=torch.long)
    mask = torch.zeros(len(pool_rows), width, dtype=torch.bool)
    for b, p in enumerate(pool_rows):
        rows[b, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        mask[b, : len(p)] = True
    tgt = None
    if targets is not None:
        length = max(len(t) for t in targets)
        tgt = torch.full((len(targets), length), IGNORE, dtype=torch.long)
        for b, t in enumerate(targets):
            tgt[b, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    return PoolBatch(torch.as_tensor(list(query_rows), dtype=torch.long), rows, mask, tgt)


def batch_vectors(batch: PoolBatch, query_src, pool_src) -> tuple[torch.Tensor, torch.Tensor]:
    """Query vectors (B, F) and pool vectors (B, P, F) of a batch.  When queries and candidates come from the same
    source (training), the source is asked once so that an encoding source encodes each example once per step."""
    if query_src is pool_src:
        flat = torch.cat([batch.query_rows, batch.pool_rows.flatten()])
        vec = pool_src.vectors(flat)
        b = batch.query_rows.shape[0]
        return vec[:b], vec[b:].view(*batch.pool_rows.shape, -1)
    return query_src.vectors(batch.query_rows), pool_src.vectors(batch.pool_rows)


def gather_positions(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x (B, P, d), positions (B, T) → (B, T, d); IGNORE positions read position 0 (their outputs are unused)."""
    pos = positions.clamp_min(0)
    return torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def chosen_mask(prefix: torch.Tensor, pool_size: int) -> torch.Tensor:
    """(B, T) chosen pool positions → (B, T+1, P) bool: at step t, True for positions this query chose before t."""
    b, t = prefix.shape
    onehot = torch.zeros(b, t + 1, pool_size, dtype=torch.bool)
    if t:
        valid = prefix >= 0
        hit = torch.zeros(b, t, pool_size, dtype=torch.bool)
        hit.scatter_(2, prefix.clamp_min(0).unsqueeze(-1), valid.unsqueeze(-1))
        onehot[:, 1:] = hit.cumsum(dim=1) > 0
    return onehot


def tied_argmax(scores: torch.Tensor, tol: float, noise: float = SELECTOR_NOISE) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``scores`` (B, P; −inf = unavailable): the lowest position among the top tie group (scores within
    ``tol`` of the maximum, chained; :func:`leverplus.tracks.vqa.icd.ranking.rank`), and whether moving every score by up to
    ±``noise`` could change that pick (:func:`leverplus.tracks.vqa.icd.ranking.is_fragile`)."""
    x = scores.detach().to(torch.float64).cpu().numpy()
    picks = [int(rank(row, tol)[0]) for row in x]
    fragile = [is_fragile(row, 1, tol, noise) for row in x]
    return torch.tensor(picks, dtype=torch.long), torch.tensor(fragile, dtype=torch.bool)


def resolve_config(defaults: dict[str, Any], cfg: dict[str, Any] | None, known_keys: set[str]) -> dict[str, Any]:
    """Defaults overlaid with ``cfg`` (nested dicts merged one level).  Keys that only another version uses are
    ignored (the config slice is shared by all versions); keys no version knows are an error (typos)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - known_keys)
    if unknown:
        raise ValueError(f"unknown selector config keys {unknown}; known: {sorted(known_keys)}")
    out = json.loads(json.dumps(defaults))
    for key, value in cfg.items():
        if key not in defaults:
            continue
        if isinstance(defaults[key], dict):
            extra = sorted(set(value) - set(defaults[key]))
            if extra:
                raise ValueError(f"unknown keys {extra} in selector config {key!r}")
            out[key] = {**defaults[key], **value}
        else:
            out[key] = value
    return out


class Selector(nn.Module):
    """Base class: one subclass per version (registered in ``leverplus.tracks.vqa.icd.selectors.SELECTORS``)."""

    version: ClassVar[str]
    DEFAULTS: ClassVar[dict[str, Any]]

    def __init__(self, cfg: dict[str, Any], feat_dim: int):
        super().__init__()
        self.cfg = cfg
        self.feat_dim = int(feat_dim)

    # ---- per version ---------------------------------------------------------------------------------------
    def encode(self, batch: PoolBatch, query_src, pool_src) -> Any:
        raise NotImplementedError

    def step_logits(self, state: Any, prefix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor arguments besides cfg/feat_dim, saved in selector.json to rebuild the architecture."""
        return {}

    @classmethod
    def for_training(cls, cfg: dict[str, Any], train_features: Features, *, encoder_dir=None, train_table=None):
        """(model, source of the train split's example vectors used for queries and candidates alike)."""
        src = FeatureSource.from_features(train_features)
        return cls(cfg, src.dim), src

    def query_source(self, query_features: Features, query_table=None):
        return FeatureSource.from_features(query_features)

    def pool_source(self, pool_features: Features, needed_ids: Sequence[str], pool_table=None):
        return FeatureSource.from_features(pool_features)

    # ---- shared --------------------------------------------------------------------------------------------
    def masked_logits(self, state: Any, batch: PoolBatch, prefix: torch.Tensor) -> torch.Tensor:
        """Step logits with padding and this query's own earlier picks set to −inf."""
        logits = self.step_logits(state, prefix)
        blocked = chosen_mask(prefix, logits.shape[-1]) | ~batch.mask.unsqueeze(1)
        return logits.masked_fill(blocked, float("-inf"))

    def sequence_loss(self, batch: PoolBatch, query_src, pool_src) -> torch.Tensor:
        """Teacher-forced cross-entropy over the whole pool at every step (gold pick = positive, every other
        not-yet-chosen pool candidate = negative), averaged over all (sequence, step) pairs."""
        assert batch.targets is not None
        state = self.encode(batch, query_src, pool_src)
        logits = self.masked_logits(state, batch, batch.targets[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    @property
    def tie_tolerance(self) -> float:
        return check_tol(self.cfg.get("tie_tolerance", SELECTOR_TOL), "selector tie_tolerance")

    @torch.no_grad()
    def greedy(self, batch: PoolBatch, query_src, pool_src, shot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, shot) pool positions, picked one at a time by :func:`tied_argmax`, and (B,) bool: some pick of
        that query could change if every logit moved by ±noise."""
        state = self.encode(batch, query_src, pool_src)
        prefix = torch.zeros(batch.mask.shape[0], 0, dtype=torch.long)
        fragile = torch.zeros(batch.mask.shape[0], dtype=torch.bool)
        for _ in range(shot):
            step = self.masked_logits(state, batch, prefix)[:, -1]
            pick, near = tied_argmax(step, self.tie_tolerance)
            fragile |= near
            prefix = torch.cat([prefix, pick[:, None]], dim=1)
        return prefix, fragile

    @torch.no_grad()
    def select(self, query_features: Features, pool_ids: Sequence[Sequence[str]], pool_features: Features,
               shot: int, batch_size: int = 64, query_table=None, pool_table=None) -> list[list[str]]:
        """For each query (rows of ``query_features``), ``shot`` distinct ICD ids from that query's own pool, in
        selection order.  Queries are processed in chunks of ``batch_size``; the result does not depend on it."""
        if len(pool_ids) != len(query_features.ids):
            raise ValueError(f"{len(pool_ids)} pools for {len(query_features.ids)} queries")
        if shot < 1:
            raise ValueError("shot must be ≥ 1")
        for q, pool in zip(query_features.ids, pool_ids):
            if len(set(pool)) != len(pool):
                raise ValueError(f"pool of query {q!r} has duplicate ids")
            if len(pool) < shot:
                raise ValueError(f"pool of query {q!r} has {len(pool)} < shot={shot} candidates")
        was_training = self.training
        self.eval()
        try:
            with compute_dtype(self.cfg):
                return self._select(query_features, pool_ids, pool_features, shot, batch_size, query_table,
                                    pool_table)
        finally:
            self.train(was_training)

    def _select(self, query_features, pool_ids, pool_features, shot, batch_size, query_table, pool_table):
        """`select` in the compute dtype (queries in chunks of ``batch_size``)."""
        needed = sorted({str(i) for pool in pool_ids for i in pool})
        query_src = self.query_source(query_features, query_table)
        pool_src = self.pool_source(pool_features, needed, pool_table)
        query_rows = query_src.rows(query_features.ids, "query")
        out: list[list[str]] = []
        near_boundary: list[bool] = []
        for start in range(0, len(pool_ids), batch_size):
            pools = [list(map(str, p)) for p in pool_ids[start : start + batch_size]]
            batch = make_batch(query_rows[start : start + batch_size],
                               [pool_src.rows(p, "pool") for p in pools])
            picks, near = self.greedy(batch, query_src, pool_src, shot)
            near_boundary.extend(near.tolist())
            out.extend([[pool[k] for k in row] for pool, row in zip(pools, picks.tolist())])
        # Residual risk, measurable: queries whose selection a ±noise move of the logits could change.
        self.near_boundary = near_boundary
        print(f"selector {self.version}: {len(out)} queries, tie_tolerance {self.tie_tolerance:g}; "
              f"{sum(near_boundary)} whose picks a ±{SELECTOR_NOISE:g} move of the logits could change",
              file=sys.stderr)
        return out

    # ---- persistence ---------------------------------------------------------------------------------------
    def saved_parameters(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter (tied parameters once).  Frozen ones (v2_lora's CLIP base) come from the
        encoder directory at load time."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}

    def save(self, out_dir: str | Path, training: dict[str, Any] | None = None) -> None:
        from safetensors.torch import save as to_bytes

        from leverplus.core.io import atomic_write, write_json

        out = Path(out_dir)
        tensors = {n: p.detach().contiguous().clone() for n, p in self.saved_parameters().items()}
        with atomic_write(out / WEIGHTS_FILE, "wb") as fh:
            fh.write(to_bytes(tensors, metadata={"version": self.version}))
        write_json(out / CONFIG_FILE, {
            "format": FORMAT_VERSION,
            "version": self.version,
            "config": self.cfg,
            "feat_dim": self.feat_dim,
            "init": self.init_kwargs(),
            "training": training or {},
        })

    def load_weights(self, path: str | Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        expected = set(self.saved_parameters())
        if set(tensors) != expected:
            raise ValueError(f"{path}: weights do not match the {self.version} architecture: "
                             f"missing {sorted(expected - set(tensors))[:5]}, "
                             f"unexpected {sorted(set(tensors) - expected)[:5]}")
        result = self.load_state_dict(tensors, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"unexpected keys {result.unexpected_keys[:5]}")
