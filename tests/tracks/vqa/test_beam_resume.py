"""A beam-search shard resumes only what the same settings produced (issue 9, item 6).

The checkpoint (`<out>.partial.jsonl`) starts with a hash of the search settings (beam size, shots, order, grid),
the shard's anchors and pools, and the caller's settings (every rule param, the pool file's digest, the shard).
An interruption is simulated on the real tiny Qwen2.5-VL by making its adapter's `score` raise when the third
anchor starts (the first two anchors are then checkpointed, as after a kill); the adapter's `score` /
`score_step` are wrapped to count the model calls of the resumed run. The SIGKILL path itself is covered by
tests/tracks/vqa/test_infoscore.py::test_killed_beam_search_resumes_to_identical_output.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leverplus.tracks.vqa.icd.infoscore import run_shard
from leverplus.tracks.vqa.models.base import load_icl_model

SHOTS = 2
N_ANCHORS = 4
FINISHED = 2  # anchors checkpointed before the interruption


class Interrupted(Exception):
    pass


def counted(model, *, fail_at_anchor: int | None = None) -> dict:
    """Wrap the real adapter's `score` and `score_step` with counters. ``calls["score"]`` counts the anchors started:
    one zero-shot P̄ per anchor, from `score` or -- for an adapter that scores it in the first step's forwards
    (`scores_beam_rows`) -- from the `score_step` call with ``beam_rows=True``. Optionally raise when anchor number
    `fail_at_anchor` (0-based) starts."""
    calls = {"score": 0, "score_step": 0}
    score, score_step = model.score, model.score_step

    def anchor_starts():
        if fail_at_anchor is not None and calls["score"] == fail_at_anchor:
            raise Interrupted
        calls["score"] += 1

    def score_counted(icd_seqs, queries):
        anchor_starts()
        return score(icd_seqs, queries)

    def score_step_counted(*args, **kwargs):
        if kwargs.get("beam_rows"):
            anchor_starts()
        calls["score_step"] += 1
        return score_step(*args, **kwargs)

    model.score, model.score_step = score_counted, score_step_counted
    return calls


@pytest.fixture(scope="module")
def shard(vqa_examples):
    rng = np.random.default_rng(11)
    anchors = vqa_examples[:N_ANCHORS]
    pools = []
    for i in range(N_ANCHORS):
        others = [j for j in range(len(vqa_examples)) if j != i]
        pools.append([vqa_examples[j] for j in rng.choice(others, size=6, replace=False)])
    return anchors, pools


def _interrupted_run(tiny_qwen_dir, shard, out, **kw):
    anchors, pools = shard
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    counted(model, fail_at_anchor=FINISHED)
    with pytest.raises(Interrupted):
        run_shard(model, anchors, pools, out, shot_num=SHOTS, order="right", **kw)
    partial = out.with_suffix(".partial.jsonl")
    assert not out.exists()
    assert partial.read_bytes().count(b"\n") == 1 + FINISHED  # header + finished anchors
    return partial


def test_resume_with_another_beam_size_starts_afresh(tiny_qwen_dir, shard, tmp_path, capsys):
    anchors, pools = shard
    out = tmp_path / "shard_0.parquet"
    _interrupted_run(tiny_qwen_dir, shard, out, beam_size=5)
    capsys.readouterr()

    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    calls = counted(model)
    table = run_shard(model, anchors, pools, out, beam_size=3, shot_num=SHOTS, order="right")
    assert table.groupby("anchor").size().to_dict() == {a.id: 3 for a in anchors}
    assert pd.read_parquet(out).groupby("anchor").size().to_dict() == {a.id: 3 for a in anchors}
    assert calls["score"] == N_ANCHORS  # every anchor recomputed
    log = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    assert len(log) == 1 and "starting the shard afresh" in log[0], log

    # Identical to an uninterrupted beam-3 run.
    fresh_out = tmp_path / "fresh" / "shard_0.parquet"
    fresh_out.parent.mkdir()
    run_shard(load_icl_model("qwen2_5_vl", str(tiny_qwen_dir)), anchors, pools, fresh_out, beam_size=3,
              shot_num=SHOTS, order="right")
    assert out.read_bytes() == fresh_out.read_bytes()


def test_resume_with_same_settings_recomputes_only_unfinished_anchors(tiny_qwen_dir, shard, tmp_path, capsys):
    anchors, pools = shard
    settings = {"params": {"model": {"adapter": "qwen2_5_vl"}}, "pools_sha256": "a" * 64}
    out = tmp_path / "shard_0.parquet"
    partial = _interrupted_run(tiny_qwen_dir, shard, out, beam_size=3, settings=settings)
    finished = [json.loads(line)["anchor"] for line in partial.read_text().splitlines()[1:]]
    assert finished == [a.id for a in anchors[:FINISHED]]

    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    calls = counted(model)
    run_shard(model, anchors, pools, out, beam_size=3, shot_num=SHOTS, order="right", settings=settings)
    # Only the unfinished anchors reach the model: one zero-shot `score` and SHOTS `score_step` calls each.
    assert calls == {"score": N_ANCHORS - FINISHED, "score_step": (N_ANCHORS - FINISHED) * SHOTS}
    assert "other settings" not in capsys.readouterr().err

    full = tmp_path / "full" / "shard_0.parquet"
    full.parent.mkdir()
    run_shard(load_icl_model("qwen2_5_vl", str(tiny_qwen_dir)), anchors, pools, full, beam_size=3, shot_num=SHOTS,
              order="right", settings=settings)
    assert out.read_bytes() == full.read_bytes()


@pytest.mark.parametrize("change", ["pool file", "model slice", "anchors", "grid"])
def test_any_changed_setting_discards_the_checkpoint(tiny_qwen_dir, shard, tmp_path, capsys, change):
    anchors, pools = shard
    settings = {"params": {"model": {"adapter": "qwen2_5_vl", "dtype": "float32"}}, "pools_sha256": "a" * 64}
    out = tmp_path / "shard_0.parquet"
    _interrupted_run(tiny_qwen_dir, shard, out, beam_size=2, settings=settings)
    capsys.readouterr()
    kw = {"beam_size": 2, "settings": settings}
    if change == "pool file":
        kw["settings"] = {**settings, "pools_sha256": "b" * 64}
    elif change == "model slice":
        kw["settings"] = {**settings, "params": {"model": {"adapter": "qwen2_5_vl", "dtype": "bfloat16"}}}
    elif change == "anchors":  # same first anchors, one pool candidate replaced
        pools = [list(p) for p in pools]
        pools[0][0] = next(e for e in anchors[1:] if e not in pools[0])
    else:
        kw["tie_tolerance"] = 1e-4
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    calls = counted(model)
    run_shard(model, anchors, pools, out, shot_num=SHOTS, order="right", **kw)
    assert calls["score"] == N_ANCHORS
    assert sum("other settings" in line for line in capsys.readouterr().err.splitlines()) == 1


def test_checkpoint_without_header_is_not_trusted(tiny_qwen_dir, shard, tmp_path):
    """A checkpoint of the previous format (anchor lines only) cannot say what produced it: start afresh."""
    anchors, pools = shard
    out = tmp_path / "shard_0.parquet"
    partial = out.with_suffix(".partial.jsonl")
    stale = [{"anchor": anchors[0].id, "beam_rank": r, "picked": ["x"], "icd_ids": ["x"], "step_scores": [0.0],
              "score": 0.0, "zero_shot_score": 0.0, "mean_candidate_scores": [0.0]} for r in range(5)]
    partial.write_text(json.dumps({"anchor": anchors[0].id, "rows": stale}) + "\n")
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    calls = counted(model)
    table = run_shard(model, anchors[:2], pools[:2], out, beam_size=2, shot_num=1, order="right")
    assert calls["score"] == 2
    assert table.groupby("anchor").size().to_dict() == {anchors[0].id: 2, anchors[1].id: 2}
    assert "x" not in {c for p in table["picked"] for c in p}
