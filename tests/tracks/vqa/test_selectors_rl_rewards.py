"""beam_rewards (the GRPO groups of v3/v4: beams + random pool sequences, InfoScore and VQA accuracy) on the real tiny
Qwen2.5-VL: a SIGKILLed run resumes to the bytes of an uninterrupted one, a checkpoint from other settings is
discarded, and the rows are what they claim to be."""
from __future__ import annotations

import json
import os
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from checkpoint_kill import complete_lines, run_until_killed

from leverplus.tracks.vqa.icd.rl_rewards import REWARD_COLUMNS, run_beam_rewards
from leverplus.metrics.vqa import vqa_accuracy
from leverplus.tracks.vqa.models.base import load_icl_model
from leverplus.models.generation import GenerationSettings

GEN = {"max_new_tokens": 3, "do_sample": False, "num_beams": 1, "repetition_penalty": 1.0}
RUNNER = textwrap.dedent(
    """
    import json, sys
    import pandas as pd, torch
    torch.set_num_threads(1)
    from leverplus.tracks.vqa.data.records import VQAExample
    from leverplus.tracks.vqa.icd.rl_rewards import run_beam_rewards
    from leverplus.tracks.vqa.models.base import load_icl_model
    from leverplus.models.generation import GenerationSettings
    spec = json.load(open(sys.argv[1]))
    model = load_icl_model("qwen2_5_vl", spec["model"])
    ex = {e["id"]: VQAExample(**e) for e in spec["examples"]}
    run_beam_rewards(model, pd.read_parquet(spec["beam"]), ex, spec["answers"], spec["out"],
                     generation=GenerationSettings.from_config(spec["gen"]), pools=spec["pools"],
                     group={"beams": 2, "random": 1}, shot_num=2, vqa_eval="official", stem=False, chunk=1)
    """
)


def _inputs(vqa_examples, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for a in vqa_examples[:8]:
        others = [e.id for e in vqa_examples if e.id != a.id]
        for rank in range(3):
            ids = [str(x) for x in rng.choice(others, size=2, replace=False)]
            rows.append({"anchor": a.id, "beam_rank": rank, "picked": ids, "icd_ids": ids, "score": 0.5 - 0.1 * rank,
                         "zero_shot_score": 0.1})
    beam = tmp_path / "beam.parquet"
    pd.DataFrame(rows).to_parquet(beam)
    answers = {e.id: [e.answer] * 10 for e in vqa_examples}
    return beam, {e.id: e for e in vqa_examples}, answers


def _run(tiny_qwen_dir, beam, examples, answers, out, **kw):
    model = load_icl_model("qwen2_5_vl", str(tiny_qwen_dir))
    pools = {a: [e for e in examples if e != a] for a in pd.read_parquet(beam)["anchor"]}
    return run_beam_rewards(model, pd.read_parquet(beam), examples, answers, out,
                            generation=GenerationSettings.from_config(kw.pop("gen", GEN)), pools=pools,
                            group={"beams": 2, "random": 1}, shot_num=2, vqa_eval="official", stem=False, chunk=1,
                            **kw)


@pytest.mark.slow
def test_killed_beam_rewards_resume_to_identical_bytes(tiny_qwen_dir, vqa_examples, tmp_path):
    beam, examples, answers = _inputs(vqa_examples, tmp_path)
    full = tmp_path / "full" / "rewards.parquet"
    full.parent.mkdir()
    table = _run(tiny_qwen_dir, beam, examples, answers, full)
    assert list(table.columns) == REWARD_COLUMNS and len(table) == 8 * 3  # 2 beams + 1 random sequence each
    for r in table.itertuples():
        assert r.vqa_accuracy == vqa_accuracy(r.prediction, answers[r.anchor])
        if r.kind == "beam":
            assert r.infoscore_reward == pytest.approx(0.4 - 0.1 * r.beam_rank)

    out = tmp_path / "killed" / "rewards.parquet"
    out.parent.mkdir()
    partial = out.with_suffix(".partial.jsonl")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": str(tiny_qwen_dir), "examples": [e.__dict__ for e in vqa_examples],
                                "answers": answers, "beam": str(beam), "out": str(out), "gen": GEN,
                                "pools": {a: [e.id for e in vqa_examples if e.id != a] for a in
                                          pd.read_parquet(beam)["anchor"]}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run_until_killed([sys.executable, "-c", RUNNER, str(spec)], partial, 2, env)
    done = complete_lines(partial)
    assert not out.exists() and 2 <= done < 8, done
    with open(partial, "ab") as f:  # a kill in the middle of a write: a torn last line
        f.write(b'{"anchor": "ex07", "rows": [{"anch')
    _run(tiny_qwen_dir, beam, examples, answers, out)
    assert out.read_bytes() == full.read_bytes()
    assert not partial.exists()


@pytest.mark.slow
def test_checkpoint_of_other_settings_is_discarded(tiny_qwen_dir, vqa_examples, tmp_path, capfd):
    beam, examples, answers = _inputs(vqa_examples, tmp_path)
    out = tmp_path / "rewards.parquet"
    partial = out.with_suffix(".partial.jsonl")
    # a checkpoint written with other decoding settings, claiming anchor ex00 with a made-up answer
    partial.write_text(json.dumps({"format": 1, "settings_hash": "0" * 64}) + "\n"
                       + json.dumps({"anchor": "ex00", "rows": [{"anchor": "ex00", "prediction": "bogus"}]}) + "\n")
    table = _run(tiny_qwen_dir, beam, examples, answers, out, gen={**GEN, "max_new_tokens": 2})
    assert "bogus" not in set(table["prediction"]) and "other settings" in capfd.readouterr().err
