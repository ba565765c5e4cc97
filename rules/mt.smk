# MT metrics track (issue 14): download → score (one job per metric family × language pair) → meta-evaluate per
# language pair → aggregate into results/mt/{mt_set}/report.{json,md,png}
#   snakemake --cores 2 results/mt/demo/report.json                                   (offline demo)
#   snakemake --cores 8 results/mt/wmt/report.json --configfile=config/mt_wmt.yaml   (local WMT-style files)
include: "mt_common.smk"


rule mt_download:
    output:
        "data/mt/{mt_set}/{pair}.parquet",
    log:
        "logs/mt/{mt_set}/download_{pair}.log",
    benchmark:
        "benchmarks/mt/{mt_set}/download_{pair}.tsv"
    wildcard_constraints:
        mt_set=MT_SETS,
        pair=r"[a-z]{2,3}-[a-z]{2,3}",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        spec=lambda w: canonical(MT["datasets"][w.mt_set]),
        code=code("mt_download"),
    script:
        "../workflow/scripts/mt_download.py"


rule mt_judge_model:
    """The demo's LLM judge: a random tiny Qwen2ForCausalLM chat model (leverplus.serving.tiny_chat), built offline;
    its replies carry no judgement (the report shows its parse rate)."""
    output:
        directory("data/mt/models/tiny_chat"),
    log:
        "logs/mt/judge_model.log",
    benchmark:
        "benchmarks/mt/judge_model.tsv"
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        seed=MT["llm_judge"]["local_server"]["seed"],
        code=code("mt_judge_model"),
    script:
        "../workflow/scripts/mt_judge_model.py"


rule mt_score:
    input:
        unpack(mt_score_inputs),
    output:
        segments="results/mt/{mt_set}/scores/{pair}/{family}.parquet",
        corpus="results/mt/{mt_set}/scores/{pair}/{family}.json",
    log:
        "logs/mt/{mt_set}/score_{pair}_{family}.log",
    benchmark:
        "benchmarks/mt/{mt_set}/score_{pair}_{family}.tsv"
    wildcard_constraints:
        mt_set=MT_SETS,
        pair=r"[a-z]{2,3}-[a-z]{2,3}",
        family=MT_FAMILIES,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        cfg=lambda w: (
            mt_cfg(w.mt_set, "seed", "corpus_ci_resamples", "bleu_tokenize", w.family)
            if w.family in ("bertscore", "llm_judge", "neural")
            else (
                mt_cfg(w.mt_set, "seed", "corpus_ci_resamples", "bleu_tokenize", "system_tests")
                if w.family == "lexical"
                else mt_cfg(w.mt_set, "seed", "corpus_ci_resamples", "bleu_tokenize")
            )
        ),
        code=code("mt_score"),
    script:
        "../workflow/scripts/mt_score.py"


rule mt_meta_evaluate:
    input:
        data="data/mt/{mt_set}/{pair}.parquet",
        segments=lambda w: expand(
            "results/mt/{mt_set}/scores/{pair}/{family}.parquet",
            mt_set=w.mt_set,
            pair=w.pair,
            family=mt_run(w.mt_set)["families"],
        ),
    output:
        "results/mt/{mt_set}/meta/{pair}.json",
    log:
        "logs/mt/{mt_set}/meta_{pair}.log",
    benchmark:
        "benchmarks/mt/{mt_set}/meta_{pair}.tsv"
    wildcard_constraints:
        mt_set=MT_SETS,
        pair=r"[a-z]{2,3}-[a-z]{2,3}",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        cfg=lambda w: mt_cfg(w.mt_set, "meta_eval", "bleu_tokenize"),
        code=code("mt_meta_evaluate"),
    script:
        "../workflow/scripts/mt_meta_evaluate.py"


rule mt_aggregate:
    input:
        meta=lambda w: expand("results/mt/{mt_set}/meta/{pair}.json", mt_set=w.mt_set, pair=mt_pairs(w.mt_set)),
        corpus=lambda w: expand(
            "results/mt/{mt_set}/scores/{pair}/{family}.json",
            mt_set=w.mt_set,
            pair=mt_pairs(w.mt_set),
            family=mt_run(w.mt_set)["families"],
        ),
    output:
        json="results/mt/{mt_set}/report.json",
        md=report("results/mt/{mt_set}/report.md", caption="../workflow/report/mt_report.rst", category="MT"),
        png=report("results/mt/{mt_set}/report.png", caption="../workflow/report/mt_heatmap.rst", category="MT"),
    log:
        "logs/mt/{mt_set}/aggregate.log",
    benchmark:
        "benchmarks/mt/{mt_set}/aggregate.tsv"
    wildcard_constraints:
        mt_set=MT_SETS,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        cfg=lambda w: canonical(
            {
                "meta_eval": mt_run(w.mt_set)["meta_eval"],
                "caveats": MT["datasets"][w.mt_set]["caveats"],
                "human_label": MT["datasets"][w.mt_set].get("human_label"),
                "source": MT["datasets"][w.mt_set]["source"],
            }
        ),
        code=code("mt_aggregate"),
    script:
        "../workflow/scripts/mt_aggregate.py"
