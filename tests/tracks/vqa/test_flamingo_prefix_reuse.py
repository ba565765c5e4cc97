"""Issue 28 item 2: Flamingo's beam prefix (demonstrations with their images, text and cross-attention conditioning)
run once per beam and step, candidate and query rows on top — on the tiny OpenFlamingo with transformers' MPT
(`DynamicCache`) and with the MosaicGPT stand-in (legacy list-of-tuples cache, boolean masks, remote code)."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from PIL import Image

from leverplus.tracks.vqa.bench import RecordingModel, reference_beam_search
from leverplus.tracks.vqa.data.records import VQAExample
from leverplus.tracks.vqa.icd.infoscore import beam_search_anchor
from leverplus.tracks.vqa.models.base import extend, load_icl_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("open_flamingo") is None, reason="open_flamingo not installed")

CORPUS = [
    "What color is the cat? black white brown",
    "How many dogs are there? 2 3 two",
    "Is it raining? yes no",
    "What is on the table? a red apple",
    "Where is the dog? on the sofa",
] * 8
QA = [
    ("What color is the cat?", "black"),
    ("How many dogs are there?", "2"),
    ("Is it raining?", "yes"),
    ("What is on the table?", "a red apple"),
    ("Where is the dog?", "on the sofa"),
    ("What color is the cat?", "white"),
    ("Is it raining?", "no"),
]


@pytest.fixture(scope="module", params=["mpt", "mosaic_gpt"])
def adapter(request, tmp_path_factory):
    from leverplus.tracks.vqa.models.tiny_flamingo import TinyFlamingoSize, build_tiny_flamingo

    # a wide LM init so the demonstrations move log P̄ by ~0.1-1: equal scores are not vacuous
    d = build_tiny_flamingo(tmp_path_factory.mktemp(request.param), CORPUS, seed=0,
                            size=TinyFlamingoSize(lang_init_std=0.3), lang=request.param)
    return load_icl_model("flamingo", str(d))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("prefix_images")
    out = []
    for i, (q, a) in enumerate(QA):
        p = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (30 + 3 * i, 44, 3), dtype=np.uint8)).save(p)
        out.append(VQAExample(str(i), str(p), q, a))
    return out


class CountPrefixRuns:
    """Counts language-model forwards that start a KV cache (use_cache, no past): prefix runs."""

    def __init__(self, lm):
        self.lm, self.n, self.rows = lm, 0, []

    def __enter__(self):
        def pre(module, args, kwargs):
            if kwargs.get("use_cache") and kwargs.get("past_key_values") is None:
                self.n += 1
                self.rows.append(kwargs["input_ids"].shape[0])

        self.h = self.lm.register_forward_pre_hook(pre, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.h.remove()


class CountForwards:
    """Counts language-model forwards."""

    def __init__(self, lm):
        self.lm, self.n = lm, 0

    def __enter__(self):
        def pre(module, args, kwargs):
            self.n += 1

        self.h = self.lm.register_forward_pre_hook(pre, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.h.remove()


@pytest.mark.parametrize("order", ["right", "left"])
@pytest.mark.parametrize("batch_size", [3, 16])
def test_beam_rows_scored_with_the_first_step(adapter, examples, order, batch_size):
    """`score_step(..., beam_rows=True)`: each beam's own row (beam ⊕ query; step 0: the zero-shot row) is scored
    in the same forwards as the candidate rows — P̄ within float noise of an uncached whole-row forward, and the
    candidates' P̄ unchanged — so beam search starts with ceil((pool + 1) / batch_size) forwards, not one more."""
    e = examples
    pool = [e[0], e[1], e[2], e[4], e[5]]
    adapter.batch_size = batch_size
    with CountForwards(adapter.lm) as f:
        got, (base,) = adapter.score_step([[]], [pool], e[3], order, beam_rows=True)
    assert f.n == math.ceil((len(pool) + 1) / batch_size), f.n
    assert math.isclose(math.log(base), math.log(adapter.score_reference([], e[3])), abs_tol=2e-5)
    ref = np.array([adapter.score_reference([c], e[3]) for c in pool])
    np.testing.assert_allclose(np.log(got[0]), np.log(ref), rtol=0, atol=2e-5)
    beams = [[e[0], e[1]], [e[2]]]
    cands = [[e[2], e[4]], [e[0], e[5]]]
    got, own = adapter.score_step(beams, cands, e[3], order, beam_rows=True)
    for beam, p in zip(beams, own):
        assert math.isclose(math.log(p), math.log(adapter.score_reference(beam, e[3])), abs_tol=2e-5)


@pytest.mark.parametrize("order", ["right", "left"])
@pytest.mark.parametrize("batch_size", [2, 16])
def test_score_step_equals_whole_rows(adapter, examples, order, batch_size):
    """Every row's P̄ from `score_step` (prefix once per beam, rows in batches that split a beam's candidates)
    equals one uncached whole-row `Flamingo.forward` per row (`score_reference`) within float32 noise."""
    e = examples
    beams = [[e[0], e[1]], [e[2]], []]
    cands = [[e[2], e[4], e[5]], [e[0], e[1], e[4], e[6]], [e[0], e[5]]]
    adapter.batch_size = batch_size
    got = adapter.score_step(beams, cands, e[3], order)
    for beam, cs, g in zip(beams, cands, got):
        ref = np.array([adapter.score_reference(extend(beam, c, order), e[3]) for c in cs])
        np.testing.assert_allclose(np.log(g), np.log(ref), rtol=0, atol=2e-5)
    spread = max(abs(math.log(x) - math.log(y)) for g in got for x in g for y in g)
    assert spread > 0.05  # the rows' contexts matter, so a wrong cache or wrong media could not pass


def test_prefix_runs_once_per_beam_and_step(adapter, examples):
    """construct_order right: every beam's prefix once per step, all of them in one left-padded forward (one row
    per non-empty beam, however many batches the candidates take), and the candidate rows of all beams batched
    together: ceil(rows / batch_size) forwards on top, not one batch series per beam."""
    e = examples
    beams = [[e[0], e[1]], [e[2]], []]
    cands = [[e[2], e[4], e[5], e[6]], [e[0], e[1], e[4], e[6]], [e[0], e[5]]]
    adapter.batch_size = 4
    with CountPrefixRuns(adapter.lm) as c, CountForwards(adapter.lm) as f:
        adapter.score_step(beams, cands, e[3], "right")
    assert c.n == 1 and c.rows == [2], (c.n, c.rows)
    assert f.n == 1 + math.ceil(10 / 4), f.n  # the prefix forward and 3 row forwards (10 rows, 4 per forward)
    # the prefix is the beam's demonstrations: the row minus the candidate's and the query's part
    row = adapter._tokenise([e[2], e[0]], e[3])[0]
    own = adapter._tokenise([e[0]], e[3])[0]
    assert adapter.last_shared_prefix == 0  # the last beam is empty
    assert adapter._beam_prefix_tokens([e[2]], [adapter._tokenise([e[2], e[0]], e[3])],
                                       [[e[2].image, e[0].image, e[3].image]]) == len(row) - len(own)


def test_beam_search_identical_to_the_original(adapter, examples):
    """The whole InfoScore beam search (3 steps, beam 2): the same beams, in the same order, as the original
    algorithm's one uncached forward per sequence, and every P̄ within float noise."""
    e = examples
    anchor, pool = e[3], [e[i] for i in (0, 1, 2, 4, 5, 6)]
    adapter.batch_size = 3
    adapter.clear_image_cache()
    rec = RecordingModel(adapter)
    fast_beams, fast_base, _ = beam_search_anchor(rec, anchor, pool, beam_size=2, shot_num=3, order="right")
    ref_scores: dict = {}
    ref_beams, ref_base, _ = reference_beam_search(adapter, anchor, pool, beam_size=2, shot_num=3, order="right",
                                                   record=ref_scores)
    assert [b.picked for b in fast_beams] == [b.picked for b in ref_beams]
    assert [[d.id for d in b.prompt] for b in fast_beams] == [[d.id for d in b.prompt] for b in ref_beams]
    common = rec.scores.keys() & ref_scores.keys()
    assert common == ref_scores.keys()  # both paths scored the same sequences
    worst = max(abs(math.log(rec.scores[k]) - math.log(ref_scores[k])) for k in common)
    assert worst < 2e-5, worst
    assert math.isclose(math.log(fast_base), math.log(ref_base), abs_tol=2e-5)


def test_copy_cache_leaves_the_prefix_untouched(adapter, examples):
    """The prefix cache serves several batches: running one batch on top of it must not grow it."""
    from leverplus.tracks.vqa.models import flamingo as fl

    e = examples
    ids = adapter._tokenise([e[0]], e[1])[0]
    n = adapter._beam_prefix_tokens([e[0]], [adapter._tokenise([e[0]], e[1])], [[e[0].image, e[1].image]])
    state = adapter._prefix_state(ids[:n], [e[0].image])
    length = _cache_len(state)
    for _ in range(2):
        adapter._score_on_prefix([adapter._tokenise([e[0]], e[1])], [[e[1].image]], n, state)
        assert _cache_len(state) == length == n
    assert isinstance(fl._copy_cache(state), type(state))


def _cache_len(cache) -> int:
    if isinstance(cache, (list, tuple)):
        return int(cache[0][0].shape[1])
    return int(cache.get_seq_length())


def test_head_only_where_a_scored_token_is_predicted(adapter, examples):
    """transformers' MPT (`logits_to_keep`): the LM head runs on the last positions of each row batch that hold the
    scored predictions (here the one-token answers and `<|endofchunk|>`: a few positions, not the rows' dozens) and
    on one position of the prefix forward; the remote-code MosaicGPT stand-in takes no `logits_to_keep` and keeps
    every position. P̄ is checked against whole rows in `test_score_step_equals_whole_rows`."""
    e = examples
    head = adapter.lm.get_output_embeddings()
    if head is None:  # MosaicGPT: logits from the tied input embeddings (F.linear), no module to watch
        assert not adapter._keep_kw(1)
        return
    seen = []
    h = head.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape[:2])))
    try:
        adapter.batch_size = 16
        beams = [[e[0]], [e[2]]]
        cands = [[e[1], e[2]], [e[0], e[1]]]
        adapter.score_step(beams, cands, e[5], "right")
    finally:
        h.remove()
    row_len = len(adapter._tokenise([e[0], e[1]], e[5])[0]) - len(adapter._tokenise([e[0]], e[5])[0]) + 1
    if adapter._keep_kw(1):
        assert seen[0] == (2, 1)  # the two beams' prefixes, last position only
        assert seen[1][0] == 4 and seen[1][1] < row_len // 2, (seen, row_len)
    else:
        assert seen[1][1] >= row_len - 2
