"""InfoScore benchmark: the same anchors and pools searched two ways.

* reference — the original algorithm: every (beam, candidate) sequence scored with one full, uncached forward
  through the processor (`ICLModel.score_reference`), every image re-encoded every time;
* ours — `leverplus.icd.infoscore.beam_search_anchor`: image features computed once per run, each chat turn
  tokenised once, every candidate of a step (all beams) batched, each beam's shared prefix run once per step (the
  whole beam with construct_order `right`).

Every run uses fresh adapter instances (no cache is shared or carried over). The two paths run alternately
`repeats` times and the fastest run of each counts (machine-speed drift hits both). Reported: candidate sequences
scored per second by each path and their ratio, the ratio of every repeat, the largest absolute difference over
every P̄ both paths computed, and whether the chosen beams agree. This is a measurement, not a timed test:
`leverplus bench-infoscore` prints it as JSON.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.records import VQAExample, examples, load_split
from .icd.infoscore import Beam, beam_search_anchor, rank_step
from .models.base import ICLModel, extend, load_icl_model


def _key(seq: Sequence[VQAExample]) -> tuple[str, ...]:
    return tuple(d.id for d in seq)


def reference_beam_search(
    model: ICLModel,
    anchor: VQAExample,
    pool: Sequence[VQAExample],
    *,
    beam_size: int,
    shot_num: int,
    order: str,
    record: dict[tuple[str, ...], float] | None = None,
) -> tuple[list[Beam], float, list[float]]:
    """The straightforward beam search: one `score_reference` call per (beam, unused candidate) sequence.

    Selection rule (design.md §3): keep the `beam_size` (beam, candidate) pairs with the highest InfoScore
    P̄(extended beam) − P̄(beam), compared on the same grid as the optimised search (`rank_step`), ties broken
    by beam index, then candidate position in the pool. `record`, if
    given, receives P̄ of every scored sequence keyed by its ICD ids in prompt order (the zero-shot row is `()`).
    Returns the beams (best first), the zero-shot P̄ and the mean candidate InfoScore of each step.
    """
    record = {} if record is None else record
    base = model.score_reference([], anchor)
    record[()] = base
    beams = [Beam([], [], base, [])]
    means: list[float] = []
    for _ in range(shot_num):
        proposals: list[tuple[float, int, int, float]] = []  # (InfoScore, beam index, candidate index, P̄)
        for b, beam in enumerate(beams):
            for i, cand in enumerate(pool):
                if cand.id in beam.picked:
                    continue
                seq = extend(beam.prompt, cand, order)
                p = model.score_reference(seq, anchor)
                record[_key(seq)] = p
                proposals.append((p - beam.p_bar, b, i, p))
        means.append(float(np.mean([s for s, *_ in proposals])))
        _, b_, i_, p_ = (np.array(col) for col in zip(*proposals))
        top, _ = rank_step(p_, np.array([beams[b].p_bar for b in b_]), b_, i_, beam_size)
        beams = [
            Beam(
                beams[b].picked + [pool[i].id],
                extend(beams[b].prompt, pool[i], order),
                p,
                beams[b].step_scores + [s],
            )
            for s, b, i, p in (proposals[t] for t in top)
        ]
    return beams, base, means


class RecordingModel:
    """Delegates `score` / `score_candidates` / `score_step` to an adapter and keeps every P̄ it returns, keyed
    like `reference_beam_search`'s record. It changes no computation; `beam_search_anchor` only calls these."""

    def __init__(self, model: ICLModel):
        self.model = model
        self.scores: dict[tuple[str, ...], float] = {}

    def score(self, icd_seqs, queries):
        out = self.model.score(icd_seqs, queries)
        for seq, p in zip(icd_seqs, out):
            self.scores[_key(seq)] = float(p)
        return out

    def _record(self, beam, candidates, order, p_bars) -> None:
        for cand, p in zip(candidates, p_bars):
            self.scores[_key(extend(beam, cand, order))] = float(p)

    def score_candidates(self, beam, candidates, query, order):
        out = self.model.score_candidates(beam, candidates, query, order)
        self._record(beam, candidates, order, out)
        return out

    def score_step(self, beams, candidates, query, order):
        out = self.model.score_step(beams, candidates, query, order)
        for beam, cands, ps in zip(beams, candidates, out):
            self._record(beam, cands, order, ps)
        return out


def bench_anchors(
    train: Sequence[VQAExample], n_anchors: int, cand_num: int, seed: int
) -> tuple[list[VQAExample], list[list[VQAExample]]]:
    """`n_anchors` distinct anchors and, for each, `cand_num` distinct other train examples (seeded)."""
    if cand_num >= len(train) or n_anchors > len(train):
        raise ValueError(f"need more than cand_num={cand_num} and at least {n_anchors} train examples, have {len(train)}")
    rng = np.random.default_rng(seed)
    anchor_rows = rng.choice(len(train), size=n_anchors, replace=False)
    pools = []
    for a in anchor_rows:
        draw = rng.choice(len(train) - 1, size=cand_num, replace=False)
        pools.append([train[int(j) + int(j >= a)] for j in draw])
    return [train[int(a)] for a in anchor_rows], pools


def _beams_diff(ours: list[Beam], ref: list[Beam]) -> tuple[bool, float]:
    same = [b.picked for b in ours] == [b.picked for b in ref] and [_key(b.prompt) for b in ours] == [
        _key(b.prompt) for b in ref
    ]
    diff = 0.0
    for a, b in zip(ours, ref):
        diff = max(diff, abs(a.p_bar - b.p_bar), *(abs(x - y) for x, y in zip(a.step_scores, b.step_scores)))
    return same, diff


def bench_infoscore(
    model_dir: str | Path,
    dataset_dir: str | Path,
    n_anchors: int = 4,
    cand_num: int = 32,
    beam_size: int = 5,
    shot_num: int = 2,
    order: str = "right",
    *,
    adapter: str = "qwen2_5_vl",
    seed: int = 0,
    threads: int | None = 1,
    device: str = "cpu",
    batch_size: int = 32,
    repeats: int = 3,
) -> dict:
    """Run one full beam search per anchor with the reference algorithm and with ours; see the module docstring."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if threads:
        torch.set_num_threads(threads)
    train = examples(load_split(dataset_dir, "train"))
    anchors, pools = bench_anchors(train, n_anchors, cand_num, seed)
    kw = dict(beam_size=beam_size, shot_num=shot_num, order=order)

    def run_reference():
        model = load_icl_model(adapter, str(model_dir), device=device, batch_size=batch_size)
        scores, results = [], []
        t0 = time.perf_counter()
        for anchor, pool in zip(anchors, pools):
            rec: dict = {}
            results.append(reference_beam_search(model, anchor, pool, record=rec, **kw))
            scores.append(rec)
        return time.perf_counter() - t0, scores, results

    def run_ours():
        model = load_icl_model(adapter, str(model_dir), device=device, batch_size=batch_size)  # empty caches
        scores, results = [], []
        t0 = time.perf_counter()
        for anchor, pool in zip(anchors, pools):
            rec_model = RecordingModel(model)
            results.append(beam_search_anchor(rec_model, anchor, pool, **kw))
            scores.append(rec_model.scores)
        return time.perf_counter() - t0, scores, results

    # Alternate the two paths so that drift in the machine's speed hits both; report the fastest of each.
    ref_times, our_times = [], []
    for _ in range(repeats):
        t_ref, ref_scores, ref_results = run_reference()
        t_ours, our_scores, our_results = run_ours()
        ref_times.append(t_ref)
        our_times.append(t_ours)
    t_ref, t_ours = min(ref_times), min(our_times)

    n_ref = sum(len(r) for r in ref_scores)
    n_ours = sum(len(r) for r in our_scores)
    diffs, only_one = [], 0
    for r, o in zip(ref_scores, our_scores):
        common = r.keys() & o.keys()
        only_one += len(r.keys() ^ o.keys())
        diffs += [abs(r[k] - o[k]) for k in common]
    beams_equal, beam_diff = True, 0.0
    for (ob, obase, _), (rb, rbase, _) in zip(our_results, ref_results):
        same, d = _beams_diff(ob, rb)
        beams_equal &= same
        beam_diff = max(beam_diff, d, abs(obase - rbase))
    ref_rate, our_rate = n_ref / t_ref, n_ours / t_ours
    all_ref = np.array([v for r in ref_scores for v in r.values()])
    return {
        "model": str(model_dir),
        "dataset": str(dataset_dir),
        "adapter": adapter,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "anchors": n_anchors,
        "cand_num": cand_num,
        "beam_size": beam_size,
        "shot_num": shot_num,
        "order": order,
        "seed": seed,
        "sequences": {"reference": n_ref, "ours": n_ours, "only_in_one_path": only_one},
        "repeats": repeats,
        "reference": {"seconds": round(t_ref, 3), "sequences_per_s": round(ref_rate, 2),
                      "all_seconds": [round(t, 3) for t in ref_times]},
        "ours": {"seconds": round(t_ours, 3), "sequences_per_s": round(our_rate, 2),
                 "all_seconds": [round(t, 3) for t in our_times]},
        "speedup": round(our_rate / ref_rate, 2),
        "speedup_per_repeat": [round((n_ours / o) / (n_ref / r), 2) for r, o in zip(ref_times, our_times)],
        "max_abs_score_diff": float(max(diffs)) if diffs else None,
        "max_abs_beam_diff": float(beam_diff),
        "beams_equal": bool(beams_equal),
        "reference_score_range": [float(all_ref.min()), float(all_ref.max())],
    }
