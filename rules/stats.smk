# Stage 8: ASR with Wilson CIs, relative reduction vs direct (paired bootstrap), exact McNemar.


rule asr_table:
    input:
        expand(res("judged/{judge}/{model}/{dataset}.parquet"), judge=JUDGES, model=MODELS, dataset=DATASETS),
    output:
        asr=res("tables/asr.csv"),
        over_refusal=res("tables/over_refusal.csv"),
    log:
        res("logs/stats/asr.log"),
    benchmark:
        res("benchmarks/stats/asr.tsv")
    conda:
        ENV
    params:
        stats=config["stats"],
    script:
        "../workflow_scripts/asr_table.py"
