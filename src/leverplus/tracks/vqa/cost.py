"""A cost model of InfoScore beam search that extrapolates: unit costs measured on the machine, composed per config.

Unit costs (`measure_unit_costs`, each timed after an untimed warm-up, the fastest of ≥ 3 repeats — other processes
only ever add time, and the benchmark reports each path's fastest run too):

* vision — the vision tower (Flamingo: + perceiver) at the bench image size, at 1 and 4 images per forward:
  seconds per call and per image (batched vision is cheaper per image, and the batched original uses it);
* language model — seconds of one forward of B rows × L new tokens that attend P cached tokens (Flamingo: and
  T images per row through the gated cross-attention), measured on a grid of B, L, P (, T) around the config's
  shapes and fitted by least squares (non-negative) as
  ``t = a + b·(B·L) + c·(B·L·(P + L/2)) [+ x·(B·L·T)]`` — a fixed cost per call, a cost per token (the matmuls),
  a cost per token and attended key (self-attention) and, for Flamingo, per token and image (cross-attention keys);
  the language model's own head (Flamingo's MPT computes logits at every position) is subtracted first;
* LM head — seconds per position whose logits are computed (``h @ W_vocab``).

Every timing reads two clocks (`clocks`): wall seconds and this process's CPU seconds. The unit costs are fitted
from each (`process_cpu`, `cpu_view`): on a machine shared with other jobs the wall-clock costs hold only for runs made
under the same load, while the CPU-second costs (at one torch thread ≈ wall seconds on an idle machine) predict a
run's CPU seconds under another load.

`predict` composes them for a `SliceConfig` — anchors, pool, beams, shots, batch sizes and the row shape (tokens
per demonstration, query, answer, chat head; read off the adapter's own tokenisation by `row_shape`) — following
each path's schedule step by step: the batch-1 original (every sequence one forward, every image re-encoded), the
batched original (Lever-LM: per beam the beam row, then `original_batch` whole rows per forward, all images of all
rows encoded, logits everywhere), ours (each image once, a beam's prefix once per step, rows' own tokens on top,
head only where the adapter computes it) and the analytic limit (each image once, each beam's prefix once per step,
every row's own tokens at the fitted per-token costs with no per-call cost, the head on the answer tokens only).
The limit ignores what batching cannot remove (tokenisation, padding, memory traffic); `leverplus bench-infoscore`
prints it and the fraction of it ours achieved. Because ours encodes one image per forward (image features must not
depend on which images missed the cache together), the limit is also given with each image in a forward of its own
(`limit_one_image_per_forward`): on a CPU a vision forward has a large fixed cost (reading the tower's weights).

Assumptions, printed by `leverplus plan`: rows of one step have the mean shape (no padding cost), images of one size,
one device, threads as measured; pools of different anchors share no image (ours caches per adapter lifetime, so
shared images make it faster than predicted).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT = 1


@dataclass(frozen=True)
class SliceConfig:
    anchors: int
    cand_num: int
    beam_size: int
    shot_num: int
    order: str = "right"
    batch_size: int = 32  # ours
    original_batch: int = 32  # Lever-LM's get_info_score batch
    adapter: str = "flamingo"
    head_tokens: float = 0.0  # tokens before the first demonstration (chat head)
    demo_tokens: float = 0.0  # tokens per demonstration (its image's tokens included)
    query_tokens: float = 0.0  # tokens of the query with its answer
    answer_tokens: float = 1.0  # scored tokens
    tail_tokens: float = 0.0  # tokens after the last scored one (ours does not run them)

    def as_dict(self) -> dict:
        return asdict(self)


def row_shape(model, anchors: Sequence, pools: Sequence[Sequence]) -> dict:
    """Mean token counts of the rows the bench scores, from the adapter's own tokenisation: `head_tokens`,
    `demo_tokens`, `query_tokens`, `answer_tokens`, `tail_tokens`, and `adapter`."""
    heads, queries, demos, answers, tails = [], [], [], [], []
    for anchor, pool in zip(anchors, pools):
        ids0, m0 = model.answer_mask([], anchor)
        m0 = np.asarray(m0)
        last = int(np.flatnonzero(m0)[-1])
        answers.append(int(m0.sum()))
        tails.append(len(ids0) - last - 1)
        for d in pool[: min(8, len(pool))]:
            ids1, _ = model.answer_mask([d], anchor)
            demos.append(len(ids1) - len(ids0))
        head = len(model._ids(model._segments.head)) if model.name == "qwen2_5_vl" and model._blockwise else 0
        heads.append(head)
        queries.append(len(ids0) - head)
    return {"adapter": model.name, "head_tokens": float(np.mean(heads)), "demo_tokens": float(np.mean(demos)),
            "query_tokens": float(np.mean(queries)), "answer_tokens": float(np.mean(answers)),
            "tail_tokens": float(np.mean(tails))}


# ---- measuring -------------------------------------------------------------------------------------------------
def clocks() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, every thread): the two clocks every timing here reads."""
    return time.perf_counter(), time.process_time()


def _timed(fn, repeats: int) -> dict:
    """The fastest of `repeats` timed calls after one untimed warm-up (contention from other processes only ever
    adds time; the benchmark also reports each path's fastest run), the median and every time."""
    fn()  # warm-up, untimed
    ts, cs = [], []
    for _ in range(repeats):
        t0, c0 = clocks()
        fn()
        t1, c1 = clocks()
        ts.append(t1 - t0)
        cs.append(c1 - c0)
    # CPU seconds of this process beside wall seconds: other processes on a shared machine take turns on the cores
    # (wall time grows with the load), while a call's CPU seconds stay close to its wall time on an idle machine
    return {"best": min(ts), "median": statistics.median(ts), "all": [round(t, 5) for t in ts],
            "cpu_best": min(cs), "cpu_all": [round(c, 5) for c in cs]}


def _parts(model):
    """(vision fn(path), lm fn(B, L, P, T), head module, head-in-LM?) for an adapter."""
    import torch

    from leverplus.tracks.vqa.data.images import load_image

    if model.name == "flamingo":
        lm = model.lm
        head = lm.get_output_embeddings()
        vocab_ids = [i for i in range(10, 200) if i not in (model.media_id, model.eoc_id, model.pad_id)]

        def vision(path, n=1):
            with torch.no_grad():
                pix = model.image_transform(load_image(path))[None].to(model.device, model.dtype)
                tokens = model.model.vision_encoder(pix.expand(n, *pix.shape[1:]))[1]
                return model.model.perceiver(tokens[:, None, None])

        lat = {}

        def lm_call(B, L, P, T, image):
            if image not in lat:
                lat[image] = vision(image)[0, 0]
            media = lat[image][None, None].expand(B, T, *lat[image].shape).contiguous()
            gen = torch.Generator().manual_seed(B * 1000 + L)
            ids = torch.tensor(vocab_ids)[torch.randint(len(vocab_ids), (B, L), generator=gen)]
            step = max(1, L // T)
            ids[:, ::step][:, :T] = model.media_id  # T images in the row, the first at its first token
            if P:
                pre = torch.tensor(vocab_ids)[torch.randint(len(vocab_ids), (1, P), generator=gen)]
                pre[0, 0] = model.media_id
                model._condition(lat[image][None, None])
                try:
                    with torch.no_grad():
                        state = lm(input_ids=pre, attention_mask=torch.ones_like(pre), use_cache=True).past_key_values
                finally:
                    lm.clear_conditioned_layers()
            from leverplus.tracks.vqa.models.flamingo import _copy_cache
            from leverplus.tracks.vqa.models.kv_cache import repeat_prefix_cache

            def run():
                c = repeat_prefix_cache(_copy_cache(state), B) if P else None
                model._condition(media)
                try:
                    with torch.no_grad():
                        lm(input_ids=ids, attention_mask=torch.ones(B, P + L, dtype=torch.long),
                           past_key_values=c, use_cache=c is not None)
                finally:
                    lm.clear_conditioned_layers()

            return run

        return vision, lm_call, head, True
    if model.name == "qwen2_5_vl":
        m = model.model
        text = m.model.language_model

        def vision(path, n=1):
            enc = model.processor.image_processor(images=[load_image(path)] * n, return_tensors="pt")
            with torch.no_grad():
                return m.model.visual(enc["pixel_values"].to(model.device, model.dtype),
                                      grid_thw=enc["image_grid_thw"].to(model.device))

        def lm_call(B, L, P, T, image):
            gen = torch.Generator().manual_seed(B * 1000 + L)
            ids = torch.randint(10, 200, (B, L), generator=gen)
            cache = None
            if P:
                pre = torch.randint(10, 200, (1, P), generator=gen)
                with torch.no_grad():
                    cache = text(input_ids=pre, use_cache=True).past_key_values
                kv = [(layer.keys, layer.values) for layer in cache.layers]
            from transformers import DynamicCache

            def run():
                c = None
                if P:
                    c = DynamicCache([(k.expand(B, *k.shape[1:]).contiguous(), v.expand(B, *v.shape[1:]).contiguous())
                                      for k, v in kv], config=m.config)
                pos = torch.arange(P, P + L)[None, None].expand(3, B, L)
                with torch.no_grad():
                    text(input_ids=ids, past_key_values=c, position_ids=pos,
                         attention_mask=torch.ones(B, P + L, dtype=torch.long), use_cache=False)

            return run

        return vision, lm_call, m.lm_head, False
    raise ValueError(f"no cost model for adapter {model.name!r}")


def measure_unit_costs(model, image: str, shape: dict, *, batches: Sequence[int] = (1, 4),
                       repeats: int = 3, head_tokens: int = 256, vision_batch: int = 4) -> dict:
    """Unit costs of `model` (an adapter) on this machine (module docstring). The LM grid is built around `shape`
    (`row_shape`): lengths of a row's own part (demonstration + query) and of a whole row, with and without a
    prefix of the beam's length, at the smallest and largest of `batches` (a fractional design of 6 forwards,
    `grid` below); Flamingo with 1 to 3 images per row."""
    import torch

    if repeats < 3:
        raise ValueError(f"unit costs need at least 3 repeats, got {repeats}")
    t_start = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]
    vision_fn, lm_call, head, head_in_lm = _parts(model)
    # vision at 1 and `vision_batch` images per forward: a cost per call and one per image (the batched original
    # encodes every image of a batch in one forward, ours one image per forward)
    v1 = _timed(lambda: vision_fn(image), repeats)
    vn = _timed(lambda: vision_fn(image, vision_batch), repeats)
    W = head.weight
    h = torch.randn(head_tokens, W.shape[1], dtype=W.dtype, device=W.device)
    with torch.no_grad():
        hd = _timed(lambda: torch.nn.functional.linear(h, W), repeats)
    own = max(2, int(round(shape["demo_tokens"] + shape["query_tokens"])))
    whole = max(own + 1, int(round(shape["head_tokens"] + 2 * shape["demo_tokens"] + shape["query_tokens"])))
    prefix = max(1, int(round(shape["head_tokens"] + shape["demo_tokens"])))
    b0, b1 = min(batches), max(batches)
    # a fractional design: every coefficient is identified, and the shapes of each path's forwards are covered
    # (whole rows at batch 1 and b1 with 3 images, own parts on a prefix, one-image rows, short rows)
    grid = [(b0, own, 0, 1), (b0, whole, 0, 3), (b1, own, 0, 1), (b1, own, prefix, 2), (b0, own, prefix, 2),
            (b1, whole, 0, 3)]
    if model.name != "flamingo":
        grid = sorted({(B, L, P, 1) for B, L, P, _ in grid})
    runs = [(B, L, P, T, _timed(lm_call(B, L, P, T, image), repeats)) for B, L, P, T in grid]

    def fit(best: str) -> dict:
        """Unit costs from the `best` times ("best": wall seconds, "cpu_best": this process's CPU seconds)."""
        v_img = max(0.0, (vn[best] - v1[best]) / (vision_batch - 1))
        per_head = hd[best] / head_tokens
        samples = [{"B": B, "L": L, "P": P, "T": T, "seconds": r[best], "body_seconds":
                    r[best] - (per_head * B * L if head_in_lm else 0.0)} for B, L, P, T, r in runs]
        X = np.array([_lm_features(s["B"], s["L"], s["P"], s["T"], model.name) for s in samples])
        y = np.array([s["body_seconds"] for s in samples])
        coef = _nnls(X, y)
        return {"vision_per_image": v_img, "vision_per_call": max(0.0, v1[best] - v_img), "head_per_token": per_head,
                "coef": coef, "samples": samples,
                "lm_fit_max_rel_error": float(np.max(np.abs(X @ coef - y) / np.maximum(y, 1e-9)))}

    wall, cpu = fit("best"), fit("cpu_best")
    samples = [{**s, "all": r["all"], "cpu_seconds": c["seconds"], "cpu_all": r["cpu_all"]}
               for s, c, (*_, r) in zip(wall["samples"], cpu["samples"], runs)]
    v_img, v_call, per_head, coef = (wall[k] for k in ("vision_per_image", "vision_per_call", "head_per_token", "coef"))
    names = ["per_call", "per_token", "per_token_key"] + (["per_token_image"] if model.name == "flamingo" else [])
    return {
        "format": FORMAT,
        "adapter": model.name,
        "vision_per_image": v_img,
        "vision_per_call": v_call,
        "vision_all": {"1": v1["all"], str(vision_batch): vn["all"]},
        "head_per_token": per_head,
        "head_all": hd["all"],
        "head_in_lm": head_in_lm,
        # where ours computes the head: "scored" (the positions predicting scored tokens) or "all" it runs
        "head_scope": "scored" if model.name != "flamingo" or model._keep_kw(1) else "all",
        "lm": dict(zip(names, coef.tolist())),
        "lm_samples": samples,
        "lm_fit_max_rel_error": wall["lm_fit_max_rel_error"],
        # the same unit costs in this process's CPU seconds (`cpu_view`): what a machine nobody else uses would take
        "process_cpu": {"vision_per_image": cpu["vision_per_image"], "vision_per_call": cpu["vision_per_call"],
                        "head_per_token": cpu["head_per_token"], "lm": dict(zip(names, cpu["coef"].tolist())),
                        "lm_fit_max_rel_error": cpu["lm_fit_max_rel_error"],
                        "vision_all": {"1": v1["cpu_all"], str(vision_batch): vn["cpu_all"]}, "head_all": hd["cpu_all"]},
        "shape": shape,
        "repeats": repeats,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "measure_seconds": round(time.perf_counter() - t_start, 1),
        "load_average": {"start": load0, "end": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()},
    }


def cpu_view(u: dict) -> dict | None:
    """The unit costs `u` in CPU seconds of the measuring process (None where `u` has none): on a machine shared with
    other jobs, wall seconds grow with the load while CPU seconds do not (much), so a prediction in CPU seconds can
    be checked against a run made under another load by that run's CPU seconds."""
    if "process_cpu" not in u:
        return None
    return {**u, **{k: v for k, v in u["process_cpu"].items() if k not in ("vision_all", "head_all")}}


def _lm_features(B, L, P, T, adapter) -> list[float]:
    f = [1.0, B * L, B * L * (P + L / 2)]
    if adapter == "flamingo":
        f.append(B * L * T)
    return f


def _nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients, relative errors weighted equally (rows scaled by 1/y)."""
    w = 1.0 / np.maximum(y, 1e-9)
    try:
        from scipy.optimize import nnls

        coef, _ = nnls(X * w[:, None], y * w)
        return coef
    except ImportError:  # pragma: no cover
        coef = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)[0]
        return np.clip(coef, 0, None)


# ---- composing -------------------------------------------------------------------------------------------------
def _lm(u: dict, B: float, L: float, P: float, T: float, *, per_call: bool = True) -> float:
    """Seconds of one forward of B rows × L tokens on P cached keys, T images per row (B = 0: the per-call cost
    alone)."""
    c = u["lm"]
    t = (c["per_call"] if per_call else 0.0) + c["per_token"] * B * L + c["per_token_key"] * B * L * (P + L / 2)
    if "per_token_image" in c:
        t += c["per_token_image"] * B * L * T
    return t


def _steps(cfg: SliceConfig):
    """(step, beams, candidates per beam) of one anchor."""
    for s in range(cfg.shot_num):
        yield s, (1 if s == 0 else cfg.beam_size), cfg.cand_num - s


def predict(u: dict, cfg: SliceConfig) -> dict:
    """Predicted seconds of every path for `cfg` (module docstring): `reference`, `original`, `ours`, `limit`."""
    v, vc, hd = u["vision_per_image"], u.get("vision_per_call", 0.0), u["head_per_token"]
    H, D, Q, A = cfg.head_tokens, cfg.demo_tokens, cfg.query_tokens, cfg.answer_tokens
    tail = cfg.tail_tokens
    flam = u["adapter"] == "flamingo"

    def whole(k, B=1):  # B rows with k demonstrations, whole: vision of every image, LM, head everywhere
        L = H + k * D + Q
        return vc + B * (k + 1) * v + _lm(u, B, L, 0, k + 1) + hd * B * L

    ref = orig = ours = lim = 0.0
    # zero-shot row (the original re-scores it as the first beam's P̄ at step 0)
    ref += whole(0)
    ours += (1 + cfg.cand_num) * (vc + v)  # each image once, one per forward
    lim += (1 + cfg.cand_num) * v
    # the zero-shot row is scored in the first step's forwards (`scores_beam_rows`): its tokens, no call of its own
    merged = cfg.shot_num >= 1
    # the head: Qwen on the answer positions; Flamingo on the last positions of a batch that hold every row's
    # scored predictions (`logits_to_keep`: ~ the answer + 1 per row at the mean shape) or, where the LM cannot
    # keep only those (remote-code MosaicGPT), on every position it runs
    scored_only = not flam or u.get("head_scope") == "scored"
    # with `right`, the zero-shot row runs on the first step's prefix (the head H: it is the empty beam's own row);
    # where there is a head (Qwen's chat head), the zero-shot row carries it: it runs whole as step 0's prefix
    # forward and its first H tokens' cache serves the candidates, so it is not among the candidates' rows
    zs_pre, zs_own = (H, Q - tail) if merged and cfg.order == "right" else (0, H + Q - tail)
    carried = merged and cfg.order == "right" and H > 0
    ours += _lm(u, 1, zs_own, zs_pre, 1, per_call=not merged) + hd * (
        A if not flam else (A + 1 if scored_only else zs_own))
    lim += _lm(u, 1, zs_own, zs_pre, 1, per_call=False) + hd * A
    for s, beams, cands in _steps(cfg):
        k = s + 1  # demonstrations in a scored row
        ref += beams * cands * whole(k)
        for _ in range(beams):
            orig += whole(s)  # the beam's own row, re-scored
            full, rest = divmod(cands, cfg.original_batch)
            orig += full * whole(k, cfg.original_batch) + (whole(k, rest) if rest else 0.0)
        if cfg.order == "right":
            prefix, own, T_own = H + s * D, D + Q - tail, 2
            if prefix > 0:  # the beams' prefixes, all beams in one forward
                ours += _lm(u, beams, prefix, 0, s)
                lim += _lm(u, beams, prefix, 0, s, per_call=False)
        else:
            prefix, own, T_own = 0.0, H + k * D + Q - tail, k + 1
        # rows of every beam together, chunks of batch_size (Flamingo's first step: the zero-shot row too)
        n = beams * cands
        in_rows = merged and s == 0 and not carried  # the zero-shot row among the first step's candidate rows
        calls = -(-(n + (1 if in_rows else 0)) // cfg.batch_size)
        ours += calls * _lm(u, 0, 0, 0, 0) + _lm(u, n, own, prefix, T_own, per_call=False)
        if in_rows and n % cfg.batch_size:  # the zero-shot row shares a forward: padded to the rows' length
            ours += _lm(u, 1, own, prefix, T_own, per_call=False) - _lm(u, 1, zs_own, zs_pre, 1, per_call=False)
        ours += hd * n * (A if not flam else (A + 1 if scored_only else own))
        lim += _lm(u, beams * cands, own, prefix, T_own, per_call=False) + hd * beams * cands * A
    n = cfg.anchors
    lim_1img = lim + (1 + cfg.cand_num) * vc  # the same, each image in a forward of its own (as ours encodes them)
    return {"reference": ref * n, "original": orig * n, "ours": ours * n, "limit": lim * n,
            "limit_one_image_per_forward": lim_1img * n}


def analytic_limit(u: dict, cfg: SliceConfig) -> dict:
    """The ratios a path running only each row's own tokens (each image once, each prefix once, the head on the
    answer tokens) would reach over each original, from the unit costs."""
    p = predict(u, cfg)
    return {
        "limit_seconds": round(p["limit"], 3),
        "limit_vs_original": round(p["original"] / p["limit"], 2),
        "limit_vs_reference": round(p["reference"] / p["limit"], 2),
        # ours encodes one image per forward so that features never depend on which images missed the cache
        # together; on a machine where a vision forward has a large fixed cost that is a ceiling of its own
        "limit_one_image_per_forward_seconds": round(p["limit_one_image_per_forward"], 3),
        "limit_one_image_per_forward_vs_original": round(p["original"] / p["limit_one_image_per_forward"], 2),
        "definition": "predicted original seconds / predicted seconds of each image once, each beam prefix once "
                      "per step, each row's own tokens with no per-forward cost, LM head on answer tokens only",
    }


def load_unit_costs(path: str | Path) -> dict:
    d = json.loads(Path(path).read_text(encoding="utf-8"))
    for k in ("adapter", "vision_per_image", "head_per_token", "lm", "shape"):
        if k not in d:
            raise ValueError(f"{path}: not a unit-cost measurement (no {k!r})")
    return d
