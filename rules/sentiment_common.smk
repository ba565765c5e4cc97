# Sentiment track: config validation (parse time), wildcard alternatives and the input/params functions of
# rules/sentiment.smk. Nothing here imports torch or touches the network.
from leverplus.tracks.sentiment.stages import ARMS, HEAD_ARMS, LABEL_ARMS, TRAINED_ARMS, track_config

try:
    SENT = track_config(config, workflow.source_path("../config/sentiment.schema.yaml"))
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

SENT_SETS = _alternatives(SENT["datasets"])
SENT_MODELS = _alternatives(SENT["models"])
SENT_ARMS = "|".join(ARMS)  # the registry: leverplus.tracks.sentiment.stages.ARMS
SENT_SEEDS = "|".join(str(int(s)) for s in SENT["train"]["seeds"])
# what one scores.json belongs to: A (no training seed) or a trained arm's seed directory
SENT_RUNS = rf"zero_shot|(?:{'|'.join(TRAINED_ARMS)})/seed(?:{SENT_SEEDS})"
SENT_HEAD_ARMS = "|".join(HEAD_ARMS)
SENT_LABEL_ARMS = LABEL_ARMS
SENT_THREADS = SENT["compute"]["model_threads"]
SENT_PAIRS = _alternatives(SENT["labels"]["pairs"])


def sent_d_pairs():
    """The label pairs D is trained with: every pair of the sweep, or only the main one."""
    lab = SENT["labels"]
    return list(lab["pairs"]) if lab["train_d_per_pair"] else [lab["main"]]


def sent_model(w):
    return SENT["datasets"][w.sent_set]["model"]


def sent_gpu(w):
    """The `gpu` resource of a model job: the dataset's model's `gpu` (0 for the CPU-sized shipped tiny LM)."""
    return SENT["models"][sent_model(w)]["gpu"]


def sent_arm_cfg(w):
    """What an arm reads: prompt, labels, training and prediction settings (the seed of the data subset is in the
    data files already)."""
    labels = {**SENT["labels"], "order": list(SENT["labels"]["pairs"])}  # canonical JSON sorts keys: keep the order
    return canonical(
        {
            "labels": labels,
            "compute": {"device": SENT["compute"]["device"]},
            **{k: SENT[k] for k in ("prompt", "train", "predict")},
        }
    )


def sent_dataset_spec(w):
    return canonical({k: v for k, v in SENT["datasets"][w.sent_set].items() if k != "model"})


def sent_shipped(w):
    """For `source: demo`: a digest of the shipped tiny LM's sha256 values in BUILD.json only (not its timings), so
    new weights rerun the copy and a bit-identical rebuild does not."""
    spec = SENT["models"][w.sent_model]
    if spec["source"] != "demo":
        return ""
    from leverplus.tracks.sentiment.assets import shipped_digest

    return shipped_digest(Path(workflow.basedir) / "src/leverplus/assets/sentiment_models")


def sent_runs():
    """[(arm, seed or None, run directory under arms/)] in the config's arm order, seeds in `train.seeds` order (the
    first seed is the primary run of the arms table); A has no training seed."""
    out = []
    for a in SENT["arms"]:
        if a == "zero_shot":
            out.append([a, None, a])
        else:
            out += [[a, int(s), f"{a}/seed{int(s)}"] for s in SENT["train"]["seeds"]]
    return out


def sent_arm_files(name, arms_only=None):
    def f(w):
        return [
            f"results/sentiment/{w.sent_set}/arms/{run}/{name}"
            for a, _, run in sent_runs()
            if arms_only is None or a in arms_only
        ]

    return f
