"""Issue 28 items 1, 3 and 4: the batched original (Lever-LM's get_info_score schedule), the cost model's composition
(known answers from unit costs chosen by hand), its fit, and the unit-cost measurement on tiny models. No assertion
here depends on how fast the machine is."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from leverplus.tracks.vqa.bench import original_beam_search, original_scores, reference_beam_search
from leverplus.tracks.vqa.cost import SliceConfig, _nnls, _timed, analytic_limit, cpu_view, predict
from leverplus.tracks.vqa.icd.infoscore import beam_search_anchor
from leverplus.tracks.vqa.plan import sequences_per_anchor

ZERO_LM = {"per_call": 0.0, "per_token": 0.0, "per_token_key": 0.0, "per_token_image": 0.0}


def units(adapter="flamingo", vision=0.0, head=0.0, **lm):
    return {"adapter": adapter, "vision_per_image": vision, "head_per_token": head, "lm": {**ZERO_LM, **lm}}


CFG = SliceConfig(anchors=3, cand_num=10, beam_size=4, shot_num=2, order="right", batch_size=4, original_batch=3,
                  adapter="flamingo", head_tokens=0, demo_tokens=20, query_tokens=15, answer_tokens=2, tail_tokens=1)


def test_vision_images_counted_per_path():
    """Vision only (1 s per image): batch 1 encodes every image of every sequence, the batched original also those
    of every beam's re-scored row, ours and the limit each distinct image once."""
    p = predict(units(vision=1.0), CFG)
    # step 0: 10 rows × 2 images, the zero-shot beam row 1 image; step 1: 4 beams × (9 rows × 3 images + 2)
    assert p["original"] == 3 * (1 + 10 * 2 + 4 * (2 + 9 * 3))
    assert p["reference"] == 3 * (1 + 10 * 2 + 4 * 9 * 3)
    assert p["ours"] == p["limit"] == 3 * (10 + 1)


def test_vision_per_call_counts_vision_forwards():
    """A fixed cost per vision forward: the batched original encodes a whole batch's images in one forward, batch 1
    one forward per sequence, ours one per distinct image; the limit has no per-call cost."""
    p = predict({**units(), "vision_per_call": 1.0}, CFG)
    assert p["original"] == 3 * ((1 + math.ceil(10 / 3)) + 4 * (1 + math.ceil(9 / 3)))
    assert p["reference"] == 3 * (1 + 10 + 4 * 9)
    assert p["ours"] == 3 * 11 and p["limit"] == 0


def test_per_call_cost_counts_forwards():
    """A fixed cost per forward only: the original runs per beam one beam row plus ceil(cands / batch) batches;
    ours (Flamingo) the zero-shot row inside the first step's batches, per later step one forward for every beam's
    prefix and ceil(beams × cands / batch) batches of rows across beams; the limit has no per-call cost."""
    p = predict(units(per_call=1.0), CFG)
    assert p["original"] == 3 * ((1 + math.ceil(10 / 3)) + 4 * (1 + math.ceil(9 / 3)))
    assert p["reference"] == 3 * (1 + 10 + 4 * 9) == 3 * sequences_per_anchor(10, 4, 2)
    assert p["ours"] == 3 * (math.ceil((10 + 1) / 4) + 1 + math.ceil(4 * 9 / 4))
    q = predict(units("qwen2_5_vl", per_call=1.0), CFG)  # Qwen alike
    assert q["ours"] == p["ours"]
    assert p["limit"] == 0


def test_per_token_cost_counts_own_tokens():
    """Per token only: ours and the limit run each row's own part (demonstration + query, minus the tail) plus
    each beam's prefix once per step; the original whole rows."""
    p = predict(units(per_token=1.0), CFG)
    own = 20 + 15 - 1
    want_limit = 3 * ((15 - 1) + 10 * own + 4 * 20 + 4 * 9 * own)
    assert p["limit"] == pytest.approx(want_limit)
    # every row, the zero-shot one too, cut at its last scored token; but the zero-shot row shares the last of step
    # 0's forwards (10 + 1 rows in batches of 4) with two candidate rows, so ours pays it padded to their length
    assert p["ours"] == pytest.approx(want_limit + 3 * (own - (15 - 1)))
    alone = SliceConfig(**{**CFG.as_dict(), "cand_num": 8})  # 8 + 1 rows: the zero-shot row alone, no padding
    assert predict(units(per_token=1.0), alone)["ours"] == pytest.approx(predict(units(per_token=1.0), alone)["limit"])
    # a chat head (Qwen): the zero-shot row carries it (runs whole as step 0's prefix forward, the head counted
    # once), so it is never padded among the candidates (10 + 1 rows in batches of 4: it would be)
    headed = SliceConfig(**{**CFG.as_dict(), "head_tokens": 5, "adapter": "qwen2_5_vl"})
    q = predict(units("qwen2_5_vl", per_token=1.0), headed)
    assert q["limit"] == pytest.approx(3 * (5 + (15 - 1) + 10 * own + 4 * (5 + 20) + 4 * 9 * own)) == q["ours"]
    # ... nor adds a forward: 8 candidate rows in 2 forwards of 4 (+ the prefix forward), not 3
    calls = predict(units("qwen2_5_vl", per_call=1.0), SliceConfig(**{**headed.as_dict(), "cand_num": 8}))
    assert calls["ours"] == 3 * (1 + 8 // 4 + 1 + math.ceil(4 * 7 / 4))
    whole = lambda k: k * 20 + 15  # noqa: E731
    assert p["original"] == pytest.approx(3 * (whole(0) + 10 * whole(1) + 4 * (whole(1) + 9 * whole(2))))
    lim = analytic_limit(units(per_token=1.0), CFG)
    assert lim["limit_vs_original"] == round(p["original"] / p["limit"], 2)


def test_head_cost_flamingo_every_position_qwen_answer_only():
    """The head: a Flamingo LM that cannot keep only some logits (head_scope all, e.g. remote-code MosaicGPT) at
    every position it runs; with `logits_to_keep` (head_scope scored) at the answer + 1 positions of each row; Qwen
    at the answer positions; the limit at the answer positions."""
    u = units(head=1.0)
    p = predict(u, CFG)
    own = 20 + 15 - 1
    assert p["ours"] == pytest.approx(3 * (14 + (10 + 36) * own))  # MPT computes logits at every position it runs
    assert p["limit"] == pytest.approx(3 * (1 + 10 + 36) * 2)
    kept = predict({**u, "head_scope": "scored"}, CFG)
    assert kept["ours"] == pytest.approx(3 * (1 + 10 + 36) * (2 + 1))
    q = predict(units("qwen2_5_vl", head=1.0), CFG)
    assert q["ours"] == pytest.approx(q["limit"])


def test_left_order_has_no_prefix():
    left = SliceConfig(**{**CFG.as_dict(), "order": "left"})
    p = predict(units(per_token=1.0), left)
    assert p["limit"] == pytest.approx(3 * ((15 - 1) + 10 * (20 + 15 - 1) + 4 * 9 * (40 + 15 - 1)))


def test_timed_counts_cpu_seconds_of_this_process_not_waiting():
    """`_timed` gives wall and CPU seconds of the same calls: time spent waiting (here: asleep, as a process is while
    other jobs hold the cores) counts in wall seconds only; computing counts in both."""
    import time

    t = _timed(lambda: time.sleep(0.05), 3)
    assert t["best"] >= 0.05 and t["cpu_best"] < 0.02 and len(t["cpu_all"]) == 3

    def spin():
        c0 = time.process_time()
        while time.process_time() - c0 < 0.05:
            pass

    t = _timed(spin, 3)
    assert t["cpu_best"] >= 0.05 and t["best"] >= t["cpu_best"] * 0.9


def test_nnls_recovers_coefficients():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(8), rng.uniform(10, 500, 8), rng.uniform(1e3, 1e5, 8), rng.uniform(10, 900, 8)])
    coef = np.array([0.01, 2e-4, 3e-7, 1e-5])
    np.testing.assert_allclose(_nnls(X, X @ coef), coef, rtol=1e-6)


# ---- the batched original and the unit-cost measurement on the tiny OpenFlamingo ----------------------------------
flamingo = pytest.mark.skipif(importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed")


@pytest.fixture(scope="module")
def tiny_flamingo(tmp_path_factory):
    from leverplus.tracks.vqa.models.base import load_icl_model
    from leverplus.tracks.vqa.models.tiny_flamingo import TinyFlamingoSize, build_tiny_flamingo

    corpus = ["What color is the cat? black white", "How many dogs are there? 2 3", "Is it raining? yes no"] * 8
    d = build_tiny_flamingo(tmp_path_factory.mktemp("cost_flamingo"), corpus, seed=0,
                            size=TinyFlamingoSize(lang_init_std=0.3))
    return load_icl_model("flamingo", str(d))


@pytest.fixture(scope="module")
def fl_examples(tmp_path_factory):
    from PIL import Image

    from leverplus.tracks.vqa.data.records import VQAExample

    rng = np.random.default_rng(2)
    root = tmp_path_factory.mktemp("cost_images")
    qa = [("What color is the cat?", "black"), ("How many dogs are there?", "2"), ("Is it raining?", "yes"),
          ("What color is the cat?", "white"), ("How many dogs are there?", "3"), ("Is it raining?", "no")]
    out = []
    for i, (q, a) in enumerate(qa):
        p = root / f"c{i}.png"
        Image.fromarray(rng.integers(0, 256, (32 + 2 * i, 40, 3), dtype=np.uint8)).save(p)
        out.append(VQAExample(f"e{i}", str(p), q, a))
    return out


@flamingo
@pytest.mark.parametrize("batch", [1, 2, 32])
def test_batched_original_equals_batch_one(tiny_flamingo, fl_examples, batch):
    """Lever-LM's schedule (per beam: the beam row, then `batch` whole padded rows per forward, every image of every
    row encoded) gives the beams of the batch-1 original, and its forwards are counted as that schedule runs them."""
    e = fl_examples
    anchor, pool = e[0], e[1:]
    counts: dict = {}
    rec_b: dict = {}
    seen = {"forwards": 0, "rows": 0}

    def hook(module, args, kwargs):  # every Flamingo.forward the schedule runs, and its rows
        seen["forwards"] += 1
        seen["rows"] += kwargs["lang_x"].shape[0]

    h = tiny_flamingo.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        got = original_beam_search(tiny_flamingo, anchor, pool, beam_size=2, shot_num=2, order="right", batch=batch,
                                   record=rec_b, counts=counts)
    finally:
        h.remove()
    assert seen == counts
    rec_1: dict = {}
    ref = reference_beam_search(tiny_flamingo, anchor, pool, beam_size=2, shot_num=2, order="right", record=rec_1)
    assert [b.picked for b in got[0]] == [b.picked for b in ref[0]]
    assert rec_b.keys() == rec_1.keys()
    assert max(abs(math.log(rec_b[k]) - math.log(rec_1[k])) for k in rec_1) < 2e-5
    n = len(pool)
    assert counts["rows"] == 1 + n + 2 * (1 + n - 1)  # the beams' rows re-scored at every step
    assert counts["forwards"] == (1 + math.ceil(n / batch)) + 2 * (1 + math.ceil((n - 1) / batch))
    ours = beam_search_anchor(tiny_flamingo, anchor, pool, beam_size=2, shot_num=2, order="right")
    assert [b.picked for b in ours[0]] == [b.picked for b in got[0]]


@flamingo
def test_batched_original_pads_rows_of_different_lengths(tiny_flamingo, fl_examples):
    """Rows of different token and image counts in one padded forward: each row's P̄ is its own whole-row P̄."""
    e = fl_examples
    seqs = [[e[1], e[2]], [], [e[3]]]
    got = original_scores(tiny_flamingo, seqs, [e[0]] * 3)
    want = [tiny_flamingo.score_reference(s, e[0]) for s in seqs]
    np.testing.assert_allclose(np.log(got), np.log(want), rtol=0, atol=2e-5)


@flamingo
def test_unit_costs_measured_with_repeats(tiny_flamingo, fl_examples):
    from leverplus.tracks.vqa.cost import measure_unit_costs, row_shape

    e = fl_examples
    shape = row_shape(tiny_flamingo, [e[0]], [e[1:]])
    assert shape["demo_tokens"] > 0 and shape["answer_tokens"] >= 1 and shape["head_tokens"] == 0
    with pytest.raises(ValueError, match="at least 3 repeats"):
        measure_unit_costs(tiny_flamingo, e[0].image, shape, repeats=2)
    u = measure_unit_costs(tiny_flamingo, e[0].image, shape, batches=(1, 2), repeats=3)
    assert u["vision_per_image"] + u["vision_per_call"] > 0 and u["head_per_token"] > 0
    assert set(u["vision_all"]) == {"1", "4"} and all(len(t) == 3 for t in u["vision_all"].values())
    assert set(u["lm"]) == {"per_call", "per_token", "per_token_key", "per_token_image"}
    assert len(u["lm_samples"]) == 6 and all(len(s["all"]) == 3 for s in u["lm_samples"])
    assert {s["B"] for s in u["lm_samples"]} == {1, 2} and {s["P"] > 0 for s in u["lm_samples"]} == {True, False}
    # the same unit costs in CPU seconds of the process, from the same repeats
    assert all(len(s["cpu_all"]) == 3 and s["cpu_seconds"] == pytest.approx(min(s["cpu_all"]), abs=1e-5)
               for s in u["lm_samples"])
    c = cpu_view(u)
    assert set(c["lm"]) == set(u["lm"]) and c["head_per_token"] > 0 and c["vision_per_image"] + c["vision_per_call"] > 0
    assert predict(c, SliceConfig(anchors=1, cand_num=5, beam_size=2, shot_num=2, **shape))["limit"] > 0
    cfg = SliceConfig(anchors=1, cand_num=5, beam_size=2, shot_num=2, **shape)
    p = predict(u, cfg)
    assert p["original"] > p["ours"] >= p["limit"] > 0


def test_batched_original_qwen_pads_rows(qwen, vqa_examples):
    """The Qwen2.5-VL rows of one batched original forward (processor, right padding, every image re-encoded): each
    row's P̄ is its batch-1 P̄, and the tokenizer's padding side is left as it was."""
    e = vqa_examples
    seqs = [[e[1], e[2]], [], [e[3]]]
    side = qwen.tokenizer.padding_side
    got = original_scores(qwen, seqs, [e[0]] * 3)
    want = [qwen.score_reference(s, e[0]) for s in seqs]
    np.testing.assert_allclose(np.log(got), np.log(want), rtol=0, atol=2e-5)
    assert qwen.tokenizer.padding_side == side


@pytest.mark.parametrize("order", ["right", "left"])
@pytest.mark.parametrize("batch", [1, 2, 32])
def test_batched_original_equals_batch_one_qwen(qwen, vqa_examples, order, batch):
    """On the tiny Qwen2.5-VL too, Lever-LM's schedule (per beam the re-scored beam row, then `batch` right-padded
    whole rows per processor forward) scores every sequence as the batch-1 original does, within float noise, and
    keeps the same beams; ours keeps them as well."""
    e = vqa_examples
    anchor, pool = e[0], e[1:6]
    counts: dict = {}
    rec_b: dict = {}
    got = original_beam_search(qwen, anchor, pool, beam_size=2, shot_num=2, order=order, batch=batch, record=rec_b,
                               counts=counts)
    rec_1: dict = {}
    ref = reference_beam_search(qwen, anchor, pool, beam_size=2, shot_num=2, order=order, record=rec_1)
    assert [b.picked for b in got[0]] == [b.picked for b in ref[0]]
    assert rec_b.keys() == rec_1.keys()
    assert max(abs(math.log(rec_b[k]) - math.log(rec_1[k])) for k in rec_1) < 2e-5
    assert max(abs(x - y) for b, r in zip(got[0], ref[0]) for x, y in zip(b.step_scores, r.step_scores)) < 1e-5
    n = len(pool)
    assert counts["rows"] == 1 + n + 2 * (1 + n - 1)
    assert counts["forwards"] == (1 + math.ceil(n / batch)) + 2 * (1 + math.ceil((n - 1) / batch))
    ours = beam_search_anchor(qwen, anchor, pool, beam_size=2, shot_num=2, order=order)
    assert [b.picked for b in ours[0]] == [b.picked for b in got[0]]
