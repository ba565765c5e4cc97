"""Config validation: defaults filled from the schema, one-line errors that name the key and what is allowed, the
same line from Snakemake at parse time (before any job), and the canonical slices rules receive as params."""
from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leverplus.core.config import RUN_BLOCKS, ConfigError, canonical, run_config, selector_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "config.schema.yaml"


def demo_config() -> dict:
    """The config the Snakefile loads (config/config.yaml, then config/vqa_demo.yaml), merged as Snakemake does."""
    from leverplus.core.config import deep_merge
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS

    config: dict = {}
    for name in WORKFLOW_CONFIGS:
        with open(REPO / name, encoding="utf-8") as f:
            config = deep_merge(config, yaml.safe_load(f))
    return config


def minimal_config() -> dict:
    return {
        "dataset": "d",
        "datasets": {"d": {"source": "demo"}},
        "models": {"m": {"adapter": "qwen2_5_vl", "source": "demo"}},
        "encoders": {"e": {"source": "demo"}},
        "experiment": {"models": ["m"], "encoder": "e", "samplers": ["rand"], "sample_num": [10], "cand_num": 4},
    }


def error_line(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, SCHEMA)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_demo_config_is_valid():
    cfg = demo_config()
    assert validate_config(cfg, SCHEMA) is cfg


def test_defaults_are_filled():
    cfg = validate_config(minimal_config(), SCHEMA)
    assert cfg["beam"] == {"beam_size": 5, "shot_num": 2, "construct_order": "right", "shards": 1, "tie_tolerance": 1e-5}
    assert cfg["datasets"]["d"] == {"source": "demo", "seed": 0, "n_train": 3000, "n_val": 500,
                                    "max_train": None, "max_val": None}
    m = cfg["models"]["m"]
    assert (m["dtype"], m["batch_size"], m["revision"], m["trust_remote_code"]) == ("float32", 16, "main", False)
    assert cfg["experiment"]["seed"] == 0
    assert cfg["selector"]["lora"] == {"r": 16, "alpha": 32, "dropout": 0.1,
                                       "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj"]}
    assert cfg["selector"]["versions"] == ["v0", "v1", "v2", "v2_lora", "v3", "v4"]
    assert cfg["infer"]["pool"] == {"kind": "retrieval", "by": "img_sim", "k": 64}
    assert cfg["metrics"] == {"vqa_stem": False, "vqa_eval": "official", "n_resamples": 1000, "seed": 0}
    assert cfg["baselines"] == ["zero_shot", "random", "text_sim", "img_sim", "pool_random", "oracle"]
    assert cfg["compute"] == {"model_threads": 2}


def test_given_values_are_kept_over_defaults():
    cfg = minimal_config()
    cfg["beam"] = {"shot_num": 3}
    validate_config(cfg, SCHEMA)
    assert cfg["beam"]["shot_num"] == 3 and cfg["beam"]["beam_size"] == 5


def test_bad_enum_value_names_key_and_allowed_values():
    cfg = demo_config()
    cfg["beam"]["construct_order"] = "middle"
    msg = error_line(cfg)
    assert "beam.construct_order" in msg and "'middle'" in msg
    assert "allowed" in msg and "left" in msg and "right" in msg


@pytest.mark.parametrize(
    "where, key, allowed_example",
    [((), "colour", "experiment"), (("beam",), "colour", "construct_order"), (("models", "tiny_vl"), "colour", "adapter")],
)
def test_unknown_key_names_key_and_allowed_keys(where, key, allowed_example):
    cfg = demo_config()
    node = cfg
    for w in where:
        node = node[w]
    node[key] = 1
    msg = error_line(cfg)
    assert f"'{key}'" in msg and "unknown key" in msg
    assert "allowed keys" in msg and allowed_example in msg
    if where:
        assert msg.split(":")[1].strip() == ".".join(where)


@pytest.mark.parametrize(
    "path, value, needle",
    [
        (("beam", "beam_size"), 0, "beam.beam_size"),
        (("beam", "beam_size"), "five", "beam.beam_size"),
        (("experiment", "samplers"), ["rand", "bogus"], "experiment.samplers[1]"),
        (("models", "tiny_vl", "adapter"), "llama", "models.tiny_vl.adapter"),
    ],
)
def test_other_bad_values_name_their_key(path, value, needle):
    cfg = demo_config()
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    assert needle in error_line(cfg)


def test_several_errors_still_give_one_line():
    cfg = demo_config()
    cfg["beam"]["construct_order"] = "middle"
    cfg["beam"]["shards"] = 0
    cfg["colour"] = 1
    error_line(cfg)


def test_cross_references_are_checked():
    cfg = minimal_config()
    cfg["experiment"]["models"] = ["nope"]
    assert "experiment.models" in error_line(cfg)
    cfg = minimal_config()
    cfg["dataset"] = "elsewhere"
    assert "dataset" in error_line(cfg)
    cfg = minimal_config()
    cfg["models"]["m"]["source"] = "hf"
    assert "repo_id" in error_line(cfg)


def test_canonical_slices_ignore_key_order():
    a = {"beam_size": 5, "shot_num": 2, "nested": {"y": 1, "x": [1, 2]}}
    b = {"nested": {"x": [1, 2], "y": 1}, "shot_num": 2, "beam_size": 5}
    assert canonical(a) == canonical(b)
    assert " " not in canonical(a)


def test_selector_config_applies_per_version_overrides():
    cfg = validate_config(demo_config(), SCHEMA)
    cfg = copy.deepcopy(cfg)
    cfg["selector"]["per_version"] = {"v2_lora": {"lr": 0.0005}}
    lora = selector_config(cfg, "v2_lora")
    assert lora["lr"] == 0.0005 and "lora" in lora and "per_version" not in lora and "versions" not in lora
    v1 = selector_config(cfg, "v1")
    assert v1["lr"] == cfg["selector"]["lr"] and "lora" not in v1


# ---- per-dataset runs ------------------------------------------------------------------------------------------------
def test_default_config_knows_every_shipped_dataset_with_its_own_run():
    cfg = validate_config(demo_config(), SCHEMA)
    assert set(cfg["datasets"]) == {"demo", "demo_control", "okvqa", "vqav2"}
    demo, okvqa, vqav2 = (run_config(cfg, d) for d in ("demo", "okvqa", "vqav2"))
    # the global blocks are the real runs'; the demo's settings are its own run (config/vqa_demo.yaml runs.demo)
    assert {k: okvqa[k] for k in RUN_BLOCKS if k != "preset"} == {k: cfg[k] for k in RUN_BLOCKS if k != "preset"}
    assert demo["experiment"]["models"] == ["tiny_vl"] and demo["selector"]["dtype"] == "float64"
    # the control condition runs with the demo's settings; only its dataset's dialect differs (issue 22)
    control = run_config(cfg, "demo_control")
    assert {k: control[k] for k in RUN_BLOCKS} == {k: demo[k] for k in RUN_BLOCKS}
    assert cfg["control_dataset"] == "demo_control"
    assert (cfg["datasets"]["demo"]["dialect"], cfg["datasets"]["demo_control"]["dialect"]) == ("template", "hidden")
    assert {k: v for k, v in cfg["datasets"]["demo"].items() if k != "dialect"} == {
        k: v for k, v in cfg["datasets"]["demo_control"].items() if k not in ("dialect", "settings_from")}
    assert cfg["datasets"]["demo_control"]["settings_from"] == "demo"
    for run, sample_num in ((okvqa, 800), (vqav2, 5000)):
        assert run["experiment"]["models"] == ["qwen2.5_vl_3B", "flamingo_3B"]
        assert run["experiment"]["encoder"] == "clip_vit_b32" and run["experiment"]["sample_num"] == [sample_num]
        assert run["experiment"]["cand_num"] == 64 and run["beam"]["shards"] == 8
        assert run["infer"]["shots"] == [1, 2, 3, 4] and run["infer"]["pool"]["by"] == "img_sim"
        assert run["infer"]["limit"] is None and run["infer"]["generation"]["max_new_tokens"] == 10
        assert run["prompt"]["instruction"] == "Answer the question using a single word or phrase."
        # no demo shortcut leaks into a real run: every version trains its full 20 epochs at the real lr
        for version in ("v0", "v1", "v2", "v2_lora"):
            sel = selector_config(run, version)
            assert (sel["epochs"], sel["lr"], sel["d_model"]) == (20, 0.0001, 256), version
        for name in run["experiment"]["models"]:
            assert cfg["models"][name]["source"] == "hf"
    assert cfg["encoders"]["clip_vit_b32"]["repo_id"] == "openai/clip-vit-base-patch32"


def test_a_run_override_deep_merges_over_the_global_blocks():
    cfg = minimal_config()
    cfg["datasets"]["other"] = {"source": "demo", "seed": 1}
    cfg["infer"] = {"shots": [1, 2], "pool": {"kind": "retrieval", "by": "text_sim", "k": 8}}
    cfg["runs"] = {"other": {"experiment": {"sample_num": [3]}, "infer": {"pool": {"k": 4}}}}
    validate_config(cfg, SCHEMA)
    other = run_config(cfg, "other")
    assert other["experiment"]["sample_num"] == [3] and other["experiment"]["models"] == ["m"]
    assert other["infer"]["pool"] == {"kind": "retrieval", "by": "text_sim", "k": 4} and other["infer"]["shots"] == [1, 2]
    assert run_config(cfg, "d")["infer"]["pool"]["k"] == 8 and "runs" not in other
    with pytest.raises(ConfigError, match=r"unknown dataset 'nope'; known datasets: d, other"):
        run_config(cfg, "nope")


@pytest.mark.parametrize(
    "runs, needle",
    [
        ({"d": {"beam": {"beam_size": 0}}}, "runs.d.beam.beam_size"),
        ({"d": {"models": {}}}, "runs.d: unknown key(s) ['models']"),
        ({"d": {"experiment": {"encoder": "nope"}}}, "runs.d (merged): experiment.encoder: 'nope'"),
        ({"d": {"experiment": {"cand_num": 1}}}, "runs.d.experiment.cand_num: 1 violates minimum 2 (runs.d merged over the global settings)"),
        ({"elsewhere": {}}, "runs.elsewhere: not a key of datasets"),
    ],
)
def test_a_bad_run_override_names_its_run(runs, needle):
    cfg = minimal_config()
    cfg["runs"] = runs
    assert needle in error_line(cfg)


# ---- through Snakemake ----------------------------------------------------------------------------------------------
def _snakemake(*args: str) -> subprocess.CompletedProcess:
    """A dry run of the repository's Snakefile in an empty working directory (config/ linked there), so the
    checkout's own data/ and results/ (e.g. from the README demo) change nothing."""
    import tempfile

    exe = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    work = Path(tempfile.mkdtemp(prefix="lp-dry-"))
    (work / "config").symlink_to(REPO / "config")
    try:
        return subprocess.run(
            [exe, "-s", str(REPO / "Snakefile"), "--directory", str(work), "-n", "--nolock", *args], cwd=REPO,
            capture_output=True, text=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, needles",
    [
        ({"beam": {"construct_order": "middle"}}, ["beam.construct_order", "'middle'", "allowed", "left"]),
        ({"beam": {"colour": 3}}, ["beam:", "unknown key", "'colour'", "allowed keys", "construct_order"]),
    ],
)
def test_snakemake_rejects_a_bad_config_before_any_job(tmp_path, override, needles):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    res = _snakemake("--configfile", str(bad))
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    lines = [line for line in out.splitlines() if line.startswith("lever-plus:")]
    assert len(lines) == 1, out
    for needle in needles:
        assert needle in lines[0], out
    for job_marker in ("Building DAG", "Job stats", "rule download_dataset"):
        assert job_marker not in out, out


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "config" / "okvqa.yaml").exists(), reason="config/okvqa.yaml not written yet")
def test_okvqa_target_resolves_offline():
    # Snakemake 9's --configfile takes several files, so the target goes before it (README, "Real runs").
    res = _snakemake("--cores", "8", "results/okvqa/v2_lora.json", "--configfile", "config/okvqa.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "results/okvqa/v2_lora.json" in res.stdout + res.stderr


# ---- issue 21 item 4: the demo is its own file, and none of its values reaches a real run ----------------------------
def _merged(*parts) -> dict:
    """Config files (repository paths) and mappings deep-merged in order, as Snakemake merges its config files."""
    from leverplus.core.config import deep_merge

    config: dict = {}
    for part in parts:
        if isinstance(part, str):
            part = yaml.safe_load((REPO / part).read_text(encoding="utf-8"))
        config = deep_merge(config, part)
    return config


def _real_runs(config: dict) -> dict:
    """What a real dataset's jobs read: its run's blocks, the compute block and the specs of its models and encoder."""
    cfg = validate_config(copy.deepcopy(config), SCHEMA)
    out = {}
    for ds in ("okvqa", "vqav2"):
        run = run_config(cfg, ds)
        out[ds] = {
            **{k: run.get(k) for k in (*RUN_BLOCKS, "compute")},
            "models": {m: run["models"][m] for m in run["experiment"]["models"]},
            "encoder": run["encoders"][run["experiment"]["encoder"]],
            "dataset": run["datasets"][ds],
        }
    return out


@pytest.mark.parametrize("overlay", [None, "config/okvqa.yaml", "config/vqav2.yaml"])
def test_no_demo_value_reaches_a_real_run(overlay):
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS

    rest = [overlay] if overlay else []
    real_only = _real_runs(_merged("config/config.yaml", *rest))
    assert _real_runs(_merged(*WORKFLOW_CONFIGS, *rest)) == real_only
    # Teeth: the layout before issue 21 (the demo's settings as the global blocks) reaches the real runs
    demo = yaml.safe_load((REPO / "config/vqa_demo.yaml").read_text(encoding="utf-8"))
    leaky = {**{k: v for k, v in demo.items() if k != "runs"}, **demo["runs"]["demo"]}
    assert _real_runs(_merged("config/config.yaml", leaky, *rest)) != real_only


def test_the_snakefile_loads_the_real_config_then_the_demo():
    from leverplus.tracks.vqa.plan import WORKFLOW_CONFIGS

    lines = re.findall(r'^configfile:\s*"([^"]+)"', (REPO / "Snakefile").read_text(encoding="utf-8"), flags=re.M)
    assert lines[: len(WORKFLOW_CONFIGS)] == list(WORKFLOW_CONFIGS)
    real = yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8"))
    assert "demo" not in real["datasets"] and "tiny_vl" not in real["models"] and "demo" not in (real.get("runs") or {})
