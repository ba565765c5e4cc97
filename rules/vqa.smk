# VQA in-context-demonstration track:
# download → encode → candidates → beam_search (sharded) → gather_beam → [beam_rewards: v4] → train_selector (per seed)
# → infer (per seed) / baseline → aggregate (per version) → compare_versions


rule download_dataset:
    output:
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
    log:
        "logs/{dataset}/download_dataset.log",
    benchmark:
        "benchmarks/{dataset}/download_dataset.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: dataset_json(w),
        code=code("download_dataset"),
    script:
        "../workflow/scripts/download_dataset.py"


rule download_model:
    output:
        directory("data/models/{model}"),
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/models/{model}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: source_json(config["models"][w.model]),
        adapter=lambda w: config["models"][w.model]["adapter"],
        shipped=lambda w: shipped(config["models"][w.model]),
        code=code("download_model"),
    script:
        "../workflow/scripts/download_model.py"


rule download_encoder:
    input:
        train=lambda w: "data/demo/train.parquet" if config["encoders"][w.encoder]["source"] == "demo" else [],
    output:
        directory("data/encoders/{encoder}"),
    log:
        "logs/encoders/{encoder}.log",
    benchmark:
        "benchmarks/encoders/{encoder}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: source_json(config["encoders"][w.encoder]),
        shipped=lambda w: shipped(config["encoders"][w.encoder]),
        code=code("download_encoder"),
    script:
        "../workflow/scripts/download_encoder.py"


rule encode:
    input:
        split="data/{dataset}/{split}.parquet",
        encoder="data/encoders/{encoder}",
    output:
        "data/{dataset}/features/{encoder}/{split}.safetensors",
    log:
        "logs/{dataset}/encode_{encoder}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/encode_{encoder}_{split}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: encoder_threads
    resources:
        gpu=encoder_gpu,
    params:
        encoder=lambda w: canonical({"dtype": config["encoders"][w.encoder]["dtype"]}),
        code=code("encode"),
    script:
        "../workflow/scripts/encode.py"


rule candidates:
    input:
        features=features("train"),
    output:
        "data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
    log:
        "logs/{dataset}/candidates_{sampler}_{sample_num}.log",
    benchmark:
        "benchmarks/{dataset}/candidates_{sampler}_{sample_num}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        sampling=lambda w: canonical({"cand_num": exp(w)["cand_num"], "seed": exp(w)["seed"]}),
        code=code("candidates"),
    script:
        "../workflow/scripts/candidates.py"


rule beam_search:
    input:
        train="data/{dataset}/train.parquet",
        pools="data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
        model="data/models/{model}",
    output:
        "data/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.parquet",
    log:
        "logs/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.log",
    benchmark:
        "benchmarks/{dataset}/beam/{model}/{sampler}_{sample_num}/shard_{shard}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: model_threads
    resources:
        gpu=model_gpu,
    params:
        beam=lambda w: run_slice(w, "beam"),
        model=model_json,
        prompt=lambda w: run_slice(w, "prompt"),
        code=code("beam_search"),
    script:
        "../workflow/scripts/beam_search.py"


rule gather_beam:
    input:
        lambda w: expand(
            "data/{{dataset}}/beam/{{model}}/{{sampler}}_{{sample_num}}/shard_{shard}.parquet",
            shard=range(run(w)["beam"]["shards"]),
        ),
    output:
        "data/{dataset}/beam/{model}/{sampler}_{sample_num}/beam.parquet",
    log:
        "logs/{dataset}/beam/{model}/{sampler}_{sample_num}/gather.log",
    benchmark:
        "benchmarks/{dataset}/beam/{model}/{sampler}_{sample_num}/gather.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        code=code("gather_beam"),
    script:
        "../workflow/scripts/gather_beam.py"


# v3/v4's GRPO groups: every kept beam + random pool sequences, each scored by InfoScore and by the VQA accuracy of
# the anchor's generated answer (resumable)
rule beam_rewards:
    input:
        train="data/{dataset}/train.parquet",
        beam="data/{dataset}/beam/{model}/{sampler}_{sample_num}/beam.parquet",
        pools="data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
        model="data/models/{model}",
    output:
        "data/{dataset}/beam/{model}/{sampler}_{sample_num}/rewards.parquet",
    log:
        "logs/{dataset}/beam/{model}/{sampler}_{sample_num}/beam_rewards.log",
    benchmark:
        "benchmarks/{dataset}/beam/{model}/{sampler}_{sample_num}/beam_rewards.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: model_threads
    resources:
        gpu=model_gpu,
    params:
        generation=lambda w: canonical(run(w)["infer"]["generation"]),
        group=lambda w: canonical(run(w)["selector"]["rl"]["group"]),
        shot_num=lambda w: run(w)["beam"]["shot_num"],
        order=lambda w: run(w)["beam"]["construct_order"],
        seed=lambda w: exp(w)["seed"],
        model=model_json,
        metrics=lambda w: canonical({k: run(w)["metrics"][k] for k in ("vqa_eval", "vqa_stem")}),
        prompt=lambda w: run_slice(w, "prompt"),
        code=code("beam_rewards"),
    script:
        "../workflow/scripts/beam_rewards.py"


rule train_selector:
    input:
        beam="data/{dataset}/beam/{model}/{sampler}_{sample_num}/beam.parquet",
        pools="data/{dataset}/candidates/{sampler}_{sample_num}.parquet",
        features=features("train"),
        train="data/{dataset}/train.parquet",
        encoder=encoder_dir,
        rewards=beam_rewards_input,
    output:
        weights="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/selector/model.safetensors",
        config="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/selector/selector.json",
    log:
        "logs/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/train_selector.log",
    benchmark:
        "benchmarks/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/train_selector.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: model_threads
    resources:
        gpu=model_gpu,
    params:
        selector=lambda w: canonical(selector_config(run(w), w.version)),
        seed=lambda w: int(w.seed),
        code=code("train_selector"),
    script:
        "../workflow/scripts/train_selector.py"


rule infer:
    input:
        selector="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/selector/model.safetensors",
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
        train_features=features("train"),
        val_features=features("val"),
        encoder=encoder_dir,
        model="data/models/{model}",
    output:
        predictions="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/shot{shot}.parquet",
        score="results/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/shot{shot}.json",
    log:
        "logs/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/infer_shot{shot}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/{sampler}_{sample_num}/{version}/seed{seed}/infer_shot{shot}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: model_threads
    resources:
        gpu=model_gpu,
    params:
        infer=lambda w: run_slice(w, "infer", drop=("shots",)),
        order=lambda w: run(w)["beam"]["construct_order"],
        model=model_json,
        metrics=lambda w: run_slice(w, "metrics"),
        prompt=lambda w: run_slice(w, "prompt"),
        code=code("infer"),
    script:
        "../workflow/scripts/infer.py"


rule baseline:
    input:
        train="data/{dataset}/train.parquet",
        val="data/{dataset}/val.parquet",
        train_features=features("train"),
        val_features=features("val"),
        model="data/models/{model}",
    output:
        predictions="results/{dataset}/{model}/baseline/{retriever}/shot{shot}.parquet",
        score="results/{dataset}/{model}/baseline/{retriever}/shot{shot}.json",
    log:
        "logs/{dataset}/{model}/baseline/{retriever}_shot{shot}.log",
    benchmark:
        "benchmarks/{dataset}/{model}/baseline/{retriever}_shot{shot}.tsv"
    conda:
        "../envs/gpu.yaml"
    threads: model_threads
    resources:
        gpu=model_gpu,
    params:
        infer=lambda w: run_slice(w, "infer", drop=("shots", "pool")),
        pool=lambda w: canonical(run(w)["infer"]["pool"]) if w.get("retriever") == "pool_random" else "",
        seed=lambda w: exp(w)["seed"],
        model=model_json,
        metrics=lambda w: run_slice(w, "metrics"),
        prompt=lambda w: run_slice(w, "prompt"),
        code=code("baseline"),
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
        selectors=lambda w: selector_jsons(w.dataset, w.version),
    output:
        json="results/{dataset}/{version}.json",
        md=report(
            "results/{dataset}/{version}.md",
            caption="../workflow/report/table.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"version": "{version}", "figure": "table"},
        ),
        png=report(
            "results/{dataset}/{version}.png",
            caption="../workflow/report/accuracy_vs_shot.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"version": "{version}", "figure": "accuracy vs shots"},
        ),
        parquet="results/{dataset}/{version}.parquet",
        training=report(
            "results/{dataset}/{version}.training.png",
            caption="../workflow/report/training_curves.rst",
            category="Training",
            subcategory="{dataset}",
            labels={"version": "{version}", "figure": "training curves"},
        ),
    log:
        "logs/{dataset}/aggregate_{version}.log",
    benchmark:
        "benchmarks/{dataset}/aggregate_{version}.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        grid=lambda w: canonical(
            {"experiment": exp(w), "shots": run(w)["infer"]["shots"], "baselines": run(w)["baselines"]}
        ),
        metrics=lambda w: run_slice(w, "metrics"),
        code=code("aggregate"),
    script:
        "../workflow/scripts/aggregate.py"


# Version comparisons (VERSION_PAIRS in common.smk): paired over questions, seeds resampled on both sides
rule compare_versions:
    input:
        infer=lambda w: versions_inputs(w.dataset),
        baselines=lambda w: baseline_jsons(w.dataset),  # every version vs similarity, pool_random, the oracle
    output:
        json="results/{dataset}/versions.json",
        md=report(
            "results/{dataset}/versions.md",
            caption="../workflow/report/versions.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"version": "all", "figure": "version comparisons"},
        ),
        png=report(
            "results/{dataset}/versions.png",
            caption="../workflow/report/versions_png.rst",
            category="Results",
            subcategory="{dataset}",
            labels={"version": "all", "figure": "versions and baselines, differences vs similarity"},
        ),
    log:
        "logs/{dataset}/compare_versions.log",
    benchmark:
        "benchmarks/{dataset}/compare_versions.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        pairs=lambda w: canonical(compared_versions(w.dataset)),
        metrics=lambda w: run_slice(w, "metrics"),
        code=code("compare_versions"),
    script:
        "../workflow/scripts/compare_versions.py"


# Last resort for a target under results/ or data/ whose dataset the config does not know: its input function stops
# with one line naming the known datasets. Known datasets never match it.
rule unknown_dataset:
    input:
        unknown_dataset,
    output:
        "{top}/{dataset}/{rest}",
    log:
        "logs/unknown_dataset/{top}/{dataset}/{rest}.log",
    wildcard_constraints:
        top="results|data",
        dataset=UNKNOWN_DATASET,
        rest=".+",
    localrule: True
    conda:
        "../envs/cpu.yaml"
    shell:
        "exit 1"
