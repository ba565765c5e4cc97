# Audio track (issue 10): edge vs cloud vs cloud-via-API vs cascade vs unaligned decoding, emotion captions.
# download (data, caption models, metric models) → generate per arm → cascade sweep → score per arm → aggregate
#   snakemake --cores 2 results/audio/demo/comparison.json                                  (offline demo)
#   snakemake --cores 8 results/audio/secap/comparison.json --configfile=config/audio_secap.yaml   (real)


include: "audio_common.smk"


rule audio_download_data:
    output:
        manifest="data/audio/{audio_set}/eval.jsonl",
        corpus="data/audio/{audio_set}/corpus.jsonl",
    log:
        "logs/audio/{audio_set}/download_data.log",
    benchmark:
        "benchmarks/audio/{audio_set}/download_data.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: canonical(
            {k: v for k, v in audio_ds(w).items() if k not in ("edge_model", "cloud_model", "api", "metrics")}
        ),
        code=code("audio_download_data"),
    script:
        "../workflow/scripts/audio_download_data.py"


rule audio_download_model:
    output:
        directory("data/audio/models/{audio_model}"),
    log:
        "logs/audio/models/{audio_model}.log",
    benchmark:
        "benchmarks/audio/models/{audio_model}.tsv"
    wildcard_constraints:
        audio_model=AUDIO_MODELS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: canonical({k: v for k, v in AUDIO["models"][w.audio_model].items() if k in AUDIO_SOURCE_KEYS}),
        shipped=audio_shipped,
        code=code("audio_download_model"),
    script:
        "../workflow/scripts/audio_download_model.py"


rule audio_download_metric_model:
    input:
        corpus=lambda w: (
            "data/audio/demo/corpus.jsonl"
            if AUDIO["metric_models"][w.metric_model]["source"] == "demo_char_bert"
            else []
        ),
    output:
        directory("data/audio/metric_models/{metric_model}"),
    log:
        "logs/audio/metric_models/{metric_model}.log",
    benchmark:
        "benchmarks/audio/metric_models/{metric_model}.tsv"
    wildcard_constraints:
        metric_model=AUDIO_METRIC_MODELS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: canonical(AUDIO["metric_models"][w.metric_model]),
        code=code("audio_download_metric_model"),
    script:
        "../workflow/scripts/audio_download_metric_model.py"


# the edge: CPU-throttled (profiles/slurm puts it on the throttled partition); really runs with `threads`.
# Every generation rule times the clips of `audio.latency` one request at a time (timing.parquet) and captions
# every clip for the quality metrics (predictions.parquet; untimed batches unless every clip is timed).
rule audio_edge_infer:
    input:
        manifest="data/audio/{audio_set}/eval.jsonl",
        model=audio_model_of("edge_model"),
    output:
        predictions="results/audio/{audio_set}/edge/predictions.parquet",
        timing="results/audio/{audio_set}/edge/timing.parquet",
        run="results/audio/{audio_set}/edge/run.json",
    log:
        "logs/audio/{audio_set}/edge_infer.log",
    benchmark:
        "benchmarks/audio/{audio_set}/edge_infer.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: lambda w: audio_run(w)["edge"]["threads"]
    params:
        arm="edge",
        device=lambda w: audio_run(w)["edge"]["device"],
        dtype=lambda w: audio_run(w)["edge"]["dtype"],
        model=audio_model_json("edge_model"),
        model_name=lambda w: audio_ds(w)["edge_model"],
        generation=lambda w: canonical(audio_run(w)["generation"]),
        warmup=lambda w: audio_run(w)["warmup_requests"],
        latency=lambda w: canonical(audio_run(w)["latency"]),
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        scoring=audio_scoring,
        code=code("audio_generate"),
    script:
        "../workflow/scripts/audio_generate.py"


rule audio_cloud_infer:
    input:
        manifest="data/audio/{audio_set}/eval.jsonl",
        model=audio_model_of("cloud_model"),
    output:
        predictions="results/audio/{audio_set}/cloud/predictions.parquet",
        timing="results/audio/{audio_set}/cloud/timing.parquet",
        run="results/audio/{audio_set}/cloud/run.json",
    log:
        "logs/audio/{audio_set}/cloud_infer.log",
    benchmark:
        "benchmarks/audio/{audio_set}/cloud_infer.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: lambda w: audio_run(w)["cloud"]["threads"]
    resources:
        gpu=1,
    params:
        arm="cloud",
        device=lambda w: audio_run(w)["cloud"]["device"],
        model=audio_model_json("cloud_model"),
        model_name=lambda w: audio_ds(w)["cloud_model"],
        generation=lambda w: canonical(audio_run(w)["generation"]),
        warmup=lambda w: audio_run(w)["warmup_requests"],
        latency=lambda w: canonical(audio_run(w)["latency"]),
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        scoring=audio_scoring,
        code=code("audio_generate"),
    script:
        "../workflow/scripts/audio_generate.py"


# the document's decoding ("as in the document": sampling 0.7/0.9, no length anchor) on the cloud model
use rule audio_cloud_infer as audio_unaligned_infer with:
    output:
        predictions="results/audio/{audio_set}/unaligned/predictions.parquet",
        timing="results/audio/{audio_set}/unaligned/timing.parquet",
        run="results/audio/{audio_set}/unaligned/run.json",
    log:
        "logs/audio/{audio_set}/unaligned_infer.log",
    benchmark:
        "benchmarks/audio/{audio_set}/unaligned_infer.tsv"
    params:
        arm="unaligned",
        device=lambda w: audio_run(w)["cloud"]["device"],
        model=audio_model_json("cloud_model"),
        model_name=lambda w: audio_ds(w)["cloud_model"],
        generation=lambda w: canonical(audio_run(w)["unaligned"]),
        warmup=lambda w: audio_run(w)["warmup_requests"],
        latency=lambda w: canonical(audio_run(w)["latency"]),
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        scoring=audio_scoring,
        code=code("audio_generate"),


# the cloud through an OpenAI-compatible API; with api.base_url null the job serves the cloud model on 127.0.0.1
rule audio_api_infer:
    input:
        manifest="data/audio/{audio_set}/eval.jsonl",
        model=lambda w: audio_model_of("cloud_model")(w) if audio_ds(w)["api"]["base_url"] is None else [],
        cloud=lambda w: (
            f"results/audio/{w.audio_set}/cloud/predictions.parquet" if audio_ds(w)["api"]["probe_clips"] else []
        ),
    output:
        predictions="results/audio/{audio_set}/api/predictions.parquet",
        timing="results/audio/{audio_set}/api/timing.parquet",
        run="results/audio/{audio_set}/api/run.json",
    log:
        "logs/audio/{audio_set}/api_infer.log",
    benchmark:
        "benchmarks/audio/{audio_set}/api_infer.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: lambda w: audio_run(w)["cloud"]["threads"]
    resources:
        gpu=lambda w: 1 if audio_ds(w)["api"]["base_url"] is None else 0,
    params:
        api=lambda w: canonical(audio_ds(w)["api"]),
        device=lambda w: audio_run(w)["cloud"]["device"],
        model=audio_model_json("cloud_model"),
        model_name=lambda w: audio_ds(w)["api"]["model"],
        generation=lambda w: canonical(audio_run(w)["generation"]),
        warmup=lambda w: audio_run(w)["warmup_requests"],
        latency=lambda w: canonical(audio_run(w)["latency"]),
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        scoring=audio_scoring,
        code=code("audio_api_infer"),
    script:
        "../workflow/scripts/audio_api_infer.py"


# edge drafts scored by the cloud (one prefill each: timed on the timed clips, batched on all); the sweep reuses the
# edge and cloud arms' outputs and timings
rule audio_cascade:
    input:
        manifest="data/audio/{audio_set}/eval.jsonl",
        model=audio_model_of("cloud_model"),
        edge="results/audio/{audio_set}/edge/predictions.parquet",
        cloud="results/audio/{audio_set}/cloud/predictions.parquet",
        edge_timing="results/audio/{audio_set}/edge/timing.parquet",
        cloud_timing="results/audio/{audio_set}/cloud/timing.parquet",
    output:
        points=directory("results/audio/{audio_set}/cascade/points"),
        scores="results/audio/{audio_set}/cascade/draft_scores.parquet",
    log:
        "logs/audio/{audio_set}/cascade.log",
    benchmark:
        "benchmarks/audio/{audio_set}/cascade.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/gpu.yaml"
    threads: lambda w: audio_run(w)["cloud"]["threads"]
    resources:
        gpu=1,
    params:
        device=lambda w: audio_run(w)["cloud"]["device"],
        model=audio_model_json("cloud_model"),
        generation=lambda w: canonical(audio_run(w)["generation"]),
        cascade=lambda w: canonical(audio_run(w)["cascade"]),
        warmup=lambda w: audio_run(w)["warmup_requests"],
        latency=lambda w: canonical(audio_run(w)["latency"]),
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        code=code("audio_cascade"),
    script:
        "../workflow/scripts/audio_cascade.py"


# one job scores every base arm (one process: the imports and both metric models loaded once, not once per arm)
rule audio_score:
    input:
        unpack(audio_score_inputs),
        manifest="data/audio/{audio_set}/eval.jsonl",
        bertscore_model=audio_metric_dir("bertscore_model"),
        similarity_model=audio_metric_dir("similarity_model"),
    output:
        **audio_score_outputs("results/audio/{audio_set}"),
    log:
        "logs/audio/{audio_set}/score.log",
    benchmark:
        "benchmarks/audio/{audio_set}/score.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        arms=AUDIO_ARMS.split("|"),
        metric_models=audio_metric_models,
        scoring=audio_scoring,
        code=code("audio_score"),
    script:
        "../workflow/scripts/audio_score.py"


rule audio_aggregate:
    input:
        unpack(audio_arm_files),
    output:
        json=report(
            "results/audio/{audio_set}/comparison.json",
            caption="../workflow/report/audio_comparison.rst",
            category="audio",
        ),
        md=report(
            "results/audio/{audio_set}/comparison.md",
            caption="../workflow/report/audio_comparison.rst",
            category="audio",
        ),
        png=report(
            "results/audio/{audio_set}/comparison.png",
            caption="../workflow/report/audio_comparison.rst",
            category="audio",
        ),
    log:
        "logs/audio/{audio_set}/aggregate.log",
    benchmark:
        "benchmarks/audio/{audio_set}/aggregate.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        generation=lambda w: canonical(audio_run(w)["generation"]),
        unaligned=lambda w: canonical(audio_run(w)["unaligned"]),
        cascade=lambda w: canonical(audio_run(w)["cascade"]),
        latency=lambda w: canonical(audio_run(w)["latency"]),
        metric_models=audio_metric_models,
        scoring=audio_scoring,
        code=code("audio_aggregate"),
    script:
        "../workflow/scripts/audio_aggregate.py"


# SECap's own protocol (optional, not part of comparison.json): k sampled captions per clip, the least consistent
# dropped, similarity vs the first reference; results/audio/{audio_set}/secap_protocol/{edge,cloud}.json
rule audio_secap_protocol:
    input:
        manifest="data/audio/{audio_set}/eval.jsonl",
        model=lambda w: audio_model_of(f"{w.role}_model")(w),
        similarity_model=audio_metric_dir("similarity_model"),
    output:
        "results/audio/{audio_set}/secap_protocol/{role}.json",
    log:
        "logs/audio/{audio_set}/secap_protocol_{role}.log",
    benchmark:
        "benchmarks/audio/{audio_set}/secap_protocol_{role}.tsv"
    wildcard_constraints:
        audio_set=AUDIO_SETS,
        role="edge|cloud",
    conda:
        "../envs/gpu.yaml"
    threads: lambda w: audio_run(w)[w.role]["threads"]
    resources:
        gpu=lambda w: 1 if w.role == "cloud" else 0,
    params:
        protocol=lambda w: canonical(audio_run(w)["secap_protocol"]),
        similarity=audio_similarity_spec,
        model=lambda w: canonical(AUDIO["models"][audio_ds(w)[f"{w.role}_model"]]),
        model_name=lambda w: audio_ds(w)[f"{w.role}_model"],
        device=lambda w: audio_run(w)[w.role]["device"],
        dtype=lambda w: audio_run(w)["edge"]["dtype"] if w.role == "edge" else None,
        batch_size=lambda w: audio_run(w)["quality_batch_size"],
        code=code("audio_secap_protocol"),
    script:
        "../workflow/scripts/audio_secap_protocol.py"
