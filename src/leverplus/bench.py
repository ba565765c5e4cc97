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

import json
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
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


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms; /proc/self/status)."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.every_s)

    def __enter__(self):
        self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _components(model: ICLModel) -> dict:
    """The modules whose time the breakdown reports, by adapter: vision tower (+ Flamingo's perceiver), the
    language model, and Qwen's LM head (outside its language model)."""
    if model.name == "qwen2_5_vl":
        m = model.model
        return {"vision": [m.model.visual], "language_model": [m.model.language_model], "lm_head": [m.lm_head]}
    if model.name == "flamingo":
        m = model.model
        return {"vision": [m.vision_encoder, m.perceiver], "language_model": [m.lang_encoder]}
    return {}


@contextmanager
def time_breakdown(model: ICLModel, totals: dict):
    """Accumulate wall seconds per component into `totals` while the block runs (forward hooks; a component's
    time excludes nothing nested in it, and the components do not nest in each other). Language-model calls are
    split by what they run: `shared_prefix` (use_cache without a past: a beam's prefix run once), `suffix` (rows
    continuing a cached prefix) and `full_rows` (whole rows, e.g. every call of the original algorithm)."""
    starts: dict[int, list[float]] = defaultdict(list)
    handles = []

    def pre(name):
        def hook(module, args, kwargs):
            starts[id(module)].append(time.perf_counter())
        return hook

    def post(name):
        def hook(module, args, kwargs, output):
            dt = time.perf_counter() - starts[id(module)].pop()
            key = name
            if name == "language_model":
                if kwargs.get("past_key_values") is not None:
                    key = "language_model.suffix"
                elif kwargs.get("use_cache"):
                    key = "language_model.shared_prefix"
                else:
                    key = "language_model.full_rows"
            totals[key] = totals.get(key, 0.0) + dt
        return hook

    for name, modules in _components(model).items():
        for mod in modules:
            handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(mod.register_forward_hook(post(name), with_kwargs=True))
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


def bench_dataset(out_dir: str | Path, *, n: int = 24, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    """A demo-style dataset whose images have a real photo's size (COCO's typical 640×480), for real-size runs."""
    from PIL import Image

    from .data.demo import generate_demo

    out = Path(out_dir)
    stamp = out / "leverplus_bench.json"
    want = {"n": n, "width": width, "height": height, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return out
    generate_demo(out, seed=seed, n_train=n, n_val=10, image_size=max(64, min(width, height)))
    for png in sorted((out / "images").glob("*.png")):
        Image.open(png).convert("RGB").resize((width, height), Image.BICUBIC).save(png)
    stamp.write_text(json.dumps(want))
    return out


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
    dtype: str = "float32",
    breakdown: bool = False,
) -> dict:
    """Run one full beam search per anchor with the reference algorithm and with ours; see the module docstring.
    `breakdown`: also report where each path's time goes (`time_breakdown`) and its peak resident memory."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if threads:
        torch.set_num_threads(threads)
    train = examples(load_split(dataset_dir, "train"))
    anchors, pools = bench_anchors(train, n_anchors, cand_num, seed)
    kw = dict(beam_size=beam_size, shot_num=shot_num, order=order)

    loads: dict[str, float] = {}
    parts: dict[str, dict] = {"reference": {}, "ours": {}}
    peaks: dict[str, int] = {"reference": 0, "ours": 0}
    params: dict[str, int] = {}

    def load(path_name):
        t0 = time.perf_counter()
        model = load_icl_model(adapter, str(model_dir), device=device, batch_size=batch_size, dtype=dtype)
        loads[path_name] = round(time.perf_counter() - t0, 2)
        params.setdefault("n", sum(p.numel() for p in model.model.parameters()))
        return model

    def timed(path_name, model, body):
        totals: dict[str, float] = {}
        with PeakRSS() as mem, (time_breakdown(model, totals) if breakdown else _null()):
            t0 = time.perf_counter()
            out = body()
            dt = time.perf_counter() - t0
        if not parts[path_name] or dt < parts[path_name]["total"]:
            parts[path_name] = {"total": dt, **totals}
        peaks[path_name] = max(peaks[path_name], mem.peak)
        return dt, out

    def run_reference():
        model = load("reference")

        def body():
            scores, results = [], []
            for anchor, pool in zip(anchors, pools):
                rec: dict = {}
                results.append(reference_beam_search(model, anchor, pool, record=rec, **kw))
                scores.append(rec)
            return scores, results

        dt, (scores, results) = timed("reference", model, body)
        del model
        return dt, scores, results

    def run_ours():
        model = load("ours")  # empty caches

        def body():
            scores, results = [], []
            for anchor, pool in zip(anchors, pools):
                rec_model = RecordingModel(model)
                results.append(beam_search_anchor(rec_model, anchor, pool, **kw))
                scores.append(rec_model.scores)
            return scores, results

        dt, (scores, results) = timed("ours", model, body)
        del model
        return dt, scores, results

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
    extra = {}
    if breakdown:
        def split(path_name, n_seq):
            d = dict(parts[path_name])
            total = d.pop("total")
            rest = total - sum(d.values())
            secs = {k: round(v, 3) for k, v in sorted(d.items())}
            secs["other (tokenisation, processor, glue)"] = round(rest, 3)
            return {"seconds": secs, "seconds_per_sequence": {k: round(v / n_seq, 4) for k, v in secs.items()},
                    "peak_rss_gb": round(peaks[path_name] / 2**30, 2), "load_seconds": loads[path_name]}

        extra = {"breakdown": {"reference": split("reference", n_ref), "ours": split("ours", n_ours)},
                 "parameters": params.get("n"), "dtype": dtype}
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
        "seconds_per_sequence": {"reference": round(t_ref / n_ref, 4), "ours": round(t_ours / n_ours, 4)},
        **extra,
    }


@contextmanager
def _null():
    yield None


def bench_infer(
    model_dir: str | Path,
    dataset_dir: str | Path,
    *,
    adapter: str = "qwen2_5_vl",
    n_queries: int = 64,
    shot: int = 2,
    batch_size: int = 16,
    max_new_tokens: int = 8,
    seed: int = 0,
    threads: int | None = 1,
    device: str = "cpu",
    dtype: str = "float32",
    repeats: int = 2,
    instruction: str = "",
) -> dict:
    """Inference throughput, batch size 1 vs `batch_size`: the same val queries, each with the same `shot` random
    train demonstrations (seeded), greedy answers under one explicit `GenerationSettings`. Fresh adapters per run,
    runs alternating, fastest of each counts. Reported: queries/s of both, their ratio, and how many answers differ
    (batched generation pads on the left; identical answers are the expectation, any difference is listed)."""
    import torch

    from .models.generation import GenerationSettings
    from .models.prompting import PromptSettings

    if threads:
        torch.set_num_threads(threads)
    train = examples(load_split(dataset_dir, "train"))
    val = examples(load_split(dataset_dir, "val"))[:n_queries]
    rng = np.random.default_rng(seed)
    seqs = [[train[int(j)] for j in rng.choice(len(train), size=shot, replace=False)] for _ in val]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    prompt = PromptSettings.from_config({"instruction": instruction})

    def run(bs):
        model = load_icl_model(adapter, str(model_dir), device=device, batch_size=bs, dtype=dtype, prompt=prompt)
        t0 = time.perf_counter()
        answers = model.generate(seqs, val, settings)
        dt = time.perf_counter() - t0
        del model
        return dt, answers

    one, many = [], []
    for _ in range(repeats):
        t1, a1 = run(1)
        tb, ab = run(batch_size)
        one.append(t1)
        many.append(tb)
    t1, tb = min(one), min(many)
    differ = [{"id": q.id, "batch_1": x, f"batch_{batch_size}": y} for q, x, y in zip(val, a1, ab) if x != y]
    return {
        "model": str(model_dir),
        "dataset": str(dataset_dir),
        "adapter": adapter,
        "device": device,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "queries": len(val),
        "shot": shot,
        "generation": settings.as_dict(),
        "repeats": repeats,
        "batch_1": {"seconds": round(t1, 3), "queries_per_s": round(len(val) / t1, 3),
                    "all_seconds": [round(t, 3) for t in one]},
        f"batch_{batch_size}": {"seconds": round(tb, 3), "queries_per_s": round(len(val) / tb, 3),
                                "all_seconds": [round(t, 3) for t in many]},
        "batch_size": batch_size,
        "speedup": round(t1 / tb, 2),
        "answers_identical": not differ,
        "answers_differing": differ,
    }
