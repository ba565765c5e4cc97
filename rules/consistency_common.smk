# Consistency track: config loading (the one loader; the demo is config/consistency_demo.yaml) and the helpers its
# rules use.
from leverplus.core.config import load_track
from leverplus.tracks.consistency.assets import shipped_digest as cons_shipped_digest
from leverplus.tracks.consistency.stages import check_config as cons_check_config

try:
    CONS = load_track(
        config, "consistency", workflow.source_path("../config/consistency.schema.yaml"), check=cons_check_config
    )
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

CONS_SETS = _alternatives(CONS["datasets"])
CONS_MODELS = _alternatives(["embedder", "reranker"])


def cons_run(name):
    """The settings one dataset's targets read: the global ones with `runs.<name>` merged over them."""
    return CONS["runs"][name]


def cons_threads(w):
    return cons_run(w.cons_set)["compute"]["threads"]


def cons_gpu(w):
    """The gpu resource of the model jobs (local, compare): 1 for real models (the job takes a GPU slot and
    compute.device auto runs there), 0 for the CPU-sized demo models."""
    return cons_run(w.cons_set)["compute"]["gpu"]


def cons_api_gpu(w):
    """The API job claims a GPU slot only when it serves the models itself."""
    return cons_gpu(w) if cons_run(w.cons_set)["api"]["mode"] == "local_server" else 0


def cons_cfg(key):
    return lambda w: canonical(cons_run(w.cons_set)[key])


def cons_shipped(w):
    """demo models: a digest of the shipped checksums, so new weights rerun the copy and everything below it."""
    return cons_shipped_digest() if CONS["datasets"][w.cons_set]["models"][w.cons_model]["source"] == "demo" else ""


def cons_recipes(w):
    run = cons_run(w.cons_set)
    return canonical({"embedder": run["embedder"], "reranker": run["reranker"]})


def cons_model_dirs(w):
    return {m: f"data/consistency/{w.cons_set}/models/{m}" for m in ("embedder", "reranker")}
