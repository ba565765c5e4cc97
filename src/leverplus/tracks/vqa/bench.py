"""InfoScore benchmark: the same anchors and pools searched three ways.

* reference (batch 1) — the original algorithm one sequence per forward: every (beam, candidate) sequence scored
  with one full, uncached forward through the processor (`ICLModel.score_reference`), every image re-encoded;
* original (batched) — the original algorithm as Lever-LM runs it (`get_info_score` and `generate_single_sample_icd`
  in Lever-LM's utils.py / generate_data.py, commit 11d61e4): at every step, for every beam, P̄(y | S ⊕ x) re-scored
  with one forward, then the beam's unused candidates in pool order, `original_batch` (default 32, Lever-LM's
  `batch_size`) whole rows per right-padded forward through the processor, every image of every row re-encoded,
  logits over every position (`original_scores`). Only the answer mask is ours (the original's is one token off);
* ours — `leverplus.tracks.vqa.icd.infoscore.beam_search_anchor`: image features computed once per run, every candidate of a
  step batched, each beam's prefix run once per step (construct_order `right`), rows cut at their last scored token.

Every run uses fresh adapter instances (no cache is shared or carried over) and starts after an untimed warm-up
(one row through the path's own scoring call, caches cleared afterwards: the first forward of a process pays for
page faults and allocator growth that a long run does not). The paths run alternately `repeats` times and the
fastest run of each counts (machine-speed drift hits all). Reported: candidate sequences per second of each path,
the ratio of ours to the batched original (`speedup`; to batch 1: `speedup_vs_batch1`), per repeat, the largest
absolute difference over every P̄ two paths computed, and whether the chosen beams agree. `analytic_limit` (see
`leverplus.tracks.vqa.cost`) is the ratio a path that runs only each row's own tokens would reach over the batched original
(predicted over predicted, and over the measured original), `achieved_fraction_of_limit` the limit's predicted time
over ours' measured time (`_predicted`: over ours' predicted time), and `load_average` the machine's load at the start
and end (the unit costs and the runs are only comparable under similar load). Every time is also read as this
process's CPU seconds (`cost.clocks`): on a machine shared with other jobs a path's wall time grows with the load
while its CPU seconds (at one torch thread, ≈ its wall time on an idle machine) barely move, so `speedup_cpu`,
`cost_model.relative_error_cpu`, `analytic_limit_cpu` and `achieved_fraction_of_limit_cpu` (unit costs in CPU seconds,
`cost.cpu_view`) compare measurements made under different loads. This is a measurement, not a timed test: `leverplus
bench-infoscore` prints it as JSON.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from leverplus.tracks.vqa.cost import clocks
from leverplus.tracks.vqa.data.records import VQAExample, examples, load_split
from leverplus.tracks.vqa.icd.infoscore import Beam, beam_search_anchor, rank_step
from leverplus.tracks.vqa.models.base import ICLModel, extend, load_icl_model


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


def _qwen_reference_batch(model, icd_seqs, queries) -> np.ndarray:
    """The Qwen2.5-VL rows of one call through the processor in one right-padded forward (every image re-processed
    and re-encoded, logits over every position): `original_scores` for the Qwen adapter."""
    import torch

    from leverplus.tracks.vqa.data.images import load_image
    from leverplus.tracks.vqa.models import prompting

    texts = [model.processor.apply_chat_template(model.layout.conversation(s, q, with_answer=True), tokenize=False)
             for s, q in zip(icd_seqs, queries)]
    images = [load_image(p) for s, q in zip(icd_seqs, queries) for p in prompting.images_in_order(s, q)]
    side = model.tokenizer.padding_side
    model.tokenizer.padding_side = "right"  # as Lever-LM's gen_data sets it for InfoScore
    try:
        enc = model.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(model.device)
    finally:
        model.tokenizer.padding_side = side
    with torch.no_grad():
        logits = model.model(**enc).logits
    out = np.empty(len(texts), dtype=np.float64)
    for b in range(len(texts)):
        n = int(enc["attention_mask"][b].sum())
        a0, a1 = model._answer_span(enc["input_ids"][b, :n].tolist())
        ce = torch.nn.functional.cross_entropy(logits[b, a0 - 1 : a1 - 1].float(), enc["input_ids"][b, a0:a1])
        out[b] = float(torch.exp(-ce))
    return out


def original_scores(model: ICLModel, icd_seqs, queries) -> np.ndarray:
    """P̄ of the rows of one batched forward of the original algorithm (module docstring): the adapter's
    `score_reference_batch` (Flamingo), the processor path for Qwen2.5-VL, else one `score_reference` per row."""
    if hasattr(model, "score_reference_batch"):
        return model.score_reference_batch(icd_seqs, queries)
    if getattr(model, "name", None) == "qwen2_5_vl":
        return _qwen_reference_batch(model, icd_seqs, queries)
    return np.array([model.score_reference(s, q) for s, q in zip(icd_seqs, queries)])


def original_beam_search(
    model: ICLModel,
    anchor: VQAExample,
    pool: Sequence[VQAExample],
    *,
    beam_size: int,
    shot_num: int,
    order: str,
    batch: int = 32,
    record: dict[tuple[str, ...], float] | None = None,
    counts: dict | None = None,
) -> tuple[list[Beam], float, list[float]]:
    """The original algorithm as Lever-LM runs it (`generate_single_sample_icd` → `get_info_score`): at every step,
    for every beam, P̄(y | S ⊕ x) re-scored with one forward of one row, then the beam's unused candidates, in pool
    order, `batch` rows per forward (`original_scores`). InfoScore = P̄(extended) − the re-scored P̄(beam). The kept
    beams are chosen by `rank_step` over every proposal (Lever-LM's per-beam top-k then global top-k keeps the same
    set; ties are grouped as in our path, so the comparison is of cost, not of tie rules). `counts` receives the
    rows and forwards run."""
    if batch < 1:
        raise ValueError(f"original batch must be at least 1, got {batch}")
    record = {} if record is None else record
    counts = {} if counts is None else counts
    counts.setdefault("rows", 0)
    counts.setdefault("forwards", 0)
    beams = [Beam([], [], float("nan"), [])]
    base = float("nan")
    means: list[float] = []
    for _ in range(shot_num):
        proposals: list[tuple[float, int, int, float]] = []
        for b, beam in enumerate(beams):
            cond = float(original_scores(model, [beam.prompt], [anchor])[0])  # re-scored for every beam, every step
            counts["rows"] += 1
            counts["forwards"] += 1
            record[_key(beam.prompt)] = cond
            if not beam.prompt:
                base = cond
            beams[b] = Beam(beam.picked, beam.prompt, cond, beam.step_scores)
            idx = [i for i, c in enumerate(pool) if c.id not in beam.picked]
            for lo in range(0, len(idx), batch):
                chunk = idx[lo : lo + batch]
                seqs = [extend(beam.prompt, pool[i], order) for i in chunk]
                ps = original_scores(model, seqs, [anchor] * len(seqs))
                counts["rows"] += len(seqs)
                counts["forwards"] += 1
                for i, seq, p in zip(chunk, seqs, ps):
                    record[_key(seq)] = float(p)
                    proposals.append((float(p) - cond, b, i, float(p)))
        means.append(float(np.mean([x for x, *_ in proposals])))
        _, b_, i_, p_ = (np.array(col) for col in zip(*proposals))
        top, _ = rank_step(p_, np.array([beams[b].p_bar for b in b_]), b_, i_, beam_size)
        beams = [
            Beam(beams[b].picked + [pool[i].id], extend(beams[b].prompt, pool[i], order), p, beams[b].step_scores + [x])
            for x, b, i, p in (proposals[t] for t in top)
        ]
    if shot_num < 1:
        base = float(original_scores(model, [[]], [anchor])[0])
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

    @property
    def scores_beam_rows(self) -> bool:
        return bool(getattr(self.model, "scores_beam_rows", False))

    def score_step(self, beams, candidates, query, order, **kw):
        out = self.model.score_step(beams, candidates, query, order, **kw)
        per_cand = out[0] if kw.get("beam_rows") else out
        for beam, cands, ps in zip(beams, candidates, per_cand):
            self._record(beam, cands, order, ps)
        if kw.get("beam_rows"):
            for beam, p in zip(beams, out[1]):
                self.scores[_key(beam)] = float(p)
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

    from leverplus.tracks.vqa.data.demo import generate_demo

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


def _warm_up(model: ICLModel, path_name: str, anchor: VQAExample, pool: Sequence[VQAExample], order: str,
             original_batch: int) -> None:
    """One untimed call of the path's own scoring function on the first anchor (a one-demonstration row, so the
    prefix and suffix code both run), then every cache cleared: weights paged in, allocator grown, kernels chosen."""
    seqs = [extend([pool[0]], c, order) for c in pool[1:3]] or [[pool[0]]]
    if path_name == "reference":
        model.score_reference(seqs[0], anchor)
    elif path_name == "original":
        original_scores(model, seqs[: max(1, min(original_batch, len(seqs)))], [anchor] * min(len(seqs), original_batch))
    else:
        model.score_step([[pool[0]]], [list(pool[1:3])], anchor, order)
    if hasattr(model, "clear_image_cache"):
        model.clear_image_cache()


PATHS = ("reference", "original", "ours")


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
    original_batch: int = 32,
    paths: Sequence[str] = PATHS,
    repeats: int = 3,
    warmup: bool = True,
    dtype: str = "float32",
    breakdown: bool = False,
    unit_costs: dict | str | None = None,
) -> dict:
    """Run one full beam search per anchor on each path of `paths` (module docstring). `breakdown`: also report
    where each path's time goes (`time_breakdown`) and its peak resident memory. `unit_costs` (a
    `leverplus.tracks.vqa.cost` measurement of this model, or "measure": measured here first, on a fresh adapter): also the
    cost model's prediction of each path's time and the analytic limit from it, and the fraction of it achieved."""
    import torch

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    paths = [p for p in PATHS if p in set(paths)]
    if "ours" not in paths or len(paths) < 2:
        raise ValueError(f"paths must include 'ours' and one of the originals, got {paths}")
    if threads:
        torch.set_num_threads(threads)
    train = examples(load_split(dataset_dir, "train"))
    anchors, pools = bench_anchors(train, n_anchors, cand_num, seed)
    kw = dict(beam_size=beam_size, shot_num=shot_num, order=order)
    measured_costs = None
    if unit_costs == "measure":  # on a fresh adapter of the same model, before the timed runs
        from leverplus.tracks.vqa.cost import measure_unit_costs, row_shape

        m = load_icl_model(adapter, str(model_dir), device=device, batch_size=batch_size, dtype=dtype)
        measured_costs = measure_unit_costs(m, anchors[0].image, row_shape(m, anchors, pools))
        unit_costs = measured_costs
        del m
        gc.collect()  # see `run`: the adapter is in a reference cycle

    loads: dict[str, float] = {}
    parts: dict[str, dict] = {p: {} for p in paths}
    peaks: dict[str, int] = {p: 0 for p in paths}
    rss_after: dict[str, int] = {}  # resident memory once a path's model is freed (the next path starts from it)
    params: dict[str, int] = {}
    counts: dict[str, dict] = {}
    shapes: list = []

    def load(path_name):
        t0 = time.perf_counter()
        model = load_icl_model(adapter, str(model_dir), device=device, batch_size=batch_size, dtype=dtype)
        loads[path_name] = round(time.perf_counter() - t0, 2)
        params.setdefault("n", sum(p.numel() for p in model.model.parameters()))
        if warmup:
            _warm_up(model, path_name, anchors[0], pools[0], order, original_batch)
        return model

    def run(path_name):
        model = load(path_name)
        if unit_costs is not None and not shapes:
            from leverplus.tracks.vqa.cost import row_shape

            shapes.append(row_shape(model, anchors, pools))

        def body():
            scores, results = [], []
            c: dict = {}
            for anchor, pool in zip(anchors, pools):
                if path_name == "ours":
                    rec_model = RecordingModel(model)
                    results.append(beam_search_anchor(rec_model, anchor, pool, **kw))
                    scores.append(rec_model.scores)
                    continue
                rec: dict = {}
                if path_name == "reference":
                    results.append(reference_beam_search(model, anchor, pool, record=rec, **kw))
                else:
                    results.append(original_beam_search(model, anchor, pool, batch=original_batch, record=rec,
                                                        counts=c, **kw))
                scores.append(rec)
            counts[path_name] = c
            return scores, results

        totals: dict[str, float] = {}
        with PeakRSS() as mem, (time_breakdown(model, totals) if breakdown else _null()):
            t0, c0 = clocks()
            out = body()
            t1, c1 = clocks()
            dt = t1 - t0
            cpu_times[path_name].append(c1 - c0)
        if not parts[path_name] or dt < parts[path_name]["total"]:
            parts[path_name] = {"total": dt, **totals}
        peaks[path_name] = max(peaks[path_name], mem.peak)
        # Free the model before the next path loads its own. Dropping the reference is not enough: an adapter is in
        # a reference cycle (its chat segments hold a bound method of it), so without a collection the previous
        # path's weights (~13-15 GB at real size) stayed resident while the next path ran, on a 24 GiB machine.
        model = None
        gc.collect()
        rss_after[path_name] = _rss_bytes()
        return dt, out

    load0 = [round(x, 2) for x in os.getloadavg()]
    # Alternate the paths so that drift in the machine's speed hits all; report the fastest of each.
    times: dict[str, list[float]] = {p: [] for p in paths}
    cpu_times: dict[str, list[float]] = {p: [] for p in paths}  # this process's CPU seconds of each run
    scores: dict[str, list] = {}
    results: dict[str, list] = {}
    for _ in range(repeats):
        for p in paths:
            dt, (scores[p], results[p]) = run(p)
            times[p].append(dt)
    best = {p: min(times[p]) for p in paths}
    best_cpu = {p: min(cpu_times[p]) for p in paths}
    n_seq = {p: sum(len(r) for r in scores[p]) for p in paths}
    rate = {p: n_seq[p] / best[p] for p in paths}
    base_path = "original" if "original" in paths else "reference"

    def compare(a, b):
        diffs, only_one = [], 0
        for r, o in zip(scores[a], scores[b]):
            common = r.keys() & o.keys()
            only_one += len(r.keys() ^ o.keys())
            diffs += [abs(r[k] - o[k]) for k in common]
        equal, beam_diff = True, 0.0
        for (ob, obase, _), (rb, rbase, _) in zip(results[a], results[b]):
            same, d = _beams_diff(ob, rb)
            equal &= same
            beam_diff = max(beam_diff, d, abs(obase - rbase))
        return {"max_abs_score_diff": float(max(diffs)) if diffs else None, "max_abs_beam_diff": float(beam_diff),
                "beams_equal": bool(equal), "only_in_one_path": only_one}

    vs = {f"ours_vs_{p}": compare("ours", p) for p in paths if p != "ours"}
    main = vs[f"ours_vs_{base_path}"]
    all_ref = np.array([v for r in scores[base_path] for v in r.values()])
    extra = {}
    if breakdown:
        def split(path_name):
            d = dict(parts[path_name])
            total = d.pop("total")
            rest = total - sum(d.values())
            secs = {k: round(v, 3) for k, v in sorted(d.items())}
            secs["other (tokenisation, processor, glue)"] = round(rest, 3)
            return {"seconds": secs, "seconds_per_sequence": {k: round(v / n_seq[path_name], 4) for k, v in secs.items()},
                    "peak_rss_gb": round(peaks[path_name] / 2**30, 2),
                    "rss_after_model_freed_gb": round(rss_after[path_name] / 2**30, 2),
                    "load_seconds": loads[path_name]}

        extra = {"breakdown": {p: split(p) for p in paths}, "parameters": params.get("n"), "dtype": dtype}
    out = {
        "model": str(model_dir),
        "dataset": str(dataset_dir),
        "adapter": adapter,
        "device": device,
        "dtype": dtype,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "anchors": n_anchors,
        "cand_num": cand_num,
        "beam_size": beam_size,
        "shot_num": shot_num,
        "order": order,
        "seed": seed,
        "batch_size": batch_size,
        "original_batch": original_batch,
        "warmup": warmup,
        "paths": paths,
        "sequences": {**n_seq, "only_in_one_path": main["only_in_one_path"]},
        "original_forwards": counts.get("original"),
        "repeats": repeats,
        "load_average": {"start": load0, "end": [round(x, 2) for x in os.getloadavg()],
                         "cpus": os.cpu_count()},
        **{p: {"seconds": round(best[p], 3), "sequences_per_s": round(rate[p], 2),
               "all_seconds": [round(t, 3) for t in times[p]], "cpu_seconds": round(best_cpu[p], 3),
               "all_cpu_seconds": [round(t, 3) for t in cpu_times[p]]} for p in paths},
        "speedup_against": base_path,
        "speedup": round(rate["ours"] / rate[base_path], 2),
        "speedup_per_repeat": [round((n_seq["ours"] / o) / (n_seq[base_path] / r), 2)
                               for r, o in zip(times[base_path], times["ours"])],
        **({"speedup_vs_batch1": round(rate["ours"] / rate["reference"], 2)} if "reference" in paths else {}),
        # the same ratio in CPU seconds of this process (less sensitive to other jobs on a shared machine)
        "speedup_cpu": round((n_seq["ours"] / best_cpu["ours"]) / (n_seq[base_path] / best_cpu[base_path]), 2),
        "max_abs_score_diff": main["max_abs_score_diff"],
        "max_abs_beam_diff": main["max_abs_beam_diff"],
        "beams_equal": main["beams_equal"],
        "comparisons": vs,
        "reference_score_range": [float(all_ref.min()), float(all_ref.max())],
        "seconds_per_sequence": {p: round(best[p] / n_seq[p], 4) for p in paths},
        **extra,
    }
    if unit_costs is not None:
        from leverplus.tracks.vqa.cost import SliceConfig, analytic_limit, cpu_view, predict

        cfg = SliceConfig(anchors=n_anchors, cand_num=cand_num, beam_size=beam_size, shot_num=shot_num, order=order,
                          batch_size=batch_size, original_batch=original_batch, **shapes[0])
        pred = predict(unit_costs, cfg)
        out["cost_model"] = {
            "slice": cfg.as_dict(),
            "predicted_seconds": {k: round(v, 3) for k, v in pred.items()},
            "measured_seconds": {p: round(best[p], 3) for p in paths},
            "relative_error": {p: round((pred[p] - best[p]) / best[p], 3) for p in paths if p in pred},
        }
        lim = analytic_limit(unit_costs, cfg)
        lim["limit_vs_measured_" + base_path] = round(best[base_path] / pred["limit"], 2)
        out["analytic_limit"] = lim
        # the fraction of the limit's speed ours reached: the limit's predicted time over ours' measured time
        # (= measured ratio / limit_vs_measured_<original>)
        out["achieved_fraction_of_limit"] = round(pred["limit"] / best["ours"], 3)
        out["achieved_fraction_of_limit_predicted"] = round(pred["limit"] / pred["ours"], 3)
        out["achieved_fraction_of_limit_one_image_per_forward"] = round(pred["limit_one_image_per_forward"] / best["ours"], 3)
        cu = cpu_view(unit_costs)
        if cu is not None:  # the same in CPU seconds: unit costs and runs compared whatever the load was
            pc = predict(cu, cfg)
            out["cost_model"].update({
                "predicted_cpu_seconds": {k: round(v, 3) for k, v in pc.items()},
                "measured_cpu_seconds": {p: round(best_cpu[p], 3) for p in paths},
                "relative_error_cpu": {p: round((pc[p] - best_cpu[p]) / best_cpu[p], 3) for p in paths if p in pc},
            })
            out["analytic_limit_cpu"] = {**analytic_limit(cu, cfg),
                                         "limit_vs_measured_" + base_path: round(best_cpu[base_path] / pc["limit"], 2)}
            out["achieved_fraction_of_limit_cpu"] = round(pc["limit"] / best_cpu["ours"], 3)
            out["achieved_fraction_of_limit_cpu_predicted"] = round(pc["limit"] / pc["ours"], 3)
        out["unit_costs"] = unit_costs if measured_costs is not None else {"source": unit_costs.get("source", "given")}
    return out


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

    from leverplus.models.generation import GenerationSettings
    from leverplus.tracks.vqa.models.prompting import PromptSettings

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
        gc.collect()  # the adapter is in a reference cycle (see bench_infoscore's `run`): free it before the next load
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
