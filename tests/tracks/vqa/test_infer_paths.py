"""Inference paths that the integration slices do not take, run through the stage functions
(leverplus.tracks.vqa.stages.infer) on a small generated demo dataset with the shipped tiny demo models:

* `beam.construct_order: left` -- the prompt holds the selector's picks reversed (last pick first), `right` in
  selection order;
* `infer.pool.kind: all` -- the selector chooses from the whole train set, `retrieval` from the k nearest;
* the `text_sim` baseline -- the `shot` train examples nearest to the query by question-text cosine, the most
  similar next to the query (last in the prompt).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.vqa.icd.features import load_features
from leverplus.tracks.vqa.stages.download import download_dataset, download_encoder, download_model
from leverplus.tracks.vqa.stages.encode import encode

N_TRAIN, N_VAL, SHOT, K = 24, 6, 2, 4
MODEL_SPEC = {"adapter": "qwen2_5_vl", "source": "demo", "dtype": "float32", "batch_size": 8}
METRICS = {"vqa_stem": False, "n_resamples": 50, "seed": 0}
PROMPT = {"instruction": ""}  # the demo VL was trained on bare questions


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """data/ as the download and encode stages leave it, plus a small trained v0 selector."""
    from leverplus.tracks.vqa.icd.selectors import train_selector

    root = tmp_path_factory.mktemp("infer_paths")
    d = root / "data" / "demo"
    split = {s: str(d / f"{s}.parquet") for s in ("train", "val")}
    download_dataset(input=SimpleNamespace(), output=SimpleNamespace(**split), threads=1, wildcards={"dataset": "demo"},
                     params={"spec": {"source": "demo", "seed": 0, "n_train": N_TRAIN, "n_val": N_VAL}})
    model, encoder = root / "data/models/tiny_vl", root / "data/encoders/tiny_clip"
    download_model(input=SimpleNamespace(), output=[str(model)], params={"spec": {"source": "demo"}, "adapter": "qwen2_5_vl"},
                   wildcards={"model": "tiny_vl"}, threads=1)
    download_encoder(input=SimpleNamespace(train=split["train"]), output=[str(encoder)], params={"spec": {"source": "demo"}},
                     wildcards={"encoder": "tiny_clip"}, threads=1)
    feats = {}
    for s in ("train", "val"):
        feats[s] = str(d / "features" / "tiny_clip" / f"{s}.safetensors")
        encode(input=SimpleNamespace(split=split[s], encoder=str(encoder)), output=[feats[s]],
               params={"encoder": {"dtype": "float32"}},
               wildcards={"split": s, "encoder": "tiny_clip"}, threads=1)
    train_f = load_features(feats["train"])
    # a beam table over the train set (each anchor: its two image-nearest other train examples), enough to train
    sims = train_f.image @ train_f.image.T
    np.fill_diagonal(sims, -np.inf)
    beam = [{"anchor": a, "beam_rank": 0, "picked": [train_f.ids[j] for j in np.argsort(-sims[i])[:2]],
             "step_scores": [0.2, 0.1], "score": 0.3} for i, a in enumerate(train_f.ids)]
    beam = pd.DataFrame([{**r, "icd_ids": r["picked"]} for r in beam])
    pools = pd.DataFrame([{"anchor": a, "candidates": [train_f.ids[j] for j in np.argsort(-sims[i])[:6]]}
                          for i, a in enumerate(train_f.ids)])
    selector = root / "selector"
    train_selector("v0", beam=beam, pools=pools, train_features=train_f, out_dir=selector, seed=0,
                   cfg={"epochs": 1, "d_model": 16, "batch_size": 8, "lr": 1e-3, "beam_ranks": 1, "dropout": 0.0})
    return SimpleNamespace(root=root, train=split["train"], val=split["val"], train_features=feats["train"],
                           val_features=feats["val"], model=str(model), encoder=str(encoder),
                           selector=str(selector / "selector.json"))


def _inputs(demo) -> SimpleNamespace:
    return SimpleNamespace(train=demo.train, val=demo.val, train_features=demo.train_features,
                           val_features=demo.val_features, model=demo.model, encoder=demo.encoder,
                           selector=demo.selector)


def _outputs(demo, name: str) -> SimpleNamespace:
    out = demo.root / "results" / name
    return SimpleNamespace(predictions=str(out / f"shot{SHOT}.parquet"), score=str(out / f"shot{SHOT}.json"))


def _infer_params(pool: dict) -> dict:
    return {"pool": pool, "batch_size": 8, "limit": None, "generation": {"max_new_tokens": 3}}


class PoolSpy:
    """Wraps load_selector: records the pools the stage hands the selector, and what it picked from them."""

    def __init__(self, monkeypatch):
        import leverplus.tracks.vqa.icd.selectors as selectors

        self.pools, self.picks = [], []
        real = selectors.load_selector

        def load(*args, **kwargs):
            sel = real(*args, **kwargs)
            select = sel.select

            def spy(query_f, pool_ids, *a, **kw):
                self.pools.append([list(p) for p in pool_ids])
                out = select(query_f, pool_ids, *a, **kw)
                self.picks.append([list(p) for p in out])
                return out

            sel.select = spy
            return sel

        monkeypatch.setattr(selectors, "load_selector", load)


def _run_infer(demo, monkeypatch, name: str, order: str, pool: dict):
    from leverplus.tracks.vqa.stages.infer import infer

    spy = PoolSpy(monkeypatch)
    out = _outputs(demo, name)
    infer(input=_inputs(demo), output=out, threads=1,
          params={"infer": _infer_params(pool), "order": order, "model": MODEL_SPEC, "metrics": METRICS, "prompt": PROMPT},
          wildcards={"version": "v0", "model": "tiny_vl", "sampler": "rand", "sample_num": "4", "shot": str(SHOT)})
    (pools,), (picks,) = spy.pools, spy.picks
    return pd.read_parquet(out.predictions), json.loads(Path(out.score).read_text()), pools, picks


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _nearest(demo, vec: str, k: int) -> list[list[str]]:
    """The k nearest train ids per val query by cosine of `vec` features, most similar first (by hand)."""
    train_f, val_f = load_features(demo.train_features), load_features(demo.val_features)
    sims = _cos(getattr(val_f, vec), getattr(train_f, vec))
    return [[train_f.ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in sims]


def test_construct_order_left_reverses_the_selection_in_the_prompt(demo, monkeypatch):
    pool = {"kind": "retrieval", "by": "img_sim", "k": K}
    right, right_score, _, right_picks = _run_infer(demo, monkeypatch, "right", "right", pool)
    left, left_score, _, left_picks = _run_infer(demo, monkeypatch, "left", "left", pool)
    assert left_picks == right_picks  # the same selections ...
    assert [list(x) for x in right["icd_ids"]] == right_picks  # ... right: in selection order
    assert [list(x) for x in left["icd_ids"]] == [p[::-1] for p in left_picks]  # left: last pick first
    assert any(p[0] != p[1] for p in left_picks)  # distinct ids: reversing is visible
    assert left_score["construct_order"] == "left" and right_score["construct_order"] == "right"
    assert len(left) == N_VAL and left_score["n"] == N_VAL


def test_pool_kind_all_offers_the_whole_train_set(demo, monkeypatch):
    train_ids = list(pd.read_parquet(demo.train)["id"])
    preds, score, pools, picks = _run_infer(demo, monkeypatch, "all", "right", {"kind": "all"})
    assert pools == [train_ids] * N_VAL
    assert all(len(p) == SHOT and set(p) <= set(train_ids) for p in picks)
    assert score["pool"] == {"kind": "all"}
    # retrieval, for contrast: the k image-nearest train examples of each query, nearest first
    _, _, pools_r, picks_r = _run_infer(demo, monkeypatch, "retrieval", "right", {"kind": "retrieval", "by": "img_sim", "k": K})
    assert pools_r == _nearest(demo, "image", K)
    assert all(set(p) <= set(pool) for p, pool in zip(picks_r, pools_r))


def test_text_sim_baseline_picks_the_nearest_questions(demo):
    from leverplus.tracks.vqa.stages.infer import baseline

    got = {}
    for retriever in ("text_sim", "img_sim"):
        out = _outputs(demo, f"baseline_{retriever}")
        baseline(input=_inputs(demo), output=out, threads=1,
                 params={"infer": _infer_params(None), "pool": "", "seed": 0, "model": MODEL_SPEC, "metrics": METRICS, "prompt": PROMPT},
                 wildcards={"retriever": retriever, "model": "tiny_vl", "shot": str(SHOT)})
        got[retriever] = [list(x) for x in pd.read_parquet(out.predictions)["icd_ids"]]
        assert json.loads(Path(out.score).read_text())["retriever"] == retriever
    train_f, val_f = load_features(demo.train_features), load_features(demo.val_features)
    col = {t: j for j, t in enumerate(train_f.ids)}
    sims_text = _cos(val_f.text, train_f.text)
    for retriever, vec in (("text_sim", "text"), ("img_sim", "image")):
        sims = _cos(getattr(val_f, vec), getattr(train_f, vec))
        for q, prompt in enumerate(got[retriever]):
            picked = [sims[q, col[t]] for t in prompt[::-1]]  # selection order: most similar first
            # the SHOT highest similarities (templated demo questions tie, so compare values, not ids) ...
            np.testing.assert_allclose(picked, np.sort(sims[q])[::-1][:SHOT], atol=1e-5, err_msg=retriever)
            # ... laid out with the most similar last in the prompt, next to the query
            assert picked[0] >= picked[-1] - 1e-6, (retriever, q, picked)
    strict = [q for q, prompt in enumerate(got["text_sim"])
              if sims_text[q, col[prompt[-1]]] > sims_text[q, col[prompt[0]]] + 1e-4]
    assert strict, "some query has a strictly nearest demonstration, so a reversed layout would show"
    assert got["text_sim"] != got["img_sim"]  # the two features choose differently here, so the test can tell
