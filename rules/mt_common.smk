# MT track: config validation and the helpers rules/mt.smk uses (no rules here).
from leverplus.core.config import ConfigError, canonical, validate_track
from leverplus.tracks.mt.metrics import FAMILIES as MT_FAMILY_REGISTRY

try:
    MT = validate_track(config, "mt", workflow.source_path("../config/mt.schema.yaml"))
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

MT_SETS = _alternatives(MT["datasets"])
MT_FAMILIES = "|".join(MT_FAMILY_REGISTRY)  # the registry: leverplus.tracks.mt.metrics.FAMILIES


def mt_pairs(name):
    pairs = MT["datasets"][name]["pairs"]
    return list(pairs) if isinstance(pairs, (list, dict)) else []


def mt_cfg(*keys):
    """params value: the mt config keys a rule reads, canonical JSON."""
    return canonical({k: MT[k] for k in keys})


def mt_score_inputs(w):
    """mt_score's inputs: the pair's table, and the judge's model directory when the rule serves it itself."""
    out = {"data": f"data/mt/{w.mt_set}/{w.pair}.parquet"}
    j = MT["llm_judge"]
    if w.family == "llm_judge" and j["mode"] == "local_server":
        out["judge_model"] = j["local_server"]["model_dir"]
    return out
