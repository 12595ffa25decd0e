# Stage 2: prompts -> model-agnostic conversations, one file per condition (plus zoom crops, overrides).


rule episodes:
    input:
        prompts=res("data/{dataset}/prompts.parquet"),
        images=res("data/{dataset}/images"),
    output:
        episodes=expand(res("episodes/{{dataset}}/{condition}.jsonl"), condition=CONDITIONS),
        images=directory(res("episodes/{dataset}/images")),
    log:
        res("logs/episodes/{dataset}.log"),
    benchmark:
        res("benchmarks/episodes/{dataset}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        results=results_above_prompts,
        conditions=CONDITIONS,
        options=config["episodes"],
    script:
        "../workflow_scripts/episodes.py"
