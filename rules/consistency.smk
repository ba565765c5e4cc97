# Consistency track (issue 13): the same embedding/reranker model locally and behind an OpenAI-compatible API.
# download (corpus, models) → local embed+rerank → the same through the API → compare (+ diagnosis) → report.
#   snakemake --cores 2 results/consistency/demo/report.json
#   snakemake --cores 8 results/consistency/{dataset}/report.json --configfile=config/consistency_qwen3.yaml
include: "consistency_common.smk"


rule consistency_download_corpus:
    output:
        "data/consistency/{cons_set}/corpus.json",
    log:
        "logs/consistency/{cons_set}/download_corpus.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/download_corpus.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        dataset=lambda w: canonical({k: v for k, v in CONS["datasets"][w.cons_set].items() if k != "models"}),
        code=code("consistency_download_corpus"),
    script:
        "../workflow/scripts/consistency_download_corpus.py"


rule consistency_download_model:
    output:
        directory("data/consistency/{cons_set}/models/{cons_model}"),
    log:
        "logs/consistency/{cons_set}/models/{cons_model}.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/models/{cons_model}.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
        cons_model=CONS_MODELS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        model=lambda w: canonical(CONS["datasets"][w.cons_set]["models"][w.cons_model]),
        shipped=cons_shipped,
        code=code("consistency_download_model"),
    script:
        "../workflow/scripts/consistency_download_model.py"


rule consistency_local:
    input:
        unpack(cons_model_dirs),
        corpus="data/consistency/{cons_set}/corpus.json",
    output:
        "data/consistency/{cons_set}/local/embeddings.npy",
        "data/consistency/{cons_set}/local/scores.json",
    log:
        "logs/consistency/{cons_set}/local.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/local.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: cons_threads
    resources:
        gpu=cons_gpu,
    params:
        recipes=cons_recipes,
        compute=cons_cfg("compute"),
        code=code("consistency_local"),
    script:
        "../workflow/scripts/consistency_local.py"


rule consistency_api:
    input:
        unpack(cons_model_dirs),
        corpus="data/consistency/{cons_set}/corpus.json",
    output:
        "data/consistency/{cons_set}/api/embeddings.npy",
        "data/consistency/{cons_set}/api/scores.json",
    log:
        "logs/consistency/{cons_set}/api.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/api.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: cons_threads
    resources:
        gpu=cons_api_gpu,
    params:
        recipes=cons_recipes,
        api=cons_cfg("api"),
        models=lambda w: canonical(CONS["datasets"][w.cons_set]["models"]),
        cache_root=lambda w: f"data/consistency/{w.cons_set}/api_cache",
        compute=cons_cfg("compute"),
        code=code("consistency_api"),
    script:
        "../workflow/scripts/consistency_api.py"


rule consistency_compare:
    input:
        unpack(cons_model_dirs),
        corpus="data/consistency/{cons_set}/corpus.json",
        local_emb="data/consistency/{cons_set}/local/embeddings.npy",
        local_scores="data/consistency/{cons_set}/local/scores.json",
        api_emb="data/consistency/{cons_set}/api/embeddings.npy",
        api_scores="data/consistency/{cons_set}/api/scores.json",
    output:
        "results/consistency/{cons_set}/compare.json",
    log:
        "logs/consistency/{cons_set}/compare.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/compare.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: cons_threads
    resources:
        gpu=cons_gpu,
    params:
        recipes=cons_recipes,
        metrics=cons_cfg("metrics"),
        thresholds=cons_cfg("thresholds"),
        diagnosis=cons_cfg("diagnosis"),
        compute=cons_cfg("compute"),
        code=code("consistency_compare"),
    script:
        "../workflow/scripts/consistency_compare.py"


rule consistency_aggregate:
    input:
        "results/consistency/{cons_set}/compare.json",
    output:
        report(
            "results/consistency/{cons_set}/report.json",
            caption="../workflow/report/consistency.rst",
            category="Consistency",
        ),
        report(
            "results/consistency/{cons_set}/report.md",
            caption="../workflow/report/consistency.rst",
            category="Consistency",
        ),
        report(
            "results/consistency/{cons_set}/report.png",
            caption="../workflow/report/consistency.rst",
            category="Consistency",
        ),
    log:
        "logs/consistency/{cons_set}/aggregate.log",
    benchmark:
        "benchmarks/consistency/{cons_set}/aggregate.tsv"
    wildcard_constraints:
        cons_set=CONS_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        code=code("consistency_aggregate"),
    script:
        "../workflow/scripts/consistency_aggregate.py"
