"""Issue 15: real-size benchmark plumbing (on the shrunken twins of the real architectures), bench-infer, plan."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from leverplus import cli
from leverplus.tracks.vqa.models.real_size import ARCHS, arch_spec, build_arch
from leverplus.tracks.vqa.plan import plan, sequences_per_anchor

ROOT = Path(__file__).resolve().parents[3]


def test_published_sizes():
    """The real-size table holds the published numbers (Qwen2.5-VL-3B-Instruct config.json; OpenFlamingo-3B)."""
    q = ARCHS["qwen2.5_vl_3B"]["size"]
    assert (q.hidden_size, q.num_hidden_layers, q.num_attention_heads, q.num_key_value_heads) == (2048, 36, 16, 2)
    assert (q.intermediate_size, q.vocab_rows, q.rope_theta) == (11008, 151936, 1e6)
    assert (q.vision_depth, q.vision_hidden_size, q.vision_heads, q.vision_intermediate_size) == (32, 1280, 16, 3420)
    assert q.fullatt_block_indexes == (7, 15, 23, 31) and (q.min_pixels, q.max_pixels) == (3136, 12845056)
    f = ARCHS["flamingo_3B"]["size"]
    assert (f.d_model, f.n_layers, f.n_heads, f.vocab_rows) == (2048, 24, 16, 50432)
    assert (f.vision_hidden_size, f.vision_layers, f.vision_intermediate_size, f.image_size) == (1024, 24, 4096, 224)


def test_real_size_config_reaches_the_model(tmp_path):
    """The builder writes what the table says (checked on the twin: same builder, smaller widths)."""
    from transformers import AutoConfig

    out = build_arch("qwen2.5_vl_3B@test", tmp_path / "q", ["what colour is it", "red"], seed=0)
    cfg = AutoConfig.from_pretrained(out)
    size = arch_spec("qwen2.5_vl_3B@test")["size"]
    assert cfg.text_config.vocab_size == size.vocab_rows
    assert cfg.vision_config.fullatt_block_indexes == list(size.fullatt_block_indexes)
    assert cfg.text_config.rope_parameters["rope_theta"] == size.rope_theta
    proc = json.loads((out / "processor_config.json").read_text())
    image = proc.get("image_processor", proc)
    assert image.get("min_pixels", image.get("size", {}).get("shortest_edge")) == 3136
    # rebuilding with the same inputs reuses the directory
    stamp = (out / "leverplus_arch.json").stat().st_mtime_ns
    build_arch("qwen2.5_vl_3B@test", tmp_path / "q", ["what colour is it", "red"], seed=0)
    assert (out / "leverplus_arch.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2.5_vl_3B@test", "flamingo_3B@test"])
def test_bench_infoscore_arch_breakdown(tmp_path, arch):
    """`bench-infoscore --arch` on 640x480 images: both paths choose the same beams, and the breakdown accounts
    for the whole of each path's time."""
    out = tmp_path / "bench.json"
    rc = cli.main(["bench-infoscore", "--arch", arch, "--work-dir", str(tmp_path / "m"), "--anchors", "1",
                   "--cand-num", "3", "--beam-size", "2", "--shot-num", "2", "--repeats", "1", "--out", str(out)])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["beams_equal"] and d["max_abs_score_diff"] < 1e-5
    assert d["sequences"]["reference"] == sequences_per_anchor(3, 2, 2) == 1 + 3 + 2 * 2
    for path in ("reference", "ours"):
        b = d["breakdown"][path]
        assert b["seconds"]["vision"] > 0 and b["peak_rss_gb"] > 0
        assert sum(b["seconds"].values()) == pytest.approx(d[path]["seconds"], abs=0.01)
    assert "language_model.full_rows" in d["breakdown"]["reference"]["seconds"]
    assert "language_model.shared_prefix" in d["breakdown"]["ours"]["seconds"]
    assert d["arch"]["image_size"] == [640, 480]
    # the batched original (Lever-LM's schedule) ran beside batch 1; the ratio is against it; the analytic limit and
    # the cost model's prediction are printed with the unit costs they came from
    assert d["paths"] == ["reference", "original", "ours"] and d["speedup_against"] == "original"
    assert all(c["beams_equal"] for c in d["comparisons"].values())
    assert d["original_forwards"]["rows"] == d["sequences"]["original"] + 2  # two beams re-scored at step 1
    assert d["analytic_limit"]["limit_vs_original"] > 1 and d["achieved_fraction_of_limit"] > 0
    assert set(d["cost_model"]["predicted_seconds"]) == {"reference", "original", "ours", "limit",
                                                         "limit_one_image_per_forward"}
    assert d["unit_costs"]["repeats"] >= 3 and d["load_average"]["cpus"] >= 1


@pytest.mark.slow
def test_bench_infer_identical_answers(tmp_path, tiny_qwen_dir):
    from leverplus.tracks.vqa.bench import bench_infer
    from leverplus.tracks.vqa.data.demo import generate_demo

    generate_demo(tmp_path / "demo", seed=0, n_train=40, n_val=12)
    d = bench_infer(tiny_qwen_dir, tmp_path / "demo", n_queries=12, shot=2, batch_size=4, max_new_tokens=4,
                    repeats=1)
    assert d["answers_identical"], d["answers_differing"]
    assert d["queries"] == 12 and d["speedup"] > 0
    assert d["generation"]["do_sample"] is False and d["generation"]["max_new_tokens"] == 4


def test_sequences_per_anchor():
    assert sequences_per_anchor(64, 5, 2) == 1 + 64 + 5 * 63 == 380
    assert sequences_per_anchor(64, 5, 1) == 65
    assert sequences_per_anchor(10, 3, 3) == 1 + 10 + 3 * 9 + 3 * 8


def test_plan_okvqa_and_vqav2():
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS, load_config

    config = load_config([], base=tuple(ROOT / f for f in WORKFLOW_CONFIGS), schema=ROOT / "config/config.schema.yaml")
    measured = {"qwen2.5_vl_3B": {"seconds_per_sequence": {"reference": 2.0, "ours": 0.5}}}
    result = plan(config, measured)
    okvqa = [r for r in result["rows"] if r["dataset"] == "okvqa"]
    assert len(okvqa) == 8  # 2 models x 4 samplers
    assert {r["anchors"] for r in okvqa} == {800}
    q = next(r for r in okvqa if r["model"] == "qwen2.5_vl_3B")
    assert q["sequences"] == 800 * 380 and q["hours_reference"] == round(800 * 380 * 2.0 / 3600, 1)
    assert result["missing_measurements"] == ["flamingo_3B"]
    assert {r["anchors"] for r in result["rows"] if r["dataset"] == "vqav2"} == {5000}


def test_plan_prints_the_shipped_real_size_measurements():
    """`leverplus plan` on the default config reads the shipped unit costs (assets/bench/unit_costs.json) and, for a
    model without them, the shipped per-sequence measurement (assets/bench/measured.json), says which basis each row
    has, and prints hours for every row with the device they are for."""
    import subprocess
    import sys

    from leverplus.tracks.vqa.plan import shipped_measurements, shipped_unit_costs

    shipped, units = shipped_measurements(), shipped_unit_costs()
    assert set(shipped) | set(units) == {"qwen2.5_vl_3B", "flamingo_3B"}
    for m in shipped.values():
        s = m["seconds_per_sequence"]
        assert s["reference"] > s["ours"] > 0 and m["beams_equal"] and m["command"].startswith("leverplus bench")
    for u in units.values():
        assert u["command"].startswith("leverplus bench-costs") and u["repeats"] >= 3
        h = u["held_out_check"]  # a slice the unit costs were not fitted on, predicted within 20%
        assert h["beams_equal"] and all(abs(e) <= 0.2 for e in h["relative_error"].values()), h
    md = subprocess.run([sys.executable, "-m", "leverplus.cli", "plan"], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout
    assert "no measurement" not in md, md
    assert "hours are for the device measured (cpu)" in md
    assert ("held-out check" in md) == bool(units)
    for model in ("qwen2.5_vl_3B", "flamingo_3B"):
        line = next(x for x in md.splitlines() if x.startswith(f"| okvqa | {model} | rand |"))
        if model in units:
            scope = units[model]["held_out_check"].get("scope")  # said in the row where the check was made elsewhere
            assert line.endswith(f"| cost model ({scope}) |" if scope else "| cost model |") and "n/a" not in line, line
        else:
            want = round(800 * 380 * shipped[model]["seconds_per_sequence"]["reference"] / 3600, 1)
            assert f"| {want} |" in line and "seconds per sequence of one slice" in line, (line, want)


def test_plan_uses_the_cost_model_and_prints_its_inputs():
    """With unit costs for a model, `plan` composes them per config (hours = `cost.predict` / 3600 for the run's
    pool, beams, shots, order and the model's batch size) and prints every input; without, it falls back to the
    per-sequence measurement and says so."""
    from leverplus.tracks.vqa.cost import SliceConfig, predict
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS, load_config, plan_markdown

    config = load_config([], base=tuple(ROOT / f for f in WORKFLOW_CONFIGS), schema=ROOT / "config/config.schema.yaml")
    u = {"adapter": "flamingo", "vision_per_image": 2.0, "head_per_token": 1e-3, "lm_fit_max_rel_error": 0.05,
         "lm": {"per_call": 0.1, "per_token": 0.01, "per_token_key": 1e-5, "per_token_image": 1e-3},
         "shape": {"adapter": "flamingo", "head_tokens": 0.0, "demo_tokens": 20.0, "query_tokens": 16.0,
                   "answer_tokens": 2.0, "tail_tokens": 1.0},
         "device": "cpu", "dtype": "float32", "torch_threads": 2, "command": "leverplus bench-costs --arch X"}
    measured = {"qwen2.5_vl_3B": {"seconds_per_sequence": {"reference": 2.0, "ours": 0.5}, "device": "cpu"}}
    result = plan(config, measured, ["okvqa"], unit_costs={"flamingo_3B": u})
    f = next(r for r in result["rows"] if r["model"] == "flamingo_3B")
    want = predict(u, SliceConfig(anchors=800, cand_num=64, beam_size=5, shot_num=2, order="right", batch_size=8,
                                  original_batch=32, adapter="flamingo", head_tokens=0.0, demo_tokens=20.0,
                                  query_tokens=16.0, answer_tokens=2.0, tail_tokens=1.0))
    for path in ("original", "reference", "ours", "limit"):
        assert f[f"hours_{path}"] == round(want[path] / 3600, 1)
    assert f["basis"] == "cost model" and f["hours_original"] > f["hours_ours"] >= f["hours_limit"]
    q = next(r for r in result["rows"] if r["model"] == "qwen2.5_vl_3B")
    assert q["basis"].startswith("seconds per sequence") and "hours_limit" not in q
    # unit costs that carry CPU seconds too are composed in CPU seconds, and say so
    cpu = {"vision_per_image": 1.0, "vision_per_call": 0.0, "head_per_token": 5e-4, "lm_fit_max_rel_error": 0.01,
           "lm": {"per_call": 0.05, "per_token": 0.004, "per_token_key": 1e-5, "per_token_image": 1e-3}}
    with_cpu = plan(config, measured, ["okvqa"], unit_costs={"flamingo_3B": {**u, "process_cpu": cpu}})
    fc = next(r for r in with_cpu["rows"] if r["model"] == "flamingo_3B")
    want_cpu = predict({**u, **cpu}, SliceConfig(anchors=800, cand_num=64, beam_size=5, shot_num=2, order="right",
                                                 batch_size=8, original_batch=32, adapter="flamingo", head_tokens=0.0,
                                                 demo_tokens=20.0, query_tokens=16.0, answer_tokens=2.0,
                                                 tail_tokens=1.0))
    assert fc["hours_ours"] == round(want_cpu["ours"] / 3600, 1) != f["hours_ours"]
    md_cpu = plan_markdown(with_cpu)
    assert "flamingo_3B (CPU seconds of the measuring process): vision 1 s/image" in md_cpu
    md = plan_markdown(result)
    assert "flamingo_3B (wall seconds): vision 2 s/image" in md
    assert "vision 2 s/image + 0 s/forward" in md and "per_token_image 0.001 s" in md and "leverplus bench-costs --arch X" in md
    assert "20.0/demonstration" in md and "no unit costs" in md
    # qwen has no unit costs: no total may add hours of some models only
    assert result["totals"]["okvqa"]["hours_limit"] == "n/a" and result["totals"]["okvqa"]["hours_ours"] != "n/a"
