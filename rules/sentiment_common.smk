# Sentiment track: config loading (parse time; the one loader, the demo is config/sentiment_demo.yaml), wildcard
# alternatives and the input/params functions of rules/sentiment.smk. Nothing here imports torch or touches the network.
from leverplus.core.config import load_track
from leverplus.tracks.sentiment.stages import ARMS, HEAD_ARMS, LABEL_ARMS, TRAINED_ARMS, check_config

try:
    SENT = load_track(config, "sentiment", workflow.source_path("../config/sentiment.schema.yaml"), check=check_config)
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

SENT_SETS = _alternatives(SENT["datasets"])
SENT_MODELS = _alternatives(SENT["models"])
SENT_ARMS = "|".join(ARMS)  # the registry: leverplus.tracks.sentiment.stages.ARMS


def sent_run(name):
    """The settings one dataset's targets read: the global ones with `runs.<name>` merged over them."""
    return SENT["runs"][name]


# wildcard alternatives: what any dataset's run has (each dataset's targets ask only for its own)
SENT_SEEDS = "|".join(sorted({str(int(s)) for r in SENT["runs"].values() for s in r["train"]["seeds"]}, key=int))
# what one scores.json belongs to: A (no training seed) or a trained arm's seed directory
SENT_RUNS = rf"zero_shot|(?:{'|'.join(TRAINED_ARMS)})/seed(?:{SENT_SEEDS})"
SENT_HEAD_ARMS = "|".join(HEAD_ARMS)
SENT_LABEL_ARMS = LABEL_ARMS
SENT_PAIRS = _alternatives(sorted({k for r in SENT["runs"].values() for k in r["labels"]["pairs"]}))


def sent_threads(w):
    return sent_run(w.sent_set)["compute"]["model_threads"]


def sent_d_pairs(w):
    """The label pairs D is trained with: every pair of the sweep, or only the main one."""
    lab = sent_run(w.sent_set)["labels"]
    return list(lab["pairs"]) if lab["train_d_per_pair"] else [lab["main"]]


def sent_model(w):
    return SENT["datasets"][w.sent_set]["model"]


def sent_gpu(w):
    """The `gpu` resource of a model job: the dataset's model's `gpu` (0 for the CPU-sized shipped tiny LM)."""
    return SENT["models"][sent_model(w)]["gpu"]


def sent_arm_cfg(w):
    """What an arm reads: prompt, labels, training and prediction settings (the seed of the data subset is in the
    data files already)."""
    run = sent_run(w.sent_set)
    labels = {**run["labels"], "order": list(run["labels"]["pairs"])}  # canonical JSON sorts keys: keep the order
    return canonical(
        {
            "labels": labels,
            "compute": {"device": run["compute"]["device"]},
            **{k: run[k] for k in ("prompt", "train", "predict")},
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


def sent_runs(name):
    """[(arm, seed or None, run directory under arms/)] of dataset `name` in its run's arm order, seeds in
    `train.seeds` order (the first seed is the primary run of the arms table); A has no training seed."""
    run, out = sent_run(name), []
    for a in run["arms"]:
        if a == "zero_shot":
            out.append([a, None, a])
        else:
            out += [[a, int(s), f"{a}/seed{int(s)}"] for s in run["train"]["seeds"]]
    return out


def sent_arm_files(name, arms_only=None):
    def f(w):
        return [
            f"results/sentiment/{w.sent_set}/arms/{run}/{name}"
            for a, _, run in sent_runs(w.sent_set)
            if arms_only is None or a in arms_only
        ]

    return f
