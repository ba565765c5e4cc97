# Config validation (parse time, before any job), canonical-JSON config slices for params, wildcard
# constraints and target builders. Nothing here touches the network or imports torch.
import re

from leverplus.config import ConfigError, canonical, selector_config, validate_config
from leverplus.fingerprint import code_fingerprint
from leverplus.models.demo_assets import shipped_digest

try:
    validate_config(config, workflow.source_path("../config/config.schema.yaml"))
except ConfigError as err:
    sys.exit(f"lever-plus: {err}")

EXP = config["experiment"]
# threads of the rules that run a model or an encoder (GPU rules): their CPU-side work on a GPU box, all of it on CPU
MODEL_THREADS = config["compute"]["model_threads"]
VERSIONS = ["v0", "v1", "v2", "v2_lora"]


def _alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    dataset=_alternatives(config["datasets"]),
    model=_alternatives(config["models"]),
    encoder=_alternatives(config["encoders"]),
    sampler="rand|text_sim|img_sim|mix",
    version=_alternatives(VERSIONS),
    retriever="random|text_sim|img_sim|pool_random",
    split="train|val",
    shot=r"\d+",
    shard=r"\d+",
    sample_num=r"\d+",


def run_dir(w):
    return f"{w.model}/{w.sampler}_{w.sample_num}"


def slice_json(*keys):
    """params value: the config slice at `keys`, canonical JSON."""
    node = config
    for k in keys:
        node = node[k]
    return canonical(node)


SOURCE_KEYS = ("source", "repo_id", "revision", "path", "allow_patterns", "link", "layout", "adapter_config")


def source_json(spec):
    """Only the keys that say where a model comes from: changing batch_size or dtype must not re-download it."""
    return canonical({k: v for k, v in spec.items() if k in SOURCE_KEYS})


def code(*modules):
    return code_fingerprint(*modules)


def shipped(spec):
    """For `source: demo` models/encoders: a digest of the shipped files' checksums, so new shipped weights rerun
    the download and everything below it."""
    return shipped_digest() if spec["source"] == "demo" else ""


def grid(dataset):
    """(model, sampler, sample_num) cells of the experiment grid."""
    return [
        (m, s, n) for m in EXP["models"] for s in EXP["samplers"] for n in EXP["sample_num"]
    ]


def infer_jsons(dataset, version):
    return [
        f"results/{dataset}/{m}/{s}_{n}/{version}/shot{k}.json"
        for m, s, n in grid(dataset)
        for k in config["infer"]["shots"]
    ]


def baseline_jsons(dataset):
    out = []
    for m in EXP["models"]:
        for b in config["baselines"]:
            if b == "zero_shot":
                out.append(f"results/{dataset}/{m}/baseline/zero_shot/shot0.json")
            else:
                out += [f"results/{dataset}/{m}/baseline/{b}/shot{k}.json" for k in config["infer"]["shots"]]
    return out


def beam_tables(dataset):
    return [f"data/{dataset}/beam/{m}/{s}_{n}/beam.parquet" for m, s, n in grid(dataset)]


def all_targets():
    return [f"results/{config['dataset']}/{v}.json" for v in config["selector"]["versions"]]
