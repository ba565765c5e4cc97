# VQA in-context-demonstration track:
# download → encode → candidates → beam_search (sharded) → gather_beam → train_selector → infer / baseline → aggregate


rule download_dataset:
    output:
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
    params:
        spec=lambda w: slice_json("datasets", w.dataset),
        code=code("leverplus.data"),
    log:
        "logs/{dataset}/download_dataset.log",
    benchmark:
        "benchmarks/{dataset}/download_dataset.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/download_dataset.py"


rule download_model:
    output:
        directory("data/models/{model}"),
    params:
        spec=lambda w: source_json(config["models"][w.model]),
        adapter=lambda w: config["models"][w.model]["adapter"],
        shipped=lambda w: shipped(config["models"][w.model]),
        code=code("leverplus.data", "leverplus.models.tiny", "leverplus.models.demo_training"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/models/{model}.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/download_model.py"


rule download_encoder:
    input:
        train=lambda w: "data/demo/train.parquet" if config["encoders"][w.encoder]["source"] == "demo" else [],
    output:
        directory("data/encoders/{encoder}"),
    params:
        spec=lambda w: source_json(config["encoders"][w.encoder]),
        shipped=lambda w: shipped(config["encoders"][w.encoder]),
        code=code("leverplus.data", "leverplus.models.tiny_clip"),
    log:
        "logs/encoders/{encoder}.log",
    benchmark:
        "benchmarks/encoders/{encoder}.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/download_encoder.py"


rule encode:
    input:
        split="data/{dataset}/{split}.parquet",
        encoder="data/encoders/{encoder}",
    output:
        "data/{dataset}/features/{encoder}/{split}.safetensors",
    params:
        code=code("leverplus.icd.encode", "leverplus.icd.features"),
    log:
        "logs/{dataset}/encode_{encoder}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/encode_{encoder}_{split}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/encode.py"


rule candidates:
    input:
        features=f"data/{{dataset}}/features/{EXP['encoder']}/train.safetensors",
    output:
        "data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
    params:
        sampling=lambda w: canonical({"cand_num": EXP["cand_num"], "seed": EXP["seed"]}),
        code=code("leverplus.icd.samplers", "leverplus.icd.retrieval"),
    log:
        "logs/{dataset}/candidates_{sampler}_{sample_num}.log",
    benchmark:
        "benchmarks/{dataset}/candidates_{sampler}_{sample_num}.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/candidates.py"


rule beam_search:
    input:
        train="data/{dataset}/train.parquet",
        pools="data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
        model="data/models/{model}",
    output:
        "data/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.parquet",
    params:
        beam=lambda w: slice_json("beam"),
        model=lambda w: slice_json("models", w.model),
        code=code("leverplus.icd.infoscore", "leverplus.models"),
    log:
        "logs/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/beam_search.py"


rule gather_beam:
    input:
        lambda w: expand(
            "data/{{dataset}}/beam/{{model}}/{{sampler}}_{{sample_num}}/shard_{shard}.parquet",
            shard=range(config["beam"]["shards"]),
        ),
    output:
        "data/{dataset}/beam/{model}/{sampler}_{sample_num}/beam.parquet",
    log:
        "logs/{dataset}/beam/{model}/{sampler}_{sample_num}/gather.log",
    benchmark:
        "benchmarks/{dataset}/beam/{model}/{sampler}_{sample_num}/gather.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/gather_beam.py"


rule train_selector:
    input:
        beam="data/{dataset}/beam/{model}/{sampler}_{sample_num}/beam.parquet",
        pools="data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
        features=f"data/{{dataset}}/features/{EXP['encoder']}/train.safetensors",
        train="data/{dataset}/train.parquet",
        encoder=f"data/encoders/{EXP['encoder']}",
    output:
        weights="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/selector/model.safetensors",
        config="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/selector/selector.json",
    params:
        selector=lambda w: canonical(selector_config(config, w.version)),
        seed=lambda w: EXP["seed"],
        code=code("leverplus.icd.selectors"),
    log:
        "logs/{dataset}/{model}/{sampler}_{sample_num}/{version}/train_selector.log",
    benchmark:
        "benchmarks/{dataset}/{model}/{sampler}_{sample_num}/{version}/train_selector.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/train_selector.py"


rule infer:
    input:
        selector="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/selector/model.safetensors",
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
        train_features=f"data/{{dataset}}/features/{EXP['encoder']}/train.safetensors",
        val_features=f"data/{{dataset}}/features/{EXP['encoder']}/val.safetensors",
        encoder=f"data/encoders/{EXP['encoder']}",
        model="data/models/{model}",
    output:
        predictions="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/shot{shot}.parquet",
        score="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/shot{shot}.json",
    params:
        infer=lambda w: canonical({k: v for k, v in config["infer"].items() if k != "shots"}),
        order=lambda w: config["beam"]["construct_order"],
        model=lambda w: slice_json("models", w.model),
        metrics=lambda w: slice_json("metrics"),
        code=code("leverplus.stages.infer", "leverplus.models", "leverplus.metrics", "leverplus.icd.selectors"),
    log:
        "logs/{dataset}/{model}/{sampler}_{sample_num}/{version}/infer_shot{shot}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/{sampler}_{sample_num}/{version}/infer_shot{shot}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/infer.py"


rule baseline:
    input:
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
        train_features=f"data/{{dataset}}/features/{EXP['encoder']}/train.safetensors",
        val_features=f"data/{{dataset}}/features/{EXP['encoder']}/val.safetensors",
        model="data/models/{model}",
    output:
        predictions="results/{dataset}/{model}/baseline/{retriever}/shot{shot}.parquet",
        score="results/{dataset}/{model}/baseline/{retriever}/shot{shot}.json",
    params:
        infer=lambda w: canonical({k: v for k, v in config["infer"].items() if k not in ("shots", "pool")}),
        pool=lambda w: canonical(config["infer"]["pool"]) if w.get("retriever") == "pool_random" else "",
        seed=lambda w: EXP["seed"],
        model=lambda w: slice_json("models", w.model),
        metrics=lambda w: slice_json("metrics"),
        code=code("leverplus.stages.infer", "leverplus.models", "leverplus.metrics", "leverplus.icd.retrieval"),
    log:
        "logs/{dataset}/{model}/baseline/{retriever}_shot{shot}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/baseline/{retriever}_shot{shot}.tsv"
    threads: MODEL_THREADS
    resources:
        gpu=1,
    conda:
        "../envs/gpu.yaml"
    script:
        "../workflow/scripts/baseline.py"


use rule baseline as zero_shot with:
    output:
        predictions="results/{dataset}/{model}/baseline/zero_shot/shot0.parquet",
        score="results/{dataset}/{model}/baseline/zero_shot/shot0.json",
    log:
        "logs/{dataset}/{model}/baseline/zero_shot.log",
    benchmark:
        "benchmarks/{dataset}/{model}/baseline/zero_shot.tsv"


rule aggregate:
    input:
        infer=lambda w: infer_jsons(w.dataset, w.version),
        baselines=lambda w: baseline_jsons(w.dataset),
        beams=lambda w: beam_tables(w.dataset),
    output:
        json="results/{dataset}/{version}.json",
        md="results/{dataset}/{version}.md",
        png="results/{dataset}/{version}.png",
        parquet="results/{dataset}/{version}.parquet",
    params:
        grid=lambda w: canonical(
            {"experiment": EXP, "shots": config["infer"]["shots"], "baselines": config["baselines"]}
        ),
        code=code("leverplus.report"),
    log:
        "logs/{dataset}/aggregate_{version}.log",
    benchmark:
        "benchmarks/{dataset}/aggregate_{version}.tsv"
    threads: 1
    conda:
        "../envs/cpu.yaml"
    script:
        "../workflow/scripts/aggregate.py"
