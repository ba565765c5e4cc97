# MT track: config loading (the one loader; the demo is config/mt_demo.yaml) and the helpers rules/mt.smk uses.
from leverplus.core.config import ConfigError, canonical, load_track
from leverplus.tracks.mt.metrics import FAMILIES as MT_FAMILY_REGISTRY
from leverplus.tracks.mt.stages import check_config as mt_check_config

try:
    MT = load_track(config, "mt", workflow.source_path("../config/mt.schema.yaml"), check=mt_check_config)
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

MT_SETS = _alternatives(MT["datasets"])
MT_FAMILIES = "|".join(MT_FAMILY_REGISTRY)  # the registry: leverplus.tracks.mt.metrics.FAMILIES


def mt_pairs(name):
    pairs = MT["datasets"][name]["pairs"]
    return list(pairs) if isinstance(pairs, (list, dict)) else []


def mt_run(name):
    """The settings one dataset's targets read: the global ones with `runs.<name>` merged over them."""
    return MT["runs"][name]


def mt_cfg(name, *keys):
    """params value: the keys of dataset `name`'s run a rule reads, canonical JSON."""
    return canonical({k: mt_run(name)[k] for k in keys})


def mt_score_inputs(w):
    """mt_score's inputs: the pair's table, and the judge's model directory when the rule serves it itself."""
    out = {"data": f"data/mt/{w.mt_set}/{w.pair}.parquet"}
    j = mt_run(w.mt_set)["llm_judge"]
    if w.family == "llm_judge" and j["mode"] == "local_server":
        out["judge_model"] = j["local_server"]["model_dir"]
    return out
