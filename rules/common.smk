# Config validation (parse time, before any job), the per-dataset run configs, canonical-JSON config slices for
# params, wildcard constraints and target builders. Nothing here touches the network or imports torch.
import re
from pathlib import Path

from leverplus.core.config import ConfigError, canonical, run_config, selector_config, selector_seeds, validate_config
from leverplus.core.fingerprint import script_fingerprint
from leverplus.tracks.vqa.models.demo_assets import shipped_digest
from leverplus.tracks.vqa.icd import versions as _versions

try:
    validate_config(config, workflow.source_path("../config/config.schema.yaml"))
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

# every dataset's run: `runs.<dataset>` deep-merged over the global (demo) blocks; the target path picks one
RUNS = {name: run_config(config, name) for name in config["datasets"]}


def run(w):
    """The merged config of the job's dataset."""
    return RUNS[w.dataset]


def exp(w):
    return RUNS[w.dataset]["experiment"]


# threads of the rules that run a model or an encoder (GPU rules): their CPU-side work on a GPU box, all of it on CPU
MODEL_THREADS = config["compute"]["model_threads"]
# the version registry (leverplus.tracks.vqa.icd.versions): the versions, and the comparisons of results/{dataset}/versions.json
# (each version against the one it builds on)
VERSIONS = list(_versions.VERSIONS)
VERSION_PAIRS = list(_versions.VERSION_PAIRS)


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


# names under data/ that are not datasets
NOT_DATASETS = ("models", "encoders", "raw", "audio", "sentiment", "consistency", "mt")  # + the other tracks
# wildcard regex of the unknown_dataset rule: any first path component that is no dataset (nor models/encoders/raw)
UNKNOWN_DATASET = f"(?!(?:{_alternatives([*RUNS, *NOT_DATASETS])})/)[^/]+"


def unknown_dataset(w):
    """Input function of the unknown_dataset catch-all in rules/vqa.smk. It stops the DAG with one line naming the
    known datasets (without it, a target of an unknown dataset gives only Snakemake's `No rule to produce`)."""
    sys.exit(
        f"lever-plus: unknown dataset {w.dataset!r} in target {w.top}/{w.dataset}/{w.rest}; known datasets: "
        f"{', '.join(sorted(RUNS))} (config `datasets`)"
    )


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    model=_alternatives(config["models"]),
    encoder=_alternatives(config["encoders"]),
    sampler="rand|text_sim|img_sim|mix",
    version=_alternatives(VERSIONS),
    retriever="random|text_sim|img_sim|pool_random|oracle",
    split="train|val",
    shot=r"\d+",
    shard=r"\d+",
    seed=r"\d+",
    sample_num=r"\d+",


def run_dir(w):
    return f"{w.model}/{w.sampler}_{w.sample_num}"


def dataset_json(w):
    """params value: how the job's dataset is made (`datasets.<dataset>` without `settings_from`, which says which
    settings its runs take, not what the data is), canonical JSON."""
    return canonical({k: v for k, v in config["datasets"][w.dataset].items() if k != "settings_from"})


def model_json(w):
    """params value: the job's model spec without `gpu` and `threads` (where and how wide its jobs run, not what they
    compute), canonical JSON."""
    return canonical({k: v for k, v in config["models"][w.model].items() if k not in ("gpu", "threads")})


def model_gpu(w):
    """The `gpu` resource of a job that runs the model `w.model`: its spec's `gpu` (0 for the CPU-sized demo model)."""
    return config["models"][w.model]["gpu"]


def model_threads(w):
    """threads: of a job that runs the model `w.model`: its spec's `threads`, else compute.model_threads."""
    return config["models"][w.model].get("threads") or MODEL_THREADS


def encoder_threads(w):
    """threads: of an encode job: the encoder spec's `threads`, else compute.model_threads."""
    return config["encoders"][w.encoder].get("threads") or MODEL_THREADS


def encoder_gpu(w):
    """The `gpu` resource of an encode job: the encoder spec's `gpu` (0 for the demo's tiny CLIP)."""
    return config["encoders"][w.encoder]["gpu"]


def run_slice(w, block, drop=()):
    """params value: block `block` of the job's dataset run, without the keys `drop`, canonical JSON."""
    node = RUNS[w.dataset].get(block, {})
    return canonical({k: v for k, v in node.items() if k not in drop} if drop else node)


def features(split):
    """input: the job's dataset's `split` features under that run's encoder."""
    return lambda w: f"data/{w.dataset}/features/{exp(w)['encoder']}/{split}.safetensors"


def encoder_dir(w):
    return f"data/encoders/{exp(w)['encoder']}"


SOURCE_KEYS = ("source", "repo_id", "revision", "path", "allow_patterns", "link", "layout", "adapter_config")


def source_json(spec):
    """Only the keys that say where a model comes from: changing batch_size or dtype must not re-download it."""
    return canonical({k: v for k, v in spec.items() if k in SOURCE_KEYS})


SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"


def code(script):
    """params value: a digest of every leverplus source file that workflow/scripts/<script>.py reaches through its
    imports (leverplus.core.fingerprint), so no module list is kept by hand."""
    return script_fingerprint(str(SCRIPTS / f"{script}.py"))


def shipped(spec):
    """For `source: demo` models/encoders: a digest of the shipped files' checksums, so new shipped weights rerun
    the download and everything below it."""
    return shipped_digest() if spec["source"] == "demo" else ""


def grid(dataset):
    """(model, sampler, sample_num) cells of the dataset's experiment grid."""
    e = RUNS[dataset]["experiment"]
    return [(m, s, n) for m in e["models"] for s in e["samplers"] for n in e["sample_num"]]


def seeds(dataset):
    """Training seeds of the dataset's selectors (`selector.seeds`, or the experiment seed)."""
    return selector_seeds(RUNS[dataset])


def infer_jsons(dataset, version):
    return [
        f"results/{dataset}/{m}/{s}_{n}/{version}/seed{seed}/shot{k}.json"
        for m, s, n in grid(dataset)
        for seed in seeds(dataset)
        for k in RUNS[dataset]["infer"]["shots"]
    ]


def selector_jsons(dataset, version):
    return [
        f"results/{dataset}/{m}/{s}_{n}/{version}/seed{seed}/selector/selector.json"
        for m, s, n in grid(dataset)
        for seed in seeds(dataset)
    ]


def compared_versions(dataset):
    """The VERSION_PAIRS whose two versions the dataset's run trains."""
    have = set(RUNS[dataset]["selector"]["versions"])
    return [(a, b) for a, b in VERSION_PAIRS if a in have and b in have]


def versions_inputs(dataset):
    return sorted({p for pair in compared_versions(dataset) for v in pair for p in infer_jsons(dataset, v)})


def beam_rewards_input(w):
    """train_selector input: the GRPO group table (beams + random sequences, InfoScore and VQA accuracy), for v3/v4."""
    if w.version not in ("v3", "v4"):
        return []
    return f"data/{w.dataset}/beam/{w.model}/{w.sampler}_{w.sample_num}/rewards.parquet"


def baseline_jsons(dataset):
    r = RUNS[dataset]
    out = []
    for m in r["experiment"]["models"]:
        for b in r["baselines"]:
            if b == "zero_shot":
                out.append(f"results/{dataset}/{m}/baseline/zero_shot/shot0.json")
            else:
                out += [f"results/{dataset}/{m}/baseline/{b}/shot{k}.json" for k in r["infer"]["shots"]]
    return out


def beam_tables(dataset):
    return [f"data/{dataset}/beam/{m}/{s}_{n}/beam.parquet" for m, s, n in grid(dataset)]


def all_targets():
    out = []
    for d in [config["dataset"]] + ([config["control_dataset"]] if config.get("control_dataset") else []):
        out += [f"results/{d}/{v}.json" for v in RUNS[d]["selector"]["versions"]]
        out += [f"results/{d}/versions.json"] if compared_versions(d) else []
    return out
