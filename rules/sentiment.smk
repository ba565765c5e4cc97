# Sentiment track: zero-shot label scoring vs head-only vs LoRA+head vs LoRA+label scoring (issues 11, 27).
# download → model → arms → score → aggregate. A scores every label pair (the verbalizer sweep) in one job; B, B′, C
# train a head; D trains one LoRA per label pair (sentiment_lora_label_pair), gathered into the arm's files. The trained
# arms run once per training seed (`train.seeds`): arms/<arm>/seed<s>/; A has no seed (arms/zero_shot/).
#   snakemake --cores 2 results/sentiment/demo/comparison.json
#   snakemake --cores 8 results/sentiment/chnsenticorp/comparison.json --configfile=config/sentiment_chnsenticorp.yaml
include: "sentiment_common.smk"


rule sentiment_download:
    output:
        train="data/sentiment/{sent_set}/train.parquet",
        val="data/sentiment/{sent_set}/val.parquet",
        test="data/sentiment/{sent_set}/test.parquet",
        manifest="data/sentiment/{sent_set}/manifest.json",
    log:
        "logs/sentiment/{sent_set}/download.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/download.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=sent_dataset_spec,
        code=code("sentiment_download"),
    script:
        "../workflow/scripts/sentiment_download.py"


rule sentiment_model:
    output:
        directory("data/sentiment/models/{sent_model}"),
    log:
        "logs/sentiment/models/{sent_model}.log",
    benchmark:
        "benchmarks/sentiment/models/{sent_model}.tsv"
    wildcard_constraints:
        sent_model=SENT_MODELS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: source_json(SENT["models"][w.sent_model]),
        shipped=sent_shipped,
        code=code("sentiment_model"),
    script:
        "../workflow/scripts/sentiment_model.py"


rule sentiment_zero_shot:
    input:
        train="data/sentiment/{sent_set}/train.parquet",
        val="data/sentiment/{sent_set}/val.parquet",
        test="data/sentiment/{sent_set}/test.parquet",
        model=lambda w: f"data/sentiment/models/{sent_model(w)}",
    output:
        predictions="results/sentiment/{sent_set}/arms/zero_shot/predictions.parquet",
        record="results/sentiment/{sent_set}/arms/zero_shot/record.json",
        sweep="results/sentiment/{sent_set}/arms/zero_shot/sweep.parquet",
    log:
        "logs/sentiment/{sent_set}/arm_zero_shot.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/arm_zero_shot.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: sent_threads
    resources:
        gpu=sent_gpu,
    params:
        cfg=sent_arm_cfg,
        dtype=lambda w: SENT["models"][sent_model(w)]["dtype"],
        code=code("sentiment_zero_shot"),
    script:
        "../workflow/scripts/sentiment_zero_shot.py"


rule sentiment_head_arm:
    input:
        train="data/sentiment/{sent_set}/train.parquet",
        val="data/sentiment/{sent_set}/val.parquet",
        test="data/sentiment/{sent_set}/test.parquet",
        model=lambda w: f"data/sentiment/models/{sent_model(w)}",
    output:
        predictions="results/sentiment/{sent_set}/arms/{sent_arm}/seed{sent_seed}/predictions.parquet",
        record="results/sentiment/{sent_set}/arms/{sent_arm}/seed{sent_seed}/record.json",
    log:
        "logs/sentiment/{sent_set}/arm_{sent_arm}_seed{sent_seed}.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/arm_{sent_arm}_seed{sent_seed}.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
        sent_arm=SENT_HEAD_ARMS,
        sent_seed=SENT_SEEDS,
    conda:
        "../envs/gpu.yaml"
    threads: sent_threads
    resources:
        gpu=sent_gpu,
    params:
        cfg=sent_arm_cfg,
        dtype=lambda w: SENT["models"][sent_model(w)]["dtype"],
        code=code("sentiment_head_arm"),
    script:
        "../workflow/scripts/sentiment_head_arm.py"


rule sentiment_lora_label_pair:
    input:
        train="data/sentiment/{sent_set}/train.parquet",
        val="data/sentiment/{sent_set}/val.parquet",
        test="data/sentiment/{sent_set}/test.parquet",
        model=lambda w: f"data/sentiment/models/{sent_model(w)}",
    output:
        variants="results/sentiment/{sent_set}/arms/lora_label/seed{sent_seed}/pairs/{sent_pair}/variants.parquet",
        record="results/sentiment/{sent_set}/arms/lora_label/seed{sent_seed}/pairs/{sent_pair}/record.json",
    log:
        "logs/sentiment/{sent_set}/arm_lora_label_{sent_pair}_seed{sent_seed}.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/arm_lora_label_{sent_pair}_seed{sent_seed}.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
        sent_pair=SENT_PAIRS,
        sent_seed=SENT_SEEDS,
    conda:
        "../envs/gpu.yaml"
    threads: sent_threads
    resources:
        gpu=sent_gpu,
    params:
        cfg=sent_arm_cfg,
        dtype=lambda w: SENT["models"][sent_model(w)]["dtype"],
        code=code("sentiment_lora_label_pair"),
    script:
        "../workflow/scripts/sentiment_lora_label_pair.py"


rule sentiment_lora_label_gather:
    input:
        variants=lambda w: [
            f"results/sentiment/{w.sent_set}/arms/lora_label/seed{w.sent_seed}/pairs/{k}/variants.parquet"
            for k in sent_d_pairs(w)
        ],
        records=lambda w: [
            f"results/sentiment/{w.sent_set}/arms/lora_label/seed{w.sent_seed}/pairs/{k}/record.json"
            for k in sent_d_pairs(w)
        ],
    output:
        predictions="results/sentiment/{sent_set}/arms/lora_label/seed{sent_seed}/predictions.parquet",
        record="results/sentiment/{sent_set}/arms/lora_label/seed{sent_seed}/record.json",
        sweep="results/sentiment/{sent_set}/arms/lora_label/seed{sent_seed}/sweep.parquet",
    log:
        "logs/sentiment/{sent_set}/arm_lora_label_gather_seed{sent_seed}.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/arm_lora_label_gather_seed{sent_seed}.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
        sent_seed=SENT_SEEDS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        cfg=sent_arm_cfg,
        pairs=lambda w: canonical(sent_d_pairs(w)),
        code=code("sentiment_lora_label_gather"),
    script:
        "../workflow/scripts/sentiment_lora_label_gather.py"


rule sentiment_score:
    input:
        predictions="results/sentiment/{sent_set}/arms/{sent_run}/predictions.parquet",
        references="data/sentiment/{sent_set}/test.parquet",
    output:
        "results/sentiment/{sent_set}/arms/{sent_run}/scores.json",
    log:
        "logs/sentiment/{sent_set}/score_{sent_run}.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/score_{sent_run}.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
        sent_run=SENT_RUNS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        metrics=lambda w: canonical(sent_run(w.sent_set)["metrics"]),
        code=code("sentiment_score"),
    script:
        "../workflow/scripts/sentiment_score.py"


rule sentiment_aggregate:
    input:
        predictions=sent_arm_files("predictions.parquet"),
        scores=sent_arm_files("scores.json"),
        records=sent_arm_files("record.json"),
        sweeps=sent_arm_files("sweep.parquet", SENT_LABEL_ARMS),
        references="data/sentiment/{sent_set}/test.parquet",
        manifest="data/sentiment/{sent_set}/manifest.json",
    output:
        json=report(
            "results/sentiment/{sent_set}/comparison.json",
            caption="../workflow/report/sentiment_table.rst",
            category="Sentiment",
        ),
        md=report(
            "results/sentiment/{sent_set}/comparison.md",
            caption="../workflow/report/sentiment_table.rst",
            category="Sentiment",
        ),
        png=report(
            "results/sentiment/{sent_set}/comparison.png",
            caption="../workflow/report/sentiment_figure.rst",
            category="Sentiment",
        ),
    log:
        "logs/sentiment/{sent_set}/aggregate.log",
    benchmark:
        "benchmarks/sentiment/{sent_set}/aggregate.tsv"
    wildcard_constraints:
        sent_set=SENT_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        arms=lambda w: canonical(sent_run(w.sent_set)["arms"]),
        runs=lambda w: canonical(sent_runs(w.sent_set)),
        settings=lambda w: canonical(
            {
                "model": {"name": sent_model(w), **SENT["models"][sent_model(w)]},
                **{k: sent_run(w.sent_set)[k] for k in ("prompt", "labels", "train", "predict", "metrics")},
            }
        ),
        code=code("sentiment_aggregate"),
    script:
        "../workflow/scripts/sentiment_aggregate.py"
