# Audio track: config loading (the one loader; the demo is config/audio_demo.yaml), config slices and input
# functions for rules/audio.smk (no torch at parse time).
from leverplus.core.config import ConfigError, canonical, load_track
from leverplus.tracks.audio.stages import check_config as audio_check_config

try:
    AUDIO = load_track(config, "audio", workflow.source_path("../config/audio.schema.yaml"), check=audio_check_config)
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")


def audio_run(w):
    """The settings a dataset's targets read: the global ones with `runs.<dataset>` merged over them."""
    return AUDIO["runs"][w.audio_set]


def audio_scoring(w):
    return canonical(audio_run(w)["scoring"])


AUDIO_SETS = _alternatives(AUDIO["datasets"])
AUDIO_MODELS = _alternatives(AUDIO["models"])
AUDIO_METRIC_MODELS = _alternatives(AUDIO["metric_models"])
from leverplus.tracks.audio.report import BASE_ARMS as _AUDIO_ARM_REGISTRY

AUDIO_ARMS = "|".join(_AUDIO_ARM_REGISTRY)  # the registry: leverplus.tracks.audio.report.BASE_ARMS
AUDIO_SOURCE_KEYS = ("source", "shipped", "repo_id", "revision", "path", "link", "allow_patterns")


def audio_ds(w):
    return AUDIO["datasets"][w.audio_set]


def audio_model_of(role):
    return lambda w: f"data/audio/models/{audio_ds(w)[role]}"


def audio_model_json(role):
    return lambda w: canonical(AUDIO["models"][audio_ds(w)[role]])


def audio_metric_dir(role):
    return lambda w: f"data/audio/metric_models/{audio_ds(w)['metrics'][role]}"


def audio_metric_models(w):
    """The two metric models' specs with their labels (recorded in every table header)."""
    out = {}
    for role, key in (("bertscore", "bertscore_model"), ("similarity", "similarity_model")):
        name = audio_ds(w)["metrics"][key]
        spec = dict(AUDIO["metric_models"][name])
        spec["label"] = (
            f"{name}, layer {spec['num_layers']}" if role == "bertscore" else f"{name}, {spec['pooling']} pooling"
        )
        out[role] = spec
    return canonical(out)


def audio_shipped(w):
    spec = AUDIO["models"][w.audio_model]
    if spec["source"] != "demo":
        return ""
    from leverplus.tracks.audio.assets import shipped_digest as audio_shipped_digest

    return audio_shipped_digest()


def audio_similarity_spec(w):
    """The similarity model's spec with its label (SECap's protocol)."""
    name = audio_ds(w)["metrics"]["similarity_model"]
    spec = dict(AUDIO["metric_models"][name])
    return canonical({**spec, "label": f"{name}, {spec['pooling']} pooling"})


def audio_score_inputs(w):
    return {
        f"{arm}_predictions": f"results/audio/{w.audio_set}/{arm}/predictions.parquet" for arm in AUDIO_ARMS.split("|")
    }


def audio_score_outputs(d):
    out = {}
    for arm in AUDIO_ARMS.split("|"):
        out.update({f"{arm}_items": f"{d}/{arm}/items.parquet", f"{arm}_info": f"{d}/{arm}/items.json"})
    return out


def audio_arm_files(w):
    files = {
        "manifest": f"data/audio/{w.audio_set}/eval.jsonl",
        "cascade": f"results/audio/{w.audio_set}/cascade/points",
    }
    for arm in AUDIO_ARMS.split("|"):
        d = f"results/audio/{w.audio_set}/{arm}"
        files.update(
            {
                f"{arm}_predictions": f"{d}/predictions.parquet",
                f"{arm}_timing": f"{d}/timing.parquet",
                f"{arm}_run": f"{d}/run.json",
                f"{arm}_items": f"{d}/items.parquet",
                f"{arm}_info": f"{d}/items.json",
            }
        )
    return files
