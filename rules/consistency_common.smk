# Consistency track: config validation (parse time) and the helpers its rules use.
from leverplus.core.config import validate_track
from leverplus.tracks.consistency.assets import shipped_digest as cons_shipped_digest

try:
    CONS = validate_track(config, "consistency", workflow.source_path("../config/consistency.schema.yaml"))
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

CONS_SETS = _alternatives(CONS["datasets"])
CONS_MODELS = _alternatives(["embedder", "reranker"])
CONS_THREADS = CONS["compute"]["threads"]
# the gpu resource of the model jobs (local, compare; the API job only when it serves the models itself): 1 for real
# models (the job takes a GPU slot and compute.device auto runs there), 0 for the CPU-sized demo models
CONS_GPU = CONS["compute"]["gpu"]
CONS_API_GPU = CONS_GPU if CONS["api"]["mode"] == "local_server" else 0


def cons_shipped(w):
    """demo models: a digest of the shipped checksums, so new weights rerun the copy and everything below it."""
    return cons_shipped_digest() if CONS["models"][w.cons_model]["source"] == "demo" else ""


def cons_recipes():
    return canonical({"embedder": CONS["embedder"], "reranker": CONS["reranker"]})


CONS_MODEL_DIRS = dict(embedder="data/consistency/models/embedder", reranker="data/consistency/models/reranker")
